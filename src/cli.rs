//! The command line (SPEC section 6): parse, dispatch, and map every outcome to an exit
//! code: 0 success, 2 bad usage or bad config, 1 any other failure. Errors are one line
//! on stderr.
//!
//! Every command but `run` works while an agent runs: they read the same database
//! through their own short transactions.

mod alarms;
mod buffer;
mod jobs;
mod sample;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigErrors};

#[derive(Parser, Debug)]
#[command(
    name = "tidegate",
    version,
    about = "Edge agent for aquaculture gateways"
)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent in the foreground.
    Run,
    /// Validate the configuration; print the effective config or the errors.
    CheckConfig,
    /// Every job: trigger, state, last run, outcome, next run, counts.
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// Read sensors once and print them; stores nothing (commissioning).
    Sample {
        /// Only this sensor (may be given more than once).
        #[arg(long = "sensor", value_name = "ID")]
        sensors: Vec<String>,
    },
    /// Act on one job.
    Job {
        #[command(subcommand)]
        action: JobAction,
    },
    /// Every alarm rule: its state, since when, the last value of its sensor.
    Alarms {
        #[arg(long)]
        json: bool,
    },
    /// The reading buffer: its figures, its readings, an export, the dead letter.
    Buffer {
        #[command(subcommand)]
        action: buffer::Action,
    },
}

#[derive(Subcommand, Debug)]
enum JobAction {
    /// Run one job now, in this process, and print its outcome.
    Run { name: String },
}

/// A command's failure, carrying its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or bad configuration: exit 2.
    Usage(String),
    /// The configuration is invalid: each problem on its own line, exit 2.
    Config(ConfigErrors),
    /// Anything else: exit 1.
    Other(String),
}

/// Any other failure, as its message.
fn other(e: impl std::fmt::Display) -> Failure {
    Failure::Other(e.to_string())
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure::Config(errors)) => {
            eprintln!("{errors}");
            ExitCode::from(2)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("tidegate: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Other(message)) => {
            eprintln!("tidegate: {message}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Run => run(cli.config),
        Command::CheckConfig => {
            let (config, _) = config::load(&cli.config).map_err(Failure::Config)?;
            print!("{}", config::to_toml_masked(&config));
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs { json } => jobs::list(&cli.config, json),
        Command::Sample { sensors } => sample::run(&cli.config, &sensors),
        Command::Job {
            action: JobAction::Run { name },
        } => jobs::run_one(&cli.config, &name),
        Command::Buffer { action } => buffer::run(&cli.config, action),
        Command::Alarms { json } => alarms::list(&cli.config, json),
    }
}

fn run(path: PathBuf) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(other)?;
    match runtime.block_on(crate::agent::run(&path)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::agent::AgentError::Config(errors)) => Err(Failure::Config(errors)),
        Err(e) => Err(Failure::Other(e.to_string())),
    }
}

/// The configuration a read-only command works from: the file, or the last good one
/// (with a warning) when the file is broken.
fn load_for_cli(path: &std::path::Path) -> Result<config::Config, Failure> {
    let loaded = config::load_with_fallback(path).map_err(Failure::Config)?;
    if let config::Source::LastGood { errors } = &loaded.source {
        eprintln!(
            "tidegate: warning: {} is broken; using the last good configuration",
            path.display()
        );
        eprintln!("{errors}");
    }
    Ok(loaded.config)
}

/// Left-aligned columns two spaces apart, one line a row, no trailing blanks.
fn columns<const N: usize>(lines: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
