// Every supported signature: async or plain, with or without the context, `()` or `Result`.
use lifecycle_hooks::{BoxError, HookContext, Phase, hooks, on_exit, on_shutdown, testing};

#[on_shutdown]
async fn async_unit() {}

#[on_shutdown]
async fn async_unit_explicit() -> () {}

#[on_shutdown]
async fn async_ctx(ctx: HookContext) {
    assert_eq!(ctx.phase(), &Phase::SHUTDOWN);
}

#[on_shutdown]
async fn async_result() -> Result<(), BoxError> {
    Ok(())
}

#[on_shutdown]
async fn async_io_result(_ctx: HookContext) -> std::io::Result<()> {
    Ok(())
}

#[on_exit]
fn sync_unit() {}

#[on_exit]
fn sync_ctx(ctx: HookContext) {
    assert_eq!(ctx.name(), "sync_ctx");
}

#[on_exit]
fn sync_result() -> Result<(), std::fmt::Error> {
    Ok(())
}

#[on_exit]
fn sync_string_error(_: lifecycle_hooks::HookContext) -> Result<(), String> {
    Ok(())
}

#[on_exit]
const fn const_fn() {}

fn main() {
    // The functions stay callable as written.
    drop(async_unit());
    sync_unit();
    assert_eq!(sync_result(), Ok(()));

    let specs = hooks![
        async_unit,
        async_unit_explicit,
        async_ctx,
        async_result,
        async_io_result,
        sync_unit,
        sync_ctx,
        sync_result,
        sync_string_error,
        const_fn,
    ];
    assert_eq!(specs.len(), 10);
    let lifecycle = testing::builder().hooks(specs).build().unwrap();
    lifecycle.handle().stop();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(lifecycle.run());
    assert_eq!(outcome.exit_code(), 0, "{outcome:?}");
    assert_eq!(outcome.hooks().len(), 10);
}
