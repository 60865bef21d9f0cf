//! What every aarch64 path shares: loads, f16 scales, the F32/F16 dots and the
//! activation quantizers. All of it is plain NEON (Advanced SIMD plus base ARMv8
//! floating point), which every aarch64 core has.
//!
//! These functions equal the scalar reference to the bit: the dots keep its eight
//! lanes and its final order, the quantizers make the same bytes (blocks holding
//! NaN, infinity or a scale whose inverse overflows go through the scalar code).

use core::arch::aarch64::*;
use core::arch::asm;

use half::f16;

use super::Neon;
use crate::kernels::f32_rows::{self, F32Vector};
use crate::kernels::{QuantizeActFn, VecDotFn, scalar};
use crate::quant::{self, BlockQ8_0, BlockQ8_1, BlockQ8_K, GgmlType, QK_K, QK8_0};

// Field offsets of the activation blocks, from `crate::quant`'s structs (every one
// starts with its scale `d`).
const Q8_0_QS: usize = core::mem::offset_of!(BlockQ8_0, qs);
const Q8_1_S: usize = core::mem::offset_of!(BlockQ8_1, s);
const Q8_1_QS: usize = core::mem::offset_of!(BlockQ8_1, qs);
const Q8_K_QS: usize = core::mem::offset_of!(BlockQ8_K, qs);
const Q8_K_BSUMS: usize = core::mem::offset_of!(BlockQ8_K, bsums);
const _: () = assert!(
    core::mem::offset_of!(BlockQ8_0, d) == 0
        && core::mem::offset_of!(BlockQ8_1, d) == 0
        && core::mem::offset_of!(BlockQ8_K, d) == 0
);

