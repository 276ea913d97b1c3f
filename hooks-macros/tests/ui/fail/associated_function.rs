// A known limit: an attribute macro cannot tell an associated function from a free one, so the
// hook item it declares lands in the impl block, and rustc rejects it there ("consider moving
// ... to a nearby module scope"). A method (`self`) gets its own message: see self_receiver.rs.
use lifecycle_hooks::on_exit;

struct Producer;

impl Producer {
    #[on_exit]
    async fn close() {}
}

fn main() {}
