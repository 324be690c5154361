//! The sensor layer: from buses, registers and models to readings.
//!
//! In reading order:
//! - [`decode`] turns the raw words (or the bit) of one sensor into its value, per SPEC 8
//!   "Decoding": pure, no IO.
//! - [`batch`] plans the fewest read requests that cover the sensors of one bus, per
//!   SPEC 8 "Modbus reads", and remembers which (slave, table) groups a device would
//!   only answer one sensor at a time: pure, no IO.
//! - [`modbus`] is one connection (serial RTU or TCP) and one bounded transaction at a
//!   time over it, with the failure said in the bus's terms.
//! - [`bus`] is one task per bus: a sampling cycle's requests in turn, the inter-frame
//!   gap, retries, dead slaves backed off, the counters the heartbeat reports.
//! - [`simulated`] produces plausible diurnal values with no hardware.
//! - [`sampler`] holds every bus of a configuration and reads any set of sensors.
//!
//! Invariants: everything here takes a validated [`crate::config::RegisterMap`] and
//! trusts it (a register width never runs past 65535, bit tables hold only `bool`);
//! nothing re-checks the config. Nothing here stores a reading: that is the store's.

pub mod decode;
pub mod batch;
pub mod modbus;
pub mod bus;
pub mod simulated;
pub mod sampler;
