//! Q8_0 (weights and activations) and Q8_1 (activations for Q4_1/Q5_1 dot products):
//! 32 signed bytes under an f16 scale, value = q·d.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::float::c_float_to_int;
use super::q4::inverse_or_zero;
use super::{QK8_0, QK8_1};

/// ggml's `block_q8_0`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(size_of::<BlockQ8_0>() == 34);

/// ggml's `block_q8_1`. `s = d * sum(qs)` lets a Q4_1/Q5_1 dot product apply the other
/// side's minimum with one multiply per block.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(size_of::<BlockQ8_1>() == 36);

/// The f32 scale and codes both Q8 formats share. `roundf` rounds ties away from zero,
/// which `f32::round` does too; C then narrows the float to `int8_t`.
fn quantize_q8(x: &[f32]) -> (f32, [i8; 32]) {
    let mut amax = 0.0f32;
    for &v in x {
        // C's MAX(amax, |v|) is `amax > |v| ? amax : |v|`.
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    let id = inverse_or_zero(d);
    let qs = std::array::from_fn(|j| c_float_to_int(roundf(x[j] * id)) as i8);
    (d, qs)
}

/// C's `roundf` (ties away from zero). `f32::round` is a libm call on targets built
/// without SSE4.1, and activations are quantized an element at a time on every token:
/// truncation and one comparison give the same result for every input.
#[inline]
fn roundf(x: f32) -> f32 {
    // From 2^23 up every f32 is an integer; NaN fails the test and passes through.
    if x.abs() < 8_388_608.0 {
        let t = x as i32 as f32;
        let f = x - t;
        let r = if f >= 0.5 {
            t + 1.0
        } else if f <= -0.5 {
            t - 1.0
        } else {
            t
        };
        r.copysign(x)
    } else {
        x
    }
}

/// Quantizes with ggml's `quantize_row_q8_0_ref`. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), y.len() * QK8_0, "row length");
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, qs) = quantize_q8(xb);
        *yb = BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        };
    }
}

/// Quantizes with ggml's `quantize_row_q8_1_ref`. `s` uses the f32 scale, before its
/// rounding to f16, as ggml does. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), y.len() * QK8_1, "row length");
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let (d, qs) = quantize_q8(xb);
        let sum: i32 = qs.iter().map(|&q| q as i32).sum();
        *yb = BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            qs,
        };
    }
}

