//! Q5_0 and Q5_1: Q4_0/Q4_1 with a fifth bit per weight, the 32 fifth bits packed
//! into `qh` (bit j belongs to element j), for 32 levels instead of 16.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::float::c_float_to_int;
use super::k_quants::{importance_weights, make_qkx2_quants, make_qx_quants, weighted_search};
use super::q4::{inverse_or_zero, min_max, row_sigma2, signed_absmax};
use super::{QK5_0, QK5_1};

/// ggml's `block_q5_0`. `qh` is a little-endian u32 kept as bytes, as ggml does, so the
/// block needs no 4-byte alignment.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(size_of::<BlockQ5_0>() == 22);

/// ggml's `block_q5_1`: like Q5_0 plus the block minimum `m`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(size_of::<BlockQ5_1>() == 24);

/// Splits 32 five-bit codes into the low nibbles `qs` and the fifth bits `qh`.
fn pack5(codes: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let (c0, c1) = (codes[j], codes[j + 16]);
        *q = (c0 & 0x0f) | ((c1 & 0x0f) << 4);
        qh |= ((c0 as u32 & 0x10) >> 4) << j;
        qh |= ((c1 as u32 & 0x10) >> 4) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

/// The five-bit code of element j and of element j + 16.
#[inline]
fn unpack5(qh: u32, qs: &[u8; 16], j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (
        ((qs[j] & 0x0f) as u32 | h0) as i32,
        ((qs[j] >> 4) as u32 | h1) as i32,
    )
}

/// Quantizes with ggml's `quantize_row_q5_0_ref`. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), y.len() * QK5_0, "row length");
    for (xb, yb) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
        *yb = quantize_block_q5_0(xb);
    }
}

fn quantize_block_q5_0(x: &[f32]) -> BlockQ5_0 {
    let d = signed_absmax(x) / -16.0;
    let id = inverse_or_zero(d);
    // `MIN(31, (int8_t)(x*id + 16.5f))`: truncation after +16.5 rounds ties up.
    let codes: [u8; 32] =
        std::array::from_fn(|j| (c_float_to_int(x[j] * id + 16.5) as i8).min(31) as u8);
    let (qh, qs) = pack5(&codes);
    BlockQ5_0 {
        d: f16::from_f32(d),
        qh,
        qs,
    }
}

/// Quantizes with ggml's `quantize_row_q5_1_ref`. Panics unless `x` fills `y` exactly.
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) {
    assert_eq!(x.len(), y.len() * QK5_1, "row length");
    for (xb, yb) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
        *yb = quantize_block_q5_1(xb);
    }
}

fn quantize_block_q5_1(x: &[f32]) -> BlockQ5_1 {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse_or_zero(d);
    // ggml has no MIN(31, ...) here: (max - min)*id + 0.5 stays below 32.
    let codes: [u8; 32] = std::array::from_fn(|j| c_float_to_int((x[j] - min) * id + 0.5) as u8);
    let (qh, qs) = pack5(&codes);
    BlockQ5_1 {
        d: f16::from_f32(d),
        m: f16::from_f32(min),
        qh,
        qs,
    }
}

/// ggml's `quantize_row_q5_0_impl`: Q4_0's weighted fit with 32 levels. Panics unless
/// `x` fills `y` and `qw` matches `x`.
pub fn quantize_row_q5_0_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), y.len() * QK5_0, "row length");
    assert_eq!(qw.len(), x.len(), "weights length");
    let sigma2 = row_sigma2(x);
    for ((xb, qb), yb) in x.chunks_exact(QK5_0).zip(qw.chunks_exact(QK5_0)).zip(y) {
        let w: [f32; QK5_0] = importance_weights(xb, qb, sigma2);
        let mut l = [0i8; QK5_0];
        let d = make_qx_quants(16, xb, &mut l, Some(&w));
        let (qh, qs) = pack5(&l.map(|v| v as u8));
        *yb = BlockQ5_0 {
            d: f16::from_f32(d),
            qh,
            qs,
        };
    }
}

