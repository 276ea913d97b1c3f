//! A Redis reliable queue. See [`RedisSource`].
//!
//! One job per file: [`source`] is the [`JobSource`](crate::JobSource) and its builder,
//! [`admin`] the producer and inspection calls, [`lease`] the heartbeat, [`connection`] the
//! connections, [`scripts`] the Lua scripts and their calls, [`keys`] the key layout and names,
//! [`codec`] how a job is stored.

mod admin;
mod codec;
mod connection;
mod keys;
mod lease;
mod scripts;
mod source;

pub use keys::RedisKeys;
pub use source::{RedisSource, RedisSourceBuilder};
