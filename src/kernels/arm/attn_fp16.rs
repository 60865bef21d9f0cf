//! Attention over an F16 cache in FP16 arithmetic (the dotprod and i8mm tables:
//! every such core has FEAT_FP16), as llama.cpp's F16 cache is used there. The
//! widening path converts every cached key and value to f32, a conversion per four
//! products; here one `fmla .8h` does eight, and values are read as stored.
//!
//! Scores: the head's query is scaled by a power of two (max |q| in `[32, 64)`,
//! exact, undone on the result) and rounded to f16 once per head, kept in
//! registers; each key row is summed in f16 in two chains of at most 8 products
//! per lane, then in f32. Weighted values: eight rows at a time, `fmla .8h` by
//! element with the eight attention weights in one vector, 8 products per lane in
//! f16 before joining f32 totals. Both stay within
//! [`F16_ARITH_ERROR`](crate::kernels::F16_ARITH_ERROR) of the f32 sums; a key row
//! whose f16 sum overflows is summed again in f32.

use core::arch::aarch64::*;

use super::Dotprod;
use super::fp16::scale_of;
use crate::kernels::AttnF16;

/// The record of the dotprod and i8mm tables.
pub(super) fn kernels() -> AttnF16 {
    AttnF16 {
        head_dims: &[16, 32, 64, 80, 96, 128],
        scores: |q, k, stride, out| match q.len() {
            16 => scores::<2>(q, k, stride, out),
            32 => scores::<4>(q, k, stride, out),
            64 => scores::<8>(q, k, stride, out),
            80 => scores::<10>(q, k, stride, out),
            96 => scores::<12>(q, k, stride, out),
            128 => scores::<16>(q, k, stride, out),
            n => panic!("no FP16 attention kernel for heads of {n}"),
        },
        values: |w, v, stride, out| match out.len() {
            16 => values::<2>(w, v, stride, out),
            32 => values::<4>(w, v, stride, out),
            64 => values::<8>(w, v, stride, out),
            80 => values::<10>(w, v, stride, out),
            96 => values::<12>(w, v, stride, out),
            128 => values::<16>(w, v, stride, out),
            n => panic!("no FP16 attention kernel for heads of {n}"),
        },
        f16_arith: true,
    }
}

/// `out[p] = q · k_p` over `V` vectors of 8 elements per head.
fn scores<const V: usize>(q: &[f32], keys: &[u8], stride: usize, out: &mut [f32]) {
    let e = Dotprod::get();
    crate::kernels::check_rows(8 * V, keys, stride, out.len());
    let (scale, undo) = scale_of(q);
    let mut qh = [0u16; 128];
    for (h, &x) in qh.iter_mut().zip(q) {
        *h = half::f16::from_f32(x * scale).to_bits();
    }
    // SAFETY: `e` proves FEAT_FP16; `check_rows` keeps every row in `keys`.
    unsafe { scores_f16::<V>(e, &qh, keys, stride, out) };
    for (o, p) in out.iter_mut().zip(0..) {
        if !o.is_finite() {
            let row = &keys[p * stride..p * stride + 16 * V];
            *o = dot_f32(&qh[..8 * V], row);
        }
        *o *= undo;
    }
}

/// # Safety
///
/// FEAT_FP16, and `out.len()` rows of `16·V` bytes at multiples of `stride` in `keys`.
#[target_feature(enable = "neon,fp16")]
unsafe fn scores_f16<const V: usize>(
    _: Dotprod,
    qh: &[u16; 128],
    keys: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    const { assert!(V <= 16 && V.is_multiple_of(2)) };
    let f = vreinterpretq_f16_u16;
    // SAFETY: `qh` holds 128 elements (V ≤ 16 vectors); the caller's contract covers
    // the key loads.
    unsafe {
        let q: [float16x8_t; V] = core::array::from_fn(|c| f(vld1q_u16(qh.as_ptr().add(8 * c))));
        for (p, o) in out.iter_mut().enumerate() {
            let k = keys.as_ptr().add(p * stride).cast::<u16>();
            let mut acc = [f(vdupq_n_u16(0)); 2];
            for c in (0..V).step_by(2) {
                acc[0] = vfmaq_f16(acc[0], f(vld1q_u16(k.add(8 * c))), q[c]);
                acc[1] = vfmaq_f16(acc[1], f(vld1q_u16(k.add(8 * c + 8))), q[c + 1]);
            }
            let s = vaddq_f16(acc[0], acc[1]);
            *o = vaddvq_f32(vaddq_f32(
                vcvt_f32_f16(vget_low_f16(s)),
                vcvt_high_f32_f16(s),
            ));
        }
    }
}

