//! F16 weights in FP16 arithmetic (FEAT_FP16: Cortex-A55, A76 and later; every core
//! the dotprod path runs on), as llama.cpp's F16 path does there. Widening every
//! weight to f32 first costs a conversion per four products; here one `fmla .8h` by
//! element does eight.
//!
//! Tiles of eight rows (`BlockF16x<8>`: per element, its eight rows in one vector),
//! tokens in groups of up to [`TOKENS`]: per tile block, the eight weight vectors
//! are loaded once and multiplied by each token's eight elements, one lane at a time.
//! Each token is prepared as f16 after scaling by a power of two that puts its
//! largest magnitude in `[32, 64)` (exact, undone on the result), so no activation
//! overflows and few underflow. Sums run in f16 in two chains (even and odd
//! elements) for [`FLUSH`] tile blocks, 8 products per lane and chain, then join f32
//! totals: the error is what [`F16_ARITH_ERROR`](crate::kernels::F16_ARITH_ERROR)
//! states.
//!
//! A weight large enough to overflow an f16 sum (|w| of a few hundred, which trained
//! weights do not reach) makes that tile's f16 total infinite: the tile is then
//! summed again in f32 from the same prepared values, so a result is never infinite
//! where the f32 dot is finite.

use core::arch::aarch64::*;

use super::Dotprod;
use crate::kernels::TileKernel;
use crate::kernels::tile::{self, formats::F16};

/// Rows per tile: one f16 vector.
const ROWS: usize = 8;
/// Tokens per full group: two f16 chains and two f32 totals each, beside the eight
/// weight vectors of a block, fit the 32 vector registers.
const TOKENS: usize = 4;
/// Tile blocks (8 elements) summed in f16 before joining the f32 totals.
const FLUSH: usize = 2;
/// Bytes of one tile block: 8 elements of [`ROWS`] rows.
const BLOCK: usize = 8 * ROWS * 2;

/// The F16 record of the dotprod and i8mm tables.
pub(super) fn tiles() -> TileKernel {
    TileKernel {
        group_words,
        prepare,
        f16_arith: true,
        ..tile::tile_kernel::<F16, ROWS>(TOKENS, false, gemv_8x1, gemm_8x4)
    }
}

/// `n` tokens: a scale word each, then each token's f16 elements, two per word.
fn group_words(cols: usize, n: usize) -> usize {
    n + n * cols / 2
}

fn prepare(cols: usize, rows: &[&[u8]], out: &mut [u32]) {
    let n = rows.len();
    assert_eq!(out.len(), group_words(cols, n), "prepared group length");
    assert!(cols.is_multiple_of(8), "F16 tiles take whole blocks of 8");
    let (undo, acts) = out.split_at_mut(n);
    for ((row, undo), acts) in rows.iter().zip(undo).zip(acts.chunks_exact_mut(cols / 2)) {
        crate::quant::with_blocks(&row[..cols * 4], |x: &[f32]| {
            let (scale, inverse) = scale_of(x);
            *undo = inverse.to_bits();
            for (o, v) in acts.iter_mut().zip(x.chunks_exact(2)) {
                let h = |v: f32| u32::from(half::f16::from_f32(v * scale).to_bits());
                *o = h(v[0]) | h(v[1]) << 16;
            }
        });
    }
}

/// A power of two taking `max |x|` into `[32, 64)`, and its inverse (1 and 1 for a
/// token of zeros or of non-finite values, whose products are what they are).
pub(super) fn scale_of(x: &[f32]) -> (f32, f32) {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !max.is_normal() {
        return (1.0, 1.0);
    }
    let exp = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
    let k = (5 - exp).clamp(-120, 120);
    let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    (pow(k), pow(-k))
}

/// One tile of eight rows times one prepared token.
fn gemv_8x1(cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]) {
    run::<1>(cols, tile, group, out)
}

/// One tile of eight rows times a prepared group of `n` tokens.
fn gemm_8x4(cols: usize, tile: &[u8], group: &[u32], n: usize, out: &mut [f32]) {
    match n {
        4 => run::<4>(cols, tile, group, out),
        2 => run::<2>(cols, tile, group, out),
        _ => panic!("no {n}-token F16 group kernel"),
    }
}

fn run<const T: usize>(cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]) {
    let e = Dotprod::get();
    assert!(cols.is_multiple_of(8), "F16 tiles take whole blocks of 8");
    assert_eq!(tile.len(), cols / 8 * BLOCK, "F16 tile length");
    assert_eq!(group.len(), group_words(cols, T), "prepared group length");
    assert_eq!(out.len(), T * ROWS, "tile output");
    let (undo, acts) = group.split_at(T);
    let acts: &[u8] = bytemuck::cast_slice(acts);
    // SAFETY: `e` exists, so this CPU has FEAT_FP16 (see `Dotprod::detect`).
    let mut sums = unsafe { mul_f16::<T>(e, tile, acts) };
    if !sums.iter().flatten().all(|s| s.is_finite()) {
        sums = mul_f32::<T>(tile, acts);
    }
    for ((o, s), undo) in out.chunks_exact_mut(ROWS).zip(sums).zip(undo) {
        for (o, s) in o.iter_mut().zip(s) {
            *o = s * f32::from_bits(*undo);
        }
    }
}

