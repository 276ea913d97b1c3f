//! Named tracked work, for the state dump and the stuck-work report. See
//! [`LifecycleHandle::spawn_named`](crate::LifecycleHandle::spawn_named) and
//! [`WorkSource`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::outcome::WorkItem;
use crate::phase::Phase;

/// Work an adapter lists itself, named only when a snapshot asks: the HTTP server's requests,
/// say, whose names (`http GET /path from peer`) would cost a string and a shared lock per
/// request if each were a [`work_guard_named`](crate::LifecycleHandle::work_guard_named).
///
/// Register it with [`LifecycleHandle::work_source`](crate::LifecycleHandle::work_source) and
/// count each item with a plain [`work_guard`](crate::LifecycleHandle::work_guard); the
/// snapshot, the `SIGTTIN` dump and the stuck-work report then list what
/// [`for_each`](Self::for_each) yields beside the named work, oldest first, with the phase
/// each item began in.
///
/// ```
/// use std::sync::Arc;
/// use lifecycle_hooks::{WorkSource, testing};
/// use parking_lot::Mutex;
/// use tokio::time::Instant;
///
/// /// Orders being packed, each with when it began.
/// struct Packing(Mutex<Vec<(u64, Instant)>>);
///
/// impl WorkSource for Packing {
///     fn for_each(&self, item: &mut dyn FnMut(String, Instant)) {
///         for (order, began) in self.0.lock().iter() {
///             item(format!("pack order {order}"), *began);
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = testing::builder().build().unwrap();
/// let handle = lifecycle.handle();
/// let packing = Arc::new(Packing(Mutex::new(vec![(7, Instant::now())])));
/// handle.work_source(&packing);
/// let _guard = handle.work_guard();
/// assert_eq!(handle.snapshot().work[0].name, "pack order 7");
/// # }
/// ```
pub trait WorkSource: Send + Sync {
    /// Calls `item` with the name and start of each piece of work in flight now.
    ///
    /// Called from whatever thread takes the snapshot; keep any lock it takes short, and take
    /// none of the lifecycle's own (do not call [`LifecycleHandle`](crate::LifecycleHandle)
    /// methods from it).
    fn for_each(&self, item: &mut dyn FnMut(String, Instant));
}

/// Named work in flight: name, phase and start of each item, by a key its guard removes; the
/// work sources; and when each phase began, for the phase of a source's item.
pub(crate) struct WorkRegistry {
    /// Locked briefly to add, remove or copy; never across an await or another lock.
    items: Mutex<(u64, BTreeMap<u64, Named>)>,
    /// Registered sources; a dropped one is skipped (and forgotten at the next registration).
    sources: Mutex<Vec<Weak<dyn WorkSource>>>,
    /// The initial phase, then each phase entered and when, in order.
    phases: Mutex<(Phase, Vec<(Instant, Phase)>)>,
}

impl std::fmt::Debug for WorkRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkRegistry")
            .field("named", &self.items.lock().1.len())
            .field("sources", &self.sources.lock().len())
            .finish_non_exhaustive()
    }
}

/// One named item: its name, the phase it began in, and when.
type Named = (Cow<'static, str>, Phase, Instant);

impl WorkRegistry {
    pub(crate) fn add(&self, name: Cow<'static, str>, phase: Phase) -> u64 {
        let mut items = self.items.lock();
        let key = items.0;
        items.0 += 1;
        items.1.insert(key, (name, phase, Instant::now()));
        key
    }

    fn remove(&self, key: u64) {
        self.items.lock().1.remove(&key);
    }

    /// The registry of a lifecycle that starts in `initial`.
    pub(crate) fn new(initial: Phase) -> Self {
        WorkRegistry {
            items: Mutex::default(),
            sources: Mutex::default(),
            phases: Mutex::new((initial, Vec::new())),
        }
    }

    /// The lifecycle entered `phase` now.
    pub(crate) fn entered(&self, phase: Phase) {
        self.phases.lock().1.push((Instant::now(), phase));
    }

    /// Registers `source`; it is listed until dropped.
    pub(crate) fn add_source(&self, source: Weak<dyn WorkSource>) {
        let mut sources = self.sources.lock();
        sources.retain(|source| source.strong_count() > 0);
        sources.push(source);
    }

    /// Every item now, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<WorkItem> {
        let now = Instant::now();
        // Keys grow with each item, so the map's order is the age order.
        let mut items: Vec<WorkItem> = self
            .items
            .lock()
            .1
            .values()
            .map(|(name, phase, started)| WorkItem {
                name: name.to_string(),
                phase: phase.clone(),
                age: now.saturating_duration_since(*started),
            })
            .collect();
        // Copied out, so no lock of ours is held while a source runs.
        let sources: Vec<Arc<dyn WorkSource>> = self
            .sources
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        if sources.is_empty() {
            return items;
        }
        let mut listed = Vec::new();
        for source in &sources {
            // A source that panics must not take down its caller (the runner, at the drain
            // deadline): what it listed before the panic stands, and the panic is logged.
            let listing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                source.for_each(&mut |name, started| listed.push((name, started)));
            }));
            if let Err(panic) = listing {
                tracing::error!(
                    target: "lifecycle_hooks",
                    panic = %crate::errors::panic_message(&*panic),
                    "a work source panicked while listing its work"
                );
            }
        }
        let (initial, phases) = &*self.phases.lock();
        items.extend(listed.into_iter().map(|(name, started)| {
            // The last phase entered at or before the start; the initial one before any.
            let at = phases.partition_point(|(entered, _)| *entered <= started);
            let phase = match at.checked_sub(1) {
                Some(last) => phases[last].1.clone(),
                None => initial.clone(),
            };
            WorkItem {
                name,
                phase,
                age: now.saturating_duration_since(started),
            }
        }));
        // Stable: named items keep their order among equal ages.
        items.sort_by_key(|item| std::cmp::Reverse(item.age));
        items
    }
}

/// Removes a named work item from the registry when dropped.
#[derive(Debug)]
pub(crate) struct NamedKey {
    pub(crate) registry: Arc<WorkRegistry>,
    pub(crate) key: u64,
}

impl Drop for NamedKey {
    fn drop(&mut self) {
        self.registry.remove(self.key);
    }
}
