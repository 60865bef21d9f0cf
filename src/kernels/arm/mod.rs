//! aarch64 paths: NEON (every aarch64 core: Pi 3/4), dotprod (`sdot`: Pi 5, A76+)
//! and i8mm (`smmla`: Graviton3, Apple M2+).
//!
//! A path's table is built only after `is_aarch64_feature_detected!` confirms its
//! features, so a Pi 4 never meets an `sdot` (which would be SIGILL there).

use super::{Isa, Kernels};

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

/// The table of `isa`, if this CPU supports it.
pub fn table(isa: Isa) -> Option<Kernels> {
    if !available().contains(&isa) {
        return None;
    }
    // No SIMD kernels yet: the scalar functions under this path's name.
    let s = Kernels::scalar();
    Some(Kernels::simd(isa, s.vec_dot, s.quantize_act))
}
