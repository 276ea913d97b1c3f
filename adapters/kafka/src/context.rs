//! The librdkafka client context: delivery reports, logs and errors, routed to the producer's
//! counters, its waiting senders, and `tracing`.

use std::sync::Arc;

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::delivery::{Delivery, Pending};
use crate::errors::SendError;
use crate::state::{Report, Shared};

/// The context of the producer's librdkafka client.
pub(crate) struct DeliveryContext {
    pub(crate) shared: Arc<Shared>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Global errors (a broker down, all brokers down) are not fatal for a producer: librdkafka
        // reconnects, and the close reports what could not be delivered.
        tracing::warn!(target: "librdkafka", %error, reason, "client error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        let clock = &self.shared.clock;
        let latency = clock.delta(pending.queued_at, clock.raw());
        let (report, reply) = match result {
            Ok(message) => {
                tracing::trace!(
                    target: "lifecycle_hooks_kafka",
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    latency_us = latency.as_micros() as u64,
                    "delivered"
                );
                let delivery = Delivery {
                    partition: message.partition(),
                    offset: message.offset(),
                    latency,
                };
                (Report::Delivered { latency }, Ok(delivery))
            }
            Err((error, message)) => {
                let purged = matches!(
                    error.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
                );
                tracing::warn!(
                    target: "lifecycle_hooks_kafka",
                    topic = message.topic(),
                    %error,
                    purged,
                    latency_us = latency.as_micros() as u64,
                    "not delivered"
                );
                let error = if purged {
                    SendError::Purged {
                        source: error.clone(),
                    }
                } else {
                    SendError::Delivery {
                        source: error.clone(),
                    }
                };
                (Report::Failed { purged }, Err(error))
            }
        };
        // Counted first, so a sender that sees its result also sees it in the counters. The
        // sender may have stopped waiting (its future was dropped): the report still counts.
        self.shared.record_report(report);
        pending.complete(reply);
    }
}
