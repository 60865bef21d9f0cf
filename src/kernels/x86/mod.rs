//! x86-64 paths: AVX2 (with FMA and F16C) and AVX-512 (BW, VL, VNNI).
//!
//! A path's table is built only after `is_x86_feature_detected!` confirms every
//! feature it uses, so the `#[target_feature]` functions it holds are never reached
//! on a CPU without them.

use super::{Isa, Kernels};

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

/// The table of `isa`, if this CPU supports it.
pub fn table(isa: Isa) -> Option<Kernels> {
    if !available().contains(&isa) {
        return None;
    }
    // No SIMD kernels yet: the scalar functions under this path's name, so that
    // forcing a path works and its tests run.
    let s = Kernels::scalar();
    Some(Kernels::simd(isa, s.vec_dot, s.quantize_act))
}
