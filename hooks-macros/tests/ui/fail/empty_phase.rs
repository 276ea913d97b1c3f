use lifecycle_hooks::hook;

#[hook(phase = "")]
async fn push_gauges() {}

fn main() {}
