//! x86-64 paths: AVX2 (with FMA and F16C) and AVX-512 (F, BW, VL, VNNI).
//!
//! A path's table is built only after `is_x86_feature_detected!` confirms every
//! feature it uses, so the `#[target_feature]` functions it holds are never reached
//! on a CPU without them: the wrappers below are private, and [`table`] is the only
//! way to them (the table is the proof of detection).
//!
//! - `avx2.rs`: the AVX2 dot products (one weight row against one activation row, and
//!   against four at once, the same arithmetic so the same bits) and the activation
//!   quantizers of both paths.
//! - `avx512.rs`: the AVX-512 dot products (VNNI), single and four-row.
//! - `gemm512.rs`: the AVX-512 batch kernel `matmul` uses for every quantized type:
//!   for several tokens an outer-product GEMM over weights repacked on the fly, for
//!   one token a matrix-vector kernel over an activation row laid out once.
//!
//! Every kernel equals the scalar reference ([`super::scalar`]): integer parts exactly
//! (same i32 block sums; no i16 saturation, see each kernel), float results up to the
//! order of the f32 additions. The tests state the tolerance: 1e-5 of Σ|terms|, where
//! the terms are the products the kernel sums (see `tests.rs`), and check the integer
//! parts bit for bit where every value is an exact f32. The activation quantizers
//! write the very bytes the scalar ones write.
//!
//! Activation codes must lie in -127..=127, as every Q8 quantizer here and in ggml
//! writes them (the Q8_0 weights' sign trick relies on it: -128 would wrap). Weight
//! codes may take every value their format allows.

mod avx2;
mod avx512;
mod gemm512;
mod packed256;
mod packed512;
#[cfg(test)]
mod tests;

use bytemuck::{Pod, Zeroable};

use super::{
    GemmFn, GemmPrepFn, Isa, Kernels, PackedKernel, QuantizeActFn, VecDotFn, VecDotX4Fn, scalar,
};
use crate::quant::GgmlType;

/// Features each path needs.
const AVX2: &[&str] = &["avx2", "fma", "f16c"];
const AVX512: &[&str] = &[
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512vnni",
];

fn has(feature: &str) -> bool {
    match feature {
        "avx2" => is_x86_feature_detected!("avx2"),
        "fma" => is_x86_feature_detected!("fma"),
        "f16c" => is_x86_feature_detected!("f16c"),
        "avx512f" => is_x86_feature_detected!("avx512f"),
        "avx512bw" => is_x86_feature_detected!("avx512bw"),
        "avx512vl" => is_x86_feature_detected!("avx512vl"),
        "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
        _ => false,
    }
}

pub fn features() -> Vec<(&'static str, bool)> {
    AVX512.iter().map(|f| (*f, has(f))).collect()
}

/// SIMD paths this CPU supports, best last.
pub fn available() -> Vec<Isa> {
    let mut v = Vec::new();
    if AVX2.iter().all(|f| has(f)) {
        v.push(Isa::Avx2);
    }
    if AVX512.iter().all(|f| has(f)) {
        v.push(Isa::Avx512);
    }
    v
}

/// The table of `isa`, if this CPU supports it. Every weight type the scalar path
/// multiplies has a SIMD dot product on both paths (F32, F16, Q4_0, Q4_1, Q5_0, Q5_1,
/// Q8_0, Q4_K, Q5_K, Q6_K), four-row kernels for the quantized types, and every
/// activation type a SIMD quantizer (Q8_0, Q8_1, Q8_K; F32 activations are copied).
/// Nothing falls back to scalar. AVX-512 adds batch kernels for the quantized types;
/// it uses the AVX2 quantizers (a few thousand elements per matmul, against millions
/// of weights) and the AVX2 F16/F32 dots (memory-bound streams).
pub fn table(isa: Isa) -> Option<Kernels> {
    if !available().contains(&isa) {
        return None;
    }
    match isa {
        Isa::Avx2 => Some(
            Kernels::simd(isa, avx2_vec_dot, avx2_quantize_act)
                .with_vec_dot_x4(avx2_vec_dot_x4)
                .with_gemm(avx2_gemm)
                .with_packed(avx2_packed)
                .with_axpy(axpy),
        ),
        Isa::Avx512 => Some(
            Kernels::simd(isa, avx512_vec_dot, avx2_quantize_act)
                .with_vec_dot_x4(avx512_vec_dot_x4)
                .with_gemm(avx512_gemm)
                .with_packed(avx512_packed)
                .with_axpy(axpy),
        ),
        _ => None,
    }
}

