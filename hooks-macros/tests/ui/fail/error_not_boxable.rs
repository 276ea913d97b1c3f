use lifecycle_hooks::on_exit;

#[on_exit]
async fn close_producer() -> Result<(), i32> {
    Ok(())
}

fn main() {}
