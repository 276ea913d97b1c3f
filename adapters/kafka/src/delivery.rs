//! One message's delivery result, from librdkafka's report to its sender. See [`DeliveryFuture`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::errors::SendError;

/// Where a message was delivered, and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The partition the message was written to.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// From the moment it was queued to the broker's acknowledgement.
    pub latency: Duration,
}

/// Travels with a message through librdkafka (as its delivery opaque) and is shared with the
/// message's [`DeliveryFuture`]: one allocation per message for both the send time and the
/// result, where a `Box` around a `oneshot::Sender` would take two.
#[derive(Debug)]
pub(crate) struct Pending {
    /// A raw reading of the producer's clock when the message was queued.
    pub(crate) queued_at: u64,
    /// Locked once by the delivery callback and once or twice by the future's polls; never
    /// across anything that blocks.
    slot: Mutex<Slot>,
}

#[derive(Debug)]
enum Slot {
    /// No report yet; the waker of the last poll.
    Waiting(Option<Waker>),
    Ready(Result<Delivery, SendError>),
    Taken,
}

impl Pending {
    /// A pending delivery queued at `queued_at`, and the future of its result.
    pub(crate) fn new(queued_at: u64) -> (Arc<Pending>, DeliveryFuture) {
        let pending = Arc::new(Pending {
            queued_at,
            slot: Mutex::new(Slot::Waiting(None)),
        });
        let future = DeliveryFuture {
            pending: Arc::clone(&pending),
        };
        (pending, future)
    }

    /// Stores the result and wakes the future. Called once, by the delivery callback.
    pub(crate) fn complete(&self, result: Result<Delivery, SendError>) {
        let waker = {
            // Nothing panics while the lock is held, so a poisoned lock is still consistent.
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *slot, Slot::Ready(result)) {
                Slot::Waiting(waker) => waker,
                // Already completed: keep the first result.
                earlier => {
                    *slot = earlier;
                    None
                }
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The delivery result of a queued message, from [`Producer::try_send`](crate::Producer::try_send).
///
/// Dropping it does not cancel the message: it is still delivered (or purged at close) and
/// counted.
///
/// # Panics
///
/// Polling it again after it returned `Ready` panics.
#[derive(Debug)]
#[must_use = "the delivery result tells whether the message reached the broker"]
pub struct DeliveryFuture {
    pending: Arc<Pending>,
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self
            .pending
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Ready(result) => Poll::Ready(result),
            Slot::Waiting(waker) => {
                let waker = match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => waker,
                    _ => cx.waker().clone(),
                };
                *slot = Slot::Waiting(Some(waker));
                Poll::Pending
            }
            Slot::Taken => panic!("DeliveryFuture polled after it completed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::FutureExt;

    fn delivered() -> Result<Delivery, SendError> {
        Ok(Delivery {
            partition: 1,
            offset: 7,
            latency: Duration::from_millis(2),
        })
    }

    #[tokio::test]
    async fn the_future_waits_for_the_report_then_yields_it() {
        let (pending, mut future) = Pending::new(0);
        assert!((&mut future).now_or_never().is_none());
        let waiter = tokio::spawn(future);
        pending.complete(delivered());
        let delivery = waiter.await.unwrap().unwrap();
        assert_eq!((delivery.partition, delivery.offset), (1, 7));
    }

    #[test]
    fn a_report_before_the_first_poll_is_kept_and_a_second_is_ignored() {
        let (pending, future) = Pending::new(0);
        pending.complete(delivered());
        pending.complete(Err(SendError::Closed(crate::ProducerClosed)));
        assert!(matches!(future.now_or_never(), Some(Ok(_))));
    }
}
