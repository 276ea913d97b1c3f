use lifecycle_hooks::on_exit;

#[on_exit]
async fn close_producer() -> Result<u32, std::io::Error> {
    Ok(0)
}

fn main() {}
