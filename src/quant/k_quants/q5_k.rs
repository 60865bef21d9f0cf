//! Q5_K: 5.5 bits per weight; Q4_K's layout plus a fifth bit per element in `qh`.

use super::{Qkx2Params, quantize_scales_mins, quantize_scales_mins_weighted, sub_block_factors};
use crate::quant::{K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml's `block_q5_K`. Low nibbles pair up as in Q4_K; bit `2k` of `qh[i]` is the
/// fifth bit of element `64k + i`, bit `2k + 1` that of element `64k + 32 + i`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockQ5_K>() == 176);

const Q5_K_SEARCH: Qkx2Params = Qkx2Params {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
    mad: false,
};

/// ggml's `quantize_row_q5_K_ref`. `x.len()` must be `y.len() * QK_K`.
pub fn quantize_row_q5_k_ref(x: &[f32], y: &mut [BlockQ5_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q5_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0u8; QK_K];
        let h = quantize_scales_mins(xb, &Q5_K_SEARCH, &mut l);
        yb.d = h.d;
        yb.dmin = h.dmin;
        yb.scales = h.scales;
        pack_q5(&l, &mut yb.qs, &mut yb.qh);
    }
}

/// ggml's `quantize_row_q5_K_impl`: as the reference, fitted under the importance
/// weights `qw` (one per element of `x`, from an importance matrix).
pub fn quantize_row_q5_k_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ5_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q5_K row length");
    assert_eq!(qw.len(), x.len(), "Q5_K weights length");
    for ((xb, wb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
        let mut l = [0u8; QK_K];
        let h = quantize_scales_mins_weighted(xb, wb, 31, true, &mut l);
        yb.d = h.d;
        yb.dmin = h.dmin;
        yb.scales = h.scales;
        pack_q5(&l, &mut yb.qs, &mut yb.qh);
    }
}

fn pack_q5(l: &[u8; QK_K], qs: &mut [u8; QK_K / 2], qh: &mut [u8; QK_K / 8]) {
    qh.fill(0);
    for (k, (q, lc)) in qs.chunks_exact_mut(32).zip(l.chunks_exact(64)).enumerate() {
        let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for (i, qi) in q.iter_mut().enumerate() {
            let (l1, l2) = (lc[i], lc[i + 32]);
            if l1 > 15 {
                qh[i] |= m1;
            }
            if l2 > 15 {
                qh[i] |= m2;
            }
            *qi = (l1 & 0xF) | ((l2 & 0xF) << 4);
        }
    }
}

/// ggml's `dequantize_row_q5_K`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q5_k(x: &[BlockQ5_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q5_K row length");
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
            let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
            let (lo, hi) = out.split_at_mut(32);
            for (((&qi, &h), a), b) in q.iter().zip(&blk.qh).zip(lo).zip(hi) {
                let q1 = (qi & 0xF) + if h & u1 != 0 { 16 } else { 0 };
                let q2 = (qi >> 4) + if h & u2 != 0 { 16 } else { 0 };
                *a = d1 * f32::from(q1) - m1;
                *b = d2 * f32::from(q2) - m2;
            }
        }
    }
}
