//! Q4_0 and Q4_1: blocks of 32 weights stored as 4-bit codes under an f16 scale
//! (Q4_0: symmetric, value = (q - 8)·d; Q4_1: value = q·d + m).
//!
//! The per-block statistics live here and are shared with Q5_0/Q5_1, whose quantizers
//! differ from these only in the number of levels.
//!
//! Scales and minimums are rounded to f16 as in ggml, out-of-range ones included: a block
//! whose d or m lies beyond ±65504 stores an infinity (and dequantizes to ±inf or NaN),
//! one whose d is below f16's smallest subnormal stores zero. phiq keeps these bytes
//! rather than invent a rule of its own: files must stay byte-identical to llama.cpp's.
//! Weights of such magnitudes do not occur in real models.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::float::c_float_to_int;
use super::k_quants::{
    importance_weights, make_qkx2_quants, make_qx_quants, sum_squares, weighted_search,
};
use super::{QK4_0, QK4_1};

/// ggml's `block_q4_0`. Element j is the low nibble of `qs[j]`, element j + 16 the high one.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// ggml's `block_q4_1`: like Q4_0 plus the block minimum `m`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// The signed value of largest magnitude (the first one on ties, +0.0 for an all-zero
/// block). Keeping the sign lets that value map exactly to the code for -8 (or -16).
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// (min, max) with ggml's strict comparisons, so the first of equal values wins, which
/// decides the sign of a zero minimum.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// ggml multiplies by 1/d rather than dividing by d; the products differ in the last bit,
/// which changes codes at rounding boundaries, so this is part of the format.
pub(crate) fn inverse_or_zero(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// `MIN(15, (int8_t)(v))`, stored into a `uint8_t` as C does.
fn code4(v: f32) -> u8 {
    (c_float_to_int(v) as i8).min(15) as u8
}

/// Quantizes with ggml's `quantize_row_q4_0_ref`. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), y.len() * QK4_0, "row length");
    for (xb, yb) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        *yb = quantize_block_q4_0(xb);
    }
}

fn quantize_block_q4_0(x: &[f32]) -> BlockQ4_0 {
    let d = signed_absmax(x) / -8.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK4_0 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        // Adding 8.5 then truncating rounds ties up (toward +inf), not to even.
        let lo = code4(x[j] * id + 8.5);
        let hi = code4(x[j + QK4_0 / 2] * id + 8.5);
        *q = lo | (hi << 4);
    }
    BlockQ4_0 {
        d: f16::from_f32(d),
        qs,
    }
}

/// Quantizes with ggml's `quantize_row_q4_1_ref`. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) {
    assert_eq!(x.len(), y.len() * QK4_1, "row length");
    for (xb, yb) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        *yb = quantize_block_q4_1(xb);
    }
}

fn quantize_block_q4_1(x: &[f32]) -> BlockQ4_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse_or_zero(d);
    let mut qs = [0u8; QK4_1 / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let lo = code4((x[j] - min) * id + 0.5);
        let hi = code4((x[j + QK4_1 / 2] - min) * id + 0.5);
        *q = lo | (hi << 4);
    }
    BlockQ4_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qs,
    }
}

/// ggml's `σ²` of the importance-weighted legacy quantizers: the row's mean square.
pub(crate) fn row_sigma2(x: &[f32]) -> f32 {
    sum_squares(x) / x.len() as f32
}

/// ggml's `quantize_row_q4_0_impl`: per block the weighted symmetric fit of
/// `make_qx_quants` under `qw · sqrt(σ² + x²)`, `qw` the row's importance (one per
/// element). Panics unless `x` fills `y` and `qw` matches `x`.
pub fn quantize_row_q4_0_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4_0]) {
    assert_eq!(x.len(), y.len() * QK4_0, "row length");
    assert_eq!(qw.len(), x.len(), "weights length");
    let sigma2 = row_sigma2(x);
    for ((xb, qb), yb) in x.chunks_exact(QK4_0).zip(qw.chunks_exact(QK4_0)).zip(y) {
        let w: [f32; QK4_0] = importance_weights(xb, qb, sigma2);
        let mut l = [0i8; QK4_0];
        let d = make_qx_quants(8, xb, &mut l, Some(&w));
        yb.d = f16::from_f32(d);
        for (j, q) in yb.qs.iter_mut().enumerate() {
            *q = l[j] as u8 | ((l[j + 16] as u8) << 4);
        }
    }
}