/// Per token and row, `Σ w·x` over `tile` and the tokens' prepared elements (`acts`:
/// `T` rows of `2·cols` bytes), summed in f16 [`FLUSH`] blocks at a time.
#[target_feature(enable = "neon,fp16")]
fn mul_f16<const T: usize>(_: Dotprod, tile: &[u8], acts: &[u8]) -> [[f32; ROWS]; T] {
    let blocks = tile.len() / BLOCK;
    assert!(tile.len() == blocks * BLOCK && acts.len() == T * blocks * 16);
    let mut out = [[0f32; ROWS]; T];
    // SAFETY: FEAT_FP16 is this function's target feature, which its caller's proof
    // allows; `flush` reads blocks `b..b + N` for `b + N <= blocks`, inside both
    // slices (lengths asserted above); the stores write `out`.
    unsafe {
        let mut total = [[vdupq_n_f32(0.0); 2]; T];
        let full = blocks / FLUSH * FLUSH;
        for b in (0..full).step_by(FLUSH) {
            flush::<T, FLUSH>(tile, acts, b, &mut total);
        }
        for b in full..blocks {
            flush::<T, 1>(tile, acts, b, &mut total);
        }
        for (o, total) in out.iter_mut().zip(total) {
            vst1q_f32(o.as_mut_ptr(), total[0]);
            vst1q_f32(o.as_mut_ptr().add(4), total[1]);
        }
    }
    out
}

/// Adds tile blocks `b..b + N` times each token's elements, summed in f16, to the
/// f32 `total`s (per token: rows 0-3, rows 4-7).
///
/// # Safety
///
/// FEAT_FP16, and blocks `b..b + N` inside `tile` (`BLOCK` bytes each) and inside
/// each of `acts`' `T` rows (16 bytes each).
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn flush<const T: usize, const N: usize>(
    tile: &[u8],
    acts: &[u8],
    b: usize,
    total: &mut [[float32x4_t; 2]; T],
) {
    let row = acts.len() / T;
    let f = vreinterpretq_f16_u16;
    // SAFETY: the caller's contract covers every load below.
    unsafe {
        let zero = f(vdupq_n_u16(0));
        let mut acc = [[zero; 2]; T];
        for b in b..b + N {
            let wp = tile.as_ptr().add(b * BLOCK).cast::<u16>();
            let (w0, w1) = (vld1q_u16_x4(wp), vld1q_u16_x4(wp.add(32)));
            let wv = [w0.0, w0.1, w0.2, w0.3, w1.0, w1.1, w1.2, w1.3].map(|v| f(v));
            for (t, acc) in acc.iter_mut().enumerate() {
                let x = f(vld1q_u16(acts.as_ptr().add(t * row + 16 * b).cast()));
                acc[0] = vfmaq_laneq_f16::<0>(acc[0], wv[0], x);
                acc[1] = vfmaq_laneq_f16::<1>(acc[1], wv[1], x);
                acc[0] = vfmaq_laneq_f16::<2>(acc[0], wv[2], x);
                acc[1] = vfmaq_laneq_f16::<3>(acc[1], wv[3], x);
                acc[0] = vfmaq_laneq_f16::<4>(acc[0], wv[4], x);
                acc[1] = vfmaq_laneq_f16::<5>(acc[1], wv[5], x);
                acc[0] = vfmaq_laneq_f16::<6>(acc[0], wv[6], x);
                acc[1] = vfmaq_laneq_f16::<7>(acc[1], wv[7], x);
            }
        }
        for (total, acc) in total.iter_mut().zip(acc) {
            let s = vaddq_f16(acc[0], acc[1]);
            total[0] = vaddq_f32(total[0], vcvt_f32_f16(vget_low_f16(s)));
            total[1] = vaddq_f32(total[1], vcvt_high_f32_f16(s));
        }
    }
}

/// [`mul_f16`] with f32 sums: what a tile whose f16 sums overflowed gets instead.
fn mul_f32<const T: usize>(tile: &[u8], acts: &[u8]) -> [[f32; ROWS]; T] {
    let value = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = [[0f32; ROWS]; T];
    for (o, a) in out.iter_mut().zip(acts.chunks_exact(acts.len() / T)) {
        for (w, x) in tile.chunks_exact(2 * ROWS).zip(a.chunks_exact(2)) {
            let x = value(x);
            for (r, o) in o.iter_mut().enumerate() {
                *o += value(&w[2 * r..]) * x;
            }
        }
    }
    out
}
