// `crate = "..."` for a renamed dependency: nothing below names `lifecycle_hooks`.
extern crate lifecycle_hooks as lh;

mod inner {
    #[lh::on_exit(crate = "lh", timeout = "5s")]
    pub async fn close_producer() -> Result<(), lh::BoxError> {
        Ok(())
    }

    #[lh::hook(phase = "drain", crate = "::lh")]
    pub fn wrap_up(_ctx: lh::HookContext) {}
}

fn main() {
    let specs = lh::hooks![inner::close_producer, inner::wrap_up];
    assert_eq!(specs[0].phase(), &lh::Phase::EXIT);
    assert_eq!(specs[1].phase(), &lh::Phase::DRAIN);
}