/// 16 bytes of `b` from `at` (in bounds: the range is checked, for constant `at`
/// at compile time).
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn ld_u8<const N: usize>(b: &[u8; N], at: usize) -> uint8x16_t {
    let c: &[u8; 16] = b[at..at + 16].try_into().unwrap();
    // SAFETY: `c` is 16 readable bytes; LD1 has no alignment requirement.
    unsafe { vld1q_u8(c.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
pub(super) fn ld_s8<const N: usize>(b: &[u8; N], at: usize) -> int8x16_t {
    vreinterpretq_s8_u8(ld_u8(b, at))
}

/// Four f32 of `x` from `at`.
#[target_feature(enable = "neon")]
#[inline]
fn ld_f32(x: &[f32], at: usize) -> float32x4_t {
    let c: &[f32; 4] = x[at..at + 4].try_into().unwrap();
    // SAFETY: `c` is four readable f32.
    unsafe { vld1q_f32(c.as_ptr()) }
}

#[target_feature(enable = "neon")]
#[inline]
fn st_s8(out: &mut [u8], at: usize, v: int8x16_t) {
    let c: &mut [u8; 16] = (&mut out[at..at + 16]).try_into().unwrap();
    // SAFETY: `c` is 16 writable bytes; ST1 has no alignment requirement.
    unsafe { vst1q_s8(c.as_mut_ptr().cast(), v) }
}

/// IEEE binary16 to f32, exactly (FCVT from a half register is base ARMv8 floating
/// point, not FEAT_FP16, so a Pi 4 has it).
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let out: f32;
    // SAFETY: FCVT Sd, Hn exists on every aarch64 core; it touches no memory.
    unsafe {
        asm!("fcvt {0:s}, {1:h}", out(vreg) out, in(vreg) u32::from(bits),
            options(pure, nomem, nostack))
    };
    out
}

/// The f16 stored at `b[at..at + 2]`, as f32.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn f16_at<const N: usize>(b: &[u8; N], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Eight f16 to two vectors of f32 (FCVTL, base Advanced SIMD).
#[target_feature(enable = "neon")]
#[inline]
fn f16x8_to_f32(h: uint16x8_t) -> (float32x4_t, float32x4_t) {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: FCVTL/FCVTL2 exist on every aarch64 core; they touch no memory.
    unsafe {
        asm!("fcvtl {0:v}.4s, {2:v}.4h", "fcvtl2 {1:v}.4s, {2:v}.8h",
            out(vreg) lo, out(vreg) hi, in(vreg) h, options(pure, nomem, nostack))
    };
    (lo, hi)
}

/// The scalar path's final order of its eight lane sums.
#[target_feature(enable = "neon")]
#[inline]
fn lanes_sum(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let s = vaddq_f32(lo, hi); // lanes l + (l + 4)
    (vgetq_lane_f32::<0>(s) + vgetq_lane_f32::<1>(s))
        + (vgetq_lane_f32::<2>(s) + vgetq_lane_f32::<3>(s))
}

/// Σ w·a over f32 rows: eight lanes of multiply-then-add (no FMA, as the scalar
/// path), then the same tail, so the result is the scalar one to the bit.
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (&w[..4 * n], &a[..4 * n]);
    let body = n / 8 * 8;
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let (wc, _) = w[..4 * body].as_chunks::<32>();
    let (ac, _) = a[..4 * body].as_chunks::<32>();
    for (x, y) in wc.iter().zip(ac) {
        let prod = |at| {
            vmulq_f32(
                vreinterpretq_f32_u8(ld_u8(x, at)),
                vreinterpretq_f32_u8(ld_u8(y, at)),
            )
        };
        lo = vaddq_f32(lo, prod(0));
        hi = vaddq_f32(hi, prod(16));
    }
    let f = |b: &[u8]| f32::from_le_bytes(b.try_into().unwrap());
    let tail: f32 = w[4 * body..]
        .chunks_exact(4)
        .zip(a[4 * body..].chunks_exact(4))
        .map(|(x, y)| f(x) * f(y))
        .sum();
    lanes_sum(lo, hi) + tail
}

/// F16 weights widened exactly, times f32 activations; the scalar result to the bit.
#[target_feature(enable = "neon")]
pub(super) fn vec_dot_f16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (&w[..2 * n], &a[..4 * n]);
    let body = n / 8 * 8;
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let (wc, _) = w[..2 * body].as_chunks::<16>();
    let (ac, _) = a[..4 * body].as_chunks::<32>();
    for (x, y) in wc.iter().zip(ac) {
        let (w0, w1) = f16x8_to_f32(vreinterpretq_u16_u8(ld_u8(x, 0)));
        lo = vaddq_f32(lo, vmulq_f32(w0, vreinterpretq_f32_u8(ld_u8(y, 0))));
        hi = vaddq_f32(hi, vmulq_f32(w1, vreinterpretq_f32_u8(ld_u8(y, 16))));
    }
    let tail: f32 = w[2 * body..]
        .chunks_exact(2)
        .zip(a[4 * body..].chunks_exact(4))
        .map(|(x, y)| {
            f16_to_f32(u16::from_le_bytes([x[0], x[1]])) * f32::from_le_bytes(y.try_into().unwrap())
        })
        .sum();
    lanes_sum(lo, hi) + tail
}

/// The largest |x| of the 4·K floats in `v`, NaN if any is NaN (FMAX propagates it).
#[target_feature(enable = "neon")]
#[inline]
fn abs_max<const K: usize>(v: &[float32x4_t; K]) -> f32 {
    let mut m = vabsq_f32(v[0]);
    for &x in &v[1..] {
        m = vmaxq_f32(m, vabsq_f32(x));
    }
    vmaxvq_f32(m)
}

/// Four i32 vectors (each value in i8 range) to 16 bytes, wrapping as C's `(int8_t)`.
#[target_feature(enable = "neon")]
#[inline]
fn narrow(q: [int32x4_t; 4]) -> int8x16_t {
    let lo = vcombine_s16(vmovn_s32(q[0]), vmovn_s32(q[1]));
    let hi = vcombine_s16(vmovn_s32(q[2]), vmovn_s32(q[3]));
    vcombine_s8(vmovn_s16(lo), vmovn_s16(hi))
}

