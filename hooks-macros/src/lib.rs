//! Attribute macros that turn functions into lifecycle hooks: [`macro@on_startup`],
//! [`macro@on_stop_intake`], [`macro@on_shutdown`], [`macro@on_exit`] and [`macro@hook`].
//!
//! Use them through the `lifecycle-hooks` crate (its default `macros` feature), which re-exports
//! them with `hooks!` and `Builder::registered_hooks`; the generated code refers to it.
//!
//! ```
//! use lifecycle_hooks::{BoxError, hooks, on_exit, on_shutdown, testing};
//!
//! #[on_shutdown]
//! async fn announce() {
//!     println!("shutting down; jobs may still be running");
//! }
//!
//! #[on_exit]
//! async fn flush_metrics() {}
//!
//! #[on_exit(after = flush_metrics, timeout = "5s")]
//! async fn close_producer() -> Result<(), BoxError> {
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let recorder = testing::Recorder::new();
//! let lifecycle = testing::builder()
//!     .hooks(hooks![announce, close_producer, flush_metrics])
//!     .observe(recorder.observer())
//!     .build()
//!     .expect("a valid graph");
//! lifecycle.handle().stop();
//! assert_eq!(lifecycle.run().await.exit_code(), 0);
//! assert!(recorder.before("hook shutdown announce ok", "hook exit flush_metrics ok"));
//! assert!(recorder.before("hook exit flush_metrics ok", "hook exit close_producer ok"));
//! # }
//! ```
//!
//! # Registration
//!
//! A hook reaches a lifecycle in one of two ways, and may use both:
//!
//! - explicitly: `builder.hooks(hooks![announce, close_producer])` adds the hooks named, in that
//!   order. Tests and scoped setups use this.
//! - globally: `builder.registered_hooks()` adds every hook declared with these attributes in
//!   the crates linked into the binary (except `global = false` ones), in a fixed order: by
//!   module path, then in source order. The list is a `linkme` distributed slice, gathered by the
//!   linker; nothing runs before `main`.
//!
//! A hook added both ways is one hook (same name, same origin) and runs once.
//!
//! **Linking pitfall:** a crate that the binary never refers to is not linked, and the hooks it
//! declares are silently missing from `registered_hooks()`. If a crate exists only for its hooks,
//! refer to it from the binary: `use my_telemetry_hooks as _;`.
//!
//! # Errors
//!
//! Misuse is a compile error at the offending token that says how to fix it: an unknown key
//! (the message lists the valid ones), a key set twice, a bad duration, a signature the
//! framework cannot call, an attribute on something that is not a function. The function is
//! still emitted as written, so the rest of the crate and the IDE keep working.
//!
//! A phase is checked when the graph is built: `#[hook(phase = "flush_metrics")]` without a
//! declared `flush_metrics` phase makes `Builder::build` fail with an error naming the phase and
//! the hook. So do unknown `after`/`before` names and cycles.

mod attr;
mod duration;
mod expand;

use proc_macro::TokenStream;

use crate::attr::Attr;

/// Declares a startup hook: it runs before the service is ready, in registration order (then
/// `after`/`before`).
///
/// If a startup hook fails (returns an error, panics or times out), the process does not start:
/// the teardown-side hooks run (those paired with `teardown_of` only if their startup hook had
/// succeeded) and the run ends with a failure status.
///
/// ```
/// use lifecycle_hooks::{Reason, hooks, on_exit, on_startup, testing};
///
/// #[on_startup]
/// async fn open_pool() -> std::io::Result<()> {
///     Ok(())
/// }
///
/// #[on_startup(after = open_pool)]
/// async fn migrate() -> std::io::Result<()> {
///     Err(std::io::Error::other("migration 42 failed"))
/// }
///
/// #[on_exit(teardown_of = open_pool)]
/// async fn close_pool() {}
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = testing::builder()
///     .hooks(hooks![migrate, open_pool, close_pool])
///     .build()
///     .expect("a valid graph");
/// let outcome = lifecycle.run().await;
/// assert_eq!(outcome.reason(), Reason::Failure);
/// assert_eq!(outcome.exit_code(), 1);
/// assert!(outcome.hook("migrate").unwrap().result.is_failure());
/// assert!(outcome.hook("close_pool").unwrap().result.as_str() == "ok"); // the pool was opened
/// # }
/// ```
#[doc = include_str!("keys.md")]
#[proc_macro_attribute]
pub fn on_startup(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Attr::Startup, args.into(), item.into()).into()
}

/// Declares a stop-intake hook: it runs when the service stops taking new work (readiness is
/// already false), to stop listeners from accepting and consumers from fetching.
///
/// ```
/// use lifecycle_hooks::{HookContext, hooks, on_stop_intake, testing};
///
/// #[on_stop_intake(timeout = "2s")]
/// fn stop_accepting(ctx: HookContext) {
///     assert!(!ctx.handle().is_ready());
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let recorder = testing::Recorder::new();
/// let lifecycle = testing::builder()
///     .hooks(hooks![stop_accepting])
///     .observe(recorder.observer())
///     .build()
///     .expect("a valid graph");
/// lifecycle.handle().stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert!(recorder.before("phase stop_intake", "hook stop_intake stop_accepting ok"));
/// assert!(recorder.before("hook stop_intake stop_accepting ok", "phase drain"));
/// # }
/// ```
#[doc = include_str!("keys.md")]
#[proc_macro_attribute]
pub fn on_stop_intake(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Attr::StopIntake, args.into(), item.into()).into()
}

