//! The synchronization the core's hand-written protocols use, switched to loom's by
//! `--cfg lifecycle_loom` so the real code runs under loom's model checker (see `cancel.rs`).

#[cfg(not(lifecycle_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize};

// Only the loom models hold an `Arc` of their own; the library's is `std`'s.
#[cfg(all(test, lifecycle_loom))]
pub(crate) use loom::sync::Arc;
#[cfg(lifecycle_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};

/// A mutex with one `lock()` for both builds: parking_lot's (no poisoning), or loom's.
pub(crate) struct Mutex<T> {
    #[cfg(not(lifecycle_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(lifecycle_loom)]
    inner: loom::sync::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub(crate) fn new(value: T) -> Self {
        Mutex {
            #[cfg(not(lifecycle_loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(lifecycle_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Locks it; the guard unlocks on drop.
    #[cfg(not(lifecycle_loom))]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.inner.lock()
    }

    /// Locks it; the guard unlocks on drop.
    #[cfg(lifecycle_loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // loom's mutex poisons only if a model thread panicked, which fails the model anyway.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mutex")
    }
}
