use lifecycle_hooks::on_exit;

#[on_exit]
async fn close<P: Default>() {}

fn main() {}
