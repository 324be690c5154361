//! Integration tests: one binary, one module per area, shared fakes in `support`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod agent;
mod alarms;
mod buffer;
mod config;
mod control;
mod crash;
mod events;
mod jobs;
mod metrics;
mod mqtt;
mod remote;
mod scheduler;
mod upload;
mod watchdog;
