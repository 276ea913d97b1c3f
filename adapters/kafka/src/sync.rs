//! The synchronization the producer's gate (`state.rs`) uses, switched to loom's by
//! `--cfg lifecycle_loom` so that code runs under loom's model checker (its tests at the bottom
//! of `state.rs`).

#[cfg(not(lifecycle_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(not(lifecycle_loom))]
pub(crate) use tokio::sync::Notify;
#[cfg(not(lifecycle_loom))]
pub(crate) use tokio::sync::futures::Notified;

#[cfg(lifecycle_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(lifecycle_loom)]
pub(crate) use loom_notify::{Notified, Notify};

/// tokio's `Notify` as the gate uses it, on loom's types: `notify_waiters` completes every
/// `Notified` created before the call (registered or not), as tokio documents; nothing else.
#[cfg(lifecycle_loom)]
mod loom_notify {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// The number of `notify_waiters` calls so far, and the wakers of the futures waiting.
    #[derive(Debug, Default)]
    pub(crate) struct Notify {
        state: loom::sync::Mutex<(u64, Vec<Waker>)>,
    }

    impl Notify {
        pub(crate) fn notify_waiters(&self) {
            let wakers = {
                let mut state = self.state.lock().unwrap();
                state.0 += 1;
                std::mem::take(&mut state.1)
            };
            for waker in wakers {
                waker.wake();
            }
        }

        pub(crate) fn notified(&self) -> Notified<'_> {
            let epoch = self.state.lock().unwrap().0;
            Notified {
                notify: self,
                epoch,
            }
        }
    }

    /// Completes once `notify_waiters` was called after it was created.
    #[derive(Debug)]
    pub(crate) struct Notified<'a> {
        notify: &'a Notify,
        epoch: u64,
    }

    impl Notified<'_> {
        /// A no-op here: the epoch taken at creation already counts it as waiting.
        pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
            false
        }
    }

    impl Future for Notified<'_> {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut state = self.notify.state.lock().unwrap();
            if state.0 != self.epoch {
                return Poll::Ready(());
            }
            state.1.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
