use lifecycle_hooks::on_exit;

#[on_exit(crate = "lifecycle hooks")]
async fn close_producer() {}

fn main() {}
