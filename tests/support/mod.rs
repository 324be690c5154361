//! Fakes and harnesses shared by the integration tests.

pub mod agent;
pub mod broker;
pub mod ingest;
pub mod modbus;
pub mod sim;
