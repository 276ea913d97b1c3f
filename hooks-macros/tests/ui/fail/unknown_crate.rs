use lifecycle_hooks::on_exit;

#[on_exit(crate = "lifecycle")]
async fn close_producer() {}

fn main() {}
