//! Shared by the test binaries: an ordered log, a scriptable source, tracing setup.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lifecycle_hooks::Event;
use lifecycle_hooks_jobs::errors::RequeueError;
use lifecycle_hooks_jobs::{Job, JobSource, MemorySource, Retry};
use parking_lot::Mutex;

/// One ordered log for lifecycle events and handler events, so tests can assert what happened
/// before what.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub(crate) fn push(&self, line: impl Into<String>) {
        self.0.lock().push(line.into());
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().clone()
    }

    pub(crate) fn position(&self, line: &str) -> Option<usize> {
        self.lines().iter().position(|l| l == line)
    }

    /// Positions of every line starting with `prefix`.
    pub(crate) fn positions(&self, prefix: &str) -> Vec<usize> {
        self.lines()
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(i, _)| i)
            .collect()
    }

    /// An observer that writes lifecycle events into this log: `phase NAME`,
    /// `hook PHASE NAME RESULT`, `cancelled N`.
    pub(crate) fn observer(&self) -> impl Fn(&Event) + Send + Sync + 'static + use<> {
        let log = self.clone();
        move |event| match event {
            Event::PhaseStarted { phase } => log.push(format!("phase {phase}")),
            Event::HookFinished {
                phase,
                name,
                result,
                ..
            } => log.push(format!("hook {phase} {name} {result}")),
            Event::WorkCancelled { count } => log.push(format!("cancelled {count}")),
            _ => {}
        }
    }
}

/// The ids of jobs, as a set.
pub(crate) fn ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    ids.into_iter().map(str::to_owned).collect()
}

/// A [`MemorySource`] that can fail, hold and report: requeue fails a set number of times,
/// a fetch can be held inside the source, start can fail, and every call is logged.
#[derive(Clone)]
pub(crate) struct TestSource {
    pub(crate) inner: MemorySource,
    pub(crate) log: Log,
    /// How many requeue calls still fail (`usize::MAX`: all of them).
    pub(crate) requeue_failures: Arc<AtomicUsize>,
    /// When set, the next fetch says so and then blocks its thread until released.
    pub(crate) gate: Arc<Mutex<Option<Gate>>>,
    pub(crate) fail_start: bool,
}

/// Holds a fetch inside the source: `entered` fires when the fetch is in, and it returns once
/// `release` receives.
pub(crate) struct Gate {
    pub(crate) entered: tokio::sync::mpsc::UnboundedSender<()>,
    pub(crate) release: std::sync::mpsc::Receiver<()>,
}

/// The error a [`TestSource`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("the test source refused")]
pub(crate) struct Refused;

impl TestSource {
    pub(crate) fn new(inner: MemorySource, log: Log) -> TestSource {
        TestSource {
            inner,
            log,
            requeue_failures: Arc::new(AtomicUsize::new(0)),
            gate: Arc::new(Mutex::new(None)),
            fail_start: false,
        }
    }
}

impl JobSource for TestSource {
    type Error = Refused;

    async fn start(&self) -> Result<Vec<Job>, Refused> {
        if self.fail_start {
            Err(Refused)
        } else {
            Ok(Vec::new())
        }
    }

    async fn fetch(&self) -> Result<Option<Job>, Refused> {
        let gate = self.gate.lock().take();
        if let Some(gate) = gate {
            let _ = gate.entered.send(());
            // Blocks this runtime thread on purpose: the fetch completes only when released.
            let _ = gate.release.recv();
        }
        Ok(self
            .inner
            .fetch()
            .await
            .unwrap_or_else(|never: Infallible| match never {}))
    }

    async fn ack(&self, job: &Job) -> Result<(), Refused> {
        self.log.push(format!("ack {}", job.id()));
        Ok(())
    }

    async fn requeue(&self, jobs: Vec<Job>) -> Result<(), RequeueError<Refused>> {
        let names: Vec<&str> = jobs.iter().map(Job::id).collect();
        let fail = self
            .requeue_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                usize::MAX => Some(usize::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if fail {
            self.log.push(format!("requeue failed {}", names.join(",")));
            return Err(RequeueError {
                jobs,
                source: Refused,
            });
        }
        self.log.push(format!("requeue {}", names.join(",")));
        match self.inner.requeue(jobs).await {
            Ok(()) => Ok(()),
            Err(error) => match error.source {},
        }
    }

    async fn fail(&self, job: &Job, retry: Retry) -> Result<(), Refused> {
        self.log.push(format!("fail {} {:?}", job.id(), retry));
        match self.inner.fail(job, retry).await {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }

    async fn close(&self) -> Result<Vec<Job>, Refused> {
        self.log.push("close");
        Ok(self
            .inner
            .close()
            .await
            .unwrap_or_else(|never: Infallible| match never {}))
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
