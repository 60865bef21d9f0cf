//! x86-64 paths: AVX2 (with FMA and F16C) and AVX-512 (F, BW, VL, VNNI).
//!
//! Detection makes a value of [`Avx2`] or [`Avx512`], and nothing else can: those
//! values are the proof the `#[target_feature]` kernels need, stated once on each
//! type. A path's table is built only after detection, so its entry points (which
//! take the value again, [`Avx2::get`]) are never reached on a CPU without them.
//!
//! - `engine.rs`: the tile engines (see `kernels::tile`), one body for both widths:
//!   every quantized type and F16, repacked at load into 16-row (AVX-512) or 8-row
//!   (AVX2) tiles, generation and prompts alike.
//! - `avx2.rs`: the row-by-row dot products (weights not repacked, `--no-mmap`, and
//!   attention's F16/F32 rows; both paths), the activation quantizers and `axpy`.
//!
//! The row dots equal the scalar reference ([`super::scalar`]): integer parts exactly
//! (same i32 block sums; no i16 saturation, see each kernel), float results up to the
//! order of the f32 additions; the activation quantizers write the very bytes the
//! scalar ones write. Activation codes lie in -127..=127, as every Q8 quantizer here
//! and in ggml writes them (the Q8_0 sign trick relies on it).

mod avx2;
mod engine;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use bytemuck::Pod;

use super::tile::{self, Format, PerFormat};
use super::{
    AxpyFn, AxpyRowsFn, Isa, Kernels, QuantizeActFn, TileKernel, TypeKernels, VecDotFn, scalar,
};
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K, GgmlType};

/// Proof that this CPU has AVX2, FMA and F16C: only [`Avx2::detect`] makes one.
#[derive(Clone, Copy)]
pub struct Avx2 {
    _detected: (),
}

/// Proof that this CPU has AVX-512 F/BW/VL/VNNI besides AVX2, FMA and F16C: only
/// [`Avx512::detect`] makes one.
#[derive(Clone, Copy)]
pub struct Avx512 {
    _detected: (),
}

impl Avx2 {
    pub fn detect() -> Option<Avx2> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then_some(Avx2 { _detected: () })
    }

    /// The proof, for entry points only a detected table hands out.
    fn get() -> Avx2 {
        Avx2::detect().expect("AVX2 kernels are reached only after detecting AVX2")
    }
}

impl Avx512 {
    pub fn detect() -> Option<Avx512> {
        let ok = Avx2::detect().is_some()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        ok.then_some(Avx512 { _detected: () })
    }

    /// The proof, for entry points only a detected table hands out.
    fn get() -> Avx512 {
        Avx512::detect().expect("AVX-512 kernels are reached only after detecting AVX-512")
    }
}

pub fn features() -> Vec<(&'static str, bool)> {
    vec![
        ("avx2", is_x86_feature_detected!("avx2")),
        ("fma", is_x86_feature_detected!("fma")),
        ("f16c", is_x86_feature_detected!("f16c")),
        ("avx512f", is_x86_feature_detected!("avx512f")),
        ("avx512bw", is_x86_feature_detected!("avx512bw")),
        ("avx512vl", is_x86_feature_detected!("avx512vl")),
        ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
    ]
}

/// SIMD paths this CPU supports, best last.
pub fn available() -> Vec<Isa> {
    let mut v = Vec::new();
    if Avx2::detect().is_some() {
        v.push(Isa::Avx2);
    }
    if Avx512::detect().is_some() {
        v.push(Isa::Avx512);
    }
    v
}

/// The table of `isa`, if this CPU supports it: every type the scalar path
/// multiplies has a SIMD row dot, every quantized type and F16 tile kernels, every
/// activation type a SIMD quantizer (F32 activations are copied).
pub fn table(isa: Isa) -> Option<Kernels> {
    match isa {
        Isa::Avx2 => {
            let f32_rows = (axpy as AxpyFn, axpy_rows_avx2 as AxpyRowsFn);
            Avx2::detect()
                .map(|_| Kernels::simd(isa, avx2_types, avx2_quantize_act, f32_rows, None))
        }
        Isa::Avx512 => {
            let f32_rows = (axpy as AxpyFn, axpy_rows_avx512 as AxpyRowsFn);
            Avx512::detect()
                .map(|_| Kernels::simd(isa, avx512_types, avx2_quantize_act, f32_rows, None))
        }
        _ => None,
    }
}

/// AVX2's tile kernels of one format: 8-row tiles, groups of 4 tokens.
struct Avx2Tiles;
impl PerFormat for Avx2Tiles {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        let (gemv, gemm) = (engine::avx2::gemv_8x1::<F>, engine::avx2::gemm_8x4::<F>);
        tile::tile_kernel::<F, 8>(engine::TOKENS_256, false, gemv, gemm)
    }
}

/// AVX-512's tile kernels of one format: 16-row tiles, groups of 8 tokens.
struct Avx512Tiles;
impl PerFormat for Avx512Tiles {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        let (gemv, gemm) = (
            engine::avx512::gemv_16x1::<F>,
            engine::avx512::gemm_16x8::<F>,
        );
        tile::tile_kernel::<F, 16>(engine::TOKENS_512, false, gemv, gemm)
    }
}

fn avx2_types(ty: GgmlType) -> Option<TypeKernels> {
    Some(TypeKernels {
        vec_dot: avx2_vec_dot(ty)?,
        tiles: tile::for_type(ty, Avx2Tiles),
    })
}

