use lifecycle_hooks::on_exit;

#[on_exit]
async fn close_producer() -> u32 {
    0
}

fn main() {}
