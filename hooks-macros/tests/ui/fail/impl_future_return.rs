use std::future::Future;

use lifecycle_hooks::on_exit;

#[on_exit]
fn close_producer() -> impl Future<Output = ()> {
    async {}
}

fn main() {}
