//! Driving a lifecycle in tests without OS signals. See [`Recorder`] and [`builder`].

use std::sync::Arc;

use parking_lot::Mutex;

use crate::builder::Builder;
use crate::event::Event;
use crate::handle::LifecycleHandle;
use crate::lifecycle::Lifecycle;
use crate::signals::Signals;

/// A builder for tests: no OS signal handlers, no hard exit, no systemd notifications.
///
/// Deliver signals with [`LifecycleHandle::trigger`](crate::LifecycleHandle::trigger); run under
/// paused tokio time so deadlines are exact and instant.
pub fn builder() -> Builder {
    Lifecycle::builder()
        .signals(Signals::none())
        .hard_exit(false)
        .systemd_notify(false)
}

/// Stops the lifecycle once it is ready, from a spawned task: a stop that arrives before
/// `running` skips it (no `ready` event), so tests that want the whole graph stop this way.
///
/// # Panics
///
/// Panics if called outside a tokio runtime.
pub fn stop_when_ready(handle: &LifecycleHandle) {
    let handle = handle.clone();
    tokio::spawn(async move {
        // Err only if the lifecycle is gone, and then there is nothing left to stop.
        if handle.readiness().wait_for(|ready| *ready).await.is_ok() {
            handle.stop();
        }
    });
}

/// Records every event in order, to assert on after (or during) a run.
///
/// ```
/// use lifecycle_hooks::testing::{self, Recorder};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let recorder = Recorder::new();
/// let lifecycle = testing::builder()
///     .on_shutdown("announce", |_ctx| async {})
///     .on_exit("close", |_ctx| async {})
///     .observe(recorder.observer())
///     .build()
///     .unwrap();
/// lifecycle.handle().stop();
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.exit_code(), 0);
/// let trace = recorder.trace();
/// assert!(recorder.before("hook shutdown announce ok", "phase wait"));
/// assert_eq!(trace.last().unwrap(), "finished stop 0");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// Events, and the test's own marks, in order. Locked only to push or copy.
    entries: Arc<Mutex<Vec<Entry>>>,
}

#[derive(Clone, Debug)]
enum Entry {
    Event(Event),
    Mark(String),
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Recorder::default()
    }

    /// The observer to pass to [`Builder::observe`].
    pub fn observer(&self) -> impl Fn(&Event) + Send + Sync + 'static + use<> {
        let entries = Arc::clone(&self.entries);
        move |event| entries.lock().push(Entry::Event(event.clone()))
    }

    /// Puts the test's own line into the trace, as `mark <label>`, in order with the events
    /// (for example where a piece of tracked work ended).
    pub fn mark(&self, label: impl Into<String>) {
        self.entries.lock().push(Entry::Mark(label.into()));
    }

    /// Every event so far (marks left out).
    pub fn events(&self) -> Vec<Event> {
        self.entries
            .lock()
            .iter()
            .filter_map(|entry| match entry {
                Entry::Event(event) => Some(event.clone()),
                Entry::Mark(_) => None,
            })
            .collect()
    }

    /// Every event so far as a short line: `phase drain`, `skipped wait`, `hook exit close ok`,
    /// `ready`, `triggered restart`, `quiet`, `absorbed SIGTERM`, `escalated SIGTERM`,
    /// `cancelled 3`, `stuck a,b`, `finished stop 0`, and the test's `mark <label>` lines. Drain
    /// progress and state dumps are left out.
    pub fn trace(&self) -> Vec<String> {
        self.entries
            .lock()
            .iter()
            .filter_map(|entry| {
                let event = match entry {
                    Entry::Event(event) => event,
                    Entry::Mark(label) => return Some(format!("mark {label}")),
                };
                Some(match event {
                    Event::PhaseStarted { phase } => format!("phase {phase}"),
                    Event::PhaseSkipped { phase } => format!("skipped {phase}"),
                    Event::HookFinished {
                        phase,
                        name,
                        result,
                        ..
                    } => format!("hook {phase} {name} {result}"),
                    Event::Ready => "ready".into(),
                    Event::Triggered { reason, .. } => format!("triggered {reason}"),
                    Event::Quiet => "quiet".into(),
                    Event::Absorbed { signal } => format!("absorbed {signal}"),
                    Event::Escalated { signal } => format!("escalated {signal}"),
                    Event::WorkCancelled { count } => format!("cancelled {count}"),
                    Event::WorkStuck { items } => format!(
                        "stuck {}",
                        items
                            .iter()
                            .map(|i| i.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                    Event::Finished { reason, exit_code } => {
                        format!("finished {reason} {exit_code}")
                    }
                    _ => return None,
                })
            })
            .collect()
    }

    /// Where `line` first appears in [`trace`](Self::trace).
    pub fn position(&self, line: &str) -> Option<usize> {
        self.trace().iter().position(|l| l == line)
    }

    /// Whether both lines appear in the trace and `first` comes before `second`.
    pub fn before(&self, first: &str, second: &str) -> bool {
        match (self.position(first), self.position(second)) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        }
    }
}
