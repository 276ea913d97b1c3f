use lifecycle_hooks::on_exit;

#[on_exit]
struct Producer;

fn main() {}
