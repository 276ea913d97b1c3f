use lifecycle_hooks::on_exit;

#[on_exit(phase = "shutdown")]
async fn close_producer() {}

fn main() {}
