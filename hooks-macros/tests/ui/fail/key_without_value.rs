use lifecycle_hooks::on_exit;

#[on_exit(after)]
async fn close_producer() {}

fn main() {}
