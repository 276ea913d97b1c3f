use lifecycle_hooks::on_exit;

#[on_exit(timeout = "30")]
async fn close_producer() {}

fn main() {}
