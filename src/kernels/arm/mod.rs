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
//! | F16, F32           | FCVTL + FMUL/FADD   | (NEON's)                         |
//! | Q8_0/Q8_1/Q8_K act | FCVTAS / FCVTNS     | (NEON's)                         |
//!
//! "Exact" means the scalar reference's f32 result to the bit; the one exception,
//! K-quants on `sdot`, keeps exact integers and differs only in how the float lane
//! sums are grouped (tolerance in `tests.rs`). Other weight types fall back to the
//! scalar lookup, which has none either.
//!
//! i8mm: the dotprod table plus batch kernels for Q4_0 and Q8_0 weights (`i8mm.rs`):
//! `smmla` computes a 2×2 block of 8-element dots, two weight rows × two tokens, 32
//! products per instruction where `sdot` gives 16. A single row's dot could use only
//! the 2×2's diagonal, so one token (generation) keeps the dotprod dot.

mod common;
mod dotprod;
mod i8mm;
mod kernels;
mod neon;

use super::{GemmFn, GemmPrepFn, Isa, Kernels};
use crate::quant::GgmlType;

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
    if std::arch::is_aarch64_feature_detected!("neon") {
        v.push(Isa::Neon);
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            v.push(Isa::Dotprod);
            if std::arch::is_aarch64_feature_detected!("i8mm") {
                v.push(Isa::I8mm);
            }
        }
    }
    v
}

/// The table of `isa`, if this CPU supports it. This check is what makes the
/// `#[target_feature]` kernels sound to call: nothing else hands them out.
pub fn table(isa: Isa) -> Option<Kernels> {
    if !available().contains(&isa) {
        return None;
    }
    let vec_dot = match isa {
        Isa::Neon => neon::vec_dot,
        // i8mm: see the module comment.
        Isa::Dotprod | Isa::I8mm => dotprod::vec_dot,
        _ => return None,
    };
    let k = Kernels::simd(isa, vec_dot, common::quantize_act).with_axpy(common::axpy);
    Some(if isa == Isa::I8mm {
        k.with_gemm(i8mm_gemm)
    } else {
        k
    })
}

/// The i8mm path's batch kernels (`smmla`): Q4_0 and Q8_0 weights.
fn i8mm_gemm(ty: GgmlType) -> Option<(GemmPrepFn, GemmFn)> {
    let gemm: GemmFn = match ty {
        GgmlType::Q4_0 => |n, w, r, p, t, o| {
            // SAFETY: only `table` hands this out, after detecting i8mm (and dotprod,
            // which the single-token case uses); the kernel checks every length.
            unsafe { i8mm::gemm_q4_0(n, w, r, p, t, o) }
        },
        GgmlType::Q8_0 => |n, w, r, p, t, o| {
            // SAFETY: as for Q4_0.
            unsafe { i8mm::gemm_q8_0(n, w, r, p, t, o) }
        },
        _ => return None,
    };
    Some((i8mm::prepare, gemm))
}

#[cfg(test)]
mod tests;
