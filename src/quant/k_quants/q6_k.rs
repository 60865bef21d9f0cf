//! Q6_K: 6.5625 bits per weight; `x = d·scale·(q - 32)` with 6-bit `q` and signed
//! 8-bit per-16 scales.

use super::{GROUP_MAX_EPS, ggml_nearest_int, make_qx_quants};
use crate::quant::QK_K;
use half::f16;

/// ggml's `block_q6_K`. Per 128 elements, `ql` holds 64 bytes (low nibbles: elements
/// 0-63, high nibbles: 64-127) and `qh` 32 bytes whose bit pairs 0-3 top up
/// elements `i`, `i + 32`, `i + 64`, `i + 96`. `d` comes last.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

const _: () = assert!(size_of::<BlockQ6_K>() == 210);

/// ggml's `quantize_row_q6_K_ref`. `x.len()` must be `y.len() * QK_K`.
pub fn quantize_row_q6_k_ref(x: &[f32], y: &mut [BlockQ6_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q6_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        quantize_block(xb, None, yb);
    }
}

/// ggml's `quantize_row_q6_K_impl`: the per-16 fits weighted by the importance `qw`
/// (one per element of `x`) instead of `x²`; the rest as the reference.
pub fn quantize_row_q6_k_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ6_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q6_K row length");
    assert_eq!(qw.len(), x.len(), "Q6_K weights length");
    for ((xb, wb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
        quantize_block(xb, Some(wb), yb);
    }
}

fn quantize_block(x: &[f32], qw: Option<&[f32]>, y: &mut BlockQ6_K) {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    let sub_blocks = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for (ib, (s, (xs, ls))) in scales.iter_mut().zip(sub_blocks).enumerate() {
        *s = make_qx_quants(32, xs, ls, qw.map(|w| &w[16 * ib..16 * (ib + 1)]));
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = *s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        *y = bytemuck::Zeroable::zeroed();
        return;
    }
    // Signed: the scale of largest magnitude maps to -128, using all of i8's range.
    let iscale = -128.0f32 / max_scale;
    y.d = f16::from_f32(1.0 / iscale);
    for (q, &s) in y.scales.iter_mut().zip(&scales) {
        *q = ggml_nearest_int(iscale * s).min(127) as i8;
    }
    requantize_q6(x, y, &mut l);
    pack_q6(&l, &mut y.ql, &mut y.qh);
}

/// Re-quantizes against the stored scales, absorbing their rounding; sub-blocks whose
/// scale is stored as 0 keep the levels of their own fit, as in ggml.
fn requantize_q6(x: &[f32], y: &BlockQ6_K, l: &mut [i8; QK_K]) {
    let sub_blocks = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
    for (&sc, (xs, ls)) in y.scales.iter().zip(sub_blocks) {
        let d = y.d.to_f32() * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        for (li, &xi) in ls.iter_mut().zip(xs) {
            *li = (ggml_nearest_int(xi / d).clamp(-32, 31) + 32) as i8;
        }
    }
}

fn pack_q6(l: &[i8; QK_K], ql: &mut [u8; QK_K / 2], qh: &mut [u8; QK_K / 4]) {
    let halves = l
        .chunks_exact(128)
        .zip(ql.chunks_exact_mut(64))
        .zip(qh.chunks_exact_mut(32));
    for ((lc, ql), qh) in halves {
        for i in 0..32 {
            let q = [0, 32, 64, 96].map(|o| lc[i + o] as u8);
            ql[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            ql[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qh[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

/// ggml's `dequantize_row_q6_K`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q6_k(x: &[BlockQ6_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q6_K row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = blk.d.to_f32();
        let halves = yb
            .chunks_exact_mut(128)
            .zip(blk.ql.chunks_exact(64))
            .zip(blk.qh.chunks_exact(32))
            .zip(blk.scales.chunks_exact(8));
        for (((out, ql), qh), sc) in halves {
            for i in 0..32 {
                let is = i / 16;
                let q = [
                    (ql[i] & 0xF) | ((qh[i] & 3) << 4),
                    (ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4),
                    (ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4),
                    (ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let v = f32::from(qk as i8 - 32);
                    out[i + 32 * k] = d * f32::from(sc[is + 2 * k]) * v;
                }
            }
        }
    }
}
