use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::*;
use crate::config::{ValueType, WordOrder};
use crate::sensor::decode::{decode, decode_bit};

use Table::{Coil, Discrete, Holding, Input};
use ValueType::{Bool, F32, F64, I16, I32, I64, U16, U32, U64};

fn map(slave: u8, table: Table, register: u16, value_type: ValueType) -> RegisterMap {
    RegisterMap {
        slave,
        table,
        register,
        value_type,
        word_order: WordOrder::Big,
        scale: 1.0,
        offset: 0.0,
    }
}

fn maps(sensors: &[(u8, Table, u16, ValueType)]) -> Vec<RegisterMap> {
    sensors
        .iter()
        .map(|&(slave, table, register, value_type)| map(slave, table, register, value_type))
        .collect()
}

/// The caller's list: each sensor's index is its position.
fn indexed(maps: &[RegisterMap]) -> Vec<(usize, &RegisterMap)> {
    maps.iter().enumerate().collect()
}

/// One line per request: `s3 holding 0+10: 0@0 1@2`, each part as `index@offset`.
fn render(requests: &[Request]) -> String {
    let mut out = String::new();
    for r in requests {
        write!(out, "s{} {:?} {}+{}:", r.slave, r.table, r.start, r.count).unwrap();
        for p in &r.parts {
            write!(out, " {}@{}", p.index, p.offset).unwrap();
        }
        out.push('\n');
    }
    out
}

/// Plans `sensors` after the device refused the merged reads of the `refused` groups
/// (as a bus task would: plan, read, refuse, plan again) and compares the rendering.
#[track_caller]
fn check(sensors: &[(u8, Table, u16, ValueType)], refused: &[(u8, Table)], expected: &str) {
    let maps = maps(sensors);
    let sensors = indexed(&maps);
    let mut splits = Splits::new();
    for request in plan(&sensors, &splits) {
        if refused.contains(&(request.slave, request.table)) {
            splits.refused(&request);
        }
    }
    let requests = plan(&sensors, &splits);
    assert_valid(&sensors, &requests);
    let expected: String = expected
        .lines()
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert_eq!(render(&requests), expected.trim_start());
}

/// Every sensor in exactly one request, wholly inside it, within the protocol's span,
/// requests in (slave, table, start) order.
#[track_caller]
fn assert_valid(sensors: &[(usize, &RegisterMap)], requests: &[Request]) {
    let mut seen = Vec::new();
    for r in requests {
        assert!(r.count >= 1 && r.count <= max_span(r.table), "{r:?}");
        for p in &r.parts {
            let (_, m) = sensors.iter().find(|(i, _)| *i == p.index).unwrap();
            assert_eq!((m.slave, m.table), (r.slave, r.table));
            assert_eq!(
                u32::from(r.start) + u32::from(p.offset),
                u32::from(m.register)
            );
            assert_eq!(p.width, m.value_type.width());
            assert!(p.offset + p.width <= r.count, "{r:?}");
            seen.push(p.index);
        }
    }
    seen.sort_unstable();
    let mut all: Vec<usize> = sensors.iter().map(|(i, _)| *i).collect();
    all.sort_unstable();
    assert_eq!(seen, all, "every sensor exactly once");
    let order: Vec<_> = requests
        .iter()
        .map(|r| (key(r.slave, r.table), r.start))
        .collect();
    assert!(order.is_sorted(), "{order:?}");
}

#[test]
fn contiguous_registers_merge() {
    check(
        &[
            (1, Holding, 0, F32),
            (1, Holding, 2, F32),
            (1, Holding, 4, U16),
        ],
        &[],
        "s1 Holding 0+5: 0@0 1@2 2@4",
    );
    // Out of order in the caller's list, in order in the request.
    check(
        &[(1, Input, 4, U32), (1, Input, 0, I32), (1, Input, 2, F32)],
        &[],
        "s1 Input 0+6: 1@0 2@2 0@4",
    );
}

#[test]
fn a_gap_within_the_span_merges() {
    check(
        &[(1, Holding, 0, F32), (1, Holding, 100, U16)],
        &[],
        "s1 Holding 0+101: 0@0 1@100",
    );
    check(
        &[(1, Holding, 10, U16), (1, Holding, 130, F32)],
        &[],
        "s1 Holding 10+122: 0@0 1@120",
    );
}

