//! `tidegate alarms [--json]`: every `[[alarm]]` rule with its state, since when, and
//! the newest good reading of its sensor. Reads the configuration and the database
//! (never creating it), so it works beside a running agent.

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Failure, load_for_cli, other};
use crate::alarm::AlarmState;
use crate::config::{AlarmConfig, Severity, Threshold};
use crate::store::{self, StoreError, alarms};
use crate::time::{format_utc, from_millis};

/// One rule and what the buffer knows of it.
struct Row<'a> {
    rule: &'a AlarmConfig,
    state: AlarmState,
    /// The newest good reading of the rule's sensor, else the one the rule last saw.
    last: Option<(f64, DateTime<Utc>)>,
}

impl Row<'_> {
    fn condition(&self) -> String {
        match self.rule.threshold {
            Threshold::Below(t) => format!("< {t}"),
            Threshold::Above(t) => format!("> {t}"),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.rule.id,
            "sensor": self.rule.sensor,
            "state": self.state.phase.name(),
            "since": self.state.phase.since().map(format_utc),
            "last_value": self.last.map(|(v, _)| v),
            "last_ts": self.last.map(|(_, ts)| format_utc(ts)),
            "severity": severity(self.rule.severity),
            "run": self.rule.run,
        })
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

pub fn list(path: &Path, as_json: bool) -> Result<ExitCode, Failure> {
    let config = load_for_cli(path)?;
    let rules = &config.alarms;
    let rows: Vec<Row<'_>> = match store::open_existing(&config.agent.state_dir) {
        Ok(conn) => {
            let states = alarms::load(&conn, rules).map_err(other)?;
            rules
                .iter()
                .zip(states)
                .map(|(rule, state)| {
                    let newest = alarms::last_good(&conn, &rule.sensor)
                        .map_err(other)?
                        .and_then(|(v, ms)| from_millis(ms).map(|ts| (v, ts)));
                    let seen = state.last_value.zip(state.last_ts);
                    let last = match (newest, seen) {
                        (Some(n), Some(s)) => Some(if n.1 >= s.1 { n } else { s }),
                        (n, s) => n.or(s),
                    };
                    Ok(Row { rule, state, last })
                })
                .collect::<Result<_, Failure>>()?
        }
        // No database yet: every rule is ok and has seen nothing.
        Err(StoreError::Missing { .. }) => rules
            .iter()
            .map(|rule| Row {
                rule,
                state: AlarmState::default(),
                last: None,
            })
            .collect(),
        Err(e) => return Err(other(e)),
    };
    if as_json {
        let array = Value::Array(rows.iter().map(Row::to_json).collect());
        println!("{}", serde_json::to_string_pretty(&array).map_err(other)?);
    } else if rows.is_empty() {
        println!("no [[alarm]] rules in {}", path.display());
    } else {
        print!("{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn table(rows: &[Row<'_>]) -> String {
    let dash = || "-".to_string();
    let short = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut lines = vec![
        [
            "ID",
            "SENSOR",
            "WHEN",
            "SEVERITY",
            "STATE",
            "SINCE",
            "LAST VALUE",
            "AT",
        ]
        .map(String::from),
    ];
    for row in rows {
        lines.push([
            row.rule.id.clone(),
            row.rule.sensor.clone(),
            row.condition(),
            severity(row.rule.severity).to_string(),
            row.state.phase.name().to_string(),
            row.state.phase.since().map_or_else(dash, short),
            row.last.map_or_else(dash, |(v, _)| v.to_string()),
            row.last.map_or_else(dash, |(_, ts)| short(ts)),
        ]);
    }
    super::columns(&lines)
}
