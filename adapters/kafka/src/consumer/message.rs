//! [`ConsumedMessage`]: librdkafka's own message, lent to the handler without a copy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::Timestamp;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, OwnedMessage};

use super::poll::PollContext;

/// A message the [`Consumer`](super::Consumer) fetched, as its handler receives it: the
/// message librdkafka fetched, not a copy. Read it through [`rdkafka::Message`] (`payload`,
/// `key`, `topic`, `partition`, `offset`, `timestamp`, `headers`), or take an owned copy with
/// [`detach`](ConsumedMessage::detach).
///
/// It may be sent to other tasks and threads and kept as long as needed; while it lives it
/// keeps the consumer's librdkafka client (and so its threads) alive, so a message kept after
/// the consumer closed delays the client's destruction until it is dropped. Keep a
/// [`detach`](ConsumedMessage::detach)ed copy instead if the message must outlive its
/// handling by long.
///
/// Lending instead of copying is what lets the consumer keep pace with a hand-written
/// `StreamConsumer` loop (see the crate's BENCHMARKS.md): a copy per message, allocated on
/// the poll thread and freed on the runtime's, cost about half of the throughput.
pub struct ConsumedMessage {
    // Dropped first (fields drop in declaration order): the message must go before the client
    // it was fetched from.
    message: BorrowedMessage<'static>,
    _client: Arc<BaseConsumer<PollContext>>,
}

impl ConsumedMessage {
    /// Polls `client` (as `BaseConsumer::poll`) and keeps `client` alive for as long as the
    /// message it returns lives. Polling here, not taking a message polled elsewhere, is what
    /// makes the lifetime extension below sound whoever calls it.
    #[allow(unsafe_code)]
    pub(crate) fn poll(
        client: &Arc<BaseConsumer<PollContext>>,
        timeout: Duration,
    ) -> Option<KafkaResult<ConsumedMessage>> {
        let message = match client.poll(timeout)? {
            Ok(message) => message,
            Err(error) => return Some(Err(error)),
        };
        // SAFETY: the lifetime of a `BorrowedMessage` is only a marker (a `PhantomData`) for
        // the borrow of the consumer it was polled from: its layout does not depend on it, so
        // the transmute changes nothing but that marker. The borrow it stood for stays valid:
        // `message` was polled from `client` just above, the `Arc` below keeps that consumer alive, at the same address, for
        // as long as this value lives, and the field order drops the message before the `Arc`.
        // librdkafka allows a message (an event of the consumer's queue) to be destroyed from
        // any thread, which is why rdkafka makes `BorrowedMessage` `Send` and `Sync`. The
        // `'static` lifetime never reaches a caller: every accessor below returns borrows of
        // `&self`, and `as_borrowed` shortens the lifetime to that of `&self`.
        let message = unsafe {
            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(message)
        };
        Some(Ok(ConsumedMessage {
            message,
            _client: Arc::clone(client),
        }))
    }

    /// An owned copy of the message (payload, key, topic and headers copied).
    pub fn detach(&self) -> OwnedMessage {
        self.message.detach()
    }

    /// rdkafka's own view of the message, valid as long as this borrow.
    pub fn as_borrowed(&self) -> &BorrowedMessage<'_> {
        &self.message
    }
}

impl Message for ConsumedMessage {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }

    #[allow(unsafe_code)]
    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: the caller upholds `Message::payload_mut`'s contract, which this forwards
        // unchanged to the message it wraps.
        unsafe { self.message.payload_mut() }
    }

    fn topic(&self) -> &str {
        self.message.topic()
    }

    fn partition(&self) -> i32 {
        self.message.partition()
    }

    fn offset(&self) -> i64 {
        self.message.offset()
    }

    fn timestamp(&self) -> Timestamp {
        self.message.timestamp()
    }

    fn headers(&self) -> Option<&BorrowedHeaders> {
        self.message.headers()
    }
}

