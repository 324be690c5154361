//! Sensors: turning buses and register maps into readings.

pub mod simulated;
