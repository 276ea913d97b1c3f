//! Exhaustive interleaving tests of the producer's hand-written synchronization
//! (`src/state.rs`): one atomic word holding the `CLOSED` bit and the in-flight count, the
//! settle wait after the close, and the wait for queue room. Each protocol is modelled step for
//! step (one step per atomic operation or `Notify` call, in the order `state.rs` performs them,
//! numbered by its invariants) and every interleaving of a few senders, delivery callbacks and
//! the close is explored. Each model also has a deliberately broken twin (the wake-up registered
//! one step too late) that the explorer must catch, so a model that checks nothing would fail.
//!
//! `src/state.rs` is crate-private and built on std atomics and tokio's `Notify`, which loom
//! cannot instrument without changing the adapter's source; these models check the protocol, and
//! the unit tests in `state.rs` check that the code is that protocol.

mod interleavings;

use interleavings::{Model, explore};

const CLOSED: u64 = 1 << 63;

/// Where the close-and-settle thread is (`Shared::close`, then `Shared::settle`'s loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Closer {
    /// `state.fetch_or(CLOSED)`.
    Close,
    /// `settled.notified()` + `enable()`: registered for `notify_waiters`.
    Register,
    /// `in_flight()`: zero means settled.
    Load,
    /// Awaiting the notification.
    Wait,
    Settled,
}

/// Where one message is: a send (`Shared::enter`), then the delivery callback's `leave`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Message {
    Enter,
    /// `state.fetch_sub(1)`: refused at once, or the delivery report.
    Leave,
    /// `settled.notify_waiters()`, when the decrement left `CLOSED` and zero.
    Notify,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Settle {
    /// The broken twin registers for the wake-up after reading the count.
    register_late: bool,
    state: u64,
    /// The closer's `Notified` is registered and not yet consumed.
    registered: bool,
    notified: bool,
    closer: Closer,
    messages: Vec<Message>,
    /// Per message: accepted (counted until its report) or refused (closed).
    accepted: Vec<Option<bool>>,
    /// Whether the closer's `fetch_or` had happened when each message entered.
    entered_after_close: Vec<bool>,
    underflow: bool,
}

impl Settle {
    fn new(messages: usize, register_late: bool) -> Self {
        Settle {
            register_late,
            state: 0,
            registered: false,
            notified: false,
            closer: Closer::Close,
            messages: vec![Message::Enter; messages],
            accepted: vec![None; messages],
            entered_after_close: vec![false; messages],
            underflow: false,
        }
    }
}

impl Model for Settle {
    fn threads(&self) -> usize {
        self.messages.len() + 1
    }

    fn done(&self, t: usize) -> bool {
        match t {
            0 => self.closer == Closer::Settled,
            _ => self.messages[t - 1] == Message::Done,
        }
    }

    fn can_step(&self, t: usize) -> bool {
        t != 0 || self.closer != Closer::Wait || self.notified
    }

    fn step(&mut self, t: usize) {
        if t == 0 {
            self.closer = match (self.closer, self.register_late) {
                (Closer::Close, late) => {
                    self.state |= CLOSED;
                    if late { Closer::Load } else { Closer::Register }
                }
                (Closer::Register, false) => {
                    self.registered = true;
                    self.notified = false;
                    Closer::Load
                }
                (Closer::Register, true) => {
                    self.registered = true;
                    self.notified = false;
                    Closer::Wait
                }
                (Closer::Load, late) => {
                    if self.state & !CLOSED == 0 {
                        self.registered = false;
                        Closer::Settled
                    } else if late {
                        Closer::Register
                    } else {
                        Closer::Wait
                    }
                }
                (Closer::Wait, late) => {
                    self.registered = false;
                    self.notified = false;
                    if late { Closer::Load } else { Closer::Register }
                }
                (Closer::Settled, _) => unreachable!("a done thread does not step"),
            };
            return;
        }
        let m = t - 1;
        self.messages[m] = match self.messages[m] {
            Message::Enter => {
                let before = self.state;
                self.state += 1;
                self.accepted[m] = Some(before & CLOSED == 0);
                self.entered_after_close[m] = before & CLOSED != 0;
                Message::Leave
            }
            Message::Leave => {
                let before = self.state;
                if before & !CLOSED == 0 {
                    self.underflow = true;
                }
                self.state = before.wrapping_sub(1);
                if before == CLOSED | 1 {
                    Message::Notify
                } else {
                    Message::Done
                }
            }
            Message::Notify => {
                if self.registered {
                    self.notified = true;
                }
                Message::Done
            }
            Message::Done => unreachable!("a done thread does not step"),
        };
    }
}

fn settle_always(s: &Settle) -> Result<(), String> {
    if s.underflow {
        return Err("the in-flight count went below zero".into());
    }
    for m in 0..s.messages.len() {
        // Invariant 2: once CLOSED is set, no send enters.
        if s.entered_after_close[m] && s.accepted[m] == Some(true) {
            return Err(format!("message {m} was accepted after the close"));
        }
    }
    // Settling means every accepted message has its delivery report.
    if s.closer == Closer::Settled {
        for m in 0..s.messages.len() {
            if s.accepted[m] == Some(true) && s.messages[m] == Message::Leave {
                return Err(format!("settled while message {m} awaits its report"));
            }
        }
    }
    Ok(())
}

fn settle_at_end(s: &Settle) -> Result<(), String> {
    if s.state != CLOSED {
        return Err(format!(
            "the word ends as {:#x}, not CLOSED and zero",
            s.state
        ));
    }
    Ok(())
}

