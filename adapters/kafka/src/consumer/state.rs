//! What the consumer knows about each assigned partition: the message in flight, the messages
//! fetched but not started, the offsets processed but not committed. See [`Shared`].
//!
//! # Invariants
//!
//! 1. At most one message per partition is in flight, and at most `concurrency` across
//!    partitions (`State::running`): order is kept per partition. A slot takes a *run* of up to
//!    [`RUN`] buffered messages of one partition at once (`Part::in_flight` while it is out) and
//!    starts them one after another; the rest of a run is still "buffered" for invariant 4 and
//!    for revocation, which drop it through `Live::cleared`.
//! 2. A message is counted `fetched` when it is handed to the handler, and exactly once more
//!    when it ends: `processed`, `failed`, or `handed_back` (cut off at the deadline). So once
//!    nothing runs, fetched = processed + failed + handed back.
//! 3. Only the offset of a message that ended (processed or failed) is stored, in offset order
//!    (invariant 1), and only while its partition is still assigned in the generation the
//!    message was fetched in: a message cut off, or finished after its partition was revoked,
//!    is never committed, so it is redelivered. The offsets of a run are recorded under the
//!    lock when the run ends (a revocation waits for that), and stored into librdkafka then or
//!    later (see `Part::unstored`): its store may lag, never lead.
//! 4. No message is started once intake has stopped or the consumer is closing; the messages
//!    buffered then (also the rest of a run) are dropped uncounted (never started, never
//!    committed: redelivered). A slot checks `Shared::open` and `Live::cleared` before each
//!    message of its run; what it started before it saw them is in flight and waited for.
//! 5. The lock is a std `Mutex` held only for bookkeeping (never across an `.await`, never
//!    while waiting on the broker); the revocation wait and the poll thread's backpressure
//!    wait release it through their `Condvar`s.
//!    Pauses and resumes of partitions are issued while it is held, so a backpressure resume
//!    can never overtake the pause it ends, nor follow the `stop_intake` pause. librdkafka
//!    makes them wait for the partition's broker thread, which never takes this lock: no
//!    deadlock, but a busy broker thread holds the lock that long.
//! 6. A partition's index in `State::parts` never changes (partitions are never removed), so
//!    slots and the poll thread refer to a partition by index and never hash its key on the
//!    message path.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A partition: `(topic, partition)`.
pub(crate) type Key = (String, i32);

/// At most this many buffered messages of a partition are taken by a slot at once (a run).
pub(crate) const RUN: usize = 64;

/// What a slot running a partition's run reads without the lock.
#[derive(Debug)]
pub(crate) struct Live {
    /// The topic, shared: a message's work name is built from it only if it waits.
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// Bumped (under the lock) each time the partition's buffered messages are dropped (at a
    /// revocation, and when intake stops): a slot that finds it changed drops the rest of its
    /// run (invariant 4).
    /// Acquire/Release: the slot's check pairs with the bump; a slot that misses a bump by a
    /// hair has started one more message, which the revocation waits for like any in flight.
    pub(crate) cleared: AtomicU64,
    /// The offset of the message in flight, for the revocation's report of what it cut.
    /// Relaxed: a report, read after the wait under the lock that the slot's run end takes.
    pub(crate) offset: AtomicI64,
}

/// The consumer's counters. `fetched = processed + failed + handed_back` once nothing runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// Messages handed to the handler.
    pub fetched: u64,
    /// Messages whose handler returned `Ok`.
    pub processed: u64,
    /// Messages whose handler returned an error or panicked (their offsets are committed: the
    /// consumer moves past them, see [`Consumer`](crate::Consumer)).
    pub failed: u64,
    /// Messages whose offsets a commit covered (processed and failed ones only).
    pub committed: u64,
    /// Messages cut off at the drain deadline: not committed, reported with
    /// [`report_handed_back`](lifecycle_hooks::LifecycleHandle::report_handed_back), redelivered.
    pub handed_back: u64,
    /// Partitions assigned to this member, summed over rebalances.
    pub assigned: u64,
    /// Partitions revoked from this member, summed over rebalances.
    pub revoked: u64,
    /// Times a partition was paused because its buffer stayed full (backpressure).
    pub paused: u64,
    /// Messages running now.
    pub in_flight: u64,
}

