//! ggml's K-quants: 256-element super-blocks whose sub-block scales are themselves
//! quantized against one f16 super-scale.
//!
//! Every quantizer here reproduces ggml's `quantize_row_*_K_ref` (ggml-quants.c) byte
//! for byte, including its f32 operation order, its comparisons (which decide ties and
//! NaN paths) and its integer truncations; the dequantizers reproduce
//! `dequantize_row_*_K` bit for bit. Q4_K and Q5_K share the scale search below and
//! differ only in their level count and search grid.
//!
//! "ggml" means ggml-base as llama.cpp builds it for x86-64: no FMA. Where the baseline
//! ISA has FMA (aarch64), gcc contracts `a*b + c` by default, also inside
//! `nearest_int`, so an ARM-built llama-quantize writes different bytes for some blocks
//! (x86 with `-march=native`: 11% of Q4_K, 27% of Q5_K blocks of varied rows). Rust never
//! contracts, so phiq writes the same bytes on every host.

mod q2_k;
mod q3_k;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_k;
#[cfg(test)]
mod tests;

pub use q2_k::*;
pub use q3_k::*;
pub use q4_k::*;
pub use q5_k::*;
pub use q6_k::*;
pub use q8_k::*;

use super::{K_SCALE_SIZE, QK_K};
use half::f16;