#[test]
fn a_read_spans_at_most_125_registers() {
    // Exactly 125 registers: one read.
    check(
        &[(1, Holding, 0, U16), (1, Holding, 123, F32)],
        &[],
        "s1 Holding 0+125: 0@0 1@123",
    );
    check(
        &[(1, Input, 0, U16), (1, Input, 121, F64)],
        &[],
        "s1 Input 0+125: 0@0 1@121",
    );
    // 126: two.
    check(
        &[(1, Holding, 0, U16), (1, Holding, 125, U16)],
        &[],
        "s1 Holding 0+1: 0@0
         s1 Holding 125+1: 1@0",
    );
    // A value never straddles two reads: the f32 moves whole into the next one.
    check(
        &[(1, Holding, 0, U16), (1, Holding, 124, F32)],
        &[],
        "s1 Holding 0+1: 0@0
         s1 Holding 124+2: 1@0",
    );
    // A wide value closes the read; the next sensor joins the one it opened.
    check(
        &[
            (1, Holding, 0, U16),
            (1, Holding, 123, F64),
            (1, Holding, 124, U16),
        ],
        &[],
        "s1 Holding 0+1: 0@0
         s1 Holding 123+4: 1@0 2@1",
    );
}

#[test]
fn one_hundred_twenty_six_contiguous_registers_take_two_reads() {
    let sensors: Vec<_> = (0..126).map(|r| (7, Holding, r, U16)).collect();
    let maps = maps(&sensors);
    let sensors = indexed(&maps);
    let requests = plan(&sensors, &Splits::new());
    assert_valid(&sensors, &requests);
    let shape: Vec<_> = requests
        .iter()
        .map(|r| (r.start, r.count, r.parts.len()))
        .collect();
    assert_eq!(shape, [(0, 125, 125), (125, 1, 1)]);
}

#[test]
fn slaves_and_tables_stay_apart() {
    check(
        &[
            (2, Input, 0, U16),
            (1, Holding, 0, U16),
            (1, Input, 1, U16),
            (2, Holding, 1, U16),
            (1, Coil, 0, Bool),
            (1, Discrete, 1, Bool),
            (1, Holding, 1, U16),
        ],
        &[],
        "s1 Holding 0+2: 1@0 6@1
         s1 Input 1+1: 2@0
         s1 Coil 0+1: 4@0
         s1 Discrete 1+1: 5@0
         s2 Holding 1+1: 3@0
         s2 Input 0+1: 0@0",
    );
}

#[test]
fn bits_span_at_most_2000() {
    check(
        &[(1, Coil, 0, Bool), (1, Coil, 1999, Bool)],
        &[],
        "s1 Coil 0+2000: 0@0 1@1999",
    );
    check(
        &[
            (1, Discrete, 0, Bool),
            (1, Discrete, 2000, Bool),
            (1, Discrete, 3999, Bool),
        ],
        &[],
        "s1 Discrete 0+1: 0@0
         s1 Discrete 2000+2000: 1@0 2@1999",
    );
}

#[test]
fn registers_near_65535_do_not_overflow() {
    check(
        &[
            (1, Holding, 65535, U16),
            (1, Holding, 65533, U16),
            (1, Holding, 65534, U16),
        ],
        &[],
        "s1 Holding 65533+3: 1@0 2@1 0@2",
    );
    check(
        &[(1, Input, 65534, F32), (1, Input, 65410, U16)],
        &[],
        "s1 Input 65410+1: 1@0
         s1 Input 65534+2: 0@0",
    );
    check(
        &[(1, Coil, 65535, Bool), (1, Coil, 63536, Bool)],
        &[],
        "s1 Coil 63536+2000: 1@0 0@1999",
    );
    // Past 65535 is refused by validation; planned anyway, without overflow.
    check(&[(1, Holding, 65535, F64)], &[], "s1 Holding 65535+4: 0@0");
}

#[test]
fn the_same_register_twice_is_read_once() {
    check(
        &[(1, Holding, 8, U16), (1, Holding, 8, I16)],
        &[],
        "s1 Holding 8+1: 0@0 1@0",
    );
}

#[test]
fn nothing_to_read_plans_nothing() {
    check(&[], &[], "");
}

#[test]
fn a_refused_group_is_read_one_sensor_at_a_time() {
    let sensors = [
        (1, Holding, 0, F32),
        (1, Holding, 2, F32),
        (1, Holding, 10, U16),
        (2, Holding, 0, F32),
        (2, Holding, 2, F32),
        (1, Input, 0, U16),
        (1, Input, 1, U16),
    ];
    check(
        &sensors,
        &[(1, Holding)],
        "s1 Holding 0+2: 0@0
         s1 Holding 2+2: 1@0
         s1 Holding 10+1: 2@0
         s1 Input 0+2: 5@0 6@1
         s2 Holding 0+4: 3@0 4@2",
    );
    check(
        &sensors,
        &[(1, Input), (2, Holding)],
        "s1 Holding 0+11: 0@0 1@2 2@10
         s1 Input 0+1: 5@0
         s1 Input 1+1: 6@0
         s2 Holding 0+2: 3@0
         s2 Holding 2+2: 4@0",
    );
}

