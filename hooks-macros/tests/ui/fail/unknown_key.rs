use lifecycle_hooks::on_exit;

#[on_exit(timout = "5s")]
async fn close_producer() {}

fn main() {}
