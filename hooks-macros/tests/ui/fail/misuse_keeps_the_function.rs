// The attribute's error is the only one: the function is still emitted (so calling it works)
// and `hooks![..]` still finds a stand-in, so neither adds errors of its own.
use lifecycle_hooks::{hooks, on_exit};

#[on_exit(timeout = "soon")]
async fn close_producer() {}

fn main() {
    let _ = close_producer();
    let _ = hooks![close_producer];
}