/// ggml's `dequantize_row_q8_0`. Panics unless `x` fills `y` exactly.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK8_0, "row length");
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (&q, o) in b.qs.iter().zip(yb) {
            *o = q as f32 * d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::float::test_support::*;
    use super::*;

    fn q8_0(x: &[f32]) -> (Vec<BlockQ8_0>, Vec<f32>) {
        let mut b = vec![BlockQ8_0::zeroed(); x.len() / QK8_0];
        quantize_row_q8_0_ref(x, &mut b);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q8_0(&b, &mut y);
        (b, y)
    }

    fn q8_1(x: &[f32]) -> Vec<BlockQ8_1> {
        let mut b = vec![BlockQ8_1::zeroed(); x.len() / QK8_1];
        quantize_row_q8_1_ref(x, &mut b);
        b
    }

    #[test]
    fn layout_matches_ggml() {
        let b = BlockQ8_1 {
            d: f16::from_bits(0x1234),
            s: f16::from_bits(0x5678),
            qs: [-1; 32],
        };
        assert_eq!(
            &bytemuck::bytes_of(&b)[..5],
            &[0x34, 0x12, 0x78, 0x56, 0xff]
        );
        assert_eq!(size_of::<BlockQ8_0>(), 34);
        assert_eq!(size_of::<BlockQ8_1>(), 36);
    }

    #[test]
    fn round_trip_error_is_within_ggml_bounds() {
        for offset in [0.0, 1.0, 0.37] {
            let x = cos_data(GGML_TEST_SIZE, offset);
            let (_, y) = q8_0(&x);
            assert!(ggml_error(&x, &y) < GGML_MAX_ERROR, "{offset}");
            // d/sqrt(12) with d = 2.1/127, plus 10%.
            assert!(rmse(&x, &y) < 0.0055, "{offset}: {}", rmse(&x, &y));
        }
    }

    #[test]
    fn roundf_equals_f32_round_everywhere() {
        let mut bits = 0x1234_5678u32;
        let check = |x: f32| {
            let (a, b) = (roundf(x), x.round());
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{x}: {a} vs {b}"
            );
        };
        for x in [
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            8388607.5,
            -8388607.5,
            8388608.0,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e30,
            -1e-30,
        ] {
            check(x);
        }
        for _ in 0..1_000_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            check(f32::from_bits(bits));
            check((bits % 100_000) as f32 / 64.0 - 700.0);
        }
    }

    #[test]
    fn rounds_ties_away_from_zero() {
        // amax = 127 gives d = 1 and id = 1, so codes are roundf(x).
        let mut x = [0.0f32; 32];
        x[..8].copy_from_slice(&[127.0, 0.5, -0.5, 2.5, -2.5, 1.5, 126.5, -126.49]);
        let (b, y) = q8_0(&x);
        assert_eq!(b[0].d.to_f32(), 1.0);
        // Round-half-even would give 0, 0, 2, -2, 2, 126 for the ties.
        assert_eq!(&b[0].qs[..8], &[127, 1, -1, 3, -3, 2, 127, -126]);
        assert_eq!(&y[..8], &[127.0, 1.0, -1.0, 3.0, -3.0, 2.0, 127.0, -126.0]);
    }

    #[test]
    fn q8_1_matches_a_hand_computed_block() {
        // d = 127/127 = 1; codes roundf(x); sum = 127 - 127 + 1 - 1 + 3 - 3 + 3 = 3.
        let mut x = [0.0f32; 32];
        x[..7].copy_from_slice(&[127.0, -127.0, 0.5, -0.5, 2.5, -2.5, 3.0]);
        let b = q8_1(&x);
        let mut want = [0u8; 36];
        want[..4].copy_from_slice(&[0x00, 0x3c, 0x00, 0x42]); // d = 1.0, s = 3.0
        want[4..11].copy_from_slice(&[127, 0x81, 1, 0xff, 3, 0xfd, 3]);
        assert_eq!(bytemuck::bytes_of(&b[0]), &want);
    }

    #[test]
    fn q8_1_sum_uses_the_f32_scale() {
        // x = 0.37 everywhere: d = 0.37/127 = 0.0029133859 (f16 0x19f7), every code 127,
        // sum 4064. 4064 * d(f32) = 11.84 -> f16 0x49ec; 4064 * d(f16) would give 0x49eb.
        let b = q8_1(&[0.37f32; 32]);
        assert_eq!(b[0].d.to_bits(), 0x19f7);
        assert_eq!(b[0].qs, [127; 32]);
        assert_eq!(b[0].s.to_bits(), 0x49ec);
        // Q8_1 codes are Q8_0's.
        let x = cos_data(64, 0.3);
        let (b0, _) = q8_0(&x);
        let b1 = q8_1(&x);
        for (a, b) in b0.iter().zip(&b1) {
            assert_eq!((a.d.to_bits(), a.qs), (b.d.to_bits(), b.qs));
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert!((b.s.to_f32() - sum as f32 * b.d.to_f32()).abs() < 0.01);
        }
    }

    #[test]
    fn all_zero_block_gives_zero_without_nan() {
        let (b, y) = q8_0(&[0.0f32; 32]);
        assert_eq!(b[0].d.to_bits(), 0);
        assert_eq!(b[0].qs, [0; 32]);
        assert!(y.iter().all(|v| v.to_bits() == 0));
        let b = q8_1(&[-0.0f32; 32]);
        assert_eq!(bytemuck::bytes_of(&b[0]), &[0u8; 36]);
    }

    #[test]
    fn extremes_of_either_sign_are_exact() {
        let mut x = cos_data(32, 1.0);
        for extreme in [65504.0f32, -65504.0, -3.0] {
            x[5] = extreme;
            let (b, y) = q8_0(&x);
            assert_eq!(b[0].qs[5], if extreme > 0.0 { 127 } else { -127 });
            assert!((y[5] - extreme).abs() <= extreme.abs() * 1e-3, "{extreme}");
        }
    }

    #[test]
    fn huge_values_overflow_the_f16_scale_as_in_ggml() {
        let mut x = [1.0e30f32; 32];
        x[0] = -3.0e38;
        let (b, y) = q8_0(&x);
        assert_eq!(b[0].d.to_bits(), 0x7c00);
        assert_eq!(b[0].qs[0], -127);
        assert_eq!(b[0].qs[1], 0);
        // ggml's output: q·inf, so -inf, and 0·inf = NaN.
        assert_eq!(y[0], f32::NEG_INFINITY);
        assert!(y[1].is_nan());
    }

    #[test]
    fn subnormal_and_tiny_blocks_give_zero_without_nan() {
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 1e-40).collect();
        let (b, y) = q8_0(&x);
        // id = 1/d overflows: x*id is ±inf or NaN and C's conversion gives 0 on x86-64.
        assert_eq!(b[0].d.to_bits(), 0);
        assert_eq!(b[0].qs, [0; 32]);
        assert!(y.iter().all(|v| *v == 0.0));
        let x: Vec<f32> = cos_data(32, 0.0).iter().map(|v| v * 1e-30).collect();
        let (b, y) = q8_0(&x);
        assert_eq!(b[0].d.to_bits(), 0);
        assert!(b[0].qs.contains(&127) || b[0].qs.contains(&-127));
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
