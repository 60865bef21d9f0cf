//! What is particular to the x86 paths; everything they share with the other
//! architectures is tested in `kernels/tests.rs` and `tile/tests.rs`.

use super::super::testing::*;
use super::super::{Isa, KernelError, Kernels, scalar};
use crate::quant::GgmlType::*;

#[test]
fn kernel_names_select_paths() {
    for name in ["scalar", "avx2", "avx512", "AVX2", "Avx512"] {
        let isa = Isa::from_name(name).unwrap();
        assert_eq!(isa.name(), name.to_ascii_lowercase());
        match Kernels::for_isa(isa) {
            Ok(k) => assert_eq!(k.isa, isa, "{name}"),
            Err(e) => {
                assert!(!Kernels::available().contains(&isa), "{name}: {e}");
                assert_eq!(e, KernelError::Unsupported(isa.name()));
            }
        }
    }
    assert_eq!(Isa::from_name(""), None);
    for bad in ["avx", "sse4", "avx-512", "scalar ", "neon2"] {
        assert_eq!(Isa::from_name(bad), None, "{bad:?}");
        assert_eq!(
            Kernels::named(bad).err(),
            Some(KernelError::UnknownPath(bad.to_string())),
            "{bad:?}"
        );
    }
    assert_eq!(Kernels::named("scalar").unwrap().isa, Isa::Scalar);
    for isa in paths().iter().map(|k| k.isa) {
        assert_eq!(Kernels::named(isa.name()).unwrap().isa, isa);
    }
    // The best path is the default.
    let best = *Kernels::available().last().unwrap();
    assert_eq!(Kernels::named("").unwrap().isa, best);
}

#[test]
fn every_type_has_simd_kernels_on_every_path() {
    for k in paths() {
        let isa = k.isa;
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let simd = k.vec_dot(ty).unwrap() as usize;
            // The 2-3 bit and IQ4 types compute in tiles only (their rows are scalar).
            if !matches!(ty, Q2_K | Q3_K | IQ4_NL | IQ4_XS) {
                assert_ne!(simd, scalar::vec_dot(ty).unwrap() as usize, "{isa:?} {ty}");
            }
            if ty != F32 {
                assert!(k.tiles(ty, 256).is_some(), "{isa:?} {ty} tiles");
            }
        }
        for act in [Q8_0, Q8_1, Q8_K] {
            let simd = k.quantize_act(act).unwrap() as usize;
            assert_ne!(
                simd,
                scalar::quantize_act(act).unwrap() as usize,
                "{isa:?} {act}"
            );
        }
        assert!(k.vec_dot(IQ2_XS).is_err() && k.vec_dot(BF16).is_err());
    }
}

/// `roundf` by "add 0.49999997 with the sign, truncate" around every half-integer
/// the quantizers can meet, and on random values.
#[test]
fn roundf_emulation_equals_roundf() {
    if !Kernels::available().contains(&Isa::Avx2) {
        eprintln!("*** WARNING: no AVX2: roundf emulation test SKIPPED ***");
        return;
    }
    let mut values = Vec::new();
    for k in 0..=130 {
        let mid = k as f32 + 0.5;
        let (mut lo, mut hi) = (mid, mid);
        for _ in 0..64 {
            values.extend([lo, hi, -lo, -hi]);
            lo = lo.next_down();
            hi = hi.next_up();
        }
        values.extend([
            k as f32,
            -(k as f32),
            (k as f32).next_up(),
            (k as f32).next_down(),
        ]);
    }
    let mut rng = Rng(18);
    values.extend((0..100_000).map(|_| (rng.unit() - 0.5) * 300.0));
    values.extend((0..100_000).map(|_| (rng.unit() - 0.5) * 2.0));
    values.extend([
        0.499_999_97,
        -0.499_999_97,
        1e-30,
        -1e-30,
        0.0,
        -0.0,
        8_388_607.5,
        -8_388_607.5,
    ]);
    for chunk in values.chunks(8) {
        let mut v = [0f32; 8];
        v[..chunk.len()].copy_from_slice(chunk);
        // SAFETY: AVX2 is available (checked above).
        let got = unsafe { super::avx2::roundf_x8(v) };
        for (g, x) in got.iter().zip(v) {
            assert_eq!(*g, x.round() as i32, "{x}");
        }
    }
}
