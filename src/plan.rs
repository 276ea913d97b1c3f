//! Planning: the validated phase order and each phase's hooks in run order, built once by
//! [`Builder::build`](crate::Builder::build) and walked by the runner.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::errors::BuildError;
use crate::graph;
use crate::hook::{Hook, HookSpec, SkippedCallback};
use crate::phase::{Builtin, Phase, PhaseSpec};

/// A validated phase graph with its hooks, in run order.
pub(crate) struct Plan {
    pub(crate) phases: Vec<PlannedPhase>,
    /// Index of `running`: phases before it are the startup side.
    pub(crate) running: usize,
    /// Index of the first phase after `wait`: from here on phases always run.
    pub(crate) exit_side: usize,
}

pub(crate) struct PlannedPhase {
    pub(crate) phase: Phase,
    pub(crate) builtin: Option<Builtin>,
    pub(crate) concurrent: bool,
    pub(crate) hooks: Vec<PlannedHook>,
}

pub(crate) struct PlannedHook {
    pub(crate) name: Cow<'static, str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) teardown_of: Option<Cow<'static, str>>,
    pub(crate) hook: Arc<dyn Hook>,
    pub(crate) on_skipped: Option<SkippedCallback>,
    pub(crate) level: usize,
}

impl Plan {
    /// Every hook in plan order as `phase/name`: the pending list a state dump starts from.
    pub(crate) fn hook_names(&self) -> Vec<Option<String>> {
        self.phases
            .iter()
            .flat_map(|p| {
                p.hooks
                    .iter()
                    .map(move |h| Some(format!("{}/{}", p.phase, h.name)))
            })
            .collect()
    }

    /// The index in plan order of the first hook of phase `index`.
    pub(crate) fn first_hook(&self, index: usize) -> usize {
        self.phases[..index].iter().map(|p| p.hooks.len()).sum()
    }

    /// How many hooks the plan holds.
    pub(crate) fn hook_count(&self) -> usize {
        self.phases.iter().map(|p| p.hooks.len()).sum()
    }
}

/// Orders built-in and custom phases into one sequence.
pub(crate) fn order_phases(custom: &[PhaseSpec]) -> Result<Vec<Phase>, BuildError> {
    let mut phases: Vec<Phase> = Phase::BUILTIN.to_vec();
    let mut index: HashMap<Phase, usize> = phases
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    for spec in custom {
        if index.contains_key(&spec.phase) {
            return Err(BuildError::DuplicatePhase(spec.phase.to_string()));
        }
        index.insert(spec.phase.clone(), phases.len());
        phases.push(spec.phase.clone());
    }
    let mut edges: Vec<(usize, usize)> = (1..Phase::BUILTIN.len()).map(|i| (i - 1, i)).collect();
    for spec in custom {
        if spec.after.is_empty() && spec.before.is_empty() {
            return Err(BuildError::UnanchoredPhase(spec.phase.to_string()));
        }
        let me = index[&spec.phase];
        let lookup = |other: &Phase| {
            index
                .get(other)
                .copied()
                .ok_or_else(|| BuildError::UnknownPhase {
                    user: format!("phase `{}`", spec.phase),
                    phase: other.to_string(),
                })
        };
        for other in &spec.after {
            edges.push((lookup(other)?, me));
        }
        for other in &spec.before {
            edges.push((me, lookup(other)?));
        }
    }
    let (sorted, _) = graph::order(phases.len(), &edges, |v| v as i64).map_err(|cycle| {
        BuildError::PhaseCycle {
            cycle: cycle.into_iter().map(|v| phases[v].to_string()).collect(),
        }
    })?;
    Ok(sorted.into_iter().map(|v| phases[v].clone()).collect())
}

/// Drops repeated registrations of the same hook (same name, same origin); rejects two different
/// hooks with one name.
pub(crate) fn dedupe(hooks: Vec<HookSpec>) -> Result<Vec<HookSpec>, BuildError> {
    let mut keep = vec![true; hooks.len()];
    {
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(hooks.len());
        for (i, hook) in hooks.iter().enumerate() {
            if let Some(&at) = seen.get(&*hook.name) {
                let first = &hooks[at];
                if first.origin.is_some()
                    && first.origin == hook.origin
                    && first.phase == hook.phase
                {
                    keep[i] = false;
                    continue;
                }
                return Err(BuildError::DuplicateHook {
                    name: hook.name.to_string(),
                    first: first.phase.to_string(),
                    second: hook.phase.to_string(),
                });
            }
            seen.insert(&hook.name, i);
        }
    }
    if keep.iter().all(|&k| k) {
        return Ok(hooks);
    }
    Ok(hooks
        .into_iter()
        .zip(keep)
        .filter_map(|(h, k)| k.then_some(h))
        .collect())
}

