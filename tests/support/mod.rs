//! Fakes and harnesses shared by the integration tests.

pub mod agent;
pub mod modbus;
pub mod sim;
