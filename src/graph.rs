//! Deterministic topological ordering, shared by the phase graph and the hooks inside a phase.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Orders nodes `0..n` so that for every edge `(a, b)` node `a` comes before `b`.
///
/// Among nodes that are ready at the same time, the one with the lowest `rank` goes first, so the
/// order is fully determined by the edges and the ranks. Returns the order and each node's level
/// (the length of the longest chain of edges leading to it), or, if the edges contain a cycle, the
/// nodes of one cycle in edge order.
pub(crate) fn order(
    n: usize,
    edges: &[(usize, usize)],
    rank: impl Fn(usize) -> i64,
) -> Result<(Vec<usize>, Vec<usize>), Vec<usize>> {
    let mut successors = vec![Vec::new(); n];
    let mut predecessors = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(a, b) in edges {
        successors[a].push(b);
        predecessors[b].push(a);
        indegree[b] += 1;
    }
    let mut ready: BinaryHeap<Reverse<(i64, usize)>> = (0..n)
        .filter(|&v| indegree[v] == 0)
        .map(|v| Reverse((rank(v), v)))
        .collect();
    let mut sorted = Vec::with_capacity(n);
    let mut level = vec![0usize; n];
    while let Some(Reverse((_, v))) = ready.pop() {
        sorted.push(v);
        for &w in &successors[v] {
            level[w] = level[w].max(level[v] + 1);
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.push(Reverse((rank(w), w)));
            }
        }
    }
    if sorted.len() == n {
        return Ok((sorted, level));
    }
    // Every node left over still has a predecessor that is left over, so walking predecessors
    // from any of them must revisit a node: that loop is a cycle.
    let start = (0..n)
        .find(|&v| indegree[v] > 0)
        .expect("a node is left over");
    let mut seen = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut v = start;
    while seen[v] == usize::MAX {
        seen[v] = path.len();
        path.push(v);
        v = *predecessors[v]
            .iter()
            .find(|&&p| indegree[p] > 0)
            .expect("a left-over node has a left-over predecessor");
    }
    let mut cycle = path.split_off(seen[v]);
    cycle.reverse();
    // Start the cycle at its smallest node so the message is stable.
    let min_at = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
    cycle.rotate_left(min_at);
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::order;

    #[test]
    fn ties_follow_rank() {
        let (sorted, _) = order(4, &[], |v| -(v as i64)).unwrap();
        assert_eq!(sorted, vec![3, 2, 1, 0]);
        let (sorted, _) = order(4, &[], |v| v as i64).unwrap();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
    }

    #[test]
    fn edges_beat_rank() {
        // 0 must come after 3 even though it ranks first.
        let (sorted, level) = order(4, &[(3, 0), (0, 1)], |v| v as i64).unwrap();
        assert_eq!(sorted, vec![2, 3, 0, 1]);
        assert_eq!(level, vec![1, 2, 0, 0]);
    }

    #[test]
    fn cycle_names_exactly_its_members_in_order() {
        // 0 -> 1 -> 2 -> 0 is a cycle; 3 hangs off it and 4 is free.
        let err = order(5, &[(0, 1), (1, 2), (2, 0), (2, 3)], |v| v as i64).unwrap_err();
        assert_eq!(err, vec![0, 1, 2]);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        assert_eq!(order(2, &[(1, 1)], |v| v as i64).unwrap_err(), vec![1]);
    }
}