pub(crate) struct Part {
    pub(crate) key: Key,
    pub(crate) live: Arc<Live>,
    pub(crate) assigned: bool,
    /// Bumped at every revocation: a message of an older generation stores no offset.
    pub(crate) generation: u64,
    /// A slot holds a run of this partition (one of its messages may be running).
    pub(crate) in_flight: bool,
    /// Fetched, not started.
    pub(crate) queue: VecDeque<super::ConsumedMessage>,
    /// Paused because `queue` stayed full longer than the poll thread waits for room (not
    /// because intake stopped).
    pub(crate) backpressure: bool,
    /// Offsets stored (ended) and not yet covered by a commit.
    pub(crate) uncommitted: Uncommitted,
    /// The next offset to commit: the last ended message's offset + 1.
    pub(crate) stored_next: Option<i64>,
    /// The highest offset a commit of this member covered (a successful one): whether a
    /// final commit refused by a rebalance was made up for.
    pub(crate) committed_next: Option<i64>,
    /// Ended messages whose offset is not yet stored into librdkafka (its background commit
    /// lags by these; the consumer's own commits use `stored_next`).
    pub(crate) unstored: u32,
    /// Waiting in `State::ready` for a slot.
    pub(crate) ready: bool,
}

impl Part {
    fn new(key: Key) -> Part {
        Part {
            live: Arc::new(Live {
                topic: Arc::from(key.0.as_str()),
                partition: key.1,
                cleared: AtomicU64::new(0),
                offset: AtomicI64::new(-1),
            }),
            key,
            assigned: false,
            generation: 0,
            in_flight: false,
            queue: VecDeque::new(),
            backpressure: false,
            uncommitted: Uncommitted::default(),
            stored_next: None,
            committed_next: None,
            unstored: 0,
            ready: false,
        }
    }

    /// Drops the buffered messages, also the rest of a run a slot holds (invariant 4).
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.ready = false;
        self.backpressure = false;
        // Release: pairs with the slot's Acquire check before each message.
        self.live.cleared.fetch_add(1, Ordering::Release);
    }
}

/// The offsets of a partition's ended messages that no commit has covered yet, ascending (a
/// partition runs one message at a time, in order), kept as runs of consecutive offsets: a
/// partition read without gaps holds one entry however long no commit comes (with
/// `enable.auto.commit=false` none comes before a revocation or the exit), where a list of
/// offsets grew by 8 bytes per message. Gaps (compaction, transaction markers) start new runs.
#[derive(Debug, Default)]
pub(crate) struct Uncommitted {
    /// `(first, last)`, both included, ascending and not touching.
    runs: VecDeque<(i64, i64)>,
}

