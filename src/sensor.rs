//! The sensor layer: from Modbus registers and bits to numbers.
//!
//! The plan, in the order it is built:
//! - [`decode`] turns the raw words (or the bit) of one sensor into its value, per SPEC 8
//!   "Decoding": pure, no IO.
//! - [`batch`] plans the fewest read requests that cover the sensors of one bus, per
//!   SPEC 8 "Modbus reads", and remembers which (slave, table) groups a device would
//!   only answer one sensor at a time: pure, no IO.
//! - Later: one task per bus that owns the serial port or TCP connection, carries out
//!   the planned requests and hands every sensor's value (or its failure) on as a
//!   reading; and the simulated bus that produces plausible diurnal values.
//!
//! Invariants: everything here takes a validated [`crate::config::RegisterMap`] and
//! trusts it (a register width never runs past 65535, bit tables hold only `bool`);
//! nothing in this module re-checks the config, and nothing here does IO yet.

pub mod decode;
pub mod batch;