#[test]
fn a_refused_single_sensor_read_does_not_split_its_group() {
    let maps = maps(&[
        (1, Holding, 0, U16),
        (1, Holding, 1, U16),
        (1, Holding, 500, U16),
    ]);
    let sensors = indexed(&maps);
    let mut splits = Splits::new();
    let requests = plan(&sensors, &splits);
    assert_eq!(requests.len(), 2);
    assert!(!splits.refused(&requests[1]), "one sensor: nothing learned");
    assert!(!splits.is_split(1, Holding));
    assert!(splits.refused(&requests[0]), "a merged read refused");
    assert!(!splits.refused(&requests[0]), "already remembered");
    assert!(splits.is_split(1, Holding));
    assert!(!splits.is_split(1, Input));
    assert_eq!(plan(&sensors, &splits).len(), 3);
}

/// The fewest requests for one group, by trying every partition of its sensors (a
/// bitmask DP): independent of the greedy planner, and fine for up to ~12 sensors.
fn minimum_requests(group: &[(u16, u16)], limit: u16) -> usize {
    let n = group.len();
    let full = (1usize << n) - 1;
    let fits = |set: usize| {
        let members = (0..n).filter(|i| set & (1 << i) != 0).map(|i| group[i]);
        let start = members.clone().map(|(r, _)| u32::from(r)).min().unwrap();
        let end = members
            .map(|(r, w)| u32::from(r) + u32::from(w))
            .max()
            .unwrap();
        end - start <= u32::from(limit)
    };
    let mut best = vec![usize::MAX; full + 1];
    best[0] = 0;
    for set in 1..=full {
        let lowest = set & set.wrapping_neg();
        let rest = set ^ lowest;
        // Every subset of `set` that holds its lowest member.
        let mut sub = rest;
        loop {
            let part = sub | lowest;
            if best[set ^ part] != usize::MAX && fits(part) {
                best[set] = best[set].min(best[set ^ part] + 1);
            }
            if sub == 0 {
                break;
            }
            sub = (sub - 1) & rest;
        }
    }
    best[full]
}

/// The minimum over all groups: groups never share a request.
fn minimum_for(maps: &[RegisterMap]) -> usize {
    let mut groups: BTreeMap<GroupKey, (u16, Vec<(u16, u16)>)> = BTreeMap::new();
    for m in maps {
        let group = groups
            .entry(key(m.slave, m.table))
            .or_insert((max_span(m.table), Vec::new()));
        group.1.push((m.register, m.value_type.width()));
    }
    groups
        .values()
        .map(|(limit, group)| minimum_requests(group, *limit))
        .sum()
}

/// Three probes of eight values each, as their manuals lay them out: measurements as
/// f32 pairs from 0, a status word and calibration data further up, with gaps.
fn three_probes() -> Vec<(u8, Table, u16, ValueType)> {
    let dissolved_oxygen = [
        (3, Holding, 0, F32),   // mg/L
        (3, Holding, 2, F32),   // % saturation
        (3, Holding, 4, F32),   // temperature
        (3, Holding, 6, F32),   // pressure compensation
        (3, Holding, 256, U16), // status
        (3, Holding, 257, U16), // error flags
        (3, Holding, 512, F32), // calibration slope
        (3, Holding, 600, U32), // operating hours: 90 registers after the slope
    ];
    let ph_orp = [
        (4, Input, 0, F32),
        (4, Input, 2, F32),
        (4, Input, 4, F32),
        (4, Input, 10, I16),
        (4, Input, 11, U16),
        (4, Input, 100, F32),
        (4, Input, 120, F32),
        (4, Input, 124, U16), // the 125th register: still one read
    ];
    let conductivity = [
        (5, Holding, 0, F32),
        (5, Holding, 2, F32),
        (5, Holding, 4, F32),
        (5, Holding, 6, F32),
        (5, Holding, 123, F32), // ends at 125: fits
        (5, Holding, 126, U16),
        (5, Holding, 250, U16), // 126..=250 is 125 registers: fits
        (5, Holding, 251, U32), // one past: a third read
    ];
    // Interleaved, as a config lists them by pond rather than by probe.
    (0..8)
        .flat_map(|i| [dissolved_oxygen[i], ph_orp[i], conductivity[i]])
        .collect()
}

#[test]
fn twenty_four_sensors_on_three_slaves_take_the_minimum() {
    let maps = maps(&three_probes());
    let sensors = indexed(&maps);
    let requests = plan(&sensors, &Splits::new());
    assert_valid(&sensors, &requests);
    let minimum = minimum_for(&maps);
    assert_eq!(minimum, 3 + 1 + 3);
    assert_eq!(requests.len(), minimum, "{}", render(&requests));
}

