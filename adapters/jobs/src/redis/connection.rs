//! The command connection, shared, and the fetch connection's end.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, cmd};

use crate::errors::RedisSourceError;

use super::source::RedisSource;

impl RedisSource {
    /// A connection's settings: every command of it is answered within `response_timeout` or
    /// fails, so a Redis that stops answering (a frozen host, a silent partition) is an error,
    /// never a wait without end.
    pub(super) fn connection_config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(self.inner.connect_timeout)
            .set_response_timeout(response_timeout)
    }

    pub(super) async fn conn(&self) -> Result<MultiplexedConnection, RedisSourceError> {
        if let Some(conn) = self.inner.conn.lock().clone() {
            return Ok(conn);
        }
        let conn = self
            .inner
            .client
            .get_multiplexed_async_connection_with_config(
                &self.connection_config(self.inner.response_timeout),
            )
            .await
            .map_err(RedisSourceError::Connect)?;
        *self.inner.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    /// Wraps a command's error; forgets the connection if it is broken.
    pub(super) fn broken(&self, command: &'static str, error: RedisError) -> RedisSourceError {
        if (error.is_io_error() || error.is_unrecoverable_error()) && !error.is_timeout() {
            *self.inner.conn.lock() = None;
        }
        RedisSourceError::Command {
            command,
            source: error,
        }
    }

    /// Kills the fetch connection, so a `BLMOVE` still blocked on it cannot take a job.
    pub(super) async fn kill_fetch_connection(&self) -> Result<(), RedisSourceError> {
        let Some(id) = self.inner.fetch_client.lock().take() else {
            return Ok(());
        };
        let mut conn = self.conn().await?;
        cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|error| self.broken("CLIENT KILL", error))?;
        Ok(())
    }
}
