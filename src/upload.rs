//! Getting readings to the farm's server (SPEC section 4).
//!
//! [`policy`] is the pure core: what an answer means for a batch (delivered, retry
//! with backoff, retry unchanged, halve, pause, poison) and how long to wait. The
//! sender that forms batches from the buffer and posts them comes with the buffer's
//! limits and acknowledgements.

pub mod encode;
pub mod policy;