/// AVX-512 shares AVX2's row dots: they serve only weights that are not repacked and
/// attention's rows (80 elements, too short for 512-bit vectors to pay).
fn avx512_types(ty: GgmlType) -> Option<TypeKernels> {
    Some(TypeKernels {
        vec_dot: avx2_vec_dot(ty)?,
        tiles: tile::for_type(ty, Avx512Tiles),
    })
}

/// `y += a·x` (both x86 paths: an attention row is 80 elements, too short for
/// 512-bit vectors to pay).
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: only `table` hands this out, after detecting AVX2 and FMA.
    unsafe { avx2::axpy(a, x, y) }
}

/// The LoRA merge's update on 256-bit vectors.
fn axpy_rows_avx2(a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    // SAFETY: only `table` hands this out, after detecting AVX2 and FMA.
    unsafe { avx2::axpy_rows(Avx2::get(), a, x, stride, y) }
}

/// The LoRA merge's update on 512-bit vectors (its rows are thousands of elements).
fn axpy_rows_avx512(a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    // SAFETY: only `table` hands this out, after detecting AVX-512.
    unsafe { avx2::axpy_rows_512(Avx512::get(), a, x, stride, y) }
}

/// The `n / qk` blocks (`crate::quant`'s structs) of a row of `n` elements at the
/// start of `bytes`: borrowed where the bytes are aligned for them (mapped tensors and
/// activation buffers are), copied where not. Panics, as the scalar kernels do, when
/// `n` is not whole blocks or `bytes` is too short.
fn blocks<B: Pod>(n: usize, qk: usize, bytes: &[u8]) -> Cow<'_, [B]> {
    let bytes = &bytes[..crate::kernels::whole_blocks(n, qk) * size_of::<B>()];
    match bytemuck::try_cast_slice(bytes) {
        Ok(b) => Cow::Borrowed(b),
        Err(_) => Cow::Owned(
            bytes
                .chunks_exact(size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    }
}

/// The first `n` elements of `bytes` as `T`s (f32 or f16 bits), if `bytes` holds them.
fn elements(n: usize, size: usize, bytes: &[u8]) -> &[u8] {
    &bytes[..n * size]
}

/// The row dot products (both paths), reachable only through [`table`]: each checks
/// the lengths, views the bytes as blocks, and calls the `#[target_feature]` kernel.
fn avx2_vec_dot(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => |n, w, a| {
            let (w, a) = (elements(n, 4, w), elements(n, 4, a));
            // SAFETY: only `table` hands out this function, after detecting the
            // path's features; the slices hold `n` elements each.
            unsafe { avx2::dot_f32(w, a) }
        },
        F16 => |n, w, a| {
            let (w, a) = (elements(n, 2, w), elements(n, 4, a));
            // SAFETY: as for F32.
            unsafe { avx2::dot_f16(w, a) }
        },
        Q4_0 => |n, w, a| {
            let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q4_0::<1>(&x, [&y]) };
            r
        },
        Q4_1 => |n, w, a| {
            let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q4_1::<1>(&x, [&y]) };
            r
        },
        Q5_0 => |n, w, a| {
            let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q5_0::<1>(&x, [&y]) };
            r
        },
        Q5_1 => |n, w, a| {
            let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q5_1::<1>(&x, [&y]) };
            r
        },
        Q8_0 => |n, w, a| {
            let (x, y) = (blocks(n, 32, w), blocks(n, 32, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q8_0::<1>(&x, [&y]) };
            r
        },
        Q4_K => |n, w, a| {
            let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q4_k::<1>(&x, [&y]) };
            r
        },
        Q5_K => |n, w, a| {
            let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q5_k::<1>(&x, [&y]) };
            r
        },
        Q6_K => |n, w, a| {
            let (x, y) = (blocks(n, 256, w), blocks(n, 256, a));
            // SAFETY: features detected before `table` (see F32).
            let [r] = unsafe { avx2::dot_q6_k::<1>(&x, [&y]) };
            r
        },
        // The 2-3 bit and IQ4 types have tile kernels only: their rows (weights
        // not repacked, which is `--no-mmap` generation alone) take the scalar dot.
        Q2_K | Q3_K | IQ4_NL | IQ4_XS => return scalar::vec_dot(ty),
        _ => return None,
    })
}

/// The activation quantizers of both paths (AVX2, which the AVX-512 path also has).
fn avx2_quantize_act(act: GgmlType) -> Option<QuantizeActFn> {
    use GgmlType::*;
    Some(match act {
        Q8_0 => |x, out| {
            check_row(x.len(), 32, size_of::<BlockQ8_0>(), out);
            // SAFETY: only `table` hands out this function, after detecting AVX2.
            crate::quant::with_blocks_mut(out, |y| unsafe { avx2::quantize_q8_0(x, y) })
        },
        Q8_1 => |x, out| {
            check_row(x.len(), 32, size_of::<BlockQ8_1>(), out);
            // SAFETY: as for Q8_0.
            crate::quant::with_blocks_mut(out, |y| unsafe { avx2::quantize_q8_1(x, y) })
        },
        Q8_K => |x, out| {
            check_row(x.len(), 256, size_of::<BlockQ8_K>(), out);
            // SAFETY: as for Q8_0.
            crate::quant::with_blocks_mut(out, |y| unsafe { avx2::quantize_q8_k(x, y) })
        },
        other => return scalar::quantize_act(other),
    })
}

/// `out` must hold exactly the blocks of a row of `n` elements (the scalar
/// quantizers' contract).
fn check_row(n: usize, qk: usize, size: usize, out: &[u8]) {
    assert_eq!(
        out.len(),
        crate::kernels::whole_blocks(n, qk) * size,
        "row length"
    );
}
