//! A bounded in-memory queue. See [`MemorySource`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::errors::{PushError, RequeueError};
use crate::job::Job;
use crate::retry::Retry;
use crate::source::JobSource;

/// A bounded, in-process job queue: for embedding a pool in a service, for tests and demos.
///
/// Producers [`push`](MemorySource::push) (waiting for room) or
/// [`try_push`](MemorySource::try_push); the pool fetches from the front. Jobs handed back go to
/// the front, in order, and may exceed the bound for a moment: a hand-back never waits and never
/// fails. Retried jobs go to the back; dead jobs are kept for [`dead`](MemorySource::dead).
/// Nothing survives the process: use a persistent source (Redis) for jobs that must.
///
/// Clones share the queue.
///
/// ```
/// use lifecycle_hooks_jobs::{Job, MemorySource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let source = MemorySource::new(2);
/// source.push(Job::new("a", "")).await.unwrap();
/// source.try_push(Job::new("b", "")).unwrap();
/// assert!(source.try_push(Job::new("c", "")).is_err()); // full
/// assert_eq!(source.queued_ids(), ["a", "b"]);
/// # }
/// ```
#[derive(Clone)]
pub struct MemorySource {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    capacity: usize,
    /// Locked briefly, never across an await.
    state: Mutex<State>,
    /// Wakes one waiting worker per job that arrives, all of them when the source closes.
    items: Notify,
    /// Fetches waiting for a job (registered with `items`); for [`MemorySource::waiting_fetches`].
    waiting: AtomicUsize,
    /// Wakes producers when room appears or the source closes.
    room: Notify,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    dead: Vec<Job>,
    closed: bool,
}

impl fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("MemorySource")
            .field("name", &self.inner.name)
            .field("capacity", &self.inner.capacity)
            .field("queued", &state.queue.len())
            .field("dead", &state.dead.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl MemorySource {
    /// A queue named `default` holding at most `capacity` jobs.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    #[track_caller]
    pub fn new(capacity: usize) -> MemorySource {
        MemorySource::named("default", capacity)
    }

    /// A queue with this name (set as [`Job::queue`] on its jobs) holding at most `capacity` jobs.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    #[track_caller]
    pub fn named(name: impl Into<Arc<str>>, capacity: usize) -> MemorySource {
        assert!(
            capacity > 0,
            "a MemorySource needs a capacity of at least 1"
        );
        MemorySource {
            inner: Arc::new(Inner {
                name: name.into(),
                capacity,
                state: Mutex::new(State::default()),
                items: Notify::new(),
                waiting: AtomicUsize::new(0),
                room: Notify::new(),
            }),
        }
    }

    /// Adds a job at the back, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`PushError::Closed`] once the source is closed, with the job.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped, the job was not pushed (and is dropped with it).
    pub async fn push(&self, job: Job) -> Result<(), PushError> {
        let mut job = job;
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            // Registered before the check, so room made after the check wakes us.
            room.as_mut().enable();
            match self.try_push(job) {
                Err(PushError::Full { job: back, .. }) => job = back,
                done => return done,
            }
            room.await;
        }
    }

    /// Adds a job at the back if there is room.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] or [`PushError::Closed`], with the job.
    pub fn try_push(&self, job: Job) -> Result<(), PushError> {
        let job = job.with_queue(self.inner.name.clone());
        {
            let mut state = self.inner.state.lock();
            if state.closed {
                return Err(PushError::Closed(job));
            }
            if state.queue.len() >= self.inner.capacity {
                return Err(PushError::Full {
                    job,
                    capacity: self.inner.capacity,
                });
            }
            state.queue.push_back(job);
        }
        self.inner.items.notify_one();
        Ok(())
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bound given at creation.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Jobs waiting to be fetched.
    pub fn len(&self) -> usize {
        self.inner.state.lock().queue.len()
    }

    /// Whether no job is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the source was closed.
    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().closed
    }

    /// The waiting jobs, front first.
    pub fn queued(&self) -> Vec<Job> {
        self.inner.state.lock().queue.iter().cloned().collect()
    }

    /// The ids of the waiting jobs, front first.
    pub fn queued_ids(&self) -> Vec<String> {
        let state = self.inner.state.lock();
        state.queue.iter().map(|job| job.id().to_owned()).collect()
    }

    /// How many fetches are waiting for a job right now (each registered to be woken). For
    /// metrics and tests: once it reads `n`, `n` fetches are parked and each job that arrives
    /// wakes one of them.
    pub fn waiting_fetches(&self) -> usize {
        // SeqCst: pairs with the increment made after the waiter registered (see `fetch`).
        self.inner.waiting.load(Ordering::SeqCst)
    }

    /// Jobs that failed for good ([`Retry::Dead`]), oldest first.
    pub fn dead(&self) -> Vec<Job> {
        self.inner.state.lock().dead.clone()
    }

    /// `Some(None)` once closed, `Some(job)` if one is waiting, `None` to wait.
    fn try_fetch(&self) -> Option<Option<Job>> {
        let mut state = self.inner.state.lock();
        if state.closed {
            return Some(None);
        }
        let job = state.queue.pop_front()?;
        drop(state);
        self.inner.room.notify_one();
        Some(Some(job))
    }
}

/// Counts one waiting fetch for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        // SeqCst: a reader that sees this increment also sees the registration made before it.
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl JobSource for MemorySource {
    /// The in-memory source never fails.
    type Error = Infallible;

    async fn fetch(&self) -> Result<Option<Job>, Infallible> {
        if let Some(next) = self.try_fetch() {
            return Ok(next);
        }
        loop {
            let items = self.inner.items.notified();
            tokio::pin!(items);
            // Registered before the check, so a job pushed after the check wakes us.
            items.as_mut().enable();
            if let Some(next) = self.try_fetch() {
                return Ok(next);
            }
            // Counted only once registered, so a reader that sees the count knows we will be
            // woken; uncounted when this wait ends or the fetch is dropped.
            let _waiting = Waiting::enter(&self.inner.waiting);
            items.await;
        }
    }

    async fn ack(&self, _job: &Job) -> Result<(), Infallible> {
        Ok(())
    }

    async fn requeue(&self, jobs: Vec<Job>) -> Result<(), RequeueError<Infallible>> {
        let count = jobs.len();
        {
            let mut state = self.inner.state.lock();
            for job in jobs.into_iter().rev() {
                state.queue.push_front(job);
            }
        }
        // One wake-up per job: each waiting fetch takes one (a woken fetch that finds the queue
        // empty waits again; one dropped after its wake-up passes it on to the next waiter).
        for _ in 0..count {
            self.inner.items.notify_one();
        }
        Ok(())
    }

    async fn fail(&self, job: &Job, retry: Retry) -> Result<(), Infallible> {
        let mut state = self.inner.state.lock();
        match retry {
            Retry::Again => {
                let again = job.clone().with_attempt(job.attempt().saturating_add(1));
                state.queue.push_back(again);
                drop(state);
                self.inner.items.notify_one();
            }
            Retry::Dead => state.dead.push(job.clone()),
        }
        Ok(())
    }

    async fn close(&self) -> Result<Vec<Job>, Infallible> {
        self.inner.state.lock().closed = true;
        self.inner.items.notify_waiters();
        self.inner.room.notify_waiters();
        Ok(Vec::new())
    }
}