/// ggml's `quantize_row_q5_1_impl`: Q4_1's weighted fit with 32 levels. Panics unless
/// `x` fills `y` and `qw` matches `x`.
pub fn quantize_row_q5_1_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5_1]) {
    assert_eq!(x.len(), y.len() * QK5_1, "row length");
    assert_eq!(qw.len(), x.len(), "weights length");
    let sigma2 = row_sigma2(x);
    for ((xb, qb), yb) in x.chunks_exact(QK5_1).zip(qw.chunks_exact(QK5_1)).zip(y) {
        let w: [f32; QK5_1] = importance_weights(xb, qb, sigma2);
        let mut l = [0u8; QK5_1];
        let (d, the_min) = make_qkx2_quants(xb, &w, &mut l, &weighted_search(31));
        let (qh, qs) = pack5(&l);
        *yb = BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(-the_min),
            qh,
            qs,
        };
    }
}

/// ggml's `dequantize_row_q5_0`. Panics unless `x` fills `y` exactly.
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK5_0, "row length");
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK5_0 / 2 {
            let (q0, q1) = unpack5(qh, &b.qs, j);
            yb[j] = (q0 - 16) as f32 * d;
            yb[j + QK5_0 / 2] = (q1 - 16) as f32 * d;
        }
    }
}

