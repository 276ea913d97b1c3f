use lifecycle_hooks::{HookContext, on_exit};

#[on_exit]
async fn close_producer(ctx: &HookContext) {}

fn main() {}