/// Q8_0/Q8_1 codes of one 32-element block and its f32 scale `d`, or `None` where
/// the scalar code must decide (NaN or infinity in the block, or `1/d` infinite:
/// there C's out-of-range conversion, not the rounding, makes the bytes).
///
/// Otherwise every `x·id` is finite with |x·id| ≤ 127·(1 + 2⁻²¹), so FCVTAS (round to
/// nearest, ties away) is `roundf` followed by the conversion, and the narrowing
/// keeps the value.
#[target_feature(enable = "neon")]
#[inline]
fn q8_block(x: &[f32; QK8_0]) -> Option<(f32, [int8x16_t; 2])> {
    let v: [float32x4_t; 8] = core::array::from_fn(|k| ld_f32(x, 4 * k));
    let amax = abs_max(&v);
    if !amax.is_finite() {
        return None;
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() {
        return None;
    }
    let q = |k: usize| vcvtaq_s32_f32(vmulq_n_f32(v[k], id));
    Some((
        d,
        [
            narrow([q(0), q(1), q(2), q(3)]),
            narrow([q(4), q(5), q(6), q(7)]),
        ],
    ))
}

/// ggml's `quantize_row_q8_0`, byte-identical to [`quant::quantize_row_q8_0_ref`].
#[target_feature(enable = "neon")]
pub(super) fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_0>();
    let nb = x.len() / QK8_0;
    assert!(
        x.len() == nb * QK8_0 && out.len() == nb * B,
        "Q8_0 row length"
    );
    let (xb, _) = x.as_chunks::<QK8_0>();
    let (ob, _) = out.as_chunks_mut::<B>();
    for (xs, o) in xb.iter().zip(ob) {
        match q8_block(xs) {
            Some((d, q)) => {
                o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                st_s8(o, Q8_0_QS, q[0]);
                st_s8(o, Q8_0_QS + 16, q[1]);
            }
            None => quant::with_blocks_mut(o, |b| quant::quantize_row_q8_0_ref(xs, b)),
        }
    }
}

/// ggml's `quantize_row_q8_1`, byte-identical to [`quant::quantize_row_q8_1_ref`]
/// (`s` from the f32 scale, before its rounding to f16).
#[target_feature(enable = "neon")]
pub(super) fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_1>();
    let nb = x.len() / QK8_0;
    assert!(
        x.len() == nb * QK8_0 && out.len() == nb * B,
        "Q8_1 row length"
    );
    let (xb, _) = x.as_chunks::<QK8_0>();
    let (ob, _) = out.as_chunks_mut::<B>();
    for (xs, o) in xb.iter().zip(ob) {
        match q8_block(xs) {
            Some((d, q)) => {
                let sum = i32::from(vaddlvq_s8(q[0])) + i32::from(vaddlvq_s8(q[1]));
                o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                o[Q8_1_S..Q8_1_S + 2].copy_from_slice(&f16::from_f32(sum as f32 * d).to_le_bytes());
                st_s8(o, Q8_1_QS, q[0]);
                st_s8(o, Q8_1_QS + 16, q[1]);
            }
            None => quant::with_blocks_mut(o, |b| quant::quantize_row_q8_1_ref(xs, b)),
        }
    }
}

/// ggml's `quantize_row_q8_K`, byte-identical to [`quant::quantize_row_q8_k_ref`].
///
/// The scale is `-127 / max` with `max` the first element of largest magnitude. When
/// that scale and every element are finite, |x·iscale| ≤ 127·(1 + 2⁻²³)², inside the
/// range where ggml's `nearest_int` is round-half-even, which FCVTNS is. Blocks with
/// NaN, infinity or an infinite scale go through the scalar code.
#[target_feature(enable = "neon")]
pub(super) fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    const B: usize = size_of::<BlockQ8_K>();
    let nb = x.len() / QK_K;
    assert!(
        x.len() == nb * QK_K && out.len() == nb * B,
        "Q8_K row length"
    );
    let (xb, _) = x.as_chunks::<QK_K>();
    let (ob, _) = out.as_chunks_mut::<B>();
    let max_code = vdupq_n_s32(127);
    for (xs, o) in xb.iter().zip(ob) {
        let v: [float32x4_t; QK_K / 4] = core::array::from_fn(|k| ld_f32(xs, 4 * k));
        let amax = abs_max(&v);
        if amax == 0.0 {
            o.fill(0);
            continue;
        }
        // NaN fails `position` as well as `is_finite`.
        let first = xs.iter().position(|v| v.abs() == amax);
        let iscale = first.map_or(f32::NAN, |i| -127.0 / xs[i]);
        if !amax.is_finite() || !iscale.is_finite() {
            quant::with_blocks_mut(o, |b| quant::quantize_row_q8_k_ref(xs, b));
            continue;
        }
        o[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        for (g, v16) in v.chunks_exact(4).enumerate() {
            let q: [int32x4_t; 4] = core::array::from_fn(|k| {
                vminq_s32(vcvtnq_s32_f32(vmulq_n_f32(v16[k], iscale)), max_code)
            });
            let codes = narrow(q);
            st_s8(o, Q8_K_QS + 16 * g, codes);
            let bsum = vaddlvq_s8(codes);
            o[Q8_K_BSUMS + 2 * g..Q8_K_BSUMS + 2 * g + 2].copy_from_slice(&bsum.to_le_bytes());
        }
    }
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K super-block (ggml's
/// `get_scale_min_k4`, all at once).
#[inline]
pub(super) fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0xf) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, m)
}

