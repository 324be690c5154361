//! tidegate: the one program on an aquaculture gateway.
//!
//! A validated [`config::Config`] says which jobs exist; the [`scheduler`] fires them on
//! the monotonic clock (intervals) or on a trusted wall clock (cron, one-shots) as the
//! [`clock`] allows; each run is carried out by [`job`] and its outcome lands in the
//! [`store`], the one SQLite database under `state_dir` that also holds every reading
//! until the server has it. The [`health`] figures go to the broker over [`mqtt`]. The
//! [`agent`] wires these from a config and applies new ones; the [`cli`] reads the
//! same store, so it works while an agent runs.
//!
//! Modules in reading order: vocabulary first, then the pure cores, then the shells.

pub mod time;
pub mod reading;
pub mod alarm;
pub mod cron;
pub mod config;
pub mod clock;
pub mod sensor;
pub mod store;
pub mod scheduler;
pub mod tls;
pub mod upload;
pub mod health;
pub mod mqtt;
pub mod metrics;
pub mod event;
pub mod job;
pub mod remote;
pub mod command;
pub mod control;
pub mod watchdog;
pub mod agent;
pub mod logging;
pub mod cli;
