//! The lifecycle value users build and run. See [`Lifecycle`].

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::handle::LifecycleHandle;
use crate::outcome::Outcome;
use crate::plan::Plan;
use crate::runner::{Runner, immediate};

/// A service's lifecycle: a validated phase graph, ready to [`run`](Lifecycle::run).
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::{Lifecycle, Signal, Signals};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = Lifecycle::builder()
///     .signals(Signals::none())
///     .on_shutdown("announce", |_ctx| async { println!("shutting down") })
///     .on_exit("close_producer", |_ctx| async { Ok::<(), std::io::Error>(()) })
///     .build()
///     .expect("a valid lifecycle graph");
/// let handle = lifecycle.handle();
/// handle.spawn({
///     let handle = handle.clone();
///     async move { handle.draining().await }
/// });
/// handle.trigger(Signal::Usr2);
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 4); // a clean restart
/// # }
/// ```
pub struct Lifecycle {
    handle: LifecycleHandle,
    plan: Option<Plan>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

/// Aborts the lifecycle's helper tasks (signal listener, watchdog, stop-timeout keepalive) when
/// the run ends or its future is dropped.
struct Helpers(Vec<JoinHandle<()>>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Lifecycle {
    pub(crate) fn new(handle: LifecycleHandle, plan: Plan) -> Self {
        Lifecycle {
            handle,
            plan: Some(plan),
        }
    }

    /// A handle to this lifecycle; clone it freely.
    pub fn handle(&self) -> LifecycleHandle {
        self.handle.clone()
    }

    /// Runs the whole graph: startup, running until a trigger, then stop intake, drain,
    /// shutdown hooks, wait, exit hooks. Returns the [`Outcome`].
    ///
    /// Orders it guarantees: exit hooks start only after all tracked work has ended or was
    /// cancelled at the drain deadline; shutdown hooks run while work may still be in flight;
    /// every exit-side hook runs even if earlier hooks failed or the stop was escalated.
    ///
    /// OS signal handlers are installed for the run only: when it ends (or its future is
    /// dropped) the signals it handled get their default action back, and the watchdog stops.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future abandons the hook that is running and leaves the
    /// remaining hooks unrun (the signal handlers and helper tasks are still removed). Let it
    /// finish; stop it with a trigger.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime. Hook panics are caught and reported.
    pub async fn run(mut self) -> Outcome {
        let plan = self.plan.take().expect("run consumes the lifecycle");
        let shared = &self.handle.shared;
        let mut helpers = Helpers(Vec::new());
        // Dropped (handlers restored) when the run ends or its future is dropped.
        let deliver = {
            let handle = self.handle.clone();
            move |signal| handle.trigger(signal)
        };
        let _signals = match shared.config.signals.listen(deliver) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(target: "lifecycle_hooks", %error, "could not install signal handlers");
                None
            }
        };
        if let Some(notifier) = &shared.config.notifier {
            if let Some(period) = notifier.watchdog {
                let handle = self.handle.clone();
                // Fed from the runtime itself: if the runtime stalls, systemd stops hearing it.
                helpers.0.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    loop {
                        tick.tick().await;
                        if let Some(notifier) = &handle.shared.config.notifier {
                            notifier.send("WATCHDOG=1");
                        }
                    }
                }));
            }
            helpers
                .0
                .push(tokio::spawn(keep_stop_timeout(self.handle.clone())));
        }
        let mut runner = Runner::new(&self.handle, &plan);
        let third = tokio::select! {
            biased;
            signal = immediate(shared) => Some(signal),
            () = runner.run_graph() => None,
        };
        drop(helpers);
        runner.finish(third)
    }
}

/// Once the runner has told systemd `STOPPING=1`, keeps its stop timeout at the end of the
/// budget (plus a second to exit) with `EXTEND_TIMEOUT_USEC`, every second until the end, so a
/// `TimeoutStopSec` shorter than the budget never kills a stop during its hooks.
async fn keep_stop_timeout(handle: LifecycleHandle) {
    let shared = &handle.shared;
    shared.stopping_sent.cancelled().await;
    let Some(deadlines) = shared.control.get().deadlines else {
        return;
    };
    // The runner sent the first extension with `STOPPING=1`; from a second on, each tick.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tick.tick().await;
        let left = deadlines.budget_left();
        if let Some(notifier) = &shared.config.notifier {
            notifier.extend_timeout(left + Duration::from_secs(1));
        }
        if left.is_zero() {
            return;
        }
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if self.plan.is_some() {
            let shared = &self.handle.shared;
            tracing::warn!(
                target: "lifecycle_hooks",
                in_flight = shared.tracker.len(),
                "lifecycle dropped without running: tracked work is cancelled and no hook runs"
            );
            shared.end_intake_and_drain();
            shared.cancel_work();
            shared.tracker.close();
            shared.events.close();
        }
    }
}
