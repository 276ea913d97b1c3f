//! Points of the stop that work waits for, and the reload guard. See [`Milestone`].

use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::control::ControlCell;
use crate::notify::Notifier;

/// A point in the stop: intake stopped, drain begun, or work cancelled. From
/// [`LifecycleHandle::intake_stopped`](crate::LifecycleHandle::intake_stopped),
/// [`draining`](crate::LifecycleHandle::draining) and
/// [`cancelled`](crate::LifecycleHandle::cancelled).
///
/// Await it (`handle.draining().await`; `tokio::select!` takes it as it is), check it without
/// waiting with [`is_reached`](Self::is_reached), or take a [`token`](Self::token). Where an API
/// wants a `Future` (axum's `with_graceful_shutdown`, `std::pin::pin!`), pass
/// `.into_future()`. It is one token clone, and awaiting it adds nothing: a task that waits on
/// it costs what a task waiting on a `CancellationToken` costs.
///
/// ```
/// use lifecycle_hooks::testing;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = testing::builder().build().unwrap();
/// let handle = lifecycle.handle();
/// let draining = handle.draining();
/// assert!(!draining.is_reached());
/// handle.spawn({
///     let draining = draining.clone();
///     async move { draining.await } // finish the current unit of work, then return
/// });
/// handle.stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert!(draining.is_reached());
/// # }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Milestone does nothing unless awaited or checked"]
pub struct Milestone {
    token: CancellationToken,
}

impl Milestone {
    pub(crate) fn new(token: &CancellationToken) -> Self {
        Milestone {
            token: token.clone(),
        }
    }

    /// Whether the stop has reached this point.
    pub fn is_reached(&self) -> bool {
        self.token.is_cancelled()
    }

    /// A token cancelled at this point: a child, so cancelling it affects only itself.
    pub fn token(&self) -> CancellationToken {
        self.token.child_token()
    }
}

impl std::future::IntoFuture for Milestone {
    type Output = ();
    type IntoFuture = WaitForCancellationFutureOwned;

    /// Completes when the stop reaches this point.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the future owns what it needs, and dropping it loses nothing.
    fn into_future(self) -> Self::IntoFuture {
        self.token.cancelled_owned()
    }
}

/// A configuration reload under way, from
/// [`LifecycleHandle::reloading`](crate::LifecycleHandle::reloading): systemd hears `READY=1`
/// when it is [done](Self::done) or dropped.
#[derive(Debug)]
#[must_use = "systemd hears READY=1 when the Reload is done or dropped"]
pub struct Reload {
    pub(crate) notifier: Option<Arc<Notifier>>,
    /// Read when the reload ends: once a stop has begun, systemd has heard `STOPPING=1`, and
    /// `READY=1` after it would contradict it.
    pub(crate) control: Arc<ControlCell>,
}

impl Reload {
    /// The reload is over: tells systemd `READY=1`.
    pub fn done(self) {}
}

impl Drop for Reload {
    fn drop(&mut self) {
        if let Some(notifier) = &self.notifier
            && self.control.get().reason.is_none()
        {
            notifier.send("READY=1");
        }
    }
}
