use lifecycle_hooks::on_exit;

#[on_exit]
unsafe fn close_producer() {}

fn main() {}