/// ggml's `dequantize_row_q5_1`: `q*d + m` as two roundings, never a fused multiply-add.
pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK5_1, "row length");
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..QK5_1 / 2 {
            let (q0, q1) = unpack5(qh, &b.qs, j);
            yb[j] = q0 as f32 * d + m;
            yb[j + QK5_1 / 2] = q1 as f32 * d + m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::float::test_support::*;
    use super::*;

    fn q5_0(x: &[f32]) -> (Vec<BlockQ5_0>, Vec<f32>) {
        let mut b = vec![BlockQ5_0::zeroed(); x.len() / QK5_0];
        quantize_row_q5_0_ref(x, &mut b);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q5_0(&b, &mut y);
        (b, y)
    }

    fn q5_1(x: &[f32]) -> (Vec<BlockQ5_1>, Vec<f32>) {
        let mut b = vec![BlockQ5_1::zeroed(); x.len() / QK5_1];
        quantize_row_q5_1_ref(x, &mut b);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q5_1(&b, &mut y);
        (b, y)
    }

    fn codes(qh: [u8; 4], qs: &[u8; 16]) -> Vec<i32> {
        let qh = u32::from_le_bytes(qh);
        let (lo, hi): (Vec<i32>, Vec<i32>) = (0..16).map(|j| unpack5(qh, qs, j)).unzip();
        lo.into_iter().chain(hi).collect()
    }

    #[test]
    fn layout_matches_ggml() {
        let b = BlockQ5_1 {
            d: f16::from_bits(0x1234),
            m: f16::from_bits(0x5678),
            qh: [1, 2, 3, 4],
            qs: [0xab; 16],
        };
        assert_eq!(
            &bytemuck::bytes_of(&b)[..9],
            &[0x34, 0x12, 0x78, 0x56, 1, 2, 3, 4, 0xab]
        );
        assert_eq!(size_of::<BlockQ5_0>(), 22);
        assert_eq!(size_of::<BlockQ5_1>(), 24);
    }

    #[test]
    fn pack_and_unpack_are_inverse_for_every_code() {
        let all: [u8; 32] = std::array::from_fn(|j| j as u8);
        let (qh, qs) = pack5(&all);
        assert_eq!(codes(qh, &qs), (0..32).collect::<Vec<_>>());
        // Fifth bits set for codes 16..31, i.e. elements 16..31: the high half of qh.
        assert_eq!(u32::from_le_bytes(qh), 0xffff_0000);
    }

    #[test]
    fn round_trip_error_is_within_ggml_bounds() {
        for offset in [0.0, 1.0, 0.37] {
            let x = cos_data(GGML_TEST_SIZE, offset);
            let (_, y0) = q5_0(&x);
            let (_, y1) = q5_1(&x);
            // Bounds: d/sqrt(12), the RMSE of uniform rounding error, for d set by
            // the data's range (about ±2.1), plus 10%.
            for (name, y, bound) in [("q5_0", y0, 0.043), ("q5_1", y1, 0.043)] {
                assert!(ggml_error(&x, &y) < GGML_MAX_ERROR, "{name} {offset}");
                assert!(rmse(&x, &y) < bound, "{name} {offset}: {}", rmse(&x, &y));
            }
        }
    }

    #[test]
    fn all_zero_block_gives_zero_without_nan() {
        let x = [0.0f32; 32];
        let (b, y) = q5_0(&x);
        assert_eq!(b[0].d.to_bits(), 0x8000);
        assert_eq!((b[0].qh, b[0].qs), ([0xff; 4], [0; 16]));
        assert!(y.iter().all(|v| *v == 0.0));
        let (b, y) = q5_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0, 0));
        assert_eq!((b[0].qh, b[0].qs), ([0; 4], [0; 16]));
        assert!(y.iter().all(|v| v.to_bits() == 0));
    }

    #[test]
    fn ties_round_up_not_to_even() {
        // max = -16: d = 1, id = 1, codes trunc(x + 16.5).
        let mut x = [0.0f32; 32];
        x[..6].copy_from_slice(&[-16.0, 0.5, -0.5, 2.5, -2.5, 15.5]);
        let (b, y) = q5_0(&x);
        assert_eq!(b[0].d.to_f32(), 1.0);
        assert_eq!(&codes(b[0].qh, &b[0].qs)[..6], &[0, 17, 16, 19, 14, 31]);
        assert_eq!(&y[..6], &[-16.0, 1.0, 0.0, 3.0, -2.0, 15.0]);
        // min 0, max 31: d = 1.
        x[..6].copy_from_slice(&[31.0, 0.5, 2.5, 6.5, 30.5, 7.49]);
        let (b, y) = q5_1(&x);
        assert_eq!((b[0].d.to_f32(), b[0].m.to_f32()), (1.0, 0.0));
        assert_eq!(&codes(b[0].qh, &b[0].qs)[..6], &[31, 1, 3, 7, 31, 7]);
        assert_eq!(&y[..6], &[31.0, 1.0, 3.0, 7.0, 31.0, 7.0]);
    }

    #[test]
    fn extreme_value_is_exact_for_either_sign() {
        let mut x = cos_data(32, 2.0);
        for extreme in [-3.0f32, 3.0, 65504.0, -65504.0] {
            x[20] = extreme;
            let (b, y) = q5_0(&x);
            assert_eq!(codes(b[0].qh, &b[0].qs)[20], 0);
            assert_eq!(y[20], extreme);
        }
        x[20] = -65504.0;
        let (b, y) = q5_1(&x);
        assert_eq!(b[0].m.to_f32(), -65504.0);
        assert_eq!(y[20], -65504.0);
    }

    #[test]
    fn huge_values_overflow_the_f16_scale_as_in_ggml() {
        let mut x = [1.0f32; 32];
        x[0] = -3.0e38;
        let (b, _) = q5_0(&x);
        assert_eq!(b[0].d.to_bits(), 0x7c00);
        assert_eq!(codes(b[0].qh, &b[0].qs)[..2], [0, 16]);
        x[1] = 3.0e38;
        let (b, _) = q5_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0x7c00, 0xfc00));
        assert_eq!((b[0].qh, b[0].qs), ([0; 4], [0; 16]));
    }

    #[test]
    fn subnormal_blocks_give_zero_without_nan() {
        let x: Vec<f32> = (0..32).map(|i| -(i as f32 + 1.0) * 1e-40).collect();
        let (b, y) = q5_0(&x);
        // d = +|max|/16 underflows; id = +inf; x*id = -inf: x86-64 code 0.
        assert_eq!(b[0].d.to_bits(), 0);
        assert_eq!((b[0].qh, b[0].qs), ([0; 4], [0; 16]));
        assert!(y.iter().all(|v| *v == 0.0));
        let (b, y) = q5_1(&x);
        assert_eq!((b[0].d.to_bits(), b[0].m.to_bits()), (0, 0x8000));
        assert!(y.iter().all(|v| *v == 0.0));
    }
}
