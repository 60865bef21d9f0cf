//! The i8mm tile engine (FEAT_I8MM: Neoverse V1/N2, Cortex-A510/A710+, Apple M2+):
//! `smmla` multiplies a 2×8 block of i8 by an 8×2 one into a 2×2 block of i32, 32
//! products per instruction where `sdot` gives 16. It reads the same 4-row tiles as
//! the other aarch64 engines: two code vectors zipped by words give two rows × eight
//! codes, and the prepared activations of a token pair are interleaved the same way
//! (see `tile::prepare_group`). Stable Rust gates `vmmlaq_s32`, so `smmla` is
//! written with `asm!`.
//!
//! An accumulator `k = 2p + h` holds token pair `p` and rows `2h`, `2h + 1`, lanes
//! `[r₂ₕ·t₂ₚ, r₂ₕ·t₂ₚ₊₁, r₂ₕ₊₁·t₂ₚ, r₂ₕ₊₁·t₂ₚ₊₁]`; per-row values are kept as the two
//! vectors `[r₀, r₀, r₁, r₁]`, `[r₂, r₂, r₃, r₃]`. A single token (generation) is the
//! dotprod engine's: `smmla` would waste half its products.

use core::arch::aarch64::*;
use core::arch::asm;

use half::f16;

use super::I8mm;
use super::engine::{bytes4, f16x4, neon_byte_ops, rows_i8_x2, shr_lanes, x16_nibbles};
use crate::kernels::tile::Engine;
use crate::kernels::tile::layout::Lanes;

/// Tokens per full group (four pairs).
pub(super) const TOKENS: usize = 8;

