use lifecycle_hooks::{hooks, on_exit};

#[on_exit]
async fn close_producer() {}

struct FlushMetrics;

fn main() {
    let _ = hooks![close_producer, FlushMetrics];
}