/// Σ m_j·(bsums[2j] + bsums[2j+1]) of a Q8_K block `y`,
/// widened to i32 before any addition, as the scalar code does.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn mins_dot(y: &[u8; size_of::<BlockQ8_K>()], mins: &[u8; 8]) -> i32 {
    let b0 = vpaddlq_s16(vreinterpretq_s16_u8(ld_u8(y, Q8_K_BSUMS)));
    let b1 = vpaddlq_s16(vreinterpretq_s16_u8(ld_u8(y, Q8_K_BSUMS + 16)));
    let m = vmovl_u8(vcreate_u8(u64::from_le_bytes(*mins)));
    let m0 = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(m)));
    let m1 = vreinterpretq_s32_u32(vmovl_high_u16(m));
    vaddvq_s32(vmlaq_s32(vmulq_s32(b0, m0), b1, m1))
}

/// The scalar K-quant order: running min corrections in `sumf`, then the eight
/// lane sums added one after the other.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn k_fold(sumf: f32, lanes: [float32x4_t; 2]) -> f32 {
    let [lo, hi] = lanes;
    let l = [
        vgetq_lane_f32::<0>(lo),
        vgetq_lane_f32::<1>(lo),
        vgetq_lane_f32::<2>(lo),
        vgetq_lane_f32::<3>(lo),
        vgetq_lane_f32::<0>(hi),
        vgetq_lane_f32::<1>(hi),
        vgetq_lane_f32::<2>(hi),
        vgetq_lane_f32::<3>(hi),
    ];
    l.iter().fold(sumf, |s, &v| s + v)
}

/// The weight and activation blocks of a row of `n` elements (blocks of `qk`): as
/// the scalar path, the slices must hold every block (else this panics), and a
/// partial trailing block is ignored.
#[inline]
pub(super) fn row_blocks<'w, 'a, const W: usize, const A: usize>(
    n: usize,
    qk: usize,
    w: &'w [u8],
    a: &'a [u8],
) -> (&'w [[u8; W]], &'a [[u8; A]]) {
    let nb = crate::kernels::whole_blocks(n, qk);
    (
        w[..nb * W].as_chunks::<W>().0,
        a[..nb * A].as_chunks::<A>().0,
    )
}

/// 0xff in lane `j` of the first vector where bit `j` of `qh` is set, in lane `j` of
/// the second where bit `j + 16` is (the fifth bits of a Q5_0/Q5_1 block).
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn fifth_bits(qh: u32) -> (uint8x16_t, uint8x16_t) {
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let byte = |i: u32| vdup_n_u8((qh >> (8 * i)) as u8);
    let lo = vcombine_u8(byte(0), byte(1));
    let hi = vcombine_u8(byte(2), byte(3));
    (vtstq_u8(lo, bit), vtstq_u8(hi, bit))
}

/// `lanes[i] += d·acc[i]` in f32, multiply then add, as the scalar K-quant lanes.
#[target_feature(enable = "neon")]
#[inline]
pub(super) fn add_scaled(lanes: [float32x4_t; 2], acc: [int32x4_t; 2], d: f32) -> [float32x4_t; 2] {
    [0, 1].map(|i| vaddq_f32(lanes[i], vmulq_n_f32(vcvtq_f32_s32(acc[i]), d)))
}