/// `y += a·x` (both x86 paths: an attention row is 80 elements, too short for
/// 512-bit vectors to pay).
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only `table` hands this out, after detecting AVX2 and FMA.
    unsafe { avx2::axpy(a, x, y) }
}

// Blocks as the kernels read them: byte arrays only, so alignment 1, and any byte
// slice of the right length casts to a slice of them without a copy. Field order and
// sizes are ggml's (`ggml-common.h`), as in `crate::quant`.

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B4_0 {
    d: [u8; 2],
    qs: [u8; 16],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B4_1 {
    d: [u8; 2],
    m: [u8; 2],
    qs: [u8; 16],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B5_0 {
    d: [u8; 2],
    qh: [u8; 4],
    qs: [u8; 16],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B5_1 {
    d: [u8; 2],
    m: [u8; 2],
    qh: [u8; 4],
    qs: [u8; 16],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B8_0 {
    d: [u8; 2],
    qs: [u8; 32],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B8_1 {
    d: [u8; 2],
    s: [u8; 2],
    qs: [u8; 32],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B4K {
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
    qs: [u8; 128],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B5K {
    d: [u8; 2],
    dmin: [u8; 2],
    scales: [u8; 12],
    qh: [u8; 32],
    qs: [u8; 128],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B6K {
    ql: [u8; 128],
    qh: [u8; 64],
    scales: [u8; 16],
    d: [u8; 2],
}

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct B8K {
    d: [u8; 4],
    qs: [u8; 256],
    bsums: [u8; 32],
}

const _: () = {
    assert!(size_of::<B4_0>() == 18 && size_of::<B4_1>() == 20);
    assert!(size_of::<B5_0>() == 22 && size_of::<B5_1>() == 24);
    assert!(size_of::<B8_0>() == 34 && size_of::<B8_1>() == 36);
    assert!(size_of::<B4K>() == 144 && size_of::<B5K>() == 176);
    assert!(size_of::<B6K>() == 210 && size_of::<B8K>() == 292);
};

/// The `n / qk` blocks of a row of `n` elements at the start of `bytes`. Panics, as
/// the scalar kernels do, when `n` is not whole blocks or `bytes` is too short.
fn blocks<B: Pod>(n: usize, qk: usize, bytes: &[u8]) -> &[B] {
    assert!(
        n.is_multiple_of(qk),
        "row of {n} is not whole blocks of {qk}"
    );
    // Alignment 1: the cast cannot fail once the length is right.
    bytemuck::cast_slice(&bytes[..n / qk * size_of::<B>()])
}

/// The first `n` elements of `bytes` as `T`s (f32 or f16 bits), if `bytes` holds them.
fn elements(n: usize, size: usize, bytes: &[u8]) -> &[u8] {
    &bytes[..n * size]
}

/// Safe `VecDotFn`/`VecDotX4Fn` wrappers around a path's kernels: each checks the
/// lengths, views the bytes as blocks, and calls the `#[target_feature]` kernel.
macro_rules! wrappers {
    ($module:ident, $vec_dot:ident, $vec_dot_x4:ident) => {
        /// The dot products of this path, reachable only through [`table`].
        fn $vec_dot(ty: GgmlType) -> Option<VecDotFn> {
            use GgmlType::*;
            Some(match ty {
                F32 => |n, w, a| {
                    let (w, a) = (elements(n, 4, w), elements(n, 4, a));
                    // SAFETY: only `table` hands out this function, after detecting
                    // the path's features; the slices hold `n` elements each.
                    unsafe { $module::dot_f32(w, a) }
                },
                F16 => |n, w, a| {
                    let (w, a) = (elements(n, 2, w), elements(n, 4, a));
                    // SAFETY: as for F32.
                    unsafe { $module::dot_f16(w, a) }
                },
                Q4_0 => |n, w, a| {
                    let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q4_0::<1>(x, [y]) };
                    r
                },
                Q4_1 => |n, w, a| {
                    let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q4_1::<1>(x, [y]) };
                    r
                },
                Q5_0 => |n, w, a| {
                    let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q5_0::<1>(x, [y]) };
                    r
                },
                Q5_1 => |n, w, a| {
                    let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q5_1::<1>(x, [y]) };
                    r
                },
                Q8_0 => |n, w, a| {
                    let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q8_0::<1>(x, [y]) };
                    r
                },
                Q4_K => |n, w, a| {
                    let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q4_k::<1>(x, [y]) };
                    r
                },
                Q5_K => |n, w, a| {
                    let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q5_k::<1>(x, [y]) };
                    r
                },
                Q6_K => |n, w, a| {
                    let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    let [r] = unsafe { $module::dot_q6_k::<1>(x, [y]) };
                    r
                },
                _ => return None,
            })
        }

        /// One weight row against four activation rows; the same arithmetic as four
        /// calls of the single-row kernel, so the same bits.
        fn $vec_dot_x4(ty: GgmlType) -> Option<VecDotX4Fn> {
            use GgmlType::*;
            Some(match ty {
                Q4_0 => |n, w, a| {
                    let x = blocks(n, 32, w);
                    let y = a.map(|a| blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q4_0::<4>(x, y) }
                },
                Q4_1 => |n, w, a| {
                    let x = blocks(n, 32, w);
                    let y = a.map(|a| blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q4_1::<4>(x, y) }
                },
                Q5_0 => |n, w, a| {
                    let x = blocks(n, 32, w);
                    let y = a.map(|a| blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q5_0::<4>(x, y) }
                },
                Q5_1 => |n, w, a| {
                    let x = blocks(n, 32, w);
                    let y = a.map(|a| blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q5_1::<4>(x, y) }
                },
                Q8_0 => |n, w, a| {
                    let x = blocks(n, 32, w);
                    let y = a.map(|a| blocks(n, 32, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q8_0::<4>(x, y) }
                },
                Q4_K => |n, w, a| {
                    let x = blocks(n, 256, w);
                    let y = a.map(|a| blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q4_k::<4>(x, y) }
                },
                Q5_K => |n, w, a| {
                    let x = blocks(n, 256, w);
                    let y = a.map(|a| blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q5_k::<4>(x, y) }
                },
                Q6_K => |n, w, a| {
                    let x = blocks(n, 256, w);
                    let y = a.map(|a| blocks(n, 256, a));
                    // SAFETY: features detected before `table` (see F32).
                    unsafe { $module::dot_q6_k::<4>(x, y) }
                },
                // F32/F16 are memory-bound streams: matmul loops the single-row kernel.
                _ => return None,
            })
        }
    };
}

wrappers!(avx2, avx2_vec_dot, avx2_vec_dot_x4);
wrappers!(avx512, avx512_vec_dot, avx512_vec_dot_x4);

/// The AVX-512 batch kernels (see `gemm512.rs`), for any number of tokens: every
/// quantized weight type; F16 and F32 loop the single-row dot.
/// F16 weights against f32 activations for a batch (both paths: Zen 4 and most
/// AVX-512 cores split a 512-bit multiply-add into two 256-bit ones anyway).
fn f16_gemm() -> (GemmPrepFn, GemmFn) {
    (
        |n, a, tokens| {
            let a = &a[..n * tokens * 4];
            a.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        },
        |n, w, r, p, t, o| {
            // SAFETY: only `table` hands this out, after detecting AVX2, FMA and F16C;
            // the kernel checks every length it reads.
            unsafe { avx2::gemm_f16(n, w, r, p, t, o) }
        },
    )
}

/// AVX2's batch kernels: F16 only (the quantized types use the four-row kernels).
fn avx2_gemm(ty: GgmlType) -> Option<(GemmPrepFn, GemmFn)> {
    (ty == GgmlType::F16).then(f16_gemm)
}

/// Weights AVX2 repacks at load: Q4_0, into `packed512`'s tiles (see `packed256`).
fn avx2_packed(ty: GgmlType) -> Option<PackedKernel> {
    (ty == GgmlType::Q4_0).then_some(PackedKernel {
        tile_rows: packed512::TILE_ROWS,
        tile_bytes: packed512::tile_bytes,
        pack: packed512::pack,
        prepare: packed512::prepare,
        gemm: |n, w, r, p, t, o| {
            // SAFETY: only `table` hands this out, after detecting AVX2, FMA and F16C;
            // the kernel checks every length it reads.
            unsafe { packed256::gemm(n, w, r, p, t, o) }
        },
    })
}

/// Weights AVX-512 repacks at load: Q4_0 and Q4_K, into 16-row tiles (see `packed512`).
fn avx512_packed(ty: GgmlType) -> Option<PackedKernel> {
    match ty {
        GgmlType::Q4_0 => Some(PackedKernel {
            tile_rows: packed512::TILE_ROWS,
            tile_bytes: packed512::tile_bytes,
            pack: packed512::pack,
            prepare: packed512::prepare,
            gemm: |n, w, r, p, t, o| {
                // SAFETY: only `table` hands out this function, after detecting the
                // AVX-512 path's features; the kernel checks every length it reads.
                unsafe { packed512::gemm(n, w, r, p, t, o) }
            },
        }),
        GgmlType::Q4_K => Some(PackedKernel {
            tile_rows: packed512::TILE_ROWS,
            tile_bytes: packed512::tile_bytes_k4,
            pack: packed512::pack_k4,
            prepare: packed512::prepare_k4,
            gemm: |n, w, r, p, t, o| {
                // SAFETY: as for Q4_0.
                unsafe { packed512::gemm_k4(n, w, r, p, t, o) }
            },
        }),
        _ => None,
    }
}

fn avx512_gemm(ty: GgmlType) -> Option<(GemmPrepFn, GemmFn)> {
    use GgmlType::*;
    if ty == F16 {
        return Some(f16_gemm());
    }
    // Each wrapper's kernel checks the lengths it reads (slices and asserts).
    let gemm: GemmFn = match ty {
        Q4_0 => |n, w, r, p, t, o| {
            // SAFETY: only `table` hands out this function, after detecting the
            // AVX-512 path's features.
            unsafe { gemm512::gemm_q4_0(n, w, r, p, t, o) }
        },
        Q4_1 => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q4_1(n, w, r, p, t, o) }
        },
        Q5_0 => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q5_0(n, w, r, p, t, o) }
        },
        Q5_1 => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q5_1(n, w, r, p, t, o) }
        },
        Q8_0 => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q8_0(n, w, r, p, t, o) }
        },
        Q4_K => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q4_k(n, w, r, p, t, o) }
        },
        Q5_K => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q5_k(n, w, r, p, t, o) }
        },
        Q6_K => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { gemm512::gemm_q6_k(n, w, r, p, t, o) }
        },
        _ => return None,
    };
    let prep: GemmPrepFn = match ty {
        Q4_0 => gemm512::prep_q4_0,
        Q5_0 => gemm512::prep_q5_0,
        Q8_0 => gemm512::prep_q8_0_weights,
        Q4_1 | Q5_1 => gemm512::prep_q4_1,
        Q4_K | Q5_K => gemm512::prep_k4,
        _ => gemm512::prep_k6,
    };
    Some((prep, gemm))
}

