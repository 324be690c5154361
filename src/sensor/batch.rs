//! Which read requests cover the sensors of one bus (SPEC 8, "Modbus reads").
//!
//! [`plan`] groups the sensors by (slave, table) and merges each group into as few
//! requests as the protocol allows: one request spans at most [`MAX_REGISTERS`]
//! registers (holding, input) or [`MAX_BITS`] bits (coil, discrete), gaps included, and
//! a sensor of several registers lies wholly inside one request. [`Splits`] remembers
//! the groups whose device refused a merged read with exception 02 (illegal data
//! address); those are read one sensor per request from then on.
//!
//! Invariants: the output is deterministic, ordered by (slave, table, start) with the
//! tables in the order holding, input, coil, discrete; every sensor appears in exactly
//! one request; no arithmetic overflows, even for registers near 65535.
//!
//! It does not read anything, does not decode (that is [`super::decode`]) and does not
//! re-check the config: a value running past register 65535 is refused by validation,
//! and is planned here without overflow but not corrected.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{RegisterMap, Table};

/// Registers one read of holding or input registers may span (function codes 03, 04).
pub const MAX_REGISTERS: u16 = 125;
/// Bits one read of coils or discrete inputs may span (function codes 01, 02).
pub const MAX_BITS: u16 = 2000;

/// The most registers or bits one read of `table` may span.
pub fn max_span(table: Table) -> u16 {
    match table {
        Table::Holding | Table::Input => MAX_REGISTERS,
        Table::Coil | Table::Discrete => MAX_BITS,
    }
}

/// One read request: `count` registers (or bits) of `table` on `slave` from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub slave: u8,
    pub table: Table,
    pub start: u16,
    pub count: u16,
    /// The sensors this request reads, by offset then index.
    pub parts: Vec<Part>,
}

/// Where one sensor's value lies in a request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The sensor's position in the caller's list.
    pub index: usize,
    /// Registers (or bits) from the request's `start` to the sensor's first one.
    pub offset: u16,
    /// Registers (or bits) the sensor occupies.
    pub width: u16,
}

/// The (slave, table) groups of one bus whose device refused a merged read.
///
/// Policy, the simplest that is correct: once a device answers a merged read of a
/// group with exception 02, every sensor of that group is read on its own from then
/// on. A narrower split (halving, or learning which gap the device dislikes) would
/// save requests but needs more refusals to learn, and each refusal costs a round of
/// `bad` readings. The memory lives as long as its owner, the bus task; a new bus
/// config starts a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Splits {
    refused: BTreeSet<GroupKey>,
}

impl Splits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers that the device refused `request` with exception 02. Only a merged
    /// read (more than one sensor) says something about merging: a single sensor
    /// refused is that sensor's own problem and does not split its group. Returns
    /// whether the plan changes.
    pub fn refused(&mut self, request: &Request) -> bool {
        request.parts.len() > 1 && self.refused.insert(key(request.slave, request.table))
    }

    /// Whether the sensors of `slave` and `table` are read one per request.
    pub fn is_split(&self, slave: u8, table: Table) -> bool {
        self.refused.contains(&key(slave, table))
    }
}

/// Tables have no order of their own in the config; this one is declaration order.
type GroupKey = (u8, u8);

fn key(slave: u8, table: Table) -> GroupKey {
    let rank = match table {
        Table::Holding => 0,
        Table::Input => 1,
        Table::Coil => 2,
        Table::Discrete => 3,
    };
    (slave, rank)
}

/// A sensor as the planner sees it.
#[derive(Debug, Clone, Copy)]
struct Span {
    index: usize,
    register: u16,
    width: u16,
}

/// The fewest requests that read every sensor of `sensors` (all on one bus), with
/// the groups `splits` remembers read one sensor per request.
///
/// Within a group, sensors are taken in order of register and a request is closed
/// when the next sensor would not fit in it. This greedy choice is optimal. Let
/// `I_1, …, I_k` be the sensors that opened the k requests, with first registers
/// `a_1 ≤ … ≤ a_k`, and M the span limit. `I_m` (m > 1) opened a request because it
/// did not fit in the one opened by `I_{m-1}`: its end lies past `a_{m-1} + M`, hence
/// past `a_j + M` for every j < m. A request holding both `I_j` and `I_m` would start
/// at or before `a_j` and end at or after the end of `I_m`, spanning more than M. So
/// no request can hold two of the k openers, every plan needs at least k requests,
/// and greedy makes exactly k, each valid: its sensors start at or after its opener
/// and end within `a_j + M`.
pub fn plan(sensors: &[(usize, &RegisterMap)], splits: &Splits) -> Vec<Request> {
    let mut groups: BTreeMap<GroupKey, (Table, Vec<Span>)> = BTreeMap::new();
    for &(index, map) in sensors {
        let span = Span {
            index,
            register: map.register,
            width: map.value_type.width(),
        };
        groups
            .entry(key(map.slave, map.table))
            .or_insert_with(|| (map.table, Vec::new()))
            .1
            .push(span);
    }

    let mut requests = Vec::new();
    for ((slave, _), (table, mut spans)) in groups {
        spans.sort_by_key(|s| (s.register, s.index));
        let limit = if splits.is_split(slave, table) {
            // A limit of 1 closes the request after every sensor, whatever its width.
            1
        } else {
            max_span(table)
        };
        merge(slave, table, &spans, limit, &mut requests);
    }
    requests
}

/// Greedy left-to-right merge of one group's sensors, sorted by register. A sensor
/// joins the open request when the request would still span at most `limit`; a
/// request's first sensor always fits, so `limit = 1` gives one request per sensor.
fn merge(slave: u8, table: Table, spans: &[Span], limit: u16, out: &mut Vec<Request>) {
    let mut open: Option<Request> = None;
    for span in spans {
        if let Some(request) = open.as_mut()
            && let Some(offset) = span.register.checked_sub(request.start)
            && let Ok(end) = u16::try_from(u32::from(offset) + u32::from(span.width))
            && end <= limit
        {
            request.count = request.count.max(end);
            request.parts.push(Part {
                index: span.index,
                offset,
                width: span.width,
            });
            continue;
        }
        out.extend(open.take());
        open = Some(Request {
            slave,
            table,
            start: span.register,
            count: span.width,
            parts: vec![Part {
                index: span.index,
                offset: 0,
                width: span.width,
            }],
        });
    }
    out.extend(open);
}

#[cfg(test)]
mod tests;