impl Uncommitted {
    /// Adds `offsets`, ascending and above every offset held.
    pub(crate) fn extend(&mut self, offsets: impl IntoIterator<Item = i64>) {
        for offset in offsets {
            match self.runs.back_mut() {
                Some((_, last)) if offset == *last + 1 => *last = offset,
                _ => self.runs.push_back((offset, offset)),
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }

    /// Removes the offsets below `next` (a commit covered them) and returns how many.
    pub(crate) fn cover(&mut self, next: i64) -> u64 {
        let mut covered = 0;
        while let Some((first, last)) = self.runs.front_mut() {
            if *first >= next {
                break;
            }
            if *last < next {
                covered += (*last - *first + 1) as u64;
                self.runs.pop_front();
            } else {
                covered += (next - *first) as u64;
                *first = next;
                break;
            }
        }
        covered
    }
}

#[derive(Default)]
pub(crate) struct State {
    /// Where each partition is in `parts` (invariant 6).
    pub(crate) index: HashMap<Key, usize>,
    pub(crate) parts: Vec<Part>,
    pub(crate) running: usize,
    /// Partitions (indices into `parts`) with buffered messages waiting for a slot, oldest
    /// first.
    pub(crate) ready: VecDeque<usize>,
    /// Threads in [`Shared::wait_ended`]: a run's end notifies `ended` only then (a
    /// `Condvar` notification is a system call even with no one waiting).
    pub(crate) ended_waiters: usize,
    /// The poll thread waits for room (on `Shared::room`): only then is it notified.
    pub(crate) room_waiters: usize,
}

impl State {
    /// The partition's index, if it was ever assigned.
    pub(crate) fn find(&self, key: &Key) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub(crate) fn part_mut(&mut self, key: &Key) -> Option<&mut Part> {
        let at = self.find(key)?;
        Some(&mut self.parts[at])
    }

    /// The partition's entry, created if new.
    pub(crate) fn entry(&mut self, key: &Key) -> &mut Part {
        let at = match self.find(key) {
            Some(at) => at,
            None => {
                self.parts.push(Part::new(key.clone()));
                self.index.insert(key.clone(), self.parts.len() - 1);
                self.parts.len() - 1
            }
        };
        &mut self.parts[at]
    }
}

/// Counters, flags and the partition table, shared by the poll thread, message tasks and hooks.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Notified (with the lock released) when a message ends: revocation waits on it.
    pub(crate) ended: Condvar,
    /// Notified (with the lock held or released) when a partition's buffer comes down to
    /// [`room_at`](Self::room_at), and when intake stops: the poll thread's backpressure wait is
    /// on it.
    pub(crate) room: Condvar,
    /// Notified when nothing runs any more: the close hook waits on it.
    pub(crate) idle: Notify,
    /// Rebalance steps this member has served (a revocation or an assignment done), and the
    /// notification of each: a final commit refused by a rebalance waits for one to retry.
    pub(crate) rebalances: AtomicU64,
    pub(crate) rebalanced: Notify,
    pub(crate) concurrency: usize,
    pub(crate) buffer: usize,
    // Flags: SeqCst is unnecessary; each is set once and read under the state lock (which
    // orders it with the bookkeeping), or read as a hint.
    pub(crate) intake_stopped: AtomicBool,
    pub(crate) closing: AtomicBool,
    /// Set once the final commit is done (or skipped): the poll thread closes the consumer,
    /// leaving the group. Apart from `closing`, so the close cannot overtake that commit.
    pub(crate) leaving: AtomicBool,
    // Counters: Relaxed, tallies read as a snapshot.
    pub(crate) fetched: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) handed_back: AtomicU64,
    pub(crate) assigned: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) paused: AtomicU64,
}

