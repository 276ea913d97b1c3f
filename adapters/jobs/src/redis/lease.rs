//! This process's lease and its heartbeat.

use std::sync::{Arc, Weak};

use tokio::time::MissedTickBehavior;

use crate::errors::RedisSourceError;

use super::source::{Inner, RedisSource};

impl RedisSource {
    /// Refreshes this process's lease and registers it; true if it had been unregistered.
    pub(super) async fn beat(&self) -> Result<bool, RedisSourceError> {
        let mut invocation = self.inner.scripts.beat.prepare_invoke();
        invocation
            .key(&self.inner.keys.alive)
            .key(&self.inner.keys.processes)
            .arg(&self.inner.process)
            .arg(self.inner.lease.as_millis() as u64);
        let mut conn = self.conn().await?;
        let added: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|error| self.broken("beat (script)", error))?;
        Ok(added == 1)
    }

    pub(super) fn spawn_heartbeat(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.lease / 3;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let source = RedisSource { inner };
                match source.beat().await {
                    Ok(false) => {}
                    Ok(true) => tracing::warn!(
                        queue = %source.inner.queue,
                        process = %source.inner.process,
                        "this process's lease had lapsed and a peer unregistered it, recovering the jobs it held (they may run twice); registered again"
                    ),
                    Err(error) => {
                        tracing::warn!(queue = %source.inner.queue, error = %lifecycle_hooks::errors::chain(&error), "lease refresh failed")
                    }
                }
            }
        });
        if let Some(previous) = self.inner.heartbeat.lock().replace(task) {
            previous.abort();
        }
    }
}