/// The Q8_K scale at bytes 0..4.
#[inline]
pub(super) fn q8_k_d(y: &[u8; size_of::<BlockQ8_K>()]) -> f32 {
    f32::from_le_bytes([y[0], y[1], y[2], y[3]])
}

// Safe entry points for the tables. NEON is part of the aarch64 baseline (and
// `arm::available` checks it before any table exists).

fn f32_entry(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: NEON is present on every aarch64 core (see above).
    unsafe { vec_dot_f32(n, w, a) }
}

fn f16_entry(n: usize, w: &[u8], a: &[u8]) -> f32 {
    // SAFETY: NEON is present on every aarch64 core (see above).
    unsafe { vec_dot_f16_f32(n, w, a) }
}

fn q8_0_entry(x: &[f32], out: &mut [u8]) {
    // SAFETY: NEON is present on every aarch64 core (see above).
    unsafe { quantize_q8_0(x, out) }
}

fn q8_1_entry(x: &[f32], out: &mut [u8]) {
    // SAFETY: NEON is present on every aarch64 core (see above).
    unsafe { quantize_q8_1(x, out) }
}

fn q8_k_entry(x: &[f32], out: &mut [u8]) {
    // SAFETY: NEON is present on every aarch64 core (see above).
    unsafe { quantize_q8_k(x, out) }
}

/// The float dots every aarch64 path shares; `None` for the quantized types.
pub(super) fn float_vec_dot(ty: GgmlType) -> Option<VecDotFn> {
    match ty {
        GgmlType::F32 => Some(f32_entry),
        GgmlType::F16 => Some(f16_entry),
        _ => None,
    }
}

/// The activation quantizers every aarch64 path shares. F32 "activations" are a
/// copy, which the scalar function already is; other types have none (as scalar).
pub(super) fn quantize_act(act: GgmlType) -> Option<QuantizeActFn> {
    match act {
        GgmlType::Q8_0 => Some(q8_0_entry),
        GgmlType::Q8_1 => Some(q8_1_entry),
        GgmlType::Q8_K => Some(q8_k_entry),
        _ => scalar::quantize_act(act),
    }
}

/// `y += a·x`, four lanes per fused multiply-add (every path: NEON only).
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 target this crate builds for.
    unsafe { axpy_neon(a, x, y) }
}

/// The LoRA merge's update ([`f32_rows::axpy_rows`]) on four lanes (every path).
pub(super) fn axpy_rows(a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    // SAFETY: NEON is part of every aarch64 target this crate builds for; the proof
    // is taken all the same.
    unsafe { axpy_rows_neon(Neon::get(), a, x, stride, y) }
}

#[target_feature(enable = "neon")]
fn axpy_rows_neon(s: Neon, a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    f32_rows::axpy_rows(s, a, x, stride, y)
}

// SAFETY: a `Neon` exists only after detecting NEON, all these use; LD1/ST1 take any
// alignment.
unsafe impl F32Vector for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        // SAFETY: the caller's pointer is valid for 4 reads; see the impl.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        // SAFETY: the caller's pointer is valid for 4 writes; see the impl.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    fn splat(self, a: f32) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vdupq_n_f32(a) }
    }
    #[inline(always)]
    fn mul_add(self, a: float32x4_t, x: float32x4_t, y: float32x4_t) -> float32x4_t {
        // SAFETY: see the impl.
        unsafe { vfmaq_f32(y, a, x) }
    }
}

#[target_feature(enable = "neon")]
fn axpy_neon(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy rows");
    let mut xc = x.chunks_exact(4);
    let mut yc = y.chunks_exact_mut(4);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        // SAFETY: both chunks hold exactly four f32.
        unsafe {
            let v = vfmaq_n_f32(vld1q_f32(ys.as_ptr()), vld1q_f32(xs.as_ptr()), a);
            vst1q_f32(ys.as_mut_ptr(), v);
        }
    }
    for (y, &x) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *y = a.mul_add(x, *y);
    }
}