/// ggml's `GROUP_MAX_EPS`: below this largest magnitude a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`, including its results outside the ±2²² range its `assert`
/// admits (release builds compile the assert out). Inside that range this equals
/// [`super::nearest_int`]. Outside it ggml returns low mantissa bits, not a saturated
/// value, and real rows get there: a row of f32 subnormals makes `63 / max_scale`
/// infinite, which ggml turns into scale 0 where a saturating round would give 63.
#[inline]
pub(crate) fn ggml_nearest_int(x: f32) -> i32 {
    let biased = (x + 12_582_912.0f32).to_bits();
    (biased & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Search grid of ggml's `make_qkx2_quants` for one K-quant type.
pub(crate) struct Qkx2Params {
    nmax: u8,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Fit the weighted absolute error (ggml's `use_mad`: Q2_K's reference) instead
    /// of the squared one.
    mad: bool,
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale·l - min_out` with levels `l` in
/// `0..=nmax`, minimising the `w`-weighted squared error over a grid of candidate
/// inverse scales. Writes the levels to `l`; returns `(scale, min_out)` with
/// `min_out >= 0` the amount subtracted (ggml's `the_min`).
pub(crate) fn make_qkx2_quants(x: &[f32], w: &[f32], l: &mut [u8], p: &Qkx2Params) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for (&xi, &wi) in x.iter().zip(w).skip(1) {
        if xi < min {
            min = xi;
        }
        if xi > max {
            max = xi;
        }
        sum_w += wi;
        sum_x += wi * xi;
    }
    // Levels start at 0, so the fitted offset must not exceed 0.
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let iscale = f32::from(p.nmax) / (max - min);
    let mut scale = 1.0 / iscale;
    for (li, &xi) in l.iter_mut().zip(x) {
        *li = level(iscale, xi, min, p.nmax);
    }
    let mut best_error = weighted_error(x, w, l, scale, min, p.mad);
    let mut laux = [0u8; 32];
    let laux = &mut laux[..x.len()];
    let sums = Sums { w: sum_w, x: sum_x };
    for is in 0..=p.nstep {
        let iscale = (p.rmin + p.rdelta * is as f32 + f32::from(p.nmax)) / (max - min);
        // `min` is the best fit's so far, as in C: later candidates quantize around it.
        let Some((this_scale, this_min)) =
            least_squares_fit(x, w, laux, iscale, min, &sums, p.nmax)
        else {
            continue;
        };
        let cur_error = weighted_error(x, w, laux, this_scale, this_min, p.mad);
        if cur_error < best_error {
            l.copy_from_slice(laux);
            best_error = cur_error;
            scale = this_scale;
            min = this_min;
        }
    }
    (scale, -min)
}

/// The weighted sums of [`make_qkx2_quants`] that do not depend on the levels.
struct Sums {
    w: f32,
    x: f32,
}

/// Quantizes with `iscale` into `laux`, then solves the weighted least-squares problem
/// for scale and (non-positive) offset given those levels; `None` when it is singular.
fn least_squares_fit(
    x: &[f32],
    w: &[f32],
    laux: &mut [u8],
    iscale: f32,
    min: f32,
    s: &Sums,
    nmax: u8,
) -> Option<(f32, f32)> {
    let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
    for ((la, &xi), &wi) in laux.iter_mut().zip(x).zip(w) {
        *la = level(iscale, xi, min, nmax);
        let lf = f32::from(*la);
        sum_l += wi * lf;
        sum_l2 += wi * lf * lf;
        sum_xl += wi * lf * xi;
    }
    let det = s.w * sum_l2 - sum_l * sum_l;
    // Written as `det > 0` like the C code, so a NaN determinant is skipped too.
    if det > 0.0 {
        let this_min = (sum_l2 * s.x - sum_l * sum_xl) / det;
        // A positive offset is not representable: refit the scale through the origin.
        if this_min > 0.0 {
            return Some((sum_xl / sum_l2, 0.0));
        }
        Some(((s.w * sum_xl - s.x * sum_l) / det, this_min))
    } else {
        None
    }
}

#[inline]
fn level(iscale: f32, x: f32, min: f32, nmax: u8) -> u8 {
    ggml_nearest_int(iscale * (x - min)).clamp(0, i32::from(nmax)) as u8
}

fn weighted_error(x: &[f32], w: &[f32], l: &[u8], scale: f32, min: f32, mad: bool) -> f32 {
    let mut err = 0.0f32;
    for ((&xi, &wi), &li) in x.iter().zip(w).zip(l) {
        let diff = scale * f32::from(li) + min - xi;
        err += wi * if mad { diff.abs() } else { diff * diff };
    }
    err
}

/// ggml's `make_qx_quants` with `rmse_type == 1`: symmetric levels `-nmax..nmax-1`,
/// then a search over 18 nearby inverse scales for the best weighted fit. The weights
/// are `qw` (importance, as `quantize_row_*_impl` passes them) or else `x²`. Writes
/// `level + nmax` to `l`; returns the scale.
///
/// The 19 candidates' sums are independent, so they run side by side, one lane
/// each ([`QX_LANES`]): every lane adds its terms in C's order and rounding, so each
/// sum is C's to the bit, and the choice among them runs in C's order afterwards.
/// (One candidate after another, each sum is a chain of dependent additions.)
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    // C's first candidate, then `is` = -9..=9 without 0; spare lanes repeat the first.
    let mut iscale = [-(nmax as f32) / max; QX_LANES];
    for (c, is) in (-9..=9).filter(|&is| is != 0).enumerate() {
        iscale[c + 1] = -(nmax as f32 + 0.1 * is as f32) / max;
    }
    let (lo, hi) = (-nmax as f32, (nmax - 1) as f32);
    let (mut sumlx, mut suml2) = ([0f32; QX_LANES], [0f32; QX_LANES]);
    for (i, &xi) in x.iter().enumerate() {
        let w = qw.map_or(xi * xi, |q| q[i]);
        let wx = w * xi;
        for c in 0..QX_LANES {
            let lf = symmetric_level_f32(iscale[c] * xi, lo, hi);
            sumlx[c] += wx * lf;
            suml2[c] += w * lf * lf;
        }
    }
    // C tests the float itself (`suml2 ? ...`), so NaN takes the division branch.
    let mut scale = if suml2[0] != 0.0 {
        sumlx[0] / suml2[0]
    } else {
        0.0
    };
    let mut best = scale * sumlx[0];
    let mut chosen = 0;
    for c in 1..QX_CANDIDATES {
        if suml2[c] > 0.0 && sumlx[c] * sumlx[c] > best * suml2[c] {
            scale = sumlx[c] / suml2[c];
            best = scale * sumlx[c];
            chosen = c;
        }
    }
    for (li, &xi) in l.iter_mut().zip(x) {
        *li = (symmetric_level(iscale[chosen], xi, nmax) + nmax) as i8;
    }
    scale
}

/// The inverse scales [`make_qx_quants`] tries.
const QX_CANDIDATES: usize = 19;
/// Lanes of its side-by-side sums: the candidates, rounded up to whole 4-lane vectors.
const QX_LANES: usize = 20;

#[inline]
fn symmetric_level(iscale: f32, x: f32, nmax: i32) -> i32 {
    ggml_nearest_int(iscale * x).clamp(-nmax, nmax - 1)
}

/// [`symmetric_level`] as a float, `v = iscale·x`: adding and removing 1.5·2²³
/// rounds to the nearest integer, ties to even, exactly as `ggml_nearest_int` does
/// for |v| < 2²² (here |v| <= nmax + 1); the clamp then needs no conversion, so the
/// lanes vectorise.
#[inline(always)]
fn symmetric_level_f32(v: f32, lo: f32, hi: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let r = (v + MAGIC) - MAGIC;
    let r = if r < lo { lo } else { r };
    if r > hi { hi } else { r }
}

/// ggml's `make_qp_quants`: non-negative levels `0..=nmax` for non-negative `x` (the
/// sub-block scales or mins of a super-block) under one scale, minimising the
/// `qw`-weighted squared error: a coarse search over inverse scales, then up to five
/// rounds of moving single levels while the fit improves. Returns the scale.
fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &xi in x {
        max = if max > xi { max } else { xi };
    }
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, xi: f32| ggml_nearest_int(iscale * xi).min(nmax);
    let mse = |iscale: f32, clamp: bool| {
        let scale = 1.0 / iscale;
        let mut mse = 0.0f32;
        for (&xi, &w) in x.iter().zip(qw) {
            // The first candidate's levels are stored as u8 before any clamp, as in C.
            let li = if clamp {
                level(iscale, xi)
            } else {
                i32::from(ggml_nearest_int(iscale * xi) as u8)
            };
            let diff = xi - scale * li as f32;
            mse += w * diff * diff;
        }
        mse
    };
    let mut iscale = nmax as f32 / max;
    let mut best_mse = mse(iscale, false);
    for is in (-4..=4).filter(|&is| is != 0) {
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let m = mse(iscale_is, true);
        if m < best_mse {
            best_mse = m;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for ((li, &xi), &w) in l.iter_mut().zip(x).zip(qw) {
        // The sums take the level before C's store into a u8 truncates it.
        let lv = level(iscale, xi);
        *li = lv as u8;
        let lf = lv as f32;
        sumlx += w * xi * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut changed = false;
        for ((li, &xi), &w) in l.iter_mut().zip(x).zip(qw) {
            let lf = f32::from(*li);
            let mut slx = sumlx - w * xi * lf;
            let mut sl2 = suml2 - w * lf * lf;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = ggml_nearest_int(xi * sl2 / slx).min(nmax);
                if new_l != i32::from(*li) {
                    let nf = new_l as f32;
                    slx += w * xi * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as u8;
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
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// The grid `quantize_row_*_impl` searches with importance weights (ggml's
/// `make_qkx3_quants`, which equals `make_qkx2_quants` with squared error).
pub(crate) const fn weighted_search(nmax: u8) -> Qkx2Params {
    Qkx2Params {
        nmax,
        rmin: -0.9,
        rdelta: 0.05,
        nstep: 36,
        mad: false,
    }
}

/// ggml's per-element weights of the importance-weighted quantizers: the column's
/// importance times `sqrt(sigma2 + x²)`.
pub(crate) fn importance_weights<const N: usize>(x: &[f32], qw: &[f32], sigma2: f32) -> [f32; N] {
    std::array::from_fn(|i| qw[i] * (sigma2 + x[i] * x[i]).sqrt())
}

/// `Σx²` accumulated in order.
pub(crate) fn sum_squares(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8).
/// Sub-blocks 0-3 keep theirs in the low 6 bits of bytes 0-7; sub-blocks 4-7 split
/// theirs into a nibble in bytes 8-11 and two bits on top of bytes 0-7.
#[inline]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// Super-block header shared by Q4_K and Q5_K.
struct ScalesMins {
    d: f16,
    dmin: f16,
    scales: [u8; K_SCALE_SIZE],
}

/// The Q4_K/Q5_K super-block fit: per 32-element sub-block a `make_qkx2_quants` fit,
/// then 6-bit scales and mins relative to the largest of each, then every element
/// re-quantized against the scales as stored (so rounding of the header is absorbed).
/// Writes levels `0..=nmax` to `l`.
fn quantize_scales_mins(x: &[f32], p: &Qkx2Params, l: &mut [u8; QK_K]) -> ScalesMins {
    let mut scales = [0.0f32; QK_K / 32];
    let mut mins = [0.0f32; QK_K / 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let w = rms_weights(xs);
        let (scale, min) = make_qkx2_quants(xs, &w, ls, p);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let packed = pack_scales_mins(&scales, &mins, max_scale, max_min);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    requantize_k(x, &packed, d, dmin, p.nmax, l);
    ScalesMins {
        d,
        dmin,
        scales: packed,
    }
}

/// ggml's weights for the sub-block fit: the sub-block's RMS plus each |x|, so large
/// elements matter more without letting small ones be ignored.
fn rms_weights(xs: &[f32]) -> [f32; 32] {
    let mut sum_x2 = 0.0f32;
    for &v in xs {
        sum_x2 += v * v;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    let mut w = [0.0f32; 32];
    for (wi, &v) in w.iter_mut().zip(xs) {
        *wi = av_x + v.abs();
    }
    w
}

fn pack_scales_mins(
    scales: &[f32; 8],
    mins: &[f32; 8],
    max_scale: f32,
    max_min: f32,
) -> [u8; K_SCALE_SIZE] {
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C stores the int in a uint8_t before clamping: keep that truncation.
    let ls = scales.map(|s| (ggml_nearest_int(inv_scale * s) as u8).min(63));
    let lm = mins.map(|m| (ggml_nearest_int(inv_min * m) as u8).min(63));
    pack6(&ls, &lm)
}

/// Packs eight 6-bit scale levels and eight min levels into ggml's 12 bytes.
fn pack6(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut q = [0u8; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        let (ls, lm) = (ls[j], lm[j]);
        if j < 4 {
            q[j] = ls;
            q[j + 4] = lm;
        } else {
            q[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            q[j - 4] |= (ls >> 4) << 6;
            q[j] |= (lm >> 4) << 6;
        }
    }
    q
}

/// The Q4_K/Q5_K super-block fit of ggml's `quantize_row_q{4,5}_K_impl`: per sub-block
/// a fit under the importance weights `qw · sqrt(σ² + x²)` (σ² twice the super-block's
/// mean square), then the scales and mins themselves quantized to 6 bits by
/// [`make_qp_quants`] under each sub-block's total weight, then the elements
/// re-quantized against the stored header. Q5_K clamps the levels to 63 before packing
/// and Q4_K does not (`clamp_63`), which matters only for a negative fitted scale.
fn quantize_scales_mins_weighted(
    x: &[f32],
    qw: &[f32],
    nmax: u8,
    clamp_63: bool,
    l: &mut [u8; QK_K],
) -> ScalesMins {
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let search = weighted_search(nmax);
    let (mut scales, mut mins, mut sw) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
    let sub_blocks = x
        .chunks_exact(32)
        .zip(qw.chunks_exact(32))
        .zip(l.chunks_exact_mut(32));
    for (j, ((xs, qs), ls)) in sub_blocks.enumerate() {
        let w: [f32; 32] = importance_weights(xs, qs, sigma2);
        sw[j] = w.iter().fold(0.0f32, |a, &b| a + b);
        (scales[j], mins[j]) = make_qkx2_quants(xs, &w, ls, &search);
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d = f16::from_f32(make_qp_quants(63, &scales, &mut ls, &sw));
    let dmin = f16::from_f32(make_qp_quants(63, &mins, &mut lm, &sw));
    if clamp_63 {
        ls = ls.map(|v| v.min(63));
        lm = lm.map(|v| v.min(63));
    }
    let packed = pack6(&ls, &lm);
    requantize_k(x, &packed, d, dmin, nmax, l);
    ScalesMins {
        d,
        dmin,
        scales: packed,
    }
}

/// Sub-blocks whose stored scale is 0 keep the levels of their own fit, as in ggml.
fn requantize_k(x: &[f32], packed: &[u8; K_SCALE_SIZE], d: f16, dmin: f16, nmax: u8, l: &mut [u8]) {
    for (j, (xs, ls)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
        let (sc, m) = get_scale_min_k4(j, packed);
        let d = d.to_f32() * f32::from(sc);
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for (li, &xi) in ls.iter_mut().zip(xs) {
            *li = ggml_nearest_int((xi + dm) / d).clamp(0, i32::from(nmax)) as u8;
        }
    }
}

/// Per-sub-block `(d·scale, dmin·min)` pairs of a Q4_K/Q5_K header, as the
/// dequantizers compute them (f16 converted first, then one f32 product each).
fn sub_block_factors(d: f16, dmin: f16, scales: &[u8; K_SCALE_SIZE]) -> [(f32, f32); 8] {
    let d = d.to_f32();
    let min = dmin.to_f32();
    std::array::from_fn(|j| {
        let (sc, m) = get_scale_min_k4(j, scales);
        (d * f32::from(sc), min * f32::from(m))
    })
}

/// Packs 2-bit levels as Q2_K and Q3_K store them: per 128 elements 32 bytes, bit
/// pair `k` of byte `i` holding element `i + 32k`.
fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for (q, lc) in qs.chunks_exact_mut(32).zip(l.chunks_exact(128)) {
        for (i, qi) in q.iter_mut().enumerate() {
            *qi = lc[i] | (lc[i + 32] << 2) | (lc[i + 64] << 4) | (lc[i + 96] << 6);
        }
    }
    qs
}

/// The 2-bit code of element `i` of a super-block packed by [`pack_2bit`].
#[inline]
pub(crate) fn two_bit_code(qs: &[u8; QK_K / 4], i: usize) -> u8 {
    (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3
}
