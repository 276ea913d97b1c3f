use std::rc::Rc;

use lifecycle_hooks::on_exit;

#[on_exit]
async fn close_producer() {
    let connection = Rc::new(());
    tokio::task::yield_now().await;
    drop(connection);
}

fn main() {}
