//! The producer against a real Kafka-protocol broker: `tansu`, started on a free port of
//! 127.0.0.1 by each test. These tests fail if `tansu` is not installed (CI installs it).

// Each test binary uses its own part of the shared support (the broker it runs against).
#[allow(dead_code)]
mod support;

use support::{Broker, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_sends_are_delivered() {
    scenarios::drain_sends_are_delivered(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_phase_decides() {
    scenarios::close_phase_decides(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_after_close_fails_at_once() {
    scenarios::send_after_close_fails_at_once(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_exit_is_bounded_and_reported() {
    scenarios::broker_down_at_exit_is_bounded_and_reported(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_twice_is_fine() {
    scenarios::close_twice_is_fine(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_racing_the_close() {
    scenarios::sends_racing_the_close(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_check_passes() {
    scenarios::startup_check_passes(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_close_reports_what_it_purges() {
    scenarios::skipped_close_reports_what_it_purges(Broker::tansu().await).await;
}
