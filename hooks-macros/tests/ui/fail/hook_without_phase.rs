use lifecycle_hooks::hook;

#[hook]
async fn push_gauges() {}

fn main() {}
