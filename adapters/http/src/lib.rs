//! hyper/axum serving bound to a [`lifecycle_hooks`] phase graph.
//!
//! Start at [`HttpServer`] (or [`serve`]): each request is tracked work, the listener closes at
//! `stop_intake`, idle keep-alive connections close at once, HTTP/2 connections get GOAWAY,
//! handlers reach the drain through [`Draining`], and what the deadline cuts is counted and named.

mod body;
mod connection;
mod counters;
mod draining;
pub mod errors;
mod server;
mod service;

pub use axum::serve::{Listener, ListenerExt};
pub use counters::Counters;
pub use draining::Draining;
pub use server::{DEFAULT_KEEP_ALIVE_GRACE, DEFAULT_NAME, HttpServer, HttpServerBuilder, serve};
