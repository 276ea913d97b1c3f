use lifecycle_hooks::on_exit;

#[on_exit(timeout = "0ms")]
async fn close_producer() {}

fn main() {}