/// Declares a shutdown hook: it runs **while work may still be in flight** (Sidekiq's
/// `:shutdown`). Announce the stop here; do not close what running work still uses (a
/// producer belongs in [`macro@on_exit`]).
///
/// ```
/// use lifecycle_hooks::{hooks, on_shutdown, testing};
///
/// #[on_shutdown(name = "announce")]
/// async fn log_shutdown() {
///     println!("shutting down");
/// }
///
/// #[on_shutdown(after = announce)]
/// fn deregister() -> Result<(), std::fmt::Error> {
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let recorder = testing::Recorder::new();
/// let lifecycle = testing::builder()
///     .hooks(hooks![deregister, log_shutdown])
///     .observe(recorder.observer())
///     .build()
///     .expect("a valid graph");
/// lifecycle.handle().stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert!(recorder.before("hook shutdown announce ok", "hook shutdown deregister ok"));
/// assert!(recorder.before("hook shutdown deregister ok", "phase wait"));
/// # }
/// ```
#[doc = include_str!("keys.md")]
#[proc_macro_attribute]
pub fn on_shutdown(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Attr::Shutdown, args.into(), item.into()).into()
}

/// Declares an exit hook: it runs **after all work has ended** (Sidekiq's `:exit`), even when
/// earlier phases failed or timed out, with time reserved for it. Close producers and flush
/// telemetry here. Without `after`/`before`, exit hooks run in reverse order of registration.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use lifecycle_hooks::{BoxError, hooks, on_exit, testing};
///
/// static OPEN: AtomicBool = AtomicBool::new(true);
///
/// #[on_exit(timeout = "5s")]
/// async fn close_producer() -> Result<(), BoxError> {
///     // Relaxed: only this test thread reads it, after the run.
///     OPEN.store(false, Ordering::Relaxed);
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = testing::builder()
///     .hooks(hooks![close_producer])
///     .build()
///     .expect("a valid graph");
/// let handle = lifecycle.handle();
/// // A job still running while the stop drains: the producer must stay open for it.
/// let job = handle.spawn({
///     let handle = handle.clone();
///     async move {
///         handle.draining().await;
///         tokio::task::yield_now().await;
///         OPEN.load(Ordering::Relaxed)
///     }
/// });
/// handle.stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert_eq!(job.await.unwrap(), Some(true)); // open while the job ran
/// assert!(!OPEN.load(Ordering::Relaxed)); // closed after it
/// # }
/// ```
#[doc = include_str!("keys.md")]
#[proc_macro_attribute]
pub fn on_exit(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Attr::Exit, args.into(), item.into()).into()
}

/// Declares a hook in any phase, named by `phase = "..."`: a custom phase declared with
/// `Builder::phase`, or a built-in one (`startup`, `running`, `stop_intake`, `drain`,
/// `shutdown`, `wait`, `exit`).
///
/// The phase must exist when the graph is built: otherwise `Builder::build` fails with an error
/// that names the phase and the hook.
///
/// ```
/// use lifecycle_hooks::{Phase, PhaseSpec, errors::BuildError, hook, hooks, testing};
///
/// #[hook(phase = "flush_metrics")]
/// async fn push_gauges() {}
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let recorder = testing::Recorder::new();
/// let lifecycle = testing::builder()
///     .phase(PhaseSpec::new("flush_metrics").after(Phase::WAIT).before(Phase::EXIT))
///     .hooks(hooks![push_gauges])
///     .observe(recorder.observer())
///     .build()
///     .expect("a valid graph");
/// lifecycle.handle().stop();
/// assert_eq!(lifecycle.run().await.exit_code(), 0);
/// assert!(recorder.before("phase wait", "hook flush_metrics push_gauges ok"));
/// assert!(recorder.before("hook flush_metrics push_gauges ok", "phase exit"));
///
/// // Without the phase declared:
/// let err = testing::builder().hooks(hooks![push_gauges]).build().unwrap_err();
/// assert!(matches!(&err, BuildError::UnknownPhase { phase, .. } if phase == "flush_metrics"));
/// assert!(err.to_string().starts_with("hook `push_gauges` names phase `flush_metrics`"));
/// # }
/// ```
///
/// With `crate = "..."`, the generated code reaches the framework through another path, for a
/// renamed dependency or a re-export:
///
/// ```
/// extern crate lifecycle_hooks as lh;
///
/// #[lh::hook(phase = "drain", crate = "lh")]
/// fn tell_jobs_to_wrap_up() {}
///
/// let specs = lh::hooks![tell_jobs_to_wrap_up];
/// assert_eq!(specs[0].phase(), &lh::Phase::DRAIN);
/// ```
#[doc = include_str!("keys.md")]
#[proc_macro_attribute]
pub fn hook(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(Attr::Hook, args.into(), item.into()).into()
}
