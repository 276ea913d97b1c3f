//! Named tracked work, for the state dump and the stuck-work report. See
//! [`LifecycleHandle::spawn_named`](crate::LifecycleHandle::spawn_named).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::outcome::WorkItem;
use crate::phase::Phase;

/// Named work in flight: name, phase and start of each item, by a key its guard removes.
#[derive(Debug, Default)]
pub(crate) struct WorkRegistry {
    /// Locked briefly to add, remove or copy; never across an await or another lock.
    items: Mutex<(u64, BTreeMap<u64, Named>)>,
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

    /// Every item now, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<WorkItem> {
        let now = Instant::now();
        // Keys grow with each item, so the map's order is the age order.
        self.items
            .lock()
            .1
            .values()
            .map(|(name, phase, started)| WorkItem {
                name: name.to_string(),
                phase: phase.clone(),
                age: now.saturating_duration_since(*started),
            })
            .collect()
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
