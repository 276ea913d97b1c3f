use lifecycle_hooks::on_exit;

#[on_exit(timeout = "1s", timeout = "2s")]
async fn close_producer() {}

fn main() {}
