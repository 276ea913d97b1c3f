//! Exhaustive interleaving test of the pool's striped counters (`src/counters.rs`): workers add
//! to one stripe per thread, and a snapshot sums the stripes one load at a time, endings first
//! and fetches last, so that `in_flight = fetched - ended` is never negative. Every interleaving
//! of two workers (each job fetched on one stripe and ended on the same or another, as a task
//! can move threads) with a snapshot is explored; a twin that reads fetches first must be caught.
//!
//! The model is sequentially consistent; the code gets the same guarantee from `Release` adds
//! and `Acquire` loads (a loaded ending carries its earlier fetch with it). `Cells` is
//! crate-private, so the model follows its order of operations rather than calling it.

#[path = "../../kafka/tests/interleavings/mod.rs"]
mod interleavings;

use interleavings::{Model, explore};

const STRIPES: usize = 2;

/// Where a worker is: one job, fetched then completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Worker {
    Fetch,
    Complete,
    Done,
}

/// Where the snapshot is: which stripe of which counter it loads next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Reader {
    Completed(usize),
    Fetched(usize),
    Done,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Counters {
    fetches_first: bool,
    fetched: [u64; STRIPES],
    completed: [u64; STRIPES],
    /// Per worker: the stripe it fetches on and the stripe it completes on.
    stripes: Vec<(usize, usize)>,
    workers: Vec<Worker>,
    reader: Reader,
    sum_fetched: u64,
    sum_completed: u64,
}

impl Counters {
    fn new(stripes: Vec<(usize, usize)>, fetches_first: bool) -> Self {
        Counters {
            fetches_first,
            fetched: [0; STRIPES],
            completed: [0; STRIPES],
            workers: vec![Worker::Fetch; stripes.len()],
            stripes,
            reader: if fetches_first {
                Reader::Fetched(0)
            } else {
                Reader::Completed(0)
            },
            sum_fetched: 0,
            sum_completed: 0,
        }
    }
}

impl Model for Counters {
    fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    fn done(&self, t: usize) -> bool {
        match t.checked_sub(1) {
            None => self.reader == Reader::Done,
            Some(w) => self.workers[w] == Worker::Done,
        }
    }

    fn can_step(&self, _t: usize) -> bool {
        true
    }

    fn step(&mut self, t: usize) {
        let Some(w) = t.checked_sub(1) else {
            let last = STRIPES - 1;
            self.reader = match self.reader {
                Reader::Completed(s) => {
                    self.sum_completed += self.completed[s];
                    match (s == last, self.fetches_first) {
                        (false, _) => Reader::Completed(s + 1),
                        (true, false) => Reader::Fetched(0),
                        (true, true) => Reader::Done,
                    }
                }
                Reader::Fetched(s) => {
                    self.sum_fetched += self.fetched[s];
                    match (s == last, self.fetches_first) {
                        (false, _) => Reader::Fetched(s + 1),
                        (true, false) => Reader::Done,
                        (true, true) => Reader::Completed(0),
                    }
                }
                Reader::Done => unreachable!("a done thread does not step"),
            };
            return;
        };
        let (fetch_on, complete_on) = self.stripes[w];
        self.workers[w] = match self.workers[w] {
            Worker::Fetch => {
                self.fetched[fetch_on] += 1;
                Worker::Complete
            }
            Worker::Complete => {
                self.completed[complete_on] += 1;
                Worker::Done
            }
            Worker::Done => unreachable!("a done thread does not step"),
        };
    }
}

fn in_flight_never_negative(c: &Counters) -> Result<(), String> {
    if c.sum_completed > c.sum_fetched {
        return Err(format!(
            "snapshot saw {} completed of {} fetched",
            c.sum_completed, c.sum_fetched
        ));
    }
    Ok(())
}

/// Every way two workers can place their fetch and completion on the stripes.
fn placements() -> Vec<Vec<(usize, usize)>> {
    let one: Vec<(usize, usize)> = (0..STRIPES)
        .flat_map(|f| (0..STRIPES).map(move |c| (f, c)))
        .collect();
    one.iter()
        .flat_map(|&a| one.iter().map(move |&b| vec![a, b]))
        .collect()
}

#[test]
fn a_snapshot_never_sees_more_jobs_ended_than_fetched() {
    for stripes in placements() {
        let explored = explore(
            Counters::new(stripes.clone(), false),
            |_| Ok(()),
            in_flight_never_negative,
        )
        .unwrap_or_else(|e| panic!("stripes {stripes:?}: {e}"));
        assert!(
            explored.states > explored.finals && explored.finals > 1,
            "{explored:?}"
        );
    }
}

#[test]
fn the_explorer_catches_a_snapshot_that_reads_fetches_first() {
    let caught = placements().into_iter().any(|stripes| {
        explore(
            Counters::new(stripes, true),
            |_| Ok(()),
            in_flight_never_negative,
        )
        .is_err()
    });
    assert!(
        caught,
        "reading fetches first can see a job ended but not fetched"
    );
}
