//! A phase graph for stopping and restarting async services correctly.
//!
//! A service declares what must happen when it stops; the framework runs it in order under
//! signals, deadlines, panics, hangs and repeated signals:
//! trigger → stop intake → drain → shutdown hooks → wait for work → exit hooks → exit status.
//! Start at [`Lifecycle::builder`]; the exit-status policy is [`ExitCodes`].

mod builder;
mod control;
pub mod errors;
mod event;
mod graph;
mod handle;
mod hook;
mod notify;
mod outcome;
mod phase;
mod runtime;
mod signals;
pub mod testing;

pub use builder::{Builder, DEFAULT_SHUTDOWN_TIMEOUT};
pub use errors::BoxError;
pub use event::{Event, EventStream, Snapshot};
pub use handle::{LifecycleHandle, WorkGuard};
pub use hook::{Hook, HookContext, HookResult, HookSpec, IntoHookResult};
pub use outcome::{ExitCodes, HookReport, Outcome, PhaseReport, PhaseStatus, Reason};
pub use phase::{Phase, PhaseSpec};
pub use runtime::Lifecycle;
pub use signals::{Action, Signal, Signals};
