//! aarch64 paths: NEON (every aarch64 core: Pi 3/4), dotprod (`sdot`: Pi 5, A76+)
//! and i8mm (`smmla`: Graviton3, Apple M2+).
//!
//! A path's table is built only after `is_aarch64_feature_detected!` confirms its
//! features, so a Pi 4 never meets an `sdot` (which would be SIGILL there): the
//! `#[target_feature]` kernels are reachable only through [`table`].
//!
//! What each path computes (every weight type phiq multiplies):
//!
//! | weights            | neon                | dotprod, i8mm                    |
//! |--------------------|---------------------|----------------------------------|
//! | Q4_0..Q5_1, Q8_0   | SMULL/SMLAL, exact  | SDOT, exact                      |
//! | Q4_K, Q5_K, Q6_K   | SMULL/SMLAL, exact  | SDOT, summation order differs    |
//! | F16 (tiles)        | FCVTL + FMLA        | FMLA .8h by element (`fp16.rs`)  |
//! | F16 rows, F32      | FCVTL + FMUL/FADD   | (NEON's)                         |
//! | F16 KV (attention) | (the model widens)  | FMLA .8h (`attn_fp16.rs`)        |
//! | Q8_0/Q8_1/Q8_K act | FCVTAS / FCVTNS     | (NEON's)                         |
//!
//! "Exact" means the scalar reference's f32 result to the bit; K-quants on `sdot`
//! keep exact integers and differ only in how the float lane sums are grouped
//! (tolerance in `tests.rs`); F16 in FP16 arithmetic is as precise as f16 allows
//! (`kernels::F16_ARITH_ERROR`), as llama.cpp's F16 path on these cores. Other weight types fall back to the
//! scalar lookup, which has none either.
//!
//! Tile kernels (`engine.rs`, `i8mm.rs`, `fp16.rs`; see `kernels::tile`): every
//! quantized type and F16, repacked at load into 4-row tiles (F16 on dotprod and
//! i8mm: 8-row tiles, one f16 vector per element), on every path: NEON with widening
//! multiplies, dotprod with `sdot`, i8mm with `smmla` for groups of tokens (one token
//! keeps `sdot`: `smmla` would waste half its products).
//!
//! Detection makes a value of [`Neon`], [`Dotprod`] or [`I8mm`], and nothing else
//! can: those values are the proof every `#[target_feature]` entry point relies on.

mod attn_fp16;
mod common;
mod dotprod;
mod engine;
mod fp16;
mod i8mm;
mod kernels;
mod neon;

use super::tile::{self, Format, PerFormat};
use super::{Isa, Kernels, TileKernel, TypeKernels, VecDotFn};
use crate::quant::GgmlType;

/// Proof that this CPU has Advanced SIMD (every aarch64 core).
#[derive(Clone, Copy)]
pub struct Neon {
    _detected: (),
}

/// Proof that this CPU has FEAT_DotProd (`sdot`) and FEAT_FP16 (half-precision
/// arithmetic). Every core with the first has the second (Cortex-A55, A75, A76 and
/// later, Neoverse N1 and later); one that had not would take the NEON path.
#[derive(Clone, Copy)]
pub struct Dotprod {
    _detected: (),
}

/// Proof that this CPU has FEAT_I8MM (`smmla`) and FEAT_DotProd.
#[derive(Clone, Copy)]
pub struct I8mm {
    _detected: (),
}

impl Neon {
    pub fn detect() -> Option<Neon> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Neon { _detected: () })
    }

    fn get() -> Neon {
        Neon::detect().expect("NEON kernels are reached only after detecting NEON")
    }
}

impl Dotprod {
    pub fn detect() -> Option<Dotprod> {
        let ok = Neon::detect().is_some()
            && std::arch::is_aarch64_feature_detected!("dotprod")
            && std::arch::is_aarch64_feature_detected!("fp16");
        ok.then_some(Dotprod { _detected: () })
    }

    fn get() -> Dotprod {
        Dotprod::detect().expect("dotprod kernels are reached only after detecting it")
    }
}

