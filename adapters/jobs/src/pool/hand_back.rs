//! The jobs waiting to go back to the source, and how they get there. See [`HandBack`].

use std::collections::HashMap;

use futures::FutureExt;
use lifecycle_hooks::LifecycleHandle;
use lifecycle_hooks::errors::chain;

use crate::job::Job;
use crate::source::JobSource;

use super::Inner;

/// Jobs waiting to be handed back (invariant 4 of the pool); behind the pool's `hand_back`
/// lock, held briefly and never across an await.
#[derive(Default)]
pub(super) struct HandBack {
    /// Unfinished jobs not yet confirmed requeued; still in flight.
    pub(super) jobs: Vec<Job>,
    /// How many of `jobs` were added since the last requeue attempt.
    pub(super) fresh: usize,
}

impl<S: JobSource> Inner<S> {
    /// The close hook never runs: settles at once what it would have settled, without waiting.
    /// Jobs still running (their workers will not settle them now) and jobs waiting for
    /// hand-back get one synchronous hand-back attempt; what it does not settle is reported lost.
    pub(super) fn close_skipped(&self, handle: &LifecycleHandle) {
        if let Some(bound) = self.bound.get() {
            bound.halt.cancel();
        }
        for worker in self.workers.get().into_iter().flatten() {
            let running = worker.current.lock().take();
            let Some((job, state)) = running else {
                continue;
            };
            if !state.past_no_return() {
                self.queue_hand_back(job);
                continue;
            }
            // Settled by its completion: acknowledged if the source can do it without waiting.
            match self.source.ack(&job).now_or_never() {
                Some(Ok(())) => self.counters.completed.add(1),
                acked => {
                    if let Some(Err(_)) = acked {
                        self.counters.source_errors.add(1);
                    }
                    tracing::error!(pool = %self.name, id = job.id(), "a job past its point of no return was still running and could not be acknowledged: reported lost (it may run again)");
                    handle.report_lost(job.id());
                    self.counters.lost.add(1);
                }
            }
        }
        let pending = self.hand_back.lock().jobs.clone();
        if pending.is_empty() {
            return;
        }
        // A flush in progress holds the lane: its outcome is unknown, so nothing is sent twice;
        // the jobs are reported lost.
        let mut failed: HashMap<String, usize> = HashMap::new();
        match self.lane.try_lock() {
            Ok(_lane) => match self.source.requeue(pending.clone()).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    self.counters.source_errors.add(1);
                    for job in error.jobs {
                        *failed.entry(job.id().to_owned()).or_default() += 1;
                    }
                }
                None => {
                    tracing::warn!(pool = %self.name, "the source cannot hand jobs back without waiting; reporting them lost (a persistent source may still recover them)");
                    for job in &pending {
                        *failed.entry(job.id().to_owned()).or_default() += 1;
                    }
                }
            },
            Err(_) => {
                for job in &pending {
                    *failed.entry(job.id().to_owned()).or_default() += 1;
                }
            }
        }
        let (mut requeued, mut lost) = (Vec::new(), Vec::new());
        {
            let mut hand_back = self.hand_back.lock();
            for job in pending {
                // Absent if a flush finished meanwhile and counted it.
                if !remove_one(&mut hand_back.jobs, job.id()) {
                    continue;
                }
                match failed.get_mut(job.id()).filter(|count| **count > 0) {
                    Some(count) => {
                        *count -= 1;
                        lost.push(job);
                    }
                    None => requeued.push(job),
                }
            }
        }
        for job in &requeued {
            handle.report_handed_back(job.id());
        }
        for job in &lost {
            handle.report_lost(job.id());
        }
        self.counters.requeued.add(requeued.len() as u64);
        self.counters.lost.add(lost.len() as u64);
        let requeued: Vec<&str> = requeued.iter().map(Job::id).collect();
        let lost: Vec<&str> = lost.iter().map(Job::id).collect();
        tracing::error!(
            pool = %self.name,
            ?requeued,
            ?lost,
            "the pool's close hook never ran (the exit budget was used up): unsettled jobs handed back at once or reported lost"
        );
    }

    /// Queues an unfinished job for hand-back; it stays in flight until the source confirms.
    pub(super) fn queue_hand_back(&self, job: Job) {
        let mut hand_back = self.hand_back.lock();
        hand_back.jobs.push(job);
        hand_back.fresh += 1;
    }

    /// Requeues the jobs waiting for hand-back in one batch. Without `force`, only if some were
    /// added since the last attempt (retries are the exit hook's). True when none is left.
    pub(super) async fn flush(&self, handle: &LifecycleHandle, force: bool) -> bool {
        let _lane = self.lane.lock().await;
        let batch = {
            let mut hand_back = self.hand_back.lock();
            if hand_back.jobs.is_empty() || !force && hand_back.fresh == 0 {
                return hand_back.jobs.is_empty();
            }
            hand_back.fresh = 0;
            hand_back.jobs.clone()
        };
        let mut failed: HashMap<String, usize> = HashMap::new();
        if let Err(error) = self.source.requeue(batch.clone()).await {
            self.counters.source_errors.add(1);
            tracing::warn!(
                pool = %self.name,
                error = %chain(&error),
                count = error.jobs.len(),
                "requeue failed; the exit hook retries with backoff"
            );
            for job in error.jobs {
                *failed.entry(job.id().to_owned()).or_default() += 1;
            }
        }
        let mut hand_back = self.hand_back.lock();
        let mut done = Vec::new();
        for job in batch {
            if let Some(count) = failed.get_mut(job.id()).filter(|count| **count > 0) {
                *count -= 1;
                continue;
            }
            // Absent if the exit hook already wrote it off: then it is counted there.
            if remove_one(&mut hand_back.jobs, job.id()) {
                handle.report_handed_back(job.id());
                done.push(job);
            }
        }
        let left = hand_back.jobs.is_empty();
        drop(hand_back);
        if !done.is_empty() {
            self.counters.requeued.add(done.len() as u64);
            let ids: Vec<&str> = done.iter().map(Job::id).collect();
            tracing::info!(pool = %self.name, count = ids.len(), ?ids, "jobs handed back to the queue");
        }
        left
    }

    /// Jobs the source put back on the queue while closing: ours if we were still waiting to
    /// hand them back, otherwise taken by a dropped fetch and never run.
    pub(super) fn returned_by_source(&self, handle: &LifecycleHandle, returned: Vec<Job>) {
        if returned.is_empty() {
            return;
        }
        let mut ours = 0;
        {
            let mut hand_back = self.hand_back.lock();
            for job in &returned {
                handle.report_handed_back(job.id());
                if remove_one(&mut hand_back.jobs, job.id()) {
                    ours += 1;
                }
            }
        }
        self.counters.requeued.add(ours as u64);
        self.counters.recovered.add((returned.len() - ours) as u64);
        let ids: Vec<&str> = returned.iter().map(Job::id).collect();
        tracing::info!(pool = %self.name, count = ids.len(), ?ids, "the source handed back jobs it held");
    }
}

/// Removes the first job with this id; false if there is none.
pub(super) fn remove_one(jobs: &mut Vec<Job>, id: &str) -> bool {
    match jobs.iter().position(|job| job.id() == id) {
        Some(at) => {
            jobs.swap_remove(at);
            true
        }
        None => false,
    }
}
