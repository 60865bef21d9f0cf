//! F16 weights times one token in FP16 arithmetic (FEAT_FP16: Cortex-A55, A76 and
//! later; every core the dotprod path runs on), as llama.cpp's F16 path does there:
//! a generated token reads each weight once and is bound by memory, and widening every
//! weight to f32 first takes four instructions per four products instead of one per
//! eight.
//!
//! The tiles are the widening engine's (`BlockF16x<4>`: per element, its four rows),
//! so one 128-bit load holds two elements of four rows. The token is prepared to
//! match, each element four times (`[x0 x0 x0 x0 x1 x1 x1 x1]`), and one `fmla .8h`
//! does eight products. Before rounding to f16 the token is scaled by a power of two
//! that puts its largest magnitude in `[32, 64)` (exact, undone on the result), so no
//! activation overflows and few underflow. Sums run in f16 for [`FLUSH`] tile blocks
//! (8 products per lane and accumulator), then join f32 totals: the error is what
//! [`F16_ARITH_ERROR`](crate::kernels::F16_ARITH_ERROR) states.
//!
//! A weight large enough to overflow an f16 sum (|w| of a few hundred, which trained
//! weights do not reach) makes the f16 total infinite: the tile is then computed again
//! with f32 sums from the same prepared values, so the result is never infinite where
//! the f32 dot is finite.
//!
//! Groups of tokens (prompts) keep the widening tile engine: there each weight is
//! converted once for eight tokens.

use core::arch::aarch64::*;

use super::Dotprod;
use crate::kernels::TileKernel;
use crate::kernels::tile::{self, formats::F16};

/// Tile blocks (8 elements) summed in f16 before joining the f32 totals.
const FLUSH: usize = 4;

/// Bytes of one element's four rows in a tile, and of one element prepared.
const ELEMENT_BYTES: usize = 8;

/// The F16 record of the dotprod and i8mm tables.
pub(super) fn tiles() -> TileKernel {
    let widening = super::engine::dotprod::gemm_4x8::<F16>;
    TileKernel {
        gemv: gemv_4x1,
        group_words,
        prepare,
        f16_arith: true,
        ..tile::tile_kernel::<F16, 4>(super::engine::TOKENS, false, gemv_4x1, widening)
    }
}

/// One token: a scale word, then two words per element (its f16 four times).
fn group_words(cols: usize, n: usize) -> usize {
    if n == 1 {
        1 + cols * ELEMENT_BYTES / 4
    } else {
        tile::group_words::<F16>(cols, n)
    }
}

fn prepare(cols: usize, rows: &[&[u8]], out: &mut [u32]) {
    let [row] = rows else {
        return tile::prepare_plain::<F16>(cols, rows, out);
    };
    assert_eq!(out.len(), group_words(cols, 1), "prepared token length");
    crate::quant::with_blocks(&row[..cols * 4], |x: &[f32]| {
        let (scale, undo) = scale_of(x);
        out[0] = undo.to_bits();
        for (o, v) in out[1..].chunks_exact_mut(2).zip(x) {
            let h = u32::from(half::f16::from_f32(v * scale).to_bits());
            o.fill(h | h << 16);
        }
    });
}

/// A power of two taking `max |x|` into `[32, 64)`, and its inverse (1 and 1 for a
/// token of zeros or of non-finite values, whose products are what they are).
fn scale_of(x: &[f32]) -> (f32, f32) {
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !max.is_normal() {
        return (1.0, 1.0);
    }
    let exp = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
    let k = (5 - exp).clamp(-120, 120);
    let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    (pow(k), pow(-k))
}

/// One tile of four rows times one prepared token.
fn gemv_4x1(cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]) {
    let e = Dotprod::get();
    assert_eq!(tile.len(), cols * ELEMENT_BYTES, "F16 tile length");
    assert_eq!(group.len(), group_words(cols, 1), "prepared token length");
    assert_eq!(out.len(), 4, "tile output");
    assert!(cols.is_multiple_of(8), "F16 tiles take whole blocks of 8");
    let undo = f32::from_bits(group[0]);
    let acts: &[u8] = bytemuck::cast_slice(&group[1..]);
    // SAFETY: `e` exists, so this CPU has FEAT_FP16 (see `Dotprod::detect`).
    let mut sums = unsafe { dot_f16(e, tile, acts) };
    if !sums.iter().all(|s| s.is_finite()) {
        sums = dot_f32(tile, acts);
    }
    for (o, s) in out.iter_mut().zip(sums) {
        *o = s * undo;
    }
}

/// Per row, `Σ w·x` over `tile` and the prepared token, summed in f16 [`FLUSH`]
/// blocks at a time.
#[target_feature(enable = "neon,fp16")]
fn dot_f16(_: Dotprod, tile: &[u8], acts: &[u8]) -> [f32; 4] {
    const BLOCK: usize = 8 * ELEMENT_BYTES;
    assert_eq!(tile.len(), acts.len());
    let blocks = tile.len() / BLOCK;
    let mut out = [0f32; 4];
    // SAFETY: FEAT_FP16 is enabled by this function's caller's proof; every load
    // reads 64 bytes at a block offset below `blocks · BLOCK`, inside both slices
    // (equal lengths, asserted), and the store writes `out`'s four floats.
    unsafe {
        let zero = vreinterpretq_f16_u16(vdupq_n_u16(0));
        let (mut even, mut odd) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let (w, a) = (tile.as_ptr().cast::<u16>(), acts.as_ptr().cast::<u16>());
        let mut b = 0;
        while b < blocks {
            let end = (b + FLUSH).min(blocks);
            let (mut acc0, mut acc1) = (zero, zero);
            while b < end {
                let wv = vld1q_u16_x4(w.add(b * BLOCK / 2));
                let av = vld1q_u16_x4(a.add(b * BLOCK / 2));
                let f = vreinterpretq_f16_u16;
                acc0 = vfmaq_f16(acc0, f(wv.0), f(av.0));
                acc1 = vfmaq_f16(acc1, f(wv.1), f(av.1));
                acc0 = vfmaq_f16(acc0, f(wv.2), f(av.2));
                acc1 = vfmaq_f16(acc1, f(wv.3), f(av.3));
                b += 1;
            }
            // Lanes 0-3: even elements of rows 0-3; lanes 4-7: odd ones.
            let s = vaddq_f16(acc0, acc1);
            even = vaddq_f32(even, vcvt_f32_f16(vget_low_f16(s)));
            odd = vaddq_f32(odd, vcvt_high_f32_f16(s));
        }
        vst1q_f32(out.as_mut_ptr(), vaddq_f32(even, odd));
    }
    out
}

/// [`dot_f16`] with f32 sums: what a tile whose f16 sums overflowed gets instead.
fn dot_f32(tile: &[u8], acts: &[u8]) -> [f32; 4] {
    let value = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = [0f32; 4];
    for (w, a) in tile
        .chunks_exact(ELEMENT_BYTES)
        .zip(acts.chunks_exact(ELEMENT_BYTES))
    {
        let x = value(a);
        for (r, o) in out.iter_mut().enumerate() {
            *o += value(&w[2 * r..]) * x;
        }
    }
    out
}
