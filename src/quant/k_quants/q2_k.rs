//! Q2_K: 2.625 bits per weight; `x = d·scale·q - dmin·min` with 2-bit `q` and 4-bit
//! per-16 scales and mins.

use super::{
    Qkx2Params, ggml_nearest_int, importance_weights, make_qkx2_quants, make_qp_quants, pack_2bit,
    sum_squares, two_bit_code, weighted_search,
};
use crate::quant::QK_K;
use half::f16;

/// ggml's `block_q2_K`: byte `j` of `scales` is sub-block `j`'s scale (low nibble)
/// and min (high nibble); codes packed by [`super::two_bit_code`]'s layout.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ2_K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: f16,
    pub dmin: f16,
}

const _: () = assert!(size_of::<BlockQ2_K>() == 84);

/// The reference's per-16 fit: absolute error weighted by |x|.
const Q2_K_SEARCH: Qkx2Params = Qkx2Params {
    nmax: 3,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    mad: true,
};

/// The unsigned code (0..3) of element `i` of a super-block.
#[inline]
pub fn q2_k_code(b: &BlockQ2_K, i: usize) -> u8 {
    two_bit_code(&b.qs, i)
}

/// ggml's `quantize_row_q2_K_ref`. `x.len()` must be `y.len() * QK_K`.
pub fn quantize_row_q2_k_ref(x: &[f32], y: &mut [BlockQ2_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q2_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for (j, (xs, ls)) in xb.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
            let w: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
            (scales[j], mins[j]) = make_qkx2_quants(xs, &w, ls, &Q2_K_SEARCH);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let mut packed = [0u8; 16];
        let mut d = f16::ZERO;
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (p, &s) in packed.iter_mut().zip(&scales) {
                // C stores the int in a uint8_t: keep that truncation.
                *p = ggml_nearest_int(iscale * s) as u8;
            }
            d = f16::from_f32(max_scale / 15.0);
        }
        let mut dmin = f16::ZERO;
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (p, &m) in packed.iter_mut().zip(&mins) {
                *p = (i32::from(*p) | (ggml_nearest_int(iscale * m) << 4)) as u8;
            }
            dmin = f16::from_f32(max_min / 15.0);
        }
        *yb = finish(xb, packed, d, dmin, &mut l);
    }
}

/// ggml's `quantize_row_q2_K_impl`: per-16 fits of squared error under the
/// importance weights `qw · sqrt(σ² + x²)` (σ² the super-block's mean square, not
/// twice it as in the other K-quants), then the scales and mins fitted to 4 bits by
/// `make_qp_quants` under each sub-block's total weight.
pub fn quantize_row_q2_k_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ2_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q2_K row length");
    assert_eq!(qw.len(), x.len(), "Q2_K weights length");
    let search = weighted_search(3);
    for ((xb, wb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
        let sigma2 = sum_squares(xb) / QK_K as f32;
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins, mut sw) = ([0.0f32; 16], [0.0f32; 16], [0.0f32; 16]);
        let subs = xb.chunks_exact(16).zip(wb.chunks_exact(16));
        for (j, ((xs, qs), ls)) in subs.zip(l.chunks_exact_mut(16)).enumerate() {
            let w: [f32; 16] = importance_weights(xs, qs, sigma2);
            sw[j] = w.iter().fold(0.0f32, |a, &b| a + b);
            (scales[j], mins[j]) = make_qkx2_quants(xs, &w, ls, &search);
        }
        let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
        let d = f16::from_f32(make_qp_quants(15, &scales, &mut ls, &sw));
        let dmin = f16::from_f32(make_qp_quants(15, &mins, &mut lm, &sw));
        let packed = std::array::from_fn(|j| ls[j] | (lm[j] << 4));
        *yb = finish(xb, packed, d, dmin, &mut l);
    }
}

/// Re-quantizes every sub-block whose stored scale is non-zero against the header as
/// stored (the others keep their fit's levels) and packs the block.
fn finish(x: &[f32], scales: [u8; 16], d: f16, dmin: f16, l: &mut [u8; QK_K]) -> BlockQ2_K {
    for (j, (xs, lc)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let dj = d.to_f32() * f32::from(scales[j] & 0xF);
        if dj == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(scales[j] >> 4);
        for (li, &xi) in lc.iter_mut().zip(xs) {
            *li = ggml_nearest_int((xi + dm) / dj).clamp(0, 3) as u8;
        }
    }
    BlockQ2_K {
        scales,
        qs: pack_2bit(l),
        d,
        dmin,
    }
}

/// ggml's `dequantize_row_q2_K`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q2_k(x: &[BlockQ2_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q2_K row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (blk.d.to_f32(), blk.dmin.to_f32());
        for (j, out) in yb.chunks_exact_mut(16).enumerate() {
            let sc = blk.scales[j];
            let (dl, ml) = (d * f32::from(sc & 0xF), min * f32::from(sc >> 4));
            for (k, o) in out.iter_mut().enumerate() {
                *o = dl * f32::from(q2_k_code(blk, 16 * j + k)) - ml;
            }
        }
    }
}
