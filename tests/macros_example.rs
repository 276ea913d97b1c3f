//! Process tests for `examples/02_on_exit_macro.rs`: the real binary, real signals. The producer
//! closed by `#[on_exit]` outlives every job; closed in `#[on_shutdown]`, it fails them.

mod support;

use nix::sys::signal::Signal;
use support::position;

/// Starts the example and waits until it is ready.
fn start(args: &[&str]) -> support::Service {
    support::Service::start("02_on_exit_macro", args, &[])
}

/// Reads to the end of the output; returns every line and the exit status.
fn finish(service: support::Service) -> (Vec<String>, i32) {
    let (lines, status) = service.finish();
    (lines, status.code().expect("exited, not killed"))
}

#[test]
fn sigterm_closes_the_producer_only_after_every_job_published() {
    let service = start(&[]);
    service.signal(Signal::SIGTERM);
    let (lines, status) = finish(service);

    assert_eq!(status, 0, "{lines:#?}");
    let closed = position(&lines, "producer closed after 3 messages");
    for job in 0..3 {
        assert!(position(&lines, &format!("job {job} published order-{job}")) < closed);
    }
    assert!(
        position(&lines, "hook shutdown announce ok") < position(&lines, "job 0 published order-0")
    );
    assert!(position(&lines, "hook exit flush_metrics ok") < closed);
    assert!(closed < position(&lines, "hook exit close_producer ok"));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 failed_jobs=0"
    );
}

#[test]
fn sigusr2_runs_the_same_hooks_and_exits_with_status_4() {
    let service = start(&["--job-ms", "50"]);
    service.signal(Signal::SIGUSR2);
    let (lines, status) = finish(service);

    assert_eq!(status, 4, "{lines:#?}");
    assert!(lines.contains(&"shutting down (restart): jobs may still be running".to_owned()));
    assert!(lines.contains(&"producer closed after 3 messages".to_owned()));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=restart exit_code=4 failed_jobs=0"
    );
}

#[test]
fn closing_the_producer_in_shutdown_fails_the_jobs_still_running() {
    let service = start(&[
        "--close-in-shutdown",
        "--stop-after-ms",
        "0",
        "--job-ms",
        "50",
    ]);
    let (lines, status) = finish(service);

    assert_eq!(status, 0, "{lines:#?}");
    let closed = position(&lines, "producer closed in shutdown after 0 messages");
    for job in 0..3 {
        assert!(closed < position(&lines, &format!("job {job} failed: producer closed")));
    }
    assert!(lines.contains(&"producer was already closed".to_owned()));
    assert_eq!(
        lines.last().unwrap(),
        "summary reason=stop exit_code=0 failed_jobs=3"
    );
}
