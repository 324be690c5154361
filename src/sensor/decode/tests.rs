use super::*;
use crate::config::Table;

use ValueType::{Bool, F32, F64, I16, I32, I64, U16, U32, U64};
use WordOrder::{Big, Little};

fn map(value_type: ValueType, word_order: WordOrder, scale: f64, offset: f64) -> RegisterMap {
    RegisterMap {
        slave: 1,
        table: Table::Holding,
        register: 0,
        value_type,
        word_order,
        scale,
        offset,
    }
}

/// Decodes `words` as `value_type` in `order` with `scale` and `offset`, and compares
/// exactly: a value bit for bit, an error by its message.
#[track_caller]
fn check(
    (value_type, order, scale, offset): (ValueType, WordOrder, f64, f64),
    words: &[u16],
    expected: Result<f64, &str>,
) {
    let got = decode(&map(value_type, order, scale, offset), words).map_err(|e| e.to_string());
    match (&got, &expected) {
        (Ok(g), Ok(e)) => assert_eq!(
            g.to_bits(),
            e.to_bits(),
            "{value_type:?} {order:?} {words:04x?}: got {g}, expected {e}"
        ),
        _ => assert_eq!(
            got,
            expected.map_err(String::from),
            "{value_type:?} {order:?} {words:04x?}"
        ),
    }
}

/// Unscaled.
fn raw(value_type: ValueType, order: WordOrder) -> (ValueType, WordOrder, f64, f64) {
    (value_type, order, 1.0, 0.0)
}

#[test]
fn sixteen_bit_types() {
    for order in [Big, Little] {
        check((U16, order, 0.01, 0.0), &[720], Ok(7.2));
        check(raw(U16, order), &[0], Ok(0.0));
        check(raw(U16, order), &[0xFFFF], Ok(65535.0));
        check(raw(I16, order), &[0xFFFF], Ok(-1.0));
        check(raw(I16, order), &[0x8000], Ok(-32768.0));
        check(raw(I16, order), &[0x7FFF], Ok(32767.0));
        check((I16, order, 0.1, 0.0), &[0xFF38], Ok(-20.0));
    }
}

#[test]
fn thirty_two_bit_integers() {
    check(raw(U32, Big), &[0x0001, 0x0002], Ok(65538.0));
    check(raw(U32, Little), &[0x0002, 0x0001], Ok(65538.0));
    check(raw(U32, Big), &[0xFFFF, 0xFFFF], Ok(4_294_967_295.0));
    check(raw(I32, Big), &[0xFFFF, 0xFFFE], Ok(-2.0));
    check(raw(I32, Little), &[0xFFFE, 0xFFFF], Ok(-2.0));
    check(raw(I32, Big), &[0x8000, 0x0000], Ok(-2_147_483_648.0));
    check(raw(I32, Little), &[0x0000, 0x8000], Ok(-2_147_483_648.0));
    check((I32, Big, 0.001, 0.0), &[0x0001, 0x0000], Ok(65.536));
}

#[test]
fn f32_bit_patterns() {
    // 7.83 as an f32 is 0x40FA8F5C: a probe's dissolved oxygen in mg/L.
    let do_mg_l = f64::from(7.83f32);
    check(raw(F32, Big), &[0x40FA, 0x8F5C], Ok(do_mg_l));
    check(raw(F32, Little), &[0x8F5C, 0x40FA], Ok(do_mg_l));
    check(raw(F32, Big), &[0xC1A4, 0x0000], Ok(-20.5));
    check(raw(F32, Little), &[0x0000, 0xC1A4], Ok(-20.5));
    check(raw(F32, Big), &[0x0000, 0x0000], Ok(0.0));
    check((F32, Big, 2.0, 1.0), &[0x3FC0, 0x0000], Ok(4.0));
    check(
        raw(F32, Big),
        &[0x7FC0, 0x0000],
        Err("not a finite number: NaN"),
    );
    check(
        raw(F32, Little),
        &[0x0000, 0x7FC0],
        Err("not a finite number: NaN"),
    );
    check(
        raw(F32, Big),
        &[0x7F80, 0x0000],
        Err("not a finite number: inf"),
    );
    check(
        raw(F32, Big),
        &[0xFF80, 0x0000],
        Err("not a finite number: -inf"),
    );
}