/// The f32 sum of a prepared query and one key row: a row whose f16 sum overflowed.
fn dot_f32(qh: &[u16], row: &[u8]) -> f32 {
    let h = |b: u16| half::f16::from_bits(b).to_f32();
    qh.iter()
        .zip(row.chunks_exact(2))
        .map(|(&q, k)| h(q) * h(u16::from_le_bytes([k[0], k[1]])))
        .sum()
}

/// `out = Σ_p w[p] · v_p` over `V` vectors of 8 elements per head.
fn values<const V: usize>(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    let e = Dotprod::get();
    crate::kernels::check_rows(8 * V, values, stride, w.len());
    assert_eq!(out.len(), 8 * V, "attention output");
    // SAFETY: `e` proves FEAT_FP16; `check_rows` keeps every row in `values`.
    unsafe { values_f16::<V>(e, w, values, stride, out) };
    if !out.iter().all(|o| o.is_finite()) {
        crate::kernels::scalar::attn_values_f16(w, values, stride, out);
    }
}

/// # Safety
///
/// FEAT_FP16, and `w.len()` rows of `16·V` bytes at multiples of `stride` in `values`.
#[target_feature(enable = "neon,fp16")]
unsafe fn values_f16<const V: usize>(
    _: Dotprod,
    w: &[f32],
    values: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    let f = vreinterpretq_f16_u16;
    let full = w.len() / 8 * 8;
    // SAFETY: the caller's contract covers the value loads; `w` loads read
    // `b..b + 8 <= full`; `out` holds `8·V` f32 (asserted by the caller).
    unsafe {
        let mut total = [[vdupq_n_f32(0.0); 2]; V];
        for b in (0..full).step_by(8) {
            let wp = w.as_ptr().add(b);
            let wh = vcvt_high_f16_f32(vcvt_f16_f32(vld1q_f32(wp)), vld1q_f32(wp.add(4)));
            let row = |r: usize| values.as_ptr().add((b + r) * stride).cast::<u16>();
            let rows: [*const u16; 8] = core::array::from_fn(row);
            for (c, total) in total.iter_mut().enumerate() {
                let v = |r: usize| f(vld1q_u16(rows[r].add(8 * c)));
                let mut acc = vmulq_laneq_f16::<0>(v(0), wh);
                acc = vfmaq_laneq_f16::<1>(acc, v(1), wh);
                acc = vfmaq_laneq_f16::<2>(acc, v(2), wh);
                acc = vfmaq_laneq_f16::<3>(acc, v(3), wh);
                acc = vfmaq_laneq_f16::<4>(acc, v(4), wh);
                acc = vfmaq_laneq_f16::<5>(acc, v(5), wh);
                acc = vfmaq_laneq_f16::<6>(acc, v(6), wh);
                acc = vfmaq_laneq_f16::<7>(acc, v(7), wh);
                total[0] = vaddq_f32(total[0], vcvt_f32_f16(vget_low_f16(acc)));
                total[1] = vaddq_f32(total[1], vcvt_high_f32_f16(acc));
            }
        }
        // The last rows (fewer than eight), widened to f32.
        for (p, &wp) in w.iter().enumerate().skip(full) {
            let r = values.as_ptr().add(p * stride).cast::<u16>();
            for (c, total) in total.iter_mut().enumerate() {
                let v = f(vld1q_u16(r.add(8 * c)));
                total[0] = vfmaq_n_f32(total[0], vcvt_f32_f16(vget_low_f16(v)), wp);
                total[1] = vfmaq_n_f32(total[1], vcvt_high_f32_f16(v), wp);
            }
        }
        for (c, total) in total.iter().enumerate() {
            vst1q_f32(out.as_mut_ptr().add(8 * c), total[0]);
            vst1q_f32(out.as_mut_ptr().add(8 * c + 4), total[1]);
        }
    }
}
