use lifecycle_hooks::on_exit;

#[on_exit(name = "close", after = [flush_metrics, close])]
async fn close_producer() {}

fn main() {}
