use lifecycle_hooks::on_exit;

struct Producer;

impl Producer {
    #[on_exit]
    async fn close(&self) {}
}

fn main() {}
