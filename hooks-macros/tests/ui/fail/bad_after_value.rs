use lifecycle_hooks::on_exit;

#[on_exit(after = [flush_metrics, telemetry::flush])]
async fn close_producer() {}

fn main() {}