#[test]
fn greedy_matches_the_minimum_on_random_maps() {
    let mut rng = fastrand::Rng::with_seed(8);
    let types = [U16, I16, U32, I32, F32, U64, I64, F64];
    for _ in 0..400 {
        let n = rng.usize(1..=9);
        let sensors: Vec<_> = (0..n)
            .map(|_| {
                if rng.bool() {
                    (1, Holding, rng.u16(0..400), types[rng.usize(..types.len())])
                } else {
                    (1, Coil, rng.u16(0..6000), Bool)
                }
            })
            .collect();
        let maps = maps(&sensors);
        let sensors = indexed(&maps);
        let requests = plan(&sensors, &Splits::new());
        assert_valid(&sensors, &requests);
        assert_eq!(requests.len(), minimum_for(&maps), "{sensors:?}");
    }
}

/// The words a device would hold for `raw` as `value_type` in `order`.
fn encode(value_type: ValueType, order: WordOrder, raw: f64) -> Vec<u16> {
    let bytes: Vec<u8> = match value_type {
        U16 | Bool => (raw as u16).to_be_bytes().to_vec(),
        I16 => (raw as i16).to_be_bytes().to_vec(),
        U32 => (raw as u32).to_be_bytes().to_vec(),
        I32 => (raw as i32).to_be_bytes().to_vec(),
        F32 => (raw as f32).to_be_bytes().to_vec(),
        U64 => (raw as u64).to_be_bytes().to_vec(),
        I64 => (raw as i64).to_be_bytes().to_vec(),
        F64 => raw.to_be_bytes().to_vec(),
    };
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    words
}

#[test]
fn parts_point_at_each_sensors_words() {
    let mut sensors = three_probes();
    sensors.extend([
        (3, Coil, 5, Bool),
        (3, Coil, 9, Bool),
        (3, Coil, 2100, Bool),
    ]);
    sensors.extend([
        (5, Holding, 300, I64),
        (5, Holding, 304, U64),
        (5, Holding, 308, F64),
    ]);
    let mut maps = maps(&sensors);
    // A register image where gaps hold noise, and each sensor's words hold a value
    // of its own: exact in its type, negative where the type allows.
    let mut words: BTreeMap<(u8, GroupKey, u16), u16> = BTreeMap::new();
    let mut bits: BTreeMap<(u8, u16), bool> = BTreeMap::new();
    let mut expected = Vec::new();
    for (i, m) in maps.iter_mut().enumerate() {
        let n = i as f64;
        m.word_order = if i % 2 == 0 {
            WordOrder::Big
        } else {
            WordOrder::Little
        };
        let value = match m.value_type {
            U16 | U32 | U64 => 1000.0 + n,
            I16 | I32 | I64 => -1000.0 - n,
            F32 => f64::from(7.83f32) + n,
            F64 => -12.5 - n,
            Bool => f64::from(u8::from(i % 3 != 0)),
        };
        if m.table == Coil {
            bits.insert((m.slave, m.register), value == 1.0);
        } else {
            for (k, w) in encode(m.value_type, m.word_order, value)
                .into_iter()
                .enumerate()
            {
                words.insert((m.slave, key(m.slave, m.table), m.register + k as u16), w);
            }
        }
        expected.push(value);
    }
    let sensors = indexed(&maps);
    let requests = plan(&sensors, &Splits::new());
    assert_valid(&sensors, &requests);
    let mut decoded = vec![None; maps.len()];
    for r in &requests {
        let reply: Vec<u32> = (0..r.count)
            .map(|k| r.start + k)
            .map(|a| match r.table {
                Coil => bits.get(&(r.slave, a)).map_or(0, |&b| u32::from(b)),
                _ => words
                    .get(&(r.slave, key(r.slave, r.table), a))
                    .map_or(0xBEEF, |&w| w.into()),
            })
            .collect();
        for p in &r.parts {
            let slice = &reply[usize::from(p.offset)..usize::from(p.offset + p.width)];
            let value = if r.table == Coil {
                decode_bit(slice[0] == 1)
            } else {
                let words: Vec<u16> = slice.iter().map(|&w| w as u16).collect();
                decode(&maps[p.index], &words).unwrap()
            };
            decoded[p.index] = Some(value);
        }
    }
    for (i, (got, want)) in decoded.into_iter().zip(expected).enumerate() {
        assert_eq!(
            got.map(f64::to_bits),
            Some(want.to_bits()),
            "sensor {i}: {:?}",
            maps[i]
        );
    }
}