/// `acc` plus the 2×2 block of dots of the two 8-byte rows of `a` with those of `b`:
/// lanes `[a0·b0, a0·b1, a1·b0, a1·b1]`.
#[target_feature(enable = "neon,i8mm")]
#[inline]
fn smmla(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: this function's own `target_feature` says the CPU has SMMLA; the
    // instruction touches no memory.
    unsafe {
        asm!("smmla {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack))
    };
    acc
}

/// `[r0, r0, r1, r1]` and `[r2, r2, r3, r3]` of four per-row lanes.
#[inline(always)]
fn pairs_i(v: int32x4_t) -> [int32x4_t; 2] {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe { [vzip1q_s32(v, v), vzip2q_s32(v, v)] }
}

#[inline(always)]
fn pairs_f(v: float32x4_t) -> [float32x4_t; 2] {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe { [vzip1q_f32(v, v), vzip2q_f32(v, v)] }
}

/// `[t₂ₚ, t₂ₚ₊₁, t₂ₚ, t₂ₚ₊₁]` of per-token values.
#[inline(always)]
fn pair_tokens_f<const T: usize>(v: &[f32; T], p: usize) -> float32x4_t {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe {
        let x = [v[2 * p], v[2 * p + 1], v[2 * p], v[2 * p + 1]];
        vld1q_f32(x.as_ptr())
    }
}

#[inline(always)]
fn pair_tokens_i<const T: usize>(v: &[i32; T], p: usize) -> int32x4_t {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe {
        let x = [v[2 * p], v[2 * p + 1], v[2 * p], v[2 * p + 1]];
        vld1q_s32(x.as_ptr())
    }
}

// SAFETY: an `I8mm` exists only after detecting FEAT_I8MM (and FEAT_DotProd); every
// other intrinsic is base Advanced SIMD.
unsafe impl Engine<4> for I8mm {
    type V = int8x16_t;
    type I = int32x4_t;
    type F = float32x4_t;
    type RowsI = [int32x4_t; 2];
    type RowsF = [float32x4_t; 2];

    const CENTERS: bool = true;
    const PAIRED: bool = true;
    const Q8_OFFSET: i32 = 0;

    neon_byte_ops!();

    #[inline(always)]
    fn rows_i8_x2(self, b: &[[i8; 4]; 2]) -> [[int32x4_t; 2]; 2] {
        rows_i8_x2(b).map(|v| pairs_i(v))
    }

    const Q4_0_UNIT: i32 = 16;

    #[inline(always)]
    fn q4_0_codes(self, x: int8x16_t) -> [int8x16_t; 2] {
        x16_nibbles(x)
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
        _bound: i32,
    ) -> [int32x4_t; T] {
        // SAFETY: `self` is an `I8mm`, made only by detecting FEAT_I8MM, which `smmla`
        // needs; the loads read the four words `a` refers to.
        unsafe {
            const { assert!(N.is_multiple_of(2) && T.is_multiple_of(2)) };
            let mut acc = init;
            for (q, c) in codes.chunks_exact(2).enumerate() {
                let (c0, c1) = (vreinterpretq_s32_s8(c[0]), vreinterpretq_s32_s8(c[1]));
                let rows =
                    [vzip1q_s32(c0, c1), vzip2q_s32(c0, c1)].map(|v| vreinterpretq_s8_s32(v));
                for p in 0..T / 2 {
                    let at = p * 2 * w + (w0 / 2 + q) * 4;
                    let a: &[u32; 4] = words[at..at + 4].try_into().unwrap();
                    let a = vreinterpretq_s8_u32(vld1q_u32(a.as_ptr()));
                    for h in 0..2 {
                        acc[2 * p + h] = smmla(acc[2 * p + h], rows[h], a);
                    }
                }
            }
            acc
        }
    }

    #[inline(always)]
    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [int32x4_t; T] {
        self.dots(init, codes, words, w, w0, 128)
    }

    #[inline(always)]
    fn shr_exact<const T: usize>(self, x: [int32x4_t; T], s: u32) -> [int32x4_t; T] {
        shr_lanes(x, s)
    }

    #[inline(always)]
    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [int32x4_t; T] {
        core::array::from_fn(|k| pair_tokens_i(v, k / 2))
    }

    #[inline(always)]
    fn mla_rows<const T: usize>(
        self,
        acc: [int32x4_t; T],
        x: [int32x4_t; T],
        rows: [int32x4_t; 2],
    ) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe { core::array::from_fn(|k| vmlaq_s32(acc[k], x[k], rows[k % 2])) }
    }

    #[inline(always)]
    fn mla_outer<const T: usize>(
        self,
        acc: [int32x4_t; T],
        rows: [int32x4_t; 2],
        tokens: &[i32; T],
    ) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            core::array::from_fn(|k| vmlaq_s32(acc[k], rows[k % 2], pair_tokens_i(tokens, k / 2)))
        }
    }

    #[inline(always)]
    fn rows_u8(self, b: &[u8; 4]) -> [int32x4_t; 2] {
        pairs_i(bytes4(*b, false))
    }

    #[inline(always)]
    fn rows_i8(self, b: &[i8; 4]) -> [int32x4_t; 2] {
        pairs_i(bytes4(bytemuck::cast(*b), true))
    }

    #[inline(always)]
    fn rows_f16(self, b: &[f16; 4]) -> [float32x4_t; 2] {
        pairs_f(f16x4(b))
    }

    #[inline(always)]
    fn rows_f32(self, b: &[f32; 4]) -> [float32x4_t; 2] {
        // SAFETY: `b` is four readable floats.
        pairs_f(unsafe { vld1q_f32(b.as_ptr()) })
    }

    #[inline(always)]
    fn scale_rows(self, r: [float32x4_t; 2], k: f32) -> [float32x4_t; 2] {
        // SAFETY: Advanced SIMD is on every aarch64 core.
        unsafe { r.map(|v| vmulq_n_f32(v, k)) }
    }

    #[inline(always)]
    fn fma_scaled<const T: usize>(
        self,
        acc: [float32x4_t; T],
        x: [int32x4_t; T],
        rows: [float32x4_t; 2],
        tokens: &[f32; T],
    ) -> [float32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            core::array::from_fn(|k| {
                let s = vmulq_f32(rows[k % 2], pair_tokens_f(tokens, k / 2));
                vfmaq_f32(acc[k], vcvtq_f32_s32(x[k]), s)
            })
        }
    }

    #[inline(always)]
    fn fma_outer<const T: usize>(
        self,
        acc: [float32x4_t; T],
        rows: [float32x4_t; 2],
        tokens: &[f32; T],
    ) -> [float32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            core::array::from_fn(|k| vfmaq_f32(acc[k], rows[k % 2], pair_tokens_f(tokens, k / 2)))
        }
    }

    #[inline(always)]
    fn store<const T: usize>(self, acc: &[float32x4_t; T], out: &mut [f32]) {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            for (k, v) in acc.iter().enumerate() {
                let (p, h) = (k / 2, k % 2);
                let mut l = [0f32; 4];
                {
                    vst1q_f32(l.as_mut_ptr(), *v)
                };
                let (r, t) = (2 * h, 2 * p);
                out[t * 4 + r] = l[0];
                out[(t + 1) * 4 + r] = l[1];
                out[t * 4 + r + 1] = l[2];
                out[(t + 1) * 4 + r + 1] = l[3];
            }
        }
    }
}

crate::kernels::tile::tile_entries!(
    engine: I8mm, rows: 4, features: "neon,dotprod,i8mm", get: I8mm::get(),
    gemm: gemm_4x8 [8, 4, 2]
);