impl Shared {
    pub(crate) fn new(concurrency: usize, buffer: usize) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            room: Condvar::new(),
            idle: Notify::new(),
            rebalances: AtomicU64::new(0),
            rebalanced: Notify::new(),
            concurrency: concurrency.max(1),
            buffer: buffer.max(1),
            intake_stopped: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            fetched: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            handed_back: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            revoked: AtomicU64::new(0),
            paused: AtomicU64::new(0),
        }
    }

    /// Where a full partition's buffer has room again for the poll thread that waits on it:
    /// three quarters of `buffer`. (Half measured slower: the one poll thread stood idle, for
    /// every partition, while a single partition's buffer drained twice as far.)
    pub(crate) fn room_at(&self) -> usize {
        self.buffer - self.buffer / 4
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain bookkeeping behind; go on with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether new messages may start.
    pub(crate) fn open(&self) -> bool {
        !self.intake_stopped.load(Ordering::Acquire) && !self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> ConsumerStats {
        let in_flight = self.lock().running as u64;
        ConsumerStats {
            fetched: self.fetched.load(Ordering::Relaxed),
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            handed_back: self.handed_back.load(Ordering::Relaxed),
            assigned: self.assigned.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
            paused: self.paused.load(Ordering::Relaxed),
            in_flight,
        }
    }

    /// Waits (blocking the calling thread, the poll thread) until none of `keys` has a message
    /// in flight, at most `timeout`. Returns the partitions still busy.
    pub(crate) fn wait_ended(&self, keys: &[Key], timeout: Duration) -> Vec<(Key, i64)> {
        // `revoke_timeout(Duration::MAX)` must not overflow here: this runs in librdkafka's
        // rebalance callback, where a panic aborts the process. No deadline: wait until ended.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            let busy: Vec<(Key, i64)> = keys
                .iter()
                .filter_map(|k| {
                    let part = &state.parts[state.find(k)?];
                    if !part.in_flight {
                        return None;
                    }
                    Some((k.clone(), part.live.offset.load(Ordering::Relaxed)))
                })
                .collect();
            let now = Instant::now();
            if busy.is_empty() || deadline.is_some_and(|deadline| now >= deadline) {
                return busy;
            }
            state.ended_waiters += 1;
            state = match deadline {
                Some(deadline) => {
                    self.ended
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => self
                    .ended
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
            state.ended_waiters -= 1;
        }
    }

    /// Counts the messages a commit of `offsets` covered (stored offsets below each).
    pub(crate) fn committed_up_to(&self, offsets: &[(Key, i64)]) {
        let mut covered = 0u64;
        let mut state = self.lock();
        for (key, next) in offsets {
            if let Some(part) = state.part_mut(key) {
                part.committed_next = part.committed_next.max(Some(*next));
                covered += part.uncommitted.cover(*next);
            }
        }
        drop(state);
        self.committed.fetch_add(covered, Ordering::Relaxed);
    }

    /// A rebalance step (a revocation or an assignment) is done.
    pub(crate) fn rebalance_served(&self) {
        // SeqCst, with the waiter's `Notified::enable` before its SeqCst read: one of the two
        // sees the other (no lost wake-up).
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        self.rebalanced.notify_waiters();
    }

    /// Those of `offsets` whose partitions are assigned to this member now.
    pub(crate) fn still_assigned(&self, offsets: &[(Key, i64)]) -> Vec<(Key, i64)> {
        let state = self.lock();
        offsets
            .iter()
            .filter(|(key, _)| state.find(key).is_some_and(|at| state.parts[at].assigned))
            .cloned()
            .collect()
    }

    /// Whether commits of this member covered each of `offsets` (partition, next offset).
    pub(crate) fn covered(&self, offsets: &[(Key, i64)]) -> bool {
        let state = self.lock();
        offsets.iter().all(|(key, next)| {
            state
                .find(key)
                .is_some_and(|at| state.parts[at].committed_next >= Some(*next))
        })
    }

    /// The offsets to commit for `keys` (the partitions assigned now if `None`): the stored
    /// ones not yet covered by a commit. A partition revoked from this member is committed by
    /// its revocation only: committing it later could move its new owner's offset back.
    pub(crate) fn to_commit(&self, keys: Option<&[Key]>) -> Vec<(Key, i64)> {
        let state = self.lock();
        state
            .parts
            .iter()
            .filter(|p| keys.map_or(p.assigned, |keys| keys.contains(&p.key)))
            .filter(|p| !p.uncommitted.is_empty())
            .filter_map(|p| Some((p.key.clone(), p.stored_next?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `revoke_timeout(Duration::MAX)`: the wait in the rebalance callback must not overflow
    /// (a panic there, inside librdkafka's callback, aborts the process).
    #[test]
    fn a_revocation_wait_of_duration_max_does_not_overflow() {
        let shared = Shared::new(1, 16);
        let key: Key = ("topic".to_owned(), 0);
        assert!(shared.wait_ended(&[key], Duration::MAX).is_empty());
        assert!(shared.wait_ended(&[], Duration::ZERO).is_empty());
    }

    /// A million ended messages with no commit take one entry; commits count exactly what they
    /// cover, across runs, gaps and a commit inside a run.
    #[test]
    fn uncommitted_offsets_stay_one_entry_per_gap_and_count_exactly() {
        let mut ended = Uncommitted::default();
        ended.extend(0..1_000_000);
        assert_eq!(ended.runs.len(), 1, "no gap, one entry");
        assert_eq!(ended.cover(0), 0);
        assert_eq!(ended.cover(250_000), 250_000, "a commit inside the run");
        assert_eq!(ended.cover(250_000), 0, "covered once only");
        // Gaps: offsets 1_000_001, 1_000_005..=1_000_007 (a compacted or transactional log).
        ended.extend([1_000_001, 1_000_005, 1_000_006, 1_000_007]);
        assert_eq!(ended.runs.len(), 3);
        assert_eq!(ended.cover(1_000_006), 750_000 + 1 + 1);
        assert!(!ended.is_empty());
        assert_eq!(ended.cover(i64::MAX), 2);
        assert!(ended.is_empty());
        ended.extend([7, 8]);
        ended.clear();
        assert!(ended.is_empty());
        assert_eq!(ended.cover(100), 0);
    }
}
