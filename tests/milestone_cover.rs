//! A spawned task waiting on one of its own lifecycle's milestones keeps no waker for the
//! drain deadline's cancellation: the milestone wakes it. These tests attack the ways that
//! shortcut could lose a task at the deadline: a milestone future dropped in the same poll, a
//! milestone of another lifecycle, a milestone polled with another waker; and the plain case
//! from many tasks. Each scenario runs on a 2-worker runtime (real threads, real time: the
//! deadline under test is real) and on a paused current-thread runtime; a hang fails the test
//! through the bound in `bounded`.

use std::future::{Future, IntoFuture};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lifecycle_hooks::testing;
use lifecycle_hooks::{LifecycleHandle, Outcome};

/// The budget of the lifecycles here: the drain deadline comes 80 % of it after the stop.
const BUDGET: Duration = Duration::from_millis(400);

/// Fails the test if `body` has not ended within 20 s (a lost wake-up hangs).
async fn bounded<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), body)
        .await
        .expect("a task was never cancelled: the lifecycle hung at the drain deadline")
}

/// Stops a lifecycle whose only work is `task`, spawned with `spawn` (which gets the handle),
/// and returns the Outcome and what the task's join handle yielded.
async fn stop_with<F, Fut>(spawn: F) -> (Outcome, Option<()>)
where
    F: FnOnce(LifecycleHandle) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lifecycle = testing::builder().budget(BUDGET).build().unwrap();
    let handle = lifecycle.handle();
    let (polled_tx, polled_rx) = tokio::sync::oneshot::channel();
    let task = spawn(handle.clone());
    let join = handle.spawn(async move {
        let _ = polled_tx.send(());
        task.await
    });
    // Stop only once the task has run its first poll.
    polled_rx.await.unwrap();
    tokio::task::yield_now().await;
    handle.stop();
    let outcome = bounded(lifecycle.run()).await;
    let joined = bounded(join).await.unwrap();
    (outcome, joined)
}

/// A milestone future left `Pending` and then dropped within the same poll no longer covers
/// the task: it goes on to wait on something that never ends, and the deadline still cancels
/// it.
async fn a_milestone_dropped_in_the_same_poll() {
    let (outcome, joined) = stop_with(|handle| async move {
        {
            let mut draining = pin!(handle.draining().into_future());
            std::future::poll_fn(|cx| {
                assert!(draining.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
        }
        std::future::pending::<()>().await
    })
    .await;
    assert_eq!(joined, None, "cancelled at the deadline");
    assert_eq!(outcome.cancelled_work(), 1, "{outcome}");
}

/// A task waiting on *another* lifecycle's milestone is not covered by it: its own
/// lifecycle's deadline cancels it (the other lifecycle never stops).
async fn another_lifecycles_milestone() {
    let other = testing::builder().build().unwrap();
    let other_handle = other.handle();
    let (outcome, joined) = stop_with(move |_| async move {
        other_handle.draining().await;
        unreachable!("the other lifecycle never drains");
    })
    .await;
    assert_eq!(joined, None, "cancelled at its own lifecycle's deadline");
    assert_eq!(outcome.cancelled_work(), 1, "{outcome}");
    drop(other);
}

/// A milestone polled with a waker that is not the task's (here one that wakes nobody) and
/// kept alive does not cover the task: the deadline still wakes and cancels it.
async fn a_milestone_polled_with_another_waker() {
    let (outcome, joined) = stop_with(|handle| async move {
        let mut draining = Box::pin(handle.draining().into_future());
        assert!(
            draining
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        std::future::pending::<()>().await;
        drop(draining);
    })
    .await;
    assert_eq!(joined, None, "cancelled at the deadline");
    assert_eq!(outcome.cancelled_work(), 1, "{outcome}");
}

/// The covered case itself, from many tasks spawned on other threads: tasks that end at the
/// drain end cleanly; tasks that, once draining, wait on something that never ends (covered
/// first, then not) are cancelled at the deadline, each one; so are tasks that wait on
/// `cancelled()` only and ignore it.
async fn many_covered_tasks(spawn_threads: usize) {
    const PER_THREAD: usize = 200;
    let lifecycle = testing::builder().budget(BUDGET).build().unwrap();
    let handle = lifecycle.handle();
    let waiting = Arc::new(AtomicUsize::new(0));
    let all = spawn_threads * PER_THREAD;
    let (all_tx, all_rx) = tokio::sync::oneshot::channel();
    let all_tx = Arc::new(std::sync::Mutex::new(Some(all_tx)));
    let runtime = tokio::runtime::Handle::current();
    let spawners: Vec<_> = (0..spawn_threads)
        .map(|thread| {
            let (handle, waiting, all_tx, runtime) = (
                handle.clone(),
                waiting.clone(),
                all_tx.clone(),
                runtime.clone(),
            );
            std::thread::spawn(move || {
                let _runtime = runtime.enter();
                (0..PER_THREAD)
                    .map(|i| {
                        let h = handle.clone();
                        let (waiting, all_tx) = (waiting.clone(), all_tx.clone());
                        handle.spawn(async move {
                            if waiting.fetch_add(1, Ordering::AcqRel) + 1 == all {
                                let _ = all_tx.lock().unwrap().take().unwrap().send(());
                            }
                            match (thread + i) % 3 {
                                0 => h.draining().await,
                                1 => {
                                    h.draining().await;
                                    std::future::pending::<()>().await
                                }
                                _ => {
                                    h.cancelled().await;
                                    std::future::pending::<()>().await
                                }
                            }
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let joins: Vec<_> = spawners
        .into_iter()
        .flat_map(|spawner| spawner.join().unwrap())
        .collect();
    all_rx.await.unwrap();
    handle.stop();
    let outcome = bounded(lifecycle.run()).await;
    let mut ended = 0;
    let mut cancelled = 0;
    for join in joins {
        match bounded(join).await.unwrap() {
            Some(()) => ended += 1,
            None => cancelled += 1,
        }
    }
    let expected_ended = (0..spawn_threads)
        .flat_map(|thread| (0..PER_THREAD).map(move |i| (thread + i) % 3))
        .filter(|&kind| kind == 0)
        .count();
    assert_eq!(ended, expected_ended);
    assert_eq!(cancelled, all - expected_ended);
    assert_eq!(outcome.cancelled_work(), all - expected_ended, "{outcome}");
}

/// Runs `scenario(threads_arg)` as `<name>_threads` on a 2-worker runtime and
/// `scenario(paused_arg)` as `<name>_paused` on a paused current-thread runtime.
macro_rules! on_both_runtimes {
    ($name:ident: $scenario:ident($($threads:expr)?), paused($($paused:expr)?)) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn threads() {
                super::$scenario($($threads)?).await;
            }

            #[tokio::test(start_paused = true)]
            async fn paused() {
                super::$scenario($($paused)?).await;
            }
        }
    };
}

on_both_runtimes!(a_milestone_dropped_in_the_same_poll_covers_nothing: a_milestone_dropped_in_the_same_poll(), paused());
on_both_runtimes!(another_lifecycles_milestone_covers_nothing: another_lifecycles_milestone(), paused());
on_both_runtimes!(a_milestone_polled_with_another_waker_covers_nothing: a_milestone_polled_with_another_waker(), paused());
on_both_runtimes!(many_covered_tasks_end_or_are_cancelled: many_covered_tasks(4), paused(1));
