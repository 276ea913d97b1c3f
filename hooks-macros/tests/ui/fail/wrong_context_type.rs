use lifecycle_hooks::on_exit;

#[on_exit]
async fn close_producer(retries: u32) {}

fn main() {}