impl I8mm {
    pub fn detect() -> Option<I8mm> {
        let ok = Dotprod::detect().is_some() && std::arch::is_aarch64_feature_detected!("i8mm");
        ok.then_some(I8mm { _detected: () })
    }

    fn get() -> I8mm {
        I8mm::detect().expect("i8mm kernels are reached only after detecting it")
    }
}

pub fn features() -> Vec<(&'static str, bool)> {
    vec![
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        (
            "dotprod",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
    ]
}

/// SIMD paths this CPU supports, best last.
pub fn available() -> Vec<Isa> {
    let mut v = Vec::new();
    if Neon::detect().is_some() {
        v.push(Isa::Neon);
    }
    if Dotprod::detect().is_some() {
        v.push(Isa::Dotprod);
    }
    if I8mm::detect().is_some() {
        v.push(Isa::I8mm);
    }
    v
}

/// The table of `isa`, if this CPU supports it. Detection here is what makes the
/// `#[target_feature]` kernels sound to call: nothing else hands them out.
pub fn table(isa: Isa) -> Option<Kernels> {
    let types: fn(GgmlType) -> Option<TypeKernels> = match isa {
        Isa::Neon => {
            Neon::detect()?;
            neon_types
        }
        Isa::Dotprod => {
            Dotprod::detect()?;
            dotprod_types
        }
        Isa::I8mm => {
            I8mm::detect()?;
            i8mm_types
        }
        _ => return None,
    };
    Some(Kernels::simd(
        isa,
        types,
        common::quantize_act,
        (common::axpy, common::axpy_rows),
        (isa != Isa::Neon).then(attn_fp16::kernels),
    ))
}

struct NeonTiles;
impl PerFormat for NeonTiles {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        let (gemv, gemm) = (engine::neon::gemv_4x1::<F>, engine::neon::gemm_4x8::<F>);
        tile::tile_kernel::<F, 4>(engine::TOKENS, false, gemv, gemm)
    }
}

struct DotprodTiles;
impl PerFormat for DotprodTiles {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        let (gemv, gemm) = (
            engine::dotprod::gemv_4x1::<F>,
            engine::dotprod::gemm_4x8::<F>,
        );
        tile::tile_kernel::<F, 4>(engine::TOKENS, false, gemv, gemm)
    }
}

/// i8mm: `smmla` for groups, `sdot` for one token; F16 is the dotprod path's.
struct I8mmTiles;
impl PerFormat for I8mmTiles {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        if !F::PAIRED_ACTS {
            return DotprodTiles.call::<F>();
        }
        const { assert!(i8mm::TOKENS == engine::TOKENS) };
        let (gemv, gemm) = (engine::dotprod::gemv_4x1::<F>, i8mm::gemm_4x8::<F>);
        tile::tile_kernel::<F, 4>(engine::TOKENS, true, gemv, gemm)
    }
}

fn record(vec_dot: Option<VecDotFn>, tiles: Option<TileKernel>) -> Option<TypeKernels> {
    Some(TypeKernels {
        vec_dot: vec_dot?,
        tiles,
    })
}

fn neon_types(ty: GgmlType) -> Option<TypeKernels> {
    record(neon::vec_dot(ty), tile::for_type(ty, NeonTiles))
}

fn dotprod_types(ty: GgmlType) -> Option<TypeKernels> {
    record(dotprod::vec_dot(ty), fp16_or(ty, DotprodTiles))
}

fn i8mm_types(ty: GgmlType) -> Option<TypeKernels> {
    record(dotprod::vec_dot(ty), fp16_or(ty, I8mmTiles))
}

/// F16's FP16-arithmetic record on the cores that have it, else `p`'s tiles.
fn fp16_or<P: PerFormat<Out = TileKernel>>(ty: GgmlType, p: P) -> Option<TileKernel> {
    match ty {
        GgmlType::F16 => Some(fp16::tiles()),
        _ => tile::for_type(ty, p),
    }
}

#[cfg(test)]
mod tests;
