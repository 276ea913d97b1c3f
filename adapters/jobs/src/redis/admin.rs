//! What producers and operators call: enqueue, inspect, sweep orphans.

use redis::cmd;

use crate::errors::RedisSourceError;
use crate::job::Job;

use super::codec::encode;
use super::source::RedisSource;

impl RedisSource {
    /// Pushes a job at the tail of the queue (a producer's call).
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn enqueue(&self, job: &Job) -> Result<(), RedisSourceError> {
        self.enqueue_all(std::slice::from_ref(job)).await
    }

    /// Pushes jobs at the tail of the queue, in order, in one command.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn enqueue_all(&self, jobs: &[Job]) -> Result<(), RedisSourceError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut command = cmd("RPUSH");
        command.arg(&self.inner.keys.queue);
        for job in jobs {
            command.arg(encode(job));
        }
        let mut conn = self.conn().await?;
        command
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.broken("RPUSH", error))?;
        Ok(())
    }

    /// The jobs waiting in the queue, head (next to be fetched) first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn queued(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.queue).await
    }

    /// The jobs in this process's processing list (fetched, not yet settled), oldest first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn processing(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.processing).await
    }

    /// The dead jobs, newest first.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn dead(&self) -> Result<Vec<Job>, RedisSourceError> {
        self.list(&self.inner.keys.dead).await
    }

    /// Recovers the jobs of every other process registered for this queue whose lease has
    /// expired: they go back to the head of the queue. [`JobSource::start`](crate::JobSource::start) does this; call it
    /// again to sweep periodically.
    ///
    /// # Errors
    ///
    /// [`RedisSourceError`] if Redis cannot be reached or refuses.
    pub async fn recover_orphans(&self) -> Result<Vec<Job>, RedisSourceError> {
        let mut conn = self.conn().await?;
        let processes: Vec<String> = cmd("SMEMBERS")
            .arg(&self.inner.keys.processes)
            .query_async(&mut conn)
            .await
            .map_err(|error| self.broken("SMEMBERS", error))?;
        let mut recovered = Vec::new();
        for process in processes.iter().filter(|p| **p != self.inner.process) {
            if let Some(jobs) = self.recover(process, false).await? {
                if !jobs.is_empty() {
                    tracing::warn!(
                        queue = %self.inner.queue,
                        process = %process,
                        count = jobs.len(),
                        "recovered the jobs of a process whose lease expired"
                    );
                }
                recovered.extend(jobs);
            }
        }
        Ok(recovered)
    }

    pub(super) async fn list(&self, key: &str) -> Result<Vec<Job>, RedisSourceError> {
        let mut conn = self.conn().await?;
        let values: Vec<Vec<u8>> = cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .map_err(|error| self.broken("LRANGE", error))?;
        Ok(values
            .into_iter()
            .map(|raw| self.decode_lossy(raw))
            .collect())
    }
}