/// ggml's `quantize_row_q4_1_impl`: per block the weighted scale-and-minimum fit of
/// `make_qkx3_quants` under `qw · sqrt(σ² + x²)`. Panics unless `x` fills `y` and
/// `qw` matches `x`.
pub fn quantize_row_q4_1_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4_1]) {
    assert_eq!(x.len(), y.len() * QK4_1, "row length");
    assert_eq!(qw.len(), x.len(), "weights length");
    let sigma2 = row_sigma2(x);
    for ((xb, qb), yb) in x.chunks_exact(QK4_1).zip(qw.chunks_exact(QK4_1)).zip(y) {
        let w: [f32; QK4_1] = importance_weights(xb, qb, sigma2);
        let mut l = [0u8; QK4_1];
        let (d, the_min) = make_qkx2_quants(xb, &w, &mut l, &weighted_search(15));
        yb.d = f16::from_f32(d);
        yb.m = f16::from_f32(-the_min);
        for (j, q) in yb.qs.iter_mut().enumerate() {
            *q = l[j] | (l[j + 16] << 4);
        }
    }
}

/// ggml's `dequantize_row_q4_0`. Panics unless `x` fills `y` exactly.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK4_0, "row length");
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        let (lo, hi) = yb.split_at_mut(QK4_0 / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = ((q & 0x0f) as i32 - 8) as f32 * d;
            *h = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// ggml's `dequantize_row_q4_1`: `q*d + m` as two roundings, never a fused multiply-add.
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK4_1, "row length");
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let (lo, hi) = yb.split_at_mut(QK4_1 / 2);
        for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
            *l = (q & 0x0f) as f32 * d + m;
            *h = (q >> 4) as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::float::test_support::*;
    use super::*;

    fn q4_0(x: &[f32]) -> (Vec<BlockQ4_0>, Vec<f32>) {
        let mut b = vec![BlockQ4_0::zeroed(); x.len() / QK4_0];
        quantize_row_q4_0_ref(x, &mut b);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q4_0(&b, &mut y);
        (b, y)
    }

    fn q4_1(x: &[f32]) -> (Vec<BlockQ4_1>, Vec<f32>) {
        let mut b = vec![BlockQ4_1::zeroed(); x.len() / QK4_1];
        quantize_row_q4_1_ref(x, &mut b);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q4_1(&b, &mut y);
        (b, y)
    }

    /// Code of element j of a block, 0..=15.
    fn code(qs: &[u8; 16], j: usize) -> u8 {
        if j < 16 {
            qs[j] & 0x0f
        } else {
            qs[j - 16] >> 4
        }
    }

    #[test]
    fn layout_matches_ggml() {
        let b = BlockQ4_1 {
            d: f16::from_bits(0x1234),
            m: f16::from_bits(0x5678),
            qs: [0xab; 16],
        };
        let bytes = bytemuck::bytes_of(&b);
        assert_eq!(bytes.len(), 20);
        assert_eq!(&bytes[..5], &[0x34, 0x12, 0x78, 0x56, 0xab]);
        assert_eq!(size_of::<BlockQ4_0>(), 18);
        assert_eq!(align_of::<BlockQ4_0>(), 2);
    }

    #[test]
    fn round_trip_error_is_within_ggml_bounds() {
        for offset in [0.0, 1.0, 0.37] {
            let x = cos_data(GGML_TEST_SIZE, offset);
            let (_, y0) = q4_0(&x);
            let (_, y1) = q4_1(&x);
            // Bounds: d/sqrt(12), the RMSE of uniform rounding error, for d set by
            // the data's range (about ±2.1), plus 10%.
            for (name, y, bound) in [("q4_0", y0, 0.085), ("q4_1", y1, 0.09)] {
                assert!(ggml_error(&x, &y) < GGML_MAX_ERROR, "{name} {offset}");
                assert!(rmse(&x, &y) < bound, "{name} {offset}: {}", rmse(&x, &y));
            }
        }
    }

    #[test]
    fn all_zero_block_gives_zero_without_nan() {
        let x = [0.0f32; 64];
        let (b, y) = q4_0(&x);
        // ggml's max starts at +0.0, so d = +0/-8 = -0.0.
        assert_eq!(b[0].d.to_bits(), 0x8000);
        assert_eq!(b[0].qs, [0x88; 16]);
        assert!(y.iter().all(|v| *v == 0.0));
        let (b, y) = q4_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0, 0));
        assert_eq!(b[0].qs, [0; 16]);
        assert!(y.iter().all(|v| v.to_bits() == 0));
    }

    #[test]
    fn signed_zeros_follow_ggml_first_wins() {
        // All ±0: ggml's max never leaves +0.0 whatever the signs (gguf-py takes x[0]).
        let mut x = [0.0f32; 32];
        x[0] = -0.0;
        assert_eq!(q4_0(&x).0[0].d.to_bits(), 0x8000);
        // Q4_1's minimum is the first of equal values: here -0.0, then +0.0.
        let mut x = [1.0f32; 32];
        x[3] = -0.0;
        x[7] = 0.0;
        assert_eq!(q4_1(&x).0[0].m.to_bits(), 0x8000);
        x[3] = 0.0;
        x[7] = -0.0;
        assert_eq!(q4_1(&x).0[0].m.to_bits(), 0x0000);
    }

    #[test]
    fn q4_0_rounds_ties_up_not_to_even() {
        // max = -8 gives d = 1 and id = 1, so codes are trunc(x + 8.5).
        let mut x = [0.0f32; 32];
        x[..7].copy_from_slice(&[-8.0, 0.5, -0.5, 2.5, -2.5, 7.5, 1.5]);
        let (b, y) = q4_0(&x);
        assert_eq!(b[0].d.to_f32(), 1.0);
        let codes: Vec<u8> = (0..7).map(|j| code(&b[0].qs, j)).collect();
        // Round-half-even of x + 8 would give 8, 8, 10, 6 for 0.5, -0.5, 2.5, -2.5.
        assert_eq!(codes, [0, 9, 8, 11, 6, 15, 10]);
        assert_eq!(&y[..7], &[-8.0, 1.0, 0.0, 3.0, -2.0, 7.0, 2.0]);
    }

    #[test]
    fn q4_1_rounds_ties_up_not_to_even() {
        let mut x = [0.0f32; 32];
        x[..6].copy_from_slice(&[15.0, 0.5, 2.5, 6.5, 14.5, 7.49]);
        let (b, y) = q4_1(&x);
        assert_eq!((b[0].d.to_f32(), b[0].m.to_f32()), (1.0, 0.0));
        let codes: Vec<u8> = (0..6).map(|j| code(&b[0].qs, j)).collect();
        assert_eq!(codes, [15, 1, 3, 7, 15, 7]);
        assert_eq!(&y[..6], &[15.0, 1.0, 3.0, 7.0, 15.0, 7.0]);
    }

    #[test]
    fn extreme_value_is_exact_for_either_sign() {
        let mut x = cos_data(32, 0.0);
        for extreme in [-3.0f32, 3.0, 65504.0, -65504.0] {
            x[13] = extreme;
            let (b, y) = q4_0(&x);
            // The signed extreme defines d = extreme / -8, so it is code 0 exactly.
            assert_eq!(code(&b[0].qs, 13), 0);
            assert_eq!(y[13], extreme);
            assert_eq!(b[0].d.to_f32(), extreme / -8.0);
        }
        x[13] = -65504.0;
        x[14] = 65504.0;
        let (b, y) = q4_1(&x);
        assert_eq!(b[0].m.to_f32(), -65504.0);
        assert_eq!(y[13], -65504.0);
        assert!((y[14] - 65504.0).abs() <= 65504.0 * 1e-3);
    }

    #[test]
    fn huge_values_overflow_the_f16_scale_as_in_ggml() {
        // The scale is stored as ggml stores it: infinite. Such a tensor cannot be
        // represented in these formats; phiq keeps ggml's bytes rather than invent others.
        let mut x = [1.0f32; 32];
        x[0] = 3.0e38;
        let (b, _) = q4_0(&x);
        assert_eq!(b[0].d.to_bits(), 0xfc00);
        assert_eq!(code(&b[0].qs, 0), 0);
        assert_eq!(code(&b[0].qs, 1), 8);
        // max - min overflows f32: d = inf, id = 0, and (max - min)*0 is NaN, code 0.
        x[1] = -3.0e38;
        let (b, _) = q4_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0x7c00, 0xfc00));
        assert_eq!(b[0].qs, [0; 16]);
    }

    #[test]
    fn subnormal_blocks_give_zero_without_nan() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 + 1.0) * 1e-40).collect();
        let (b, y) = q4_0(&x);
        // |d| < 2^-128, so 1/d is infinite and x*id is ±inf or NaN: C's conversion is
        // undefined there; x86-64 (and gguf-py) give code 0.
        assert_eq!(b[0].d.to_bits(), 0x8000);
        assert_eq!(b[0].qs, [0; 16]);
        assert!(y.iter().all(|v| *v == 0.0));
        let (b, y) = q4_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0, 0));
        assert_eq!(b[0].qs, [0; 16]);
        assert!(y.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn tiny_normal_scales_still_quantize() {
        let x = cos_data(32, 0.0)
            .iter()
            .map(|v| v * 1e-30)
            .collect::<Vec<_>>();
        let (b, y) = q4_0(&x);
        // The scale underflows f16, so values are lost, but codes are still meaningful.
        assert_eq!(b[0].d.to_f32(), 0.0);
        assert!(b[0].qs.iter().any(|q| *q != 0x88));
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
