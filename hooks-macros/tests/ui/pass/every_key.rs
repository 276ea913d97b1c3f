// Every key, raw identifiers, hooks in modules and in blocks, `hooks!` with paths.
use lifecycle_hooks::{Phase, hook, hooks, on_exit, on_startup, on_stop_intake};

#[on_startup]
async fn open_pool() {}

#[on_exit(
    name = "close-pool",
    after = [r#type, "flush-metrics"],
    before = last,
    timeout = "1m 30.5s",
    teardown_of = open_pool,
    global = false,
    crate = "::lifecycle_hooks",
)]
async fn close_pool() {}

#[on_exit]
fn r#type() {}

#[on_exit]
fn last() {}

#[hook(phase = "flush_metrics", timeout = "250ms")]
fn push_gauges() {}

pub mod telemetry {
    #[lifecycle_hooks::on_stop_intake(before = stop_consumers)]
    pub fn stop_listener() {}

    #[lifecycle_hooks::on_stop_intake]
    pub(crate) fn stop_consumers() {}
}

#[on_stop_intake]
fn ctx() {}

fn main() {
    #[on_exit(timeout = "2h")]
    fn declared_in_a_block() {}

    let specs = hooks![
        close_pool,
        r#type,
        push_gauges,
        telemetry::stop_listener,
        crate::telemetry::stop_consumers,
        declared_in_a_block,
        ctx,
    ];
    let debug: Vec<String> = specs.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(specs[0].name(), "close-pool");
    assert_eq!(specs[0].phase(), &Phase::EXIT);
    assert!(debug[0].contains(r#"after: ["type", "flush-metrics"], before: ["last"], timeout: Some(90.5s), teardown_of: Some("open_pool")"#), "{}", debug[0]);
    assert_eq!(specs[1].name(), "type");
    assert_eq!(specs[2].phase(), &Phase::custom("flush_metrics"));
    assert!(debug[2].contains("timeout: Some(250ms)"), "{}", debug[2]);
    assert_eq!(specs[3].phase(), &Phase::STOP_INTAKE);
    assert!(debug[3].contains(r#"before: ["stop_consumers"]"#), "{}", debug[3]);
    assert!(debug[5].contains("timeout: Some(7200s)"), "{}", debug[5]);
    assert_eq!(specs[6].name(), "ctx");
    let _ = hooks![open_pool, last,];
    let none = hooks![];
    assert!(none.is_empty());
}
