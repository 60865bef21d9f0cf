//! The `i8mm` path's batch kernels (FEAT_I8MM: Neoverse V1/N2, Cortex-A510/A710+,
//! Apple M2+): `smmla` multiplies a 2×8 block of i8 by an 8×2 one into a 2×2 block of
//! i32, 32 products per instruction where `sdot` gives 16. That needs two weight
//! rows and two tokens at once, so it serves prompts (matmul's batch kernel); a
//! single token keeps the dotprod dot product. Stable Rust gates `vmmlaq_s32`, so
//! `smmla` is written with `asm!`.
//!
//! Q4_0 and Q8_0 weights (both meet Q8_0 activations). Activations are prepared once
//! per matmul in groups of 8 tokens, as 4 pairs: per block and pair, four vectors
//! `[t0 elements 8k..8k+8 | t1 elements 8k..8k+8]`, then the 8 tokens' scales. Each
//! weight block of two rows is decoded once and multiplied with the 4 pairs.
//!
//! The integer sums are exact; the scaling by `dx·dy` and the accumulation run in
//! another order than the dot product's, so results equal it within the tests'
//! tolerance, not bit for bit.

use core::arch::aarch64::*;
use core::arch::asm;

use super::common::{f16_at, ld_s8, ld_u8};

/// Token pairs per prepared group.
const PAIRS: usize = 4;
/// Words of one prepared block of a group: 4 pairs x 4 vectors, then 8 scales.
const GROUP_WORDS: usize = PAIRS * 16 + 2 * PAIRS;
const Q8_0: usize = 34;
const Q4_0: usize = 18;

/// `acc` plus the 2×2 block of dots of the two 8-byte rows of `a` with those of `b`:
/// lanes `[a0·b0, a0·b1, a1·b0, a1·b1]`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: this function's own `target_feature` says the CPU has SMMLA (callers are
    // reached only after detection); the instruction touches no memory.
    unsafe {
        asm!("smmla {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack))
    };
    acc
}

/// Lays out Q8_0 activation rows for the batch kernels. One token is kept as it is
/// (the dot product reads it); a batch goes in groups of 8, the last padded with zero
/// tokens (scale 0).
pub(super) fn prepare(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    let nb = n / 32;
    let row = nb * Q8_0;
    let a = &a[..row * tokens];
    let words = |b: &[u8]| -> Vec<u32> {
        b.chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect()
    };
    if tokens == 1 {
        return words(a);
    }
    let groups = tokens.div_ceil(2 * PAIRS);
    let mut out = vec![0u32; groups * nb * GROUP_WORDS];
    for t in 0..tokens {
        let (g, pair, side) = (t / (2 * PAIRS), t % (2 * PAIRS) / 2, t % 2);
        for b in 0..nb {
            let y = &a[t * row + b * Q8_0..t * row + (b + 1) * Q8_0];
            let p = &mut out[(g * nb + b) * GROUP_WORDS..(g * nb + b + 1) * GROUP_WORDS];
            for k in 0..4 {
                let at = pair * 16 + k * 4 + side * 2;
                let src = &y[2 + 8 * k..10 + 8 * k];
                p[at] = u32::from_le_bytes(src[..4].try_into().unwrap());
                p[at + 1] = u32::from_le_bytes(src[4..].try_into().unwrap());
            }
            let d = half::f16::from_le_bytes([y[0], y[1]]).to_f32();
            p[PAIRS * 16 + t % (2 * PAIRS)] = d.to_bits();
        }
    }
    out
}

/// Rows `r` and `r + 1` times one prepared group: per pair, lanes
/// `[r·t0, r·t1, (r+1)·t0, (r+1)·t1]`. `decode` gives two weight blocks' 32 codes
/// each as i8 in element order (`[r0 0..16, r0 16..32, r1 0..16, r1 16..32]`) and
/// their scales.
#[target_feature(enable = "neon,i8mm")]
#[inline]
fn pair_rows<const W: usize>(
    x0: &[[u8; W]],
    x1: &[[u8; W]],
    p: &[u32],
    decode: &impl Fn(&[u8; W], &[u8; W]) -> ([int8x16_t; 4], [f32; 2]),
) -> [float32x4_t; PAIRS] {
    let mut acc = [vdupq_n_f32(0.0); PAIRS];
    for ((b0, b1), pb) in x0.iter().zip(x1).zip(p.chunks_exact(GROUP_WORDS)) {
        let (w, d) = decode(b0, b1);
        // [r0 0..8 | r1 0..8], [r0 8..16 | r1 8..16], ... as `smmla`'s left operand.
        let wz = |lo: int8x16_t, hi: int8x16_t, second: bool| -> int8x16_t {
            let (l, h) = (vreinterpretq_s64_s8(lo), vreinterpretq_s64_s8(hi));
            vreinterpretq_s8_s64(if second {
                vzip2q_s64(l, h)
            } else {
                vzip1q_s64(l, h)
            })
        };
        let lhs = [
            wz(w[0], w[2], false),
            wz(w[0], w[2], true),
            wz(w[1], w[3], false),
            wz(w[1], w[3], true),
        ];
        let dy = &pb[PAIRS * 16..];
        for (pair, acc) in acc.iter_mut().enumerate() {
            let mut isum = vdupq_n_s32(0);
            for (k, l) in lhs.iter().enumerate() {
                let at = pair * 16 + k * 4;
                let words: &[u32; 4] = pb[at..at + 4].try_into().unwrap();
                // SAFETY: `words` is 16 readable bytes; LD1 has no alignment requirement.
                let a = unsafe { vld1q_s8(words.as_ptr().cast()) };
                isum = smmla(isum, *l, a);
            }
            let (y0, y1) = (
                f32::from_bits(dy[2 * pair]),
                f32::from_bits(dy[2 * pair + 1]),
            );
            let s = [d[0] * y0, d[0] * y1, d[1] * y0, d[1] * y1];
            // SAFETY: `s` is four readable f32.
            let s = unsafe { vld1q_f32(s.as_ptr()) };
            *acc = vfmaq_f32(*acc, vcvtq_f32_s32(isum), s);
        }
    }
    acc
}

