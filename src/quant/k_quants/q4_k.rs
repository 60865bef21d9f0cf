//! Q4_K: 4.5 bits per weight; `x = d·scale·q - dmin·min` with 4-bit `q` and 6-bit
//! per-32 scales and mins.

use super::{
    Qkx2Params, ScalesMins, quantize_scales_mins, quantize_scales_mins_weighted, sub_block_factors,
};
use crate::quant::{K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml's `block_q4_K`. Each 32-byte run of `qs` holds 64 elements: the low nibbles
/// are the first 32, the high nibbles the next 32.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ4_K>() == 144);

const Q4_K_SEARCH: Qkx2Params = Qkx2Params {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
    mad: false,
};

/// ggml's `quantize_row_q4_K_ref`. `x.len()` must be `y.len() * QK_K`.
pub fn quantize_row_q4_k_ref(x: &[f32], y: &mut [BlockQ4_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q4_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0u8; QK_K];
        let h = quantize_scales_mins(xb, &Q4_K_SEARCH, &mut l);
        *yb = block(h, &l);
    }
}

/// ggml's `quantize_row_q4_K_impl`: as the reference, fitted under the importance
/// weights `qw` (one per element of `x`, from an importance matrix).
pub fn quantize_row_q4_k_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ4_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q4_K row length");
    assert_eq!(qw.len(), x.len(), "Q4_K weights length");
    for ((xb, wb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
        let mut l = [0u8; QK_K];
        let h = quantize_scales_mins_weighted(xb, wb, 15, false, &mut l);
        *yb = block(h, &l);
    }
}

fn block(h: ScalesMins, l: &[u8; QK_K]) -> BlockQ4_K {
    let mut qs = [0u8; QK_K / 2];
    for (q, lc) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)) {
        for (i, qi) in q.iter_mut().enumerate() {
            *qi = lc[i] | (lc[i + 32] << 4);
        }
    }
    BlockQ4_K {
        d: h.d,
        dmin: h.dmin,
        scales: h.scales,
        qs,
    }
}

/// ggml's `dequantize_row_q4_K`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q4_k(x: &[BlockQ4_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q4_K row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let f = sub_block_factors(blk.d, blk.dmin, &blk.scales);
        for (j, (q, out)) in blk
            .qs
            .chunks_exact(32)
            .zip(yb.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = f[2 * j];
            let (d2, m2) = f[2 * j + 1];
            let (lo, hi) = out.split_at_mut(32);
            for ((&qi, a), b) in q.iter().zip(lo).zip(hi) {
                *a = d1 * f32::from(qi & 0xF) - m1;
                *b = d2 * f32::from(qi >> 4) - m2;
            }
        }
    }
}
