//! Sensors: turning buses and register maps into readings.

pub mod modbus;
pub mod simulated;
