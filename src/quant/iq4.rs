//! IQ4_NL and IQ4_XS: 4-bit codes indexing ggml's non-linear table
//! [`KVALUES_IQ4NL`] (denser near zero, where trained weights are), times a scale
//! per 32 elements: an f16 in IQ4_NL (4.5 bits per weight), a 6-bit value under an
//! f16 super-scale per 256 in IQ4_XS (4.25 bpw).
//!
//! Both quantizers are ggml's `quantize_row_iq4_nl_impl` as `llama-quantize` runs it
//! (`quantize_iq4_nl` / `quantize_iq4_xs`, 7 trial scales each side), importance
//! weights or `x²` without: byte for byte, in C's f32 operation order. (ggml's
//! `quantize_row_iq4_nl_ref` tries no scales and can leave an all-zero block's codes
//! uninitialised; no tool writes files with it.)

use half::f16;

use super::QK_K;
use super::k_quants::{GROUP_MAX_EPS, ggml_nearest_int};

/// Elements per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// ggml's `kvalues_iq4nl`: the value each 4-bit code stands for.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `block_iq4_nl`: byte `j` of `qs` codes elements `j` (low nibble) and
/// `j + 16` (high nibble).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockIQ4_NL {
    pub d: f16,
    pub qs: [u8; QK4_NL / 2],
}

const _: () = assert!(size_of::<BlockIQ4_NL>() == 18);

/// ggml's `block_iq4_xs`: eight 32-element sub-blocks coded as IQ4_NL's, each with
/// a 6-bit scale (`ls - 32`): low nibble in `scales_l`, top two bits in `scales_h`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockIQ4_XS {
    pub d: f16,
    pub scales_h: u16,
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(size_of::<BlockIQ4_XS>() == 136);

/// The signed scale (-32..31) of sub-block `ib` (0..8) of an IQ4_XS block.
#[inline]
pub fn iq4_xs_scale(b: &BlockIQ4_XS, ib: usize) -> i32 {
    let lo = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF;
    let hi = (b.scales_h >> (2 * ib)) & 3;
    (i32::from(lo) | (i32::from(hi) << 4)) - 32
}

/// Trial scales each side of the first guess, as `llama-quantize` runs it.
const NTRY: i32 = 7;

/// IQ4_NL, as `llama-quantize` writes it without an importance matrix.
pub fn quantize_row_iq4_nl(x: &[f32], y: &mut [BlockIQ4_NL]) {
    quantize_iq4_nl_blocks(x, None, y);
}

/// IQ4_NL under importance weights `qw` (one per element of `x`).
pub fn quantize_row_iq4_nl_weighted(x: &[f32], qw: &[f32], y: &mut [BlockIQ4_NL]) {
    assert_eq!(qw.len(), x.len(), "IQ4_NL weights length");
    quantize_iq4_nl_blocks(x, Some(qw), y);
}

fn quantize_iq4_nl_blocks(x: &[f32], qw: Option<&[f32]>, y: &mut [BlockIQ4_NL]) {
    assert_eq!(x.len(), y.len() * QK4_NL, "IQ4_NL row length");
    for (i, (xb, yb)) in x.chunks_exact(QK4_NL).zip(y).enumerate() {
        let w = weights::<QK4_NL>(xb, qw.map(|q| &q[QK4_NL * i..][..QK4_NL]));
        let mut l = [0u8; QK4_NL];
        let scale = fit_block(xb, &w, &mut l).unwrap_or(0.0);
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        for (li, &xi) in l.iter_mut().zip(xb) {
            *li = best_index(id * xi);
        }
        *yb = BlockIQ4_NL {
            d: f16::from_f32(scale),
            qs: pack_nibbles(&l),
        };
    }
}

/// IQ4_XS, as `llama-quantize` writes it without an importance matrix.
pub fn quantize_row_iq4_xs(x: &[f32], y: &mut [BlockIQ4_XS]) {
    quantize_iq4_xs_blocks(x, None, y);
}

/// IQ4_XS under importance weights `qw` (one per element of `x`).
pub fn quantize_row_iq4_xs_weighted(x: &[f32], qw: &[f32], y: &mut [BlockIQ4_XS]) {
    assert_eq!(qw.len(), x.len(), "IQ4_XS weights length");
    quantize_iq4_xs_blocks(x, Some(qw), y);
}

