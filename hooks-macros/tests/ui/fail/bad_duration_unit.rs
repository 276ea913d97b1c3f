use lifecycle_hooks::on_shutdown;

#[on_shutdown(timeout = "5 parsecs")]
async fn announce() {}

fn main() {}