/// The activation quantizers of both paths (AVX2, which the AVX-512 path also has).
fn avx2_quantize_act(act: GgmlType) -> Option<QuantizeActFn> {
    use GgmlType::*;
    Some(match act {
        Q8_0 => |x, out| {
            let y = blocks_mut::<B8_0>(x.len(), 32, out);
            // SAFETY: only `table` hands out this function, after detecting AVX2.
            unsafe { avx2::quantize_q8_0(x, y) }
        },
        Q8_1 => |x, out| {
            let y = blocks_mut::<B8_1>(x.len(), 32, out);
            // SAFETY: as for Q8_0.
            unsafe { avx2::quantize_q8_1(x, y) }
        },
        Q8_K => |x, out| {
            let y = blocks_mut::<B8K>(x.len(), 256, out);
            // SAFETY: as for Q8_0.
            unsafe { avx2::quantize_q8_k(x, y) }
        },
        other => return scalar::quantize_act(other),
    })
}

/// The blocks of a row of `n` elements in `out`, which must hold exactly them (the
/// scalar quantizers' contract).
fn blocks_mut<B: Pod>(n: usize, qk: usize, out: &mut [u8]) -> &mut [B] {
    assert!(
        n.is_multiple_of(qk),
        "row of {n} is not whole blocks of {qk}"
    );
    assert_eq!(out.len(), n / qk * size_of::<B>(), "row length");
    bytemuck::cast_slice_mut(out)
}