#[test]
fn close_and_settle_never_lose_a_wake_up_or_admit_a_late_send() {
    for messages in 1..=4 {
        let explored = explore(Settle::new(messages, false), settle_always, settle_at_end)
            .unwrap_or_else(|e| panic!("{messages} messages: {e}"));
        assert!(explored.finals >= 1, "{explored:?}");
        if messages == 4 {
            // Enough states that the races are all there: a close before, between and after
            // each send, reports before and after the settle's read.
            assert!(explored.states > 1_000, "{explored:?}");
        }
    }
}

#[test]
fn the_explorer_catches_a_settle_that_registers_after_reading_the_count() {
    let error = explore(Settle::new(1, true), settle_always, settle_at_end)
        .expect_err("reading the count before registering loses the last report's wake-up");
    assert!(error.starts_with("deadlock"), "{error}");
}

/// Where a sender waiting for queue room is (`Producer::send`'s retry loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Waiter {
    /// `space_waiters.fetch_add(1)` (`Shared::space`).
    Count,
    /// `space.notified()` + `enable()`.
    Register,
    /// `hand_over`: takes a slot if there is room.
    Try,
    /// Awaiting the notification.
    Wait,
    /// The `SpaceWaiter` guard drops: `space_waiters.fetch_sub(1)`; then the loop goes round.
    Uncount,
    /// Got room: the guard drops on the way out.
    UncountDone,
    Done,
}

/// Where one delivery callback is (`Shared::record_report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Report {
    /// librdkafka frees the message's queue slot before it calls back.
    Free,
    /// `space_waiters.load()`.
    Load,
    /// `space.notify_waiters()`.
    Notify,
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Space {
    /// The broken twin tries the queue before it registers.
    register_late: bool,
    room: u32,
    space_waiters: u32,
    waiters: Vec<Waiter>,
    registered: Vec<bool>,
    notified: Vec<bool>,
    reports: Vec<Report>,
}

impl Space {
    fn new(waiters: usize, reports: usize, register_late: bool) -> Self {
        Space {
            register_late,
            room: 0,
            space_waiters: 0,
            waiters: vec![Waiter::Count; waiters],
            registered: vec![false; waiters],
            notified: vec![false; waiters],
            reports: vec![Report::Free; reports],
        }
    }
}

impl Model for Space {
    fn threads(&self) -> usize {
        self.waiters.len() + self.reports.len()
    }

    fn done(&self, t: usize) -> bool {
        match t.checked_sub(self.waiters.len()) {
            None => self.waiters[t] == Waiter::Done,
            Some(r) => self.reports[r] == Report::Done,
        }
    }

    fn can_step(&self, t: usize) -> bool {
        t >= self.waiters.len() || self.waiters[t] != Waiter::Wait || self.notified[t]
    }

    fn step(&mut self, t: usize) {
        let Some(r) = t.checked_sub(self.waiters.len()) else {
            self.waiters[t] = match self.waiters[t] {
                Waiter::Count => {
                    self.space_waiters += 1;
                    if self.register_late {
                        Waiter::Try
                    } else {
                        Waiter::Register
                    }
                }
                Waiter::Register => {
                    self.registered[t] = true;
                    self.notified[t] = false;
                    if self.register_late {
                        Waiter::Wait
                    } else {
                        Waiter::Try
                    }
                }
                Waiter::Try => {
                    if self.room > 0 {
                        self.room -= 1;
                        Waiter::UncountDone
                    } else if self.register_late {
                        Waiter::Register
                    } else {
                        Waiter::Wait
                    }
                }
                Waiter::Wait => {
                    self.registered[t] = false;
                    self.notified[t] = false;
                    Waiter::Uncount
                }
                Waiter::Uncount => {
                    self.space_waiters -= 1;
                    Waiter::Count
                }
                Waiter::UncountDone => {
                    self.space_waiters -= 1;
                    self.registered[t] = false;
                    Waiter::Done
                }
                Waiter::Done => unreachable!("a done thread does not step"),
            };
            return;
        };
        self.reports[r] = match self.reports[r] {
            Report::Free => {
                self.room += 1;
                Report::Load
            }
            Report::Load => {
                if self.space_waiters > 0 {
                    Report::Notify
                } else {
                    Report::Done
                }
            }
            Report::Notify => {
                for w in 0..self.waiters.len() {
                    if self.registered[w] {
                        self.notified[w] = true;
                    }
                }
                Report::Done
            }
            Report::Done => unreachable!("a done thread does not step"),
        };
    }
}

fn space_at_end(s: &Space) -> Result<(), String> {
    if s.space_waiters != 0 {
        return Err(format!("{} waiters still counted", s.space_waiters));
    }
    Ok(())
}

#[test]
fn a_sender_waiting_for_queue_room_is_always_woken_by_a_freed_slot() {
    for (waiters, reports) in [(1, 1), (2, 2), (2, 3), (3, 3)] {
        let explored = explore(
            Space::new(waiters, reports, false),
            |_| Ok(()),
            space_at_end,
        )
        .unwrap_or_else(|e| panic!("{waiters} waiters, {reports} reports: {e}"));
        assert!(explored.finals >= 1, "{explored:?}");
    }
}

#[test]
fn the_explorer_catches_a_sender_that_registers_after_trying_the_queue() {
    let error = explore(Space::new(1, 1, true), |_| Ok(()), space_at_end)
        .expect_err("trying before registering misses the freed slot's wake-up");
    assert!(error.starts_with("deadlock"), "{error}");
}