/// Places every hook in its phase, in run order.
pub(crate) fn plan_hooks(
    phases: Vec<Phase>,
    hooks: Vec<HookSpec>,
    concurrent: &[Phase],
) -> Result<Plan, BuildError> {
    let position: HashMap<&Phase, usize> = phases.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let running = position[&Phase::RUNNING];
    let wait = position[&Phase::WAIT];
    for phase in concurrent {
        if !position.contains_key(phase) {
            return Err(BuildError::UnknownPhase {
                user: "`Builder::concurrent`".into(),
                phase: phase.to_string(),
            });
        }
    }
    let mut by_phase: Vec<Vec<usize>> = vec![Vec::new(); phases.len()];
    let mut phase_of: HashMap<&str, usize> = HashMap::with_capacity(hooks.len());
    for (registered, hook) in hooks.iter().enumerate() {
        let Some(&at) = position.get(&hook.phase) else {
            return Err(BuildError::UnknownPhase {
                user: format!("hook `{}`", hook.name),
                phase: hook.phase.to_string(),
            });
        };
        phase_of.insert(&hook.name, at);
        by_phase[at].push(registered);
    }
    let mut slots: Vec<Option<HookSpec>> = hooks.iter().map(|_| None).collect();

    let names: Vec<String> = phases.iter().map(Phase::to_string).collect();
    let mut planned = Vec::with_capacity(phases.len());
    for (at, (phase, members)) in phases.iter().cloned().zip(&by_phase).enumerate() {
        let local: HashMap<&str, usize> = members
            .iter()
            .enumerate()
            .map(|(i, &r)| (&*hooks[r].name, i))
            .collect();
        let mut edges = Vec::new();
        for (i, hook) in members.iter().map(|&r| &hooks[r]).enumerate() {
            let deps = hook.after.iter().map(|d| ("after", d));
            for (relation, dependency) in deps.chain(hook.before.iter().map(|d| ("before", d))) {
                let j = match local.get(&**dependency) {
                    Some(&j) => j,
                    None => {
                        return Err(match phase_of.get(&**dependency) {
                            Some(&other) => BuildError::CrossPhaseDependency {
                                hook: hook.name.to_string(),
                                phase: phase.to_string(),
                                relation,
                                dependency: dependency.to_string(),
                                other_phase: names[other].clone(),
                            },
                            None => BuildError::UnknownDependency {
                                hook: hook.name.to_string(),
                                relation,
                                dependency: dependency.to_string(),
                            },
                        });
                    }
                };
                edges.push(if relation == "after" { (j, i) } else { (i, j) });
            }
            if let Some(startup) = &hook.teardown_of {
                let problem = match phase_of.get(&**startup) {
                    None => Some("no hook of that name is registered"),
                    Some(&other) if other >= running => {
                        Some("that hook does not run before `running`")
                    }
                    Some(_) if at <= running => Some("the teardown itself runs before `running`"),
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    return Err(BuildError::BadTeardown {
                        hook: hook.name.to_string(),
                        startup: startup.to_string(),
                        problem,
                    });
                }
            }
        }
        // Startup side in registration order; teardown side in reverse (Sidekiq, fx).
        let teardown = at > running;
        let rank = |v: usize| {
            let registered = members[v] as i64;
            if teardown { -registered } else { registered }
        };
        let (sorted, levels) =
            graph::order(members.len(), &edges, rank).map_err(|cycle| BuildError::HookCycle {
                phase: phase.to_string(),
                cycle: cycle
                    .iter()
                    .map(|&v| hooks[members[v]].name.to_string())
                    .collect(),
            })?;
        planned.push((phase, sorted, levels));
    }
    drop(phase_of);
    for (r, hook) in hooks.into_iter().enumerate() {
        slots[r] = Some(hook);
    }
    let planned: Vec<PlannedPhase> = planned
        .into_iter()
        .zip(&by_phase)
        .map(|((phase, sorted, levels), members)| {
            let planned_hooks = sorted
                .into_iter()
                .map(|v| {
                    let spec = slots[members[v]].take().expect("each hook is placed once");
                    PlannedHook {
                        name: spec.name,
                        timeout: spec.timeout,
                        teardown_of: spec.teardown_of,
                        hook: spec.hook,
                        on_skipped: spec.on_skipped,
                        level: levels[v],
                    }
                })
                .collect();
            PlannedPhase {
                builtin: phase.builtin(),
                concurrent: concurrent.contains(&phase),
                phase,
                hooks: planned_hooks,
            }
        })
        .collect();
    debug_assert_eq!(planned[running].builtin, Some(Builtin::Running));
    Ok(Plan {
        phases: planned,
        running,
        exit_side: wait + 1,
    })
}
