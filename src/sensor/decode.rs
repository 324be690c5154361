//! How one sensor's raw registers or bit become its value (SPEC 8, "Decoding").
//!
//! Every Modbus register is a big-endian `u16` (the transport already made it one).
//! A value of several registers is put together by its [`WordOrder`]: `big` puts the
//! high word at the lower address, `little` the low word first. Then
//! `value = raw × scale + offset` (a scale of 1/n divides by n, so decimals come out
//! as the device means them), except for `bool`, which is 1 or 0 and never scaled.
//!
//! Invariants: a value is always a finite `f64`. A NaN or infinite float from the
//! device, or a scaled value that overflows, is a [`DecodeError`], because a reading
//! that is not a number cannot be stored or uploaded as one. `u64` and `i64` values
//! beyond 2^53 are rounded to the nearest `f64` (relative error below 2^-53): a reading
//! is a measurement, not a counter that must stay exact.
//!
//! It does not know where the words came from (which request, which bus) and does not
//! re-check the config: the caller hands it exactly the sensor's words.

use thiserror::Error;

use crate::config::{RegisterMap, ValueType, WordOrder};

/// Why a sensor's raw words are not a value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    /// The caller passed a different number of registers than the type occupies.
    #[error("wrong word count for a {} value: expected {expected}, got {got}", .value_type.name())]
    WordCount {
        value_type: ValueType,
        expected: u16,
        got: usize,
    },
    /// The device sent NaN or an infinity, or scaling made the value overflow.
    #[error("not a finite number: {value}")]
    NotFinite { value: f64 },
}

/// The value of a sensor on a register table (holding or input) from its words, in
/// address order. `bool` on a register table is 1 when the register is nonzero.
pub fn decode(map: &RegisterMap, words: &[u16]) -> Result<f64, DecodeError> {
    let width = map.value_type.width();
    if words.len() != usize::from(width) {
        return Err(DecodeError::WordCount {
            value_type: map.value_type,
            expected: width,
            got: words.len(),
        });
    }
    let order = map.word_order;
    let raw = match map.value_type {
        ValueType::Bool => return Ok(decode_bit(words.iter().any(|&w| w != 0))),
        ValueType::U16 => f64::from(u16::from_be_bytes(bytes(words, order))),
        ValueType::I16 => f64::from(i16::from_be_bytes(bytes(words, order))),
        ValueType::U32 => f64::from(u32::from_be_bytes(bytes(words, order))),
        ValueType::I32 => f64::from(i32::from_be_bytes(bytes(words, order))),
        ValueType::F32 => f64::from(f32::from_be_bytes(bytes(words, order))),
        // Rounds to the nearest f64 beyond 2^53; see the module docs.
        ValueType::U64 => u64::from_be_bytes(bytes(words, order)) as f64,
        ValueType::I64 => i64::from_be_bytes(bytes(words, order)) as f64,
        ValueType::F64 => f64::from_be_bytes(bytes(words, order)),
    };
    finite(raw)?;
    let value = scaled(raw, map.scale) + map.offset;
    finite(value)?;
    Ok(value)
}

/// `raw × scale`, computed as a division where `scale` is the inverse of a whole
/// number (0.1, 0.01, 0.001: how registers carry decimals). 0.01 is not exact in
/// binary, so 710 × 0.01 is 7.1000000000000005, while 710 / 100 is the f64 nearest
/// 7.1, the value the device means and the one a server should see.
fn scaled(raw: f64, scale: f64) -> f64 {
    let inverse = 1.0 / scale;
    let whole = inverse.round();
    if whole.abs() >= 2.0 && (inverse - whole).abs() <= whole.abs() * 1e-12 {
        raw / whole
    } else {
        raw * scale
    }
}

/// The value of a `bool` sensor on a bit table (coil or discrete): 1 or 0, unscaled.
pub fn decode_bit(bit: bool) -> f64 {
    if bit { 1.0 } else { 0.0 }
}

fn finite(value: f64) -> Result<(), DecodeError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(DecodeError::NotFinite { value })
    }
}

/// The words' bytes, most significant first. `N` is twice the word count, which
/// [`decode`] has checked against the type's width.
fn bytes<const N: usize>(words: &[u16], order: WordOrder) -> [u8; N] {
    let mut out = [0; N];
    let chunks = out.chunks_exact_mut(2);
    match order {
        WordOrder::Big => chunks.zip(words).for_each(put_word),
        WordOrder::Little => chunks.zip(words.iter().rev()).for_each(put_word),
    }
    out
}

fn put_word((chunk, word): (&mut [u8], &u16)) {
    chunk.copy_from_slice(&word.to_be_bytes());
}

#[cfg(test)]
mod tests;
