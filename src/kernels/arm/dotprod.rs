//! The `dotprod` path (FEAT_DotProd: Pi 5's Cortex-A76, Neoverse, Apple): `sdot`
//! sums four i8 products into each i32 lane, exactly. Stable Rust gates
//! `vdotq_s32`, so `sdot` is written with `asm!`.
//!
//! `sdot` lanes group four consecutive elements, not the scalar path's element index
//! mod 8, so K-quant results differ from scalar in float summation order only (the
//! integers are exact); everything else is the scalar result to the bit.
//!
//! The `i8mm` table uses these functions too: `smmla` multiplies a 2×8 by an 8×2
//! block, which pays off for two weight rows times two activation rows. A single
//! row's dot can use only the diagonal of its 2×2 result: 16 useful products per
//! instruction, as `sdot`, plus the shuffles to pair rows. See `arm/mod.rs`.

use core::arch::aarch64::*;
use core::arch::asm;

super::kernels::quantized_kernels!("neon,dotprod");

/// `acc` plus, in each i32 lane, the dot of four consecutive i8 of `a` and `b`.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // SAFETY: this function's own `target_feature` says the CPU has SDOT (callers
    // are reached only after detection); the instruction touches no memory.
    unsafe {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
            inout(vreg) acc, in(vreg) a, in(vreg) b, options(pure, nomem, nostack))
    };
    acc
}

#[target_feature(enable = "neon,dotprod")]
#[inline]
fn dot32(w0: int8x16_t, a0: int8x16_t, w1: int8x16_t, a1: int8x16_t) -> i32 {
    vaddvq_s32(sdot(sdot(vdupq_n_s32(0), w0, a0), w1, a1))
}

/// `sdot` is exact for every i8, so the small-weight case is the same.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn dot32_small(w0: int8x16_t, a0: int8x16_t, w1: int8x16_t, a1: int8x16_t) -> i32 {
    dot32(w0, a0, w1, a1)
}

/// The scaled dot goes into `acc[0]`, and the two accumulators swap places: calls
/// alternate between two independent multiply-add chains. (Only their sum matters
/// on this path; NEON's lanes, not these, are the scalar path's.)
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn acc32(
    acc: [int32x4_t; 2],
    w0: int8x16_t,
    a0: int8x16_t,
    w1: int8x16_t,
    a1: int8x16_t,
    sc: i32,
) -> [int32x4_t; 2] {
    let dot = sdot(sdot(vdupq_n_s32(0), w0, a0), w1, a1);
    [acc[1], vmlaq_n_s32(acc[0], dot, sc)]
}

#[target_feature(enable = "neon,dotprod")]
#[inline]
fn acc16(acc: [int32x4_t; 2], w: int8x16_t, a: int8x16_t, sc: i32) -> [int32x4_t; 2] {
    [acc[1], vmlaq_n_s32(acc[0], sdot(vdupq_n_s32(0), w, a), sc)]
}
