//! An exhaustive interleaving explorer for small models of lock-free protocols: every reachable
//! state of a set of threads, each a state machine whose steps are single atomic operations, is
//! visited once (depth first, states deduplicated), so every interleaving is covered.
//!
//! It checks a safety property in every state, a final property in every state where all threads
//! are done, and reports a deadlock (some thread not done, none able to step) as a failure: that
//! is how a lost wake-up shows. Steps are sequentially consistent, which is what the modelled
//! protocols rely on (their atomics are `SeqCst` where the protocol needs them).

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A protocol as threads over a shared state.
pub(crate) trait Model: Clone + Eq + Hash + Debug {
    /// How many threads the model has.
    fn threads(&self) -> usize;
    /// Whether thread `t` has finished.
    fn done(&self, t: usize) -> bool;
    /// Whether thread `t` can take a step now (a thread waiting for a wake-up cannot).
    fn can_step(&self, t: usize) -> bool;
    /// Takes one atomic step of thread `t`.
    fn step(&mut self, t: usize);
}

/// What an exploration visited.
#[derive(Debug, Default)]
pub(crate) struct Explored {
    pub(crate) states: usize,
    pub(crate) finals: usize,
}

/// Visits every state reachable from `init`. `always` must hold in every state and `at_end` in
/// every state where all threads are done; no reachable state may be a deadlock. Returns the
/// first violation with the path (thread ids) that reaches it.
pub(crate) fn explore<M: Model>(
    init: M,
    always: impl Fn(&M) -> Result<(), String>,
    at_end: impl Fn(&M) -> Result<(), String>,
) -> Result<Explored, String> {
    let mut seen: HashSet<M> = HashSet::new();
    let mut stack: Vec<(M, Vec<usize>)> = vec![(init, Vec::new())];
    let mut explored = Explored::default();
    while let Some((state, path)) = stack.pop() {
        if !seen.insert(state.clone()) {
            continue;
        }
        explored.states += 1;
        always(&state).map_err(|e| format!("{e}\nafter steps {path:?}\nin {state:#?}"))?;
        let threads = state.threads();
        if (0..threads).all(|t| state.done(t)) {
            explored.finals += 1;
            at_end(&state).map_err(|e| format!("{e}\nafter steps {path:?}\nin {state:#?}"))?;
            continue;
        }
        let runnable: Vec<usize> = (0..threads)
            .filter(|&t| !state.done(t) && state.can_step(t))
            .collect();
        if runnable.is_empty() {
            return Err(format!(
                "deadlock (a lost wake-up): no thread can step\nafter steps {path:?}\nin {state:#?}"
            ));
        }
        for t in runnable {
            let mut next = state.clone();
            next.step(t);
            let mut next_path = path.clone();
            next_path.push(t);
            stack.push((next, next_path));
        }
    }
    Ok(explored)
}
