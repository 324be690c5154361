//! Integration tests: one binary, one module per area, shared fakes in `support`.
#![allow(clippy::unwrap_used)]

mod support;

mod agent;
mod buffer;
mod config;
mod crash;
mod jobs;
mod mqtt;
mod scheduler;
mod upload;
