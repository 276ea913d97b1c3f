use lifecycle_hooks::on_exit;

#[on_exit(after = flush_metrics, after = flush_traces)]
async fn close_producer() {}

fn main() {}
