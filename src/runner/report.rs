//! Building the report of a run: one [`HookReport`] per hook, one [`PhaseReport`] per phase,
//! and the [`Outcome`].

use std::time::Duration;

use tokio::time::Instant;

use super::Runner;
use crate::event::Event;
use crate::outcome::{HookReport, HookResult, Outcome, PhaseReport, PhaseStatus, Reason};
use crate::phase::Phase;
use crate::plan::PlannedHook;
use crate::signals::Signal;

impl Runner<'_> {
    pub(super) fn skip_phase(&mut self, index: usize) {
        let planned = &self.plan.phases[index];
        tracing::info!(target: "lifecycle_hooks", phase = %planned.phase, "phase skipped");
        self.shared.events.emit(Event::PhaseSkipped {
            phase: planned.phase.clone(),
        });
        let first = self.plan.first_hook(index);
        for (offset, hook) in planned.hooks.iter().enumerate() {
            self.record(
                first + offset,
                &planned.phase,
                hook,
                HookResult::Skipped,
                Duration::ZERO,
                None,
            );
        }
        self.phases[index] = Some(PhaseReport {
            phase: planned.phase.clone(),
            status: PhaseStatus::Skipped,
            elapsed: Duration::ZERO,
        });
    }

    pub(super) fn record(
        &mut self,
        global: usize,
        phase: &Phase,
        hook: &PlannedHook,
        result: HookResult,
        elapsed: Duration,
        note: Option<String>,
    ) {
        let elapsed_ms = elapsed.as_millis() as u64;
        if let Some(note) = &note {
            tracing::info!(target: "lifecycle_hooks", %phase, hook = %hook.name, note = %note, "hook note");
        }
        match &result {
            HookResult::Ok | HookResult::Skipped => {
                tracing::info!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), elapsed_ms, "hook")
            }
            HookResult::Error(message) | HookResult::Panicked(message) => {
                tracing::error!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), error = %message, elapsed_ms, "hook failed")
            }
            HookResult::TimedOut => {
                tracing::error!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), elapsed_ms, "hook timed out")
            }
            HookResult::Abandoned => {
                tracing::error!(target: "lifecycle_hooks", %phase, hook = %hook.name, result = result.as_str(), elapsed_ms, "hook cut off by escalation")
            }
        }
        self.reported[global] = true;
        self.shared.pending.lock()[global] = None;
        if result == HookResult::Skipped {
            if let Some(callback) = &hook.on_skipped {
                callback(self.handle);
            }
        }
        self.shared.events.emit(Event::HookFinished {
            phase: phase.clone(),
            name: hook.name.to_string(),
            result: result.clone(),
            elapsed,
        });
        self.hooks.push(HookReport {
            phase: phase.clone(),
            name: hook.name.to_string(),
            result,
            elapsed,
            note,
        });
    }

    /// Ends the run: every hook and phase not yet reported is reported skipped (or interrupted),
    /// the exit status is chosen by the policy, and the event stream ends.
    pub(crate) fn finish(mut self, immediate: Option<Signal>) -> Outcome {
        let shared = self.shared;
        let plan = self.plan;
        if let Some((index, started)) = self.current.take() {
            self.phases[index] = Some(PhaseReport {
                phase: plan.phases[index].phase.clone(),
                status: PhaseStatus::Interrupted,
                elapsed: started.elapsed(),
            });
        }
        let phases: Vec<PhaseReport> = self
            .phases
            .iter()
            .zip(&plan.phases)
            .map(|(report, planned)| {
                report.clone().unwrap_or_else(|| PhaseReport {
                    phase: planned.phase.clone(),
                    status: PhaseStatus::Skipped,
                    elapsed: Duration::ZERO,
                })
            })
            .collect();
        let mut global = 0;
        for planned in &plan.phases {
            for hook in &planned.hooks {
                if !self.reported[global] {
                    if let Some(callback) = &hook.on_skipped {
                        callback(self.handle);
                    }
                    self.hooks.push(HookReport {
                        phase: planned.phase.clone(),
                        name: hook.name.to_string(),
                        result: HookResult::Skipped,
                        elapsed: Duration::ZERO,
                        note: None,
                    });
                }
                global += 1;
            }
        }
        let control = self.control();
        let reason = control.reason.unwrap_or(Reason::Failure);
        let panicked_work = shared.cancel_wake.panicked();
        let failed = self.hooks.iter().any(|h| h.result.is_failure())
            || !shared.failures.lock().is_empty()
            || !shared.lost.lock().is_empty()
            || panicked_work > 0;
        let forced = self.forced || control.escalated();
        let codes = &shared.config.exit_codes;
        let exit_code = match immediate {
            Some(signal) => codes.immediate(signal),
            None => codes.status(reason, failed, forced),
        };
        let stop_elapsed = control.deadlines.map_or(Duration::ZERO, |d| {
            Instant::now().saturating_duration_since(d.stop_at())
        });
        tracing::info!(
            target: "lifecycle_hooks",
            %reason,
            exit_code,
            forced,
            cancelled_work = self.cancelled_work,
            panicked_work,
            elapsed_ms = stop_elapsed.as_millis() as u64,
            "lifecycle finished"
        );
        crate::fdstore::release_stored(
            shared.config.notifier.as_ref(),
            &shared.stored,
            reason == Reason::Restart && immediate.is_none(),
        );
        shared.events.emit(Event::Finished { reason, exit_code });
        // The run is over: streams end (readers see `None`), later subscribers get an ended one.
        shared.events.close();
        Outcome {
            reason,
            exit_code,
            forced,
            escalated: control.escalated(),
            immediate,
            phases,
            hooks: self.hooks,
            cancelled_work: self.cancelled_work,
            outlived_grace: self.outlived_grace,
            panicked_work,
            stuck_work: self.stuck_work,
            failures: shared.failures.lock().clone(),
            handed_back: shared.handed_back.lock().clone(),
            lost: shared.lost.lock().clone(),
            stop_elapsed,
        }
    }
}
