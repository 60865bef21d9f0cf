//! Q8_K: the activation format K-quant dot products pair with. `d` is a plain f32
//! and `bsums` caches per-16 sums of `qs` for the kernels' min corrections.

use super::ggml_nearest_int;
use crate::quant::QK_K;

/// ggml's `block_q8_K`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(size_of::<BlockQ8_K>() == 292);

/// ggml's `quantize_row_q8_K_ref`. `x.len()` must be `y.len() * QK_K`.
///
/// For an all-zero block ggml leaves `bsums` unwritten; phiq writes zeros, the sums of
/// its zero `qs`.
pub fn quantize_row_q8_k_ref(x: &[f32], y: &mut [BlockQ8_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q8_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = bytemuck::Zeroable::zeroed();
            continue;
        }
        // -127, not -128: ggml's IQ2_XXS AVX kernel needs qs to fit in ±127.
        let iscale = -127.0f32 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            // C stores the int into int8_t: the truncation is part of the format.
            *q = ggml_nearest_int(iscale * v).min(127) as i8;
        }
        for (s, q) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| i32::from(v)).sum::<i32>() as i16;
        }
        yb.d = 1.0 / iscale;
    }
}

/// ggml's `dequantize_row_q8_K` (`d·q`), for tests and debugging.
pub fn dequantize_row_q8_k(x: &[BlockQ8_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q8_K row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in yb.iter_mut().zip(&blk.qs) {
            *o = blk.d * f32::from(q);
        }
    }
}