/// `out[r * tokens + t]` for `rows` rows of blocks of `W` bytes and a prepared batch.
#[target_feature(enable = "neon,i8mm")]
#[inline]
fn gemm<const W: usize>(
    n: usize,
    w: &[u8],
    rows: usize,
    p: &[u32],
    tokens: usize,
    out: &mut [f32],
    decode: impl Fn(&[u8; W], &[u8; W]) -> ([int8x16_t; 4], [f32; 2]),
) {
    let nb = n / 32;
    let rb = nb * W;
    assert!(w.len() == rows * rb && out.len() == rows * tokens && tokens >= 2);
    assert_eq!(
        p.len(),
        tokens.div_ceil(2 * PAIRS) * nb * GROUP_WORDS,
        "prepared batch"
    );
    let blocks = |r: usize| -> &[[u8; W]] {
        let (b, rest) = w[r * rb..(r + 1) * rb].as_chunks::<W>();
        debug_assert!(rest.is_empty());
        b
    };
    for r in (0..rows).step_by(2) {
        // An odd last row is paired with itself; its copy is not stored.
        let r1 = (r + 1).min(rows - 1);
        for (g, pg) in p.chunks_exact(nb * GROUP_WORDS).enumerate() {
            let acc = pair_rows(blocks(r), blocks(r1), pg, &decode);
            for (pair, v) in acc.iter().enumerate() {
                let mut lanes = [0f32; 4];
                // SAFETY: `lanes` is four writable f32.
                unsafe { vst1q_f32(lanes.as_mut_ptr(), *v) };
                for (i, &x) in lanes.iter().enumerate() {
                    let (row, t) = (r + i / 2, g * 2 * PAIRS + 2 * pair + i % 2);
                    if row < rows && (i < 2 || r1 != r) && t < tokens {
                        out[row * tokens + t] = x;
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "neon,i8mm")]
#[inline]
fn decode_q4_0(b0: &[u8; Q4_0], b1: &[u8; Q4_0]) -> ([int8x16_t; 4], [f32; 2]) {
    let eight = vdupq_n_s8(8);
    let codes = |b: &[u8; Q4_0]| {
        let q = ld_u8(b, 2);
        let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
        let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
        (vsubq_s8(lo, eight), vsubq_s8(hi, eight))
    };
    let ((a0, a1), (c0, c1)) = (codes(b0), codes(b1));
    ([a0, a1, c0, c1], [f16_at(b0, 0), f16_at(b1, 0)])
}

#[target_feature(enable = "neon,i8mm")]
#[inline]
fn decode_q8_0(b0: &[u8; Q8_0], b1: &[u8; Q8_0]) -> ([int8x16_t; 4], [f32; 2]) {
    (
        [ld_s8(b0, 2), ld_s8(b0, 18), ld_s8(b1, 2), ld_s8(b1, 18)],
        [f16_at(b0, 0), f16_at(b1, 0)],
    )
}

/// Q4_0 weights: one token through the dotprod dot, a batch through `smmla`.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(super) fn gemm_q4_0(
    n: usize,
    w: &[u8],
    rows: usize,
    p: &[u32],
    tokens: usize,
    out: &mut [f32],
) {
    if tokens == 1 {
        return one_token(n, w, rows, p, out, super::dotprod::q4_0, Q4_0);
    }
    gemm::<Q4_0>(n, w, rows, p, tokens, out, |a, b| decode_q4_0(a, b));
}

/// Q8_0 weights: as Q4_0.
#[target_feature(enable = "neon,dotprod,i8mm")]
pub(super) fn gemm_q8_0(
    n: usize,
    w: &[u8],
    rows: usize,
    p: &[u32],
    tokens: usize,
    out: &mut [f32],
) {
    if tokens == 1 {
        return one_token(n, w, rows, p, out, super::dotprod::q8_0, Q8_0);
    }
    gemm::<Q8_0>(n, w, rows, p, tokens, out, |a, b| decode_q8_0(a, b));
}

/// One token: the dot product per row, with the activation row kept as it is.
#[target_feature(enable = "neon,dotprod")]
fn one_token(
    n: usize,
    w: &[u8],
    rows: usize,
    p: &[u32],
    out: &mut [f32],
    dot: unsafe fn(usize, &[u8], &[u8]) -> f32,
    block: usize,
) {
    let rb = n / 32 * block;
    let ab = n / 32 * Q8_0;
    assert!(w.len() == rows * rb && out.len() == rows && p.len() == ab.div_ceil(4));
    let a = &bytemuck::cast_slice::<u32, u8>(p)[..ab];
    for (r, o) in out.iter_mut().enumerate() {
        // SAFETY: this function runs only on CPUs with the dotprod features `dot` needs.
        *o = unsafe { dot(n, &w[r * rb..(r + 1) * rb], a) };
    }
}
