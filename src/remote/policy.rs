//! Who may make the gateway run programs: a remote overlay may add or change a `command`
//! job, or point an alarm's `run` at one, only where the local file sets
//! `mqtt.allow_remote_commands = true` (SPEC sections 5 and 9).
//!
//! Invariants: the rule compares the validated merged config with the validated local
//! file, so it holds however the overlay spelled its change. "Changed" means any
//! difference at all in the job (a new schedule makes a program run at other times),
//! and a job that stops being a command job is a change too. An alarm may have its
//! thresholds changed by an overlay while its `run` stays what the file says; what is
//! refused is a new alarm, or a new `run`, that names a command job. This module only
//! compares; it does not know where the configs came from.

use crate::config::{Config, JobKind};

/// Every way `merged` goes past what the file allows, as (key path, message); alarm
/// paths index `merged.alarms`.
pub(super) fn command_changes(file: &Config, merged: &Config) -> Vec<(String, String)> {
    const WHY: &str = "(mqtt.allow_remote_commands is false in the local file)";
    let mut refused = Vec::new();
    let is_command = |config: &Config, name: &str| {
        config
            .job(name)
            .is_some_and(|j| matches!(j.kind, JobKind::Command(_)))
    };
    for job in &merged.jobs {
        let in_file = file.job(&job.name);
        let was_command = is_command(file, &job.name);
        let is_now_command = matches!(job.kind, JobKind::Command(_));
        let message = match (in_file, was_command, is_now_command) {
            (None, _, true) => "a remote overlay may not add a command job",
            (Some(_), false, true) => "a remote overlay may not make a job a command job",
            (Some(f), true, _) if f != job => "a remote overlay may not change a command job",
            _ => continue,
        };
        refused.push((format!("jobs.{}", job.name), format!("{message} {WHY}")));
    }
    for (i, alarm) in merged.alarms.iter().enumerate() {
        let Some(run) = &alarm.run else { continue };
        if !is_command(merged, run) {
            continue;
        }
        let file_run = file
            .alarms
            .iter()
            .find(|a| a.id == alarm.id)
            .and_then(|a| a.run.as_ref());
        if file_run != Some(run) {
            refused.push((
                format!("alarm[{i}].run"),
                format!("a remote overlay may not point an alarm at the command job {run:?} {WHY}"),
            ));
        }
    }
    refused
}
