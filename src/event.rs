//! Lifecycle events, for tests, metrics and progress output. See [`Event`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::outcome::{HookResult, Reason, WorkItem};
use crate::phase::Phase;
use crate::signals::Signal;

/// Something the lifecycle did. Every event is also a `tracing` event with the same fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A phase began.
    PhaseStarted {
        /// The phase.
        phase: Phase,
    },
    /// A phase was skipped (escalation, deadline, failed startup).
    PhaseSkipped {
        /// The phase.
        phase: Phase,
    },
    /// A hook ended, or was skipped.
    HookFinished {
        /// Its phase.
        phase: Phase,
        /// Its name.
        name: String,
        /// How it ended.
        result: HookResult,
        /// How long it ran.
        elapsed: Duration,
    },
    /// The service is ready: startup is done and `running` began.
    Ready,
    /// A stop, restart or failure began the stop.
    Triggered {
        /// Why.
        reason: Reason,
        /// The signal, if a signal did it.
        signal: Option<Signal>,
    },
    /// Quiet was requested: intake stops, the service keeps running.
    Quiet,
    /// A stop signal arrived during a restart and was absorbed: still a restart.
    Absorbed {
        /// The signal.
        signal: Signal,
    },
    /// A second terminating signal: skipping to the exit hooks.
    Escalated {
        /// The signal.
        signal: Signal,
    },
    /// Tracked work was still running at the drain deadline and was cancelled.
    WorkCancelled {
        /// How many items.
        count: usize,
    },
    /// Named work still running at the drain deadline (or on escalation), just before it is
    /// cancelled: what blocked the stop. Emitted only when such work exists.
    WorkStuck {
        /// Each item, with its phase and age.
        items: Vec<WorkItem>,
    },
    /// Drain progress, reported when the wait begins and each time work ends.
    Draining {
        /// Tracked work still in flight.
        in_flight: usize,
        /// Time left until the drain deadline.
        drain_left: Duration,
    },
    /// A state dump was requested (`SIGTTIN`).
    StateDump(Snapshot),
    /// The run ended.
    Finished {
        /// Why it stopped.
        reason: Reason,
        /// The exit status.
        exit_code: u8,
    },
}

/// The state of a lifecycle at one moment, as dumped on `SIGTTIN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The current phase.
    pub phase: Phase,
    /// Why it is stopping, if it is.
    pub reason: Option<Reason>,
    /// Tracked work in flight.
    pub in_flight: usize,
    /// Hooks that have not run yet, as `phase/name`.
    pub pending_hooks: Vec<String>,
    /// Time left in the shutdown budget, once stopping.
    pub budget_left: Option<Duration>,
    /// Named work in flight (see
    /// [`LifecycleHandle::spawn_named`](crate::LifecycleHandle::spawn_named)), oldest first;
    /// unnamed work counts in `in_flight` only.
    pub work: Vec<WorkItem>,
}

pub(crate) type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// Delivers events to the observers fixed at build time and to streams subscribed since.
pub(crate) struct EventHub {
    pub(crate) observers: Vec<Observer>,
    /// Locked only to add a subscriber, deliver an event or close; never held across an await.
    /// `None` once the run has ended: streams end, later subscribers get an ended stream.
    subscribers: Mutex<Option<Vec<mpsc::UnboundedSender<Event>>>>,
}

impl EventHub {
    pub(crate) fn new(observers: Vec<Observer>) -> Self {
        EventHub {
            observers,
            subscribers: Mutex::new(Some(Vec::new())),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        for observer in &self.observers {
            observer(&event);
        }
        let mut subscribers = self.subscribers.lock();
        if let Some(subscribers) = subscribers.as_mut().filter(|s| !s.is_empty()) {
            subscribers.retain(|tx| tx.send(event.clone()).is_ok());
        }
    }

    pub(crate) fn subscribe(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(subscribers) = self.subscribers.lock().as_mut() {
            subscribers.push(tx);
        }
        EventStream { rx }
    }

    /// Ends every stream: the run is over (or never will be). Idempotent.
    pub(crate) fn close(&self) {
        self.subscribers.lock().take();
    }
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("observers", &self.observers.len())
            .field(
                "subscribers",
                &self.subscribers.lock().as_ref().map_or(0, Vec::len),
            )
            .finish()
    }
}

/// A stream of every [`Event`] from the moment of subscribing; it ends when the run ends (after
/// [`Event::Finished`]) or when the lifecycle is dropped unrun, even while handles live. Nothing
/// is dropped for a slow reader (the buffer is unbounded).
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// The next event, or `None` once the run has ended and every event was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is never lost if this future is dropped before it completes.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
