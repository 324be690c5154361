//! Fakes and harnesses shared by the integration tests.

pub mod sim;
