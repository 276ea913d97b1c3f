//! Time in one place: the budget fixed at build time and the instants of one stop, computed once
//! at its trigger. See [`Deadlines`].
//!
//! # Invariants
//!
//! 1. A stop's instants are computed once, when the trigger is applied, and never re-derived:
//!    the runner, the hook context and the handle read the same [`Deadlines`] value.
//! 2. `stop_at <= drain <= end`: the drain deadline is the trigger plus the budget minus the exit
//!    reserve, the end is the trigger plus the whole budget.
//! 3. No instant overflows: a sum past what the clock can hold saturates to a far-future instant
//!    (about 30 years ahead), so `Duration::MAX` means "never", not a panic.

use std::time::Duration;

use tokio::time::Instant;

/// About 30 years: what "never" means for an instant (tokio's timer takes it).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + duration`, saturating to a far-future instant instead of overflowing.
pub(crate) fn after(at: Instant, duration: Duration) -> Instant {
    at.checked_add(duration)
        .unwrap_or_else(|| at.checked_add(FAR_FUTURE).unwrap_or(at))
}

/// The shutdown budget and how it is divided, fixed at build time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget {
    /// From the trigger to the end of the exit hooks.
    pub(crate) total: Duration,
    /// The part kept for the exit side (after `wait`).
    pub(crate) reserve: Duration,
    /// How long cancelled work gets to hand itself back before the exit side begins anyway.
    pub(crate) grace: Duration,
}

impl Budget {
    /// The instants of a stop triggered at `stop_at`.
    pub(crate) fn deadlines(&self, stop_at: Instant) -> Deadlines {
        Deadlines {
            stop_at,
            drain: after(stop_at, self.total.saturating_sub(self.reserve)),
            end: after(stop_at, self.total),
        }
    }
}

/// The instants of one stop, computed once when it is triggered.
///
/// ```
/// use std::time::Duration;
/// use lifecycle_hooks::{Lifecycle, Signals};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = Lifecycle::builder()
///     .signals(Signals::none())
///     .budget(Duration::from_secs(25))
///     .exit_reserve(Duration::from_secs(5))
///     .build()
///     .unwrap();
/// let handle = lifecycle.handle();
/// assert!(handle.deadlines().is_none()); // no stop yet
/// handle.stop();
/// let deadlines = handle.deadlines().expect("stopping");
/// assert_eq!(deadlines.drain() - deadlines.stop_at(), Duration::from_secs(20));
/// assert_eq!(deadlines.end() - deadlines.stop_at(), Duration::from_secs(25));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    stop_at: Instant,
    drain: Instant,
    end: Instant,
}

impl Deadlines {
    /// When the stop was triggered: the budget starts here.
    pub fn stop_at(&self) -> Instant {
        self.stop_at
    }

    /// The drain deadline: work still in flight is cancelled here, and hooks before the exit
    /// side are cut off.
    pub fn drain(&self) -> Instant {
        self.drain
    }

    /// The end of the budget: exit hooks still running are cut off here.
    pub fn end(&self) -> Instant {
        self.end
    }

    /// Time left until the end of the budget.
    pub fn budget_left(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Time left until the drain deadline.
    pub fn drain_left(&self) -> Duration {
        self.drain.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_durations_saturate_instead_of_panicking() {
        let now = Instant::now();
        let budget = Budget {
            total: Duration::MAX,
            reserve: Duration::MAX / 5,
            grace: Duration::MAX,
        };
        let d = budget.deadlines(now);
        assert!(d.stop_at() <= d.drain() && d.drain() <= d.end());
        assert!(d.end() > now + Duration::from_secs(86_400 * 365));
        assert!(after(now, Duration::MAX) > now);
    }

    #[test]
    fn drain_is_budget_minus_reserve() {
        let now = Instant::now();
        let budget = Budget {
            total: Duration::from_secs(25),
            reserve: Duration::from_secs(5),
            grace: Duration::from_secs(1),
        };
        let d = budget.deadlines(now);
        assert_eq!(d.drain() - now, Duration::from_secs(20));
        assert_eq!(d.end() - now, Duration::from_secs(25));
    }
}
