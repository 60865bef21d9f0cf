//! Q3_K: 3.4375 bits per weight; `x = d·(scale - 32)·q` with 3-bit signed `q`
//! (-4..3) and 6-bit per-16 scales.

use super::{
    GROUP_MAX_EPS, ggml_nearest_int, make_qx_quants, pack_2bit, sum_squares, two_bit_code,
};
use crate::quant::QK_K;
use half::f16;

/// ggml's `block_q3_K`. The low two bits of each code are packed as Q2_K's
/// ([`super::two_bit_code`]); bit `i / 32` of `hmask[i % 32]` is set when the code of
/// element `i` is non-negative (the stored level has its third bit). `scales` packs
/// sixteen 6-bit values: low nibbles in bytes 0-7 (sub-blocks 0-7 low, 8-15 high),
/// top bit pairs in bytes 8-11 (see [`q3_k_scale`]).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ3_K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: f16,
}

const _: () = assert!(size_of::<BlockQ3_K>() == 110);

/// The signed scale (-32..31) of sub-block `j` (0..16).
#[inline]
pub fn q3_k_scale(scales: &[u8; 12], j: usize) -> i8 {
    let low = if j < 8 {
        scales[j] & 0xF
    } else {
        scales[j - 8] >> 4
    };
    let high = (scales[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// The signed code (-4..3) of element `i` of a super-block.
#[inline]
pub fn q3_k_code(b: &BlockQ3_K, i: usize) -> i8 {
    let high = b.hmask[i % 32] >> (i / 32) & 1;
    two_bit_code(&b.qs, i) as i8 - if high != 0 { 0 } else { 4 }
}

/// ggml's `quantize_row_q3_K_ref`. `x.len()` must be `y.len() * QK_K`.
pub fn quantize_row_q3_k_ref(x: &[f32], y: &mut [BlockQ3_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q3_K row length");
    for (xb, yb) in x.chunks_exact(QK_K).zip(y) {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];
        let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
        for (s, (xs, ls)) in scales
            .iter_mut()
            .zip(xb.chunks_exact(16).zip(l.chunks_exact_mut(16)))
        {
            *s = make_q3_quants(xs, ls);
            if s.abs() > amax {
                amax = s.abs();
                max_scale = *s;
            }
        }
        let mut ls = [0u8; QK_K / 16];
        let d = if max_scale != 0.0 {
            let iscale = -32.0f32 / max_scale;
            for (lj, &s) in ls.iter_mut().zip(&scales) {
                // C stores the int in an int8_t before clamping.
                *lj = ((ggml_nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            }
            f16::from_f32(1.0 / iscale)
        } else {
            f16::ZERO
        };
        *yb = finish(xb, &ls, d, &mut l);
    }
}

/// ggml's `quantize_row_q3_K_impl`: per-16 fits under the importance weights
/// `qw · sqrt(σ² + x²)` (σ² twice the super-block's mean square), then the sixteen
/// scales themselves fitted to 6 bits under each sub-block's total weight.
pub fn quantize_row_q3_k_weighted(x: &[f32], qw: &[f32], y: &mut [BlockQ3_K]) {
    assert_eq!(x.len(), y.len() * QK_K, "Q3_K row length");
    assert_eq!(qw.len(), x.len(), "Q3_K weights length");
    for ((xb, wb), yb) in x.chunks_exact(QK_K).zip(qw.chunks_exact(QK_K)).zip(y) {
        let sigma2 = 2.0 * sum_squares(xb) / QK_K as f32;
        let mut l = [0i8; QK_K];
        let (mut scales, mut sw) = ([0.0f32; QK_K / 16], [0.0f32; QK_K / 16]);
        let subs = xb.chunks_exact(16).zip(wb.chunks_exact(16));
        for (j, ((xs, qs), ls)) in subs.zip(l.chunks_exact_mut(16)).enumerate() {
            let w: [f32; 16] = super::importance_weights(xs, qs, sigma2);
            sw[j] = w.iter().fold(0.0f32, |a, &b| a + b);
            scales[j] = make_qx_quants(4, xs, ls, Some(&w));
        }
        let mut lsi = [0i8; QK_K / 16];
        let d = make_qx_quants(32, &scales, &mut lsi, Some(&sw));
        let ls = lsi.map(|v| v as u8);
        *yb = finish(xb, &ls, f16::from_f32(d), &mut l);
    }
}

/// Packs the 6-bit scale levels, re-quantizes every sub-block whose stored scale is
/// non-zero against it, and packs the codes. `l` holds the fits' levels `0..8`.
fn finish(x: &[f32], ls: &[u8; QK_K / 16], d: f16, l: &mut [i8; QK_K]) -> BlockQ3_K {
    let mut scales = [0u8; 12];
    for (j, &lj) in ls.iter().enumerate() {
        if j < 8 {
            scales[j] = lj & 0xF;
        } else {
            scales[j - 8] |= (lj & 0xF) << 4;
        }
        scales[j % 4 + 8] |= (lj >> 4) << (2 * (j / 4));
    }
    for (j, (xs, lc)) in x.chunks_exact(16).zip(l.chunks_exact_mut(16)).enumerate() {
        let dj = d.to_f32() * f32::from(q3_k_scale(&scales, j));
        if dj == 0.0 {
            continue;
        }
        for (li, &xi) in lc.iter_mut().zip(xs) {
            *li = (ggml_nearest_int(xi / dj).clamp(-4, 3) + 4) as i8;
        }
    }
    let mut hmask = [0u8; QK_K / 8];
    let mut low = [0u8; QK_K];
    for (j, (&lj, lo)) in l.iter().zip(&mut low).enumerate() {
        let mut v = lj as u8;
        if v > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            v -= 4;
        }
        *lo = v;
    }
    BlockQ3_K {
        hmask,
        qs: pack_2bit(&low),
        scales,
        d,
    }
}

/// ggml's `make_q3_quants` with `do_rmse`: levels `-4..3` under the scale of the
/// largest magnitude, then up to five rounds of moving single levels while the
/// `x²`-weighted fit improves. Writes `level + 4`; returns the scale.
fn make_q3_quants(x: &[f32], l: &mut [i8]) -> f32 {
    const NMAX: i32 = 4;
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &xi in x {
        if xi.abs() > amax {
            amax = xi.abs();
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &xi) in l.iter_mut().zip(x) {
        let lv = ggml_nearest_int(iscale * xi).clamp(-NMAX, NMAX - 1);
        *li = lv as i8;
        let w = xi * xi;
        sumlx += w * xi * lv as f32;
        suml2 += w * lv as f32 * lv as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (li, &xi) in l.iter_mut().zip(x) {
            let w = xi * xi;
            let lf = f32::from(*li);
            let mut slx = sumlx - w * xi * lf;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * lf * lf;
                let new_l = ggml_nearest_int(xi * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != i32::from(*li) {
                    let nf = new_l as f32;
                    slx += w * xi * nf;
                    sl2 += w * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += NMAX as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// ggml's `dequantize_row_q3_K`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_q3_k(x: &[BlockQ3_K], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "Q3_K row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = blk.d.to_f32();
        for (j, out) in yb.chunks_exact_mut(16).enumerate() {
            let dl = d * f32::from(q3_k_scale(&blk.scales, j));
            for (k, o) in out.iter_mut().enumerate() {
                *o = dl * f32::from(q3_k_code(blk, 16 * j + k));
            }
        }
    }
}