fn quantize_iq4_xs_blocks(x: &[f32], qw: Option<&[f32]>, y: &mut [BlockIQ4_XS]) {
    assert_eq!(x.len(), y.len() * QK_K, "IQ4_XS row length");
    for (i, (xb, yb)) in x.chunks_exact(QK_K).zip(y).enumerate() {
        let w = weights::<QK_K>(xb, qw.map(|q| &q[QK_K * i..][..QK_K]));
        let mut scales = [0.0f32; QK_K / 32];
        let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
        let mut l = [0u8; QK_K];
        for (s, ((xs, ws), ls)) in scales.iter_mut().zip(
            xb.chunks_exact(32)
                .zip(w.chunks_exact(32))
                .zip(l.chunks_exact_mut(32)),
        ) {
            *s = fit_block(xs, ws, ls).unwrap_or(0.0);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let (mut scales_h, mut scales_l) = (0u16, [0u8; QK_K / 64]);
        for (ib, (&s, (xs, ls))) in scales
            .iter()
            .zip(xb.chunks_exact(32).zip(l.chunks_exact_mut(32)))
            .enumerate()
        {
            let lv = ggml_nearest_int(id * s).clamp(-32, 31);
            let dl = d * lv as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for (li, &xi) in ls.iter_mut().zip(xs) {
                *li = best_index(idl * xi);
            }
            let lv = (lv + 32) as u8;
            scales_l[ib / 2] |= (lv & 0xF) << (4 * (ib % 2));
            scales_h |= u16::from(lv >> 4) << (2 * ib);
        }
        let mut qs = [0u8; QK_K / 2];
        for (q, lc) in qs.chunks_exact_mut(16).zip(l.chunks_exact(32)) {
            q.copy_from_slice(&pack_nibbles(lc.try_into().unwrap()));
        }
        *yb = BlockIQ4_XS {
            d: f16::from_f32(d),
            scales_h,
            scales_l,
            qs,
        };
    }
}

/// The fit's weights: `qw · sqrt(σ² + x²)` with σ² twice the mean square of the
/// `N` elements, or `x²` without importance.
fn weights<const N: usize>(x: &[f32], qw: Option<&[f32]>) -> [f32; N] {
    match qw {
        Some(qw) => {
            let mut sigma2 = 0.0f32;
            for &v in x {
                sigma2 += v * v;
            }
            sigma2 *= 2.0 / N as f32;
            std::array::from_fn(|j| qw[j] * (sigma2 + x[j] * x[j]).sqrt())
        }
        None => std::array::from_fn(|j| x[j] * x[j]),
    }
}

/// One 32-element block's scale: the first guess maps the largest magnitude to
/// -127 and is refitted by least squares, then 15 trial inverse scales around it
/// keep the best weighted fit. Writes the first guess's codes to `l`; `None` for an
/// all-zero block (ggml leaves its codes as they were: callers recompute them).
fn fit_block(x: &[f32], w: &[f32], l: &mut [u8]) -> Option<f32> {
    let v0 = f32::from(KVALUES_IQ4NL[0]);
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &xi in x {
        if xi.abs() > amax {
            amax = xi.abs();
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        return None;
    }
    let id = 1.0 / (-max / v0);
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for ((li, &xi), &wi) in l.iter_mut().zip(x).zip(w) {
        *li = best_index(id * xi);
        let q = f32::from(KVALUES_IQ4NL[usize::from(*li)]);
        sumqx += wi * q * xi;
        sumq2 += wi * q * q;
    }
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry + i32::from(KVALUES_IQ4NL[0])) as f32 / max;
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for (&xi, &wi) in x.iter().zip(w) {
            let q = f32::from(KVALUES_IQ4NL[usize::from(best_index(id * xi))]);
            sumqx += wi * q * xi;
            sumq2 += wi * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    Some(d)
}

/// ggml's `best_index_int8` over [`KVALUES_IQ4NL`]: the code whose value is nearest
/// `x`, the upper one on a tie; NaN gives 15, as C's comparisons do.
#[inline]
fn best_index(x: f32) -> u8 {
    let val = |i: usize| f32::from(KVALUES_IQ4NL[i]);
    if x <= val(0) {
        return 0;
    }
    if x >= val(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - val(mu - 1) < val(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// Codes of 32 elements into 16 bytes: element `j` low nibble, `j + 16` high.
fn pack_nibbles(l: &[u8; 32]) -> [u8; 16] {
    std::array::from_fn(|j| l[j] | (l[j + 16] << 4))
}

/// ggml's `dequantize_row_iq4_nl`. `y.len()` must be `x.len() * QK4_NL`.
pub fn dequantize_row_iq4_nl(x: &[BlockIQ4_NL], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK4_NL, "IQ4_NL row length");
    for (blk, out) in x.iter().zip(y.chunks_exact_mut(QK4_NL)) {
        dequantize_32(blk.d.to_f32(), &blk.qs, out);
    }
}

/// ggml's `dequantize_row_iq4_xs`. `y.len()` must be `x.len() * QK_K`.
pub fn dequantize_row_iq4_xs(x: &[BlockIQ4_XS], y: &mut [f32]) {
    assert_eq!(y.len(), x.len() * QK_K, "IQ4_XS row length");
    for (blk, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = blk.d.to_f32();
        for (ib, (qs, out)) in blk
            .qs
            .chunks_exact(16)
            .zip(yb.chunks_exact_mut(32))
            .enumerate()
        {
            let dl = d * iq4_xs_scale(blk, ib) as f32;
            dequantize_32(dl, qs.try_into().unwrap(), out);
        }
    }
}

fn dequantize_32(d: f32, qs: &[u8; 16], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(16);
    for ((&q, a), b) in qs.iter().zip(lo).zip(hi) {
        *a = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0xF)]);
        *b = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
    }
}