impl fmt::Debug for ConsumedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedMessage")
            .field("topic", &self.message.topic())
            .field("partition", &self.message.partition())
            .field("offset", &self.message.offset())
            .field("key_len", &self.message.key().map(<[u8]>::len))
            .field("payload_len", &self.message.payload().map(<[u8]>::len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, Weak};
    use std::time::{Duration, Instant};

    use lifecycle_hooks::testing;
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

    use super::{ConsumedMessage, PollContext};
    use crate::Consumer;

    const TOPIC: &str = "lent";
    const COUNT: usize = 20;

    /// Produces `m-0..m-<COUNT>` to the single partition of `TOPIC` on the consumer's own
    /// mock cluster.
    fn seed(consumer: &Consumer) {
        let cluster = consumer.mock_cluster().expect("the embedded mock cluster");
        cluster.create_topic(TOPIC, 1).expect("the topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("a producer");
        for i in 0..COUNT {
            let payload = format!("m-{i}");
            producer
                .send(BaseRecord::<(), str>::to(TOPIC).payload(&payload))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("flushed");
    }

    fn client(consumer: &Consumer) -> Weak<BaseConsumer<PollContext>> {
        Arc::downgrade(&consumer.inner.client)
    }

    /// Messages a handler keeps are still readable after the lifecycle ended, the consumer
    /// closed and every handle to it was dropped, on another thread than the one that fetched
    /// them; the client lives exactly as long as the last of them.
    #[test]
    fn kept_messages_stay_readable_and_the_client_goes_with_the_last() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let kept: Arc<Mutex<Vec<ConsumedMessage>>> = Arc::default();
        let (all_tx, mut all_rx) = tokio::sync::mpsc::unbounded_channel();
        let consumer = Consumer::builder("lent-group", [TOPIC])
            .build({
                let kept = kept.clone();
                move |message, _lifecycle| {
                    let mut kept = kept.lock().expect("the kept messages");
                    kept.push(message);
                    if kept.len() == COUNT {
                        let _ = all_tx.send(());
                    }
                    std::future::ready(Ok(()))
                }
            })
            .expect("a consumer");
        seed(&consumer);
        let client = client(&consumer);
        runtime.block_on(async {
            let lifecycle = testing::builder()
                .hooks(consumer.hooks())
                .build()
                .expect("a graph");
            let handle = lifecycle.handle();
            let run = tokio::spawn(lifecycle.run());
            all_rx.recv().await.expect("every message handled");
            handle.stop();
            let outcome = run.await.expect("the run ends");
            assert_eq!(outcome.exit_code(), 0, "{outcome}");
        });
        assert_eq!(consumer.stats().committed, COUNT as u64);
        drop(consumer);
        drop(runtime);
        let kept = std::mem::take(&mut *kept.lock().expect("the kept messages"));
        assert!(
            client.upgrade().is_some(),
            "the kept messages keep their client alive"
        );
        let read = std::thread::spawn(move || {
            let payloads: Vec<String> = kept
                .iter()
                .map(|m| String::from_utf8(m.payload().expect("a payload").to_vec()).unwrap())
                .collect();
            let detached = kept[3].detach();
            assert_eq!(detached.payload(), Some(&b"m-3"[..]));
            assert_eq!(kept[3].as_borrowed().offset(), 3);
            assert!(format!("{:?}", kept[3]).contains("offset: 3"));
            (payloads, kept)
        });
        let (payloads, kept) = read.join().expect("read on another thread");
        let expected: Vec<String> = (0..COUNT).map(|i| format!("m-{i}")).collect();
        assert_eq!(payloads, expected);
        drop(kept);
        assert!(
            client.upgrade().is_none(),
            "the client is destroyed with the last message"
        );
    }

    /// Fetched messages still buffered when the last handle goes (the consumer never closed)
    /// do not keep the client alive through its own context: the client is destroyed.
    #[test]
    fn buffered_messages_do_not_keep_a_dropped_consumer_alive() {
        let consumer = Consumer::builder("buffered-group", [TOPIC])
            .build(|_message, _lifecycle| std::future::ready(Ok(())))
            .expect("a consumer");
        seed(&consumer);
        let client = client(&consumer);
        {
            let inner = &consumer.inner;
            inner.client.subscribe(&[TOPIC]).expect("subscribed");
            let deadline = Instant::now() + Duration::from_secs(30);
            let message = loop {
                assert!(Instant::now() < deadline, "no message within 30 s");
                match ConsumedMessage::poll(&inner.client, Duration::from_millis(100)) {
                    Some(Ok(message)) => break message,
                    Some(Err(error)) => panic!("{error}"),
                    None => {}
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            inner.shared.lock().entry(&key).queue.push_back(message);
        }
        drop(consumer);
        assert!(
            client.upgrade().is_none(),
            "a buffered message kept the client alive"
        );
    }
}
