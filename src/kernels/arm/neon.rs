//! The `neon` path: every aarch64 core (Pi 3 and 4: Cortex-A53/A72). The int8 dot
//! without `sdot`: SMULL (8 products of i8 into i16 lanes) and SMLAL (add 8 more),
//! widened to i32 before any i16 lane could overflow.
//!
//! Overflow bounds (a product of an i8 activation, -128..=127, with a weight):
//! - weights in -32..=32 (4/5-bit codes, Q6_K's -32..31): |product| ≤ 4096, and an
//!   i16 lane takes at most four of them (32 elements over 8 lanes): ≤ 16384;
//! - any i8 weight (Q8_0): |product| ≤ 16384, so each SMULL result is widened at
//!   once, pairwise (SADALP), and two products meet only in i32.
//!
//! Lanes stay element index mod 8 through the K-quant accumulators, so this path's
//! K-quant results are the scalar ones to the bit, like everything else here.

use core::arch::aarch64::*;

super::kernels::quantized_kernels!("neon");

/// Σ w·a over 32 elements as eight i16 lanes (lane l: elements ≡ l mod 8), for
/// weights in -32..=32: each lane holds four products, |sum| ≤ 16384.
#[target_feature(enable = "neon")]
#[inline]
fn small_products(w0: int8x16_t, a0: int8x16_t, w1: int8x16_t, a1: int8x16_t) -> int16x8_t {
    let p = vmull_s8(vget_low_s8(w0), vget_low_s8(a0));
    let p = vmlal_high_s8(p, w0, a0);
    let p = vmlal_s8(p, vget_low_s8(w1), vget_low_s8(a1));
    vmlal_high_s8(p, w1, a1)
}

#[target_feature(enable = "neon")]
#[inline]
fn dot32_small(w0: int8x16_t, a0: int8x16_t, w1: int8x16_t, a1: int8x16_t) -> i32 {
    vaddlvq_s16(small_products(w0, a0, w1, a1))
}

/// Σ w·a over 32 elements of any i8 values: every i16 product is widened at once.
#[target_feature(enable = "neon")]
#[inline]
fn dot32(w0: int8x16_t, a0: int8x16_t, w1: int8x16_t, a1: int8x16_t) -> i32 {
    let s = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(a0)));
    let s = vpadalq_s16(s, vmull_high_s8(w0, a0));
    let s = vpadalq_s16(s, vmull_s8(vget_low_s8(w1), vget_low_s8(a1)));
    let s = vpadalq_s16(s, vmull_high_s8(w1, a1));
    vaddvq_s32(s)
}

/// `acc + sc·(w·a)` on lanes = element index mod 8 (|sc| ≤ 128 fits i16).
#[target_feature(enable = "neon")]
#[inline]
fn scale_into(acc: [int32x4_t; 2], p: int16x8_t, sc: i32) -> [int32x4_t; 2] {
    let sc = sc as i16;
    [
        vmlal_n_s16(acc[0], vget_low_s16(p), sc),
        vmlal_high_n_s16(acc[1], p, sc),
    ]
}

#[target_feature(enable = "neon")]
#[inline]
fn acc32(
    acc: [int32x4_t; 2],
    w0: int8x16_t,
    a0: int8x16_t,
    w1: int8x16_t,
    a1: int8x16_t,
    sc: i32,
) -> [int32x4_t; 2] {
    scale_into(acc, small_products(w0, a0, w1, a1), sc)
}

/// 16 elements: two products per i16 lane, |sum| ≤ 8192.
#[target_feature(enable = "neon")]
#[inline]
fn acc16(acc: [int32x4_t; 2], w: int8x16_t, a: int8x16_t, sc: i32) -> [int32x4_t; 2] {
    let p = vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), w, a);
    scale_into(acc, p, sc)
}
