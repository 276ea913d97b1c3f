use lifecycle_hooks::on_exit;

#[on_exit(name = "")]
async fn close_producer() {}

fn main() {}
