use lifecycle_hooks::on_exit;

#[on_exit(timeout = 5)]
async fn close_producer() {}

fn main() {}
