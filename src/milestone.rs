//! Points of the stop that work waits for, and the reload guard. See [`Milestone`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
/// `.into_future()`. It is a token clone and the lifecycle's identity; a task spawned with
/// [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn) that waits on one of its own
/// lifecycle's milestones needs nothing else to be cancelled at the drain deadline (no waker
/// of its own kept by the lifecycle), so it costs what a task waiting on a `CancellationToken`
/// costs.
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
    /// The lifecycle's identity for [`crate::cancel::claim`] (its `CancelWake::id`).
    owner: u64,
}

impl Milestone {
    /// A milestone of the lifecycle `owner`; `token` must be cancelled no later than that
    /// lifecycle cancels its spawned tasks (`Shared::cancel_work`).
    pub(crate) fn new(token: &CancellationToken, owner: u64) -> Self {
        Milestone {
            token: token.clone(),
            owner,
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
    type IntoFuture = MilestoneFuture;

    /// Completes when the stop reaches this point.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the future owns what it needs, and dropping it loses nothing.
    fn into_future(self) -> Self::IntoFuture {
        MilestoneFuture {
            wait: self.token.cancelled_owned(),
            owner: self.owner,
        }
    }
}

pin_project_lite::pin_project! {
    /// A [`Milestone`] awaited: completes when the stop reaches it. Cancel safe.
    ///
    /// Inside a task spawned with [`LifecycleHandle::spawn`](crate::LifecycleHandle::spawn) on
    /// the same lifecycle, a poll that leaves it waiting tells the task's wrapper so (see
    /// `cancel::claim`): the milestone will wake the task by the drain deadline, so the task
    /// needs no waker of its own kept for the deadline's cancellation.
    #[must_use = "futures do nothing unless polled"]
    pub struct MilestoneFuture {
        #[pin]
        wait: WaitForCancellationFutureOwned,
        owner: u64,
    }

    impl PinnedDrop for MilestoneFuture {
        fn drop(this: Pin<&mut Self>) {
            // If it covered the task being polled, it covers it no more.
            crate::cancel::release(std::ptr::from_ref::<MilestoneFuture>(&*this) as usize);
        }
    }
}

impl Future for MilestoneFuture {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Pinned: the address stays the same until the drop (which `release`s it).
        let at = std::ptr::from_ref::<Self>(&*self) as usize;
        let this = self.project();
        let polled = this.wait.poll(cx);
        if polled.is_pending() {
            crate::cancel::claim(*this.owner, cx.waker(), at);
        }
        polled
    }
}

impl std::fmt::Debug for MilestoneFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MilestoneFuture").finish_non_exhaustive()
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