#[test]
fn sixty_four_bit_integers() {
    check(raw(U64, Big), &[0, 0, 1, 0], Ok(65536.0));
    check(raw(U64, Little), &[0, 1, 0, 0], Ok(65536.0));
    check(
        raw(U64, Big),
        &[0x0102, 0x0304, 0x0506, 0x0708],
        Ok(72_623_859_790_382_856.0),
    );
    check(
        raw(U64, Little),
        &[0x0708, 0x0506, 0x0304, 0x0102],
        Ok(72_623_859_790_382_856.0),
    );
    // Beyond 2^53 a u64 rounds to the nearest f64: 2^53 + 1 becomes 2^53.
    check(
        raw(U64, Big),
        &[0x0020, 0, 0, 1],
        Ok(9_007_199_254_740_992.0),
    );
    check(
        raw(U64, Big),
        &[0x0020, 0, 0, 3],
        Ok(9_007_199_254_740_996.0),
    );
    check(
        raw(U64, Big),
        &[0xFFFF; 4],
        Ok(18_446_744_073_709_551_616.0),
    );
    check(raw(I64, Big), &[0xFFFF; 4], Ok(-1.0));
    check(
        raw(I64, Little),
        &[0xFFF6, 0xFFFF, 0xFFFF, 0xFFFF],
        Ok(-10.0),
    );
    check(raw(I64, Big), &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFF6], Ok(-10.0));
    check(
        raw(I64, Big),
        &[0x8000, 0, 0, 0],
        Ok(-9_223_372_036_854_775_808.0),
    );
    check(
        raw(I64, Little),
        &[0, 0, 0, 0x8000],
        Ok(-9_223_372_036_854_775_808.0),
    );
}

#[test]
fn f64_bit_patterns() {
    check(raw(F64, Big), &[0x401F, 0x51EB, 0x851E, 0xB852], Ok(7.83));
    check(
        raw(F64, Little),
        &[0xB852, 0x851E, 0x51EB, 0x401F],
        Ok(7.83),
    );
    check(raw(F64, Big), &[0xC029, 0, 0, 0], Ok(-12.5));
    check(raw(F64, Little), &[0, 0, 0, 0xC029], Ok(-12.5));
    check(
        raw(F64, Big),
        &[0x7FF8, 0, 0, 0],
        Err("not a finite number: NaN"),
    );
    check(
        raw(F64, Little),
        &[0, 0, 0, 0xFFF0],
        Err("not a finite number: -inf"),
    );
    // A finite device value that scaling overflows cannot be stored either.
    let max = [0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF];
    check(raw(F64, Big), &max, Ok(f64::MAX));
    check((F64, Big, 2.0, 0.0), &max, Err("not a finite number: inf"));
}

#[test]
fn scale_and_offset() {
    check((U16, Big, 0.1, -5.0), &[250], Ok(20.0));
    check((I16, Big, 0.5, 2.0), &[0xFFD8], Ok(-18.0));
    check((U32, Little, 1.0, 100.0), &[0x0001, 0x0000], Ok(101.0));
    check(
        (F32, Big, -1.0, 0.0),
        &[0x40FA, 0x8F5C],
        Ok(-f64::from(7.83f32)),
    );
    check((U64, Big, 0.5, 0.0), &[0, 0, 0, 3], Ok(1.5));
}

#[test]
fn decimal_scales_give_the_decimal_the_device_means() {
    // Multiplying would give 7.1000000000000005, 0.30000000000000004 and 7.199000000000001.
    check((U16, Big, 0.01, 0.0), &[710], Ok(7.1));
    check((U16, Big, 0.1, 0.0), &[3], Ok(0.3));
    check((U16, Big, 0.001, 0.0), &[7199], Ok(7.199));
    check((I16, Big, -0.01, 0.0), &[710], Ok(-7.1));
    // Other scales multiply as before.
    check((U16, Big, 0.25, 0.0), &[3], Ok(0.75));
    check((U16, Big, 2.5, 0.0), &[4], Ok(10.0));
}

#[test]
fn bool_on_a_register_is_nonzero_and_never_scaled() {
    for order in [Big, Little] {
        check(raw(Bool, order), &[0], Ok(0.0));
        check(raw(Bool, order), &[1], Ok(1.0));
        check((Bool, order, 10.0, 5.0), &[0x8000], Ok(1.0));
        check((Bool, order, 10.0, 5.0), &[0], Ok(0.0));
    }
    assert_eq!(decode_bit(true).to_bits(), 1.0f64.to_bits());
    assert_eq!(decode_bit(false).to_bits(), 0.0f64.to_bits());
}

#[test]
fn wrong_word_count_is_an_error() {
    check(
        raw(U32, Big),
        &[1],
        Err("wrong word count for a u32 value: expected 2, got 1"),
    );
    check(
        raw(U16, Big),
        &[],
        Err("wrong word count for a u16 value: expected 1, got 0"),
    );
    check(
        raw(F64, Little),
        &[0; 2],
        Err("wrong word count for a f64 value: expected 4, got 2"),
    );
    check(
        raw(Bool, Big),
        &[1, 1],
        Err("wrong word count for a bool value: expected 1, got 2"),
    );
    check(
        raw(I16, Big),
        &[1, 1],
        Err("wrong word count for a i16 value: expected 1, got 2"),
    );
}
