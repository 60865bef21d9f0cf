//! The x86 paths against the scalar reference, on this machine's CPU.
//!
//! Tolerance. A SIMD dot computes the same exact i32 block sums as the scalar one and
//! scales and adds them in f32 in another order (and with FMA). Each side then is
//! within a few units of f32 rounding (2⁻²⁴) of every term it adds, summed:
//! |simd - scalar| ≤ 1e-5 · Σ|terms| over a row, the terms being w·a per element
//! (for Q4_1/Q5_1 and Q4_K/Q5_K the scale part and the min part of w separately,
//! since the kernels sum those apart). 1e-5 leaves room for rows of 10240 elements
//! summed in one running f32 sum by the scalar reference.
//! Integer exactness is checked bit for bit: with unit scales and Σ|terms| < 2²⁴
//! every value either side forms is an integer f32 holds exactly, so any difference
//! in the integer parts (a saturation, a lost bit) shows as a different result.

use bytemuck::Pod;
use half::f16;

use super::super::{Isa, KernelError, Kernels, act_type, scalar};
use crate::kernels::matmul::{Weight, matmul, pack, packed_len};
use crate::quant::{self, *};

use GgmlType::*;

const WEIGHT_TYPES: [GgmlType; 8] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K];

/// Relative tolerance of a SIMD dot against the scalar one, of Σ|terms|.
const TOLERANCE: f64 = 1e-5;

/// The SIMD paths of this CPU. A path the CPU lacks is announced on stderr, loudly;
/// with `PHIQ_REQUIRE_PATHS=avx2,avx512` (as CI sets it) a missing one fails instead.
fn simd_paths() -> Vec<(Isa, Kernels)> {
    let available = Kernels::available();
    let mut paths = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        if available.contains(&isa) {
            paths.push((isa, Kernels::for_isa(isa).unwrap()));
        } else {
            eprintln!(
                "\n*** WARNING: this CPU cannot run the {} path: its x86 kernel tests are SKIPPED ***\n",
                isa.name()
            );
        }
    }
    paths
}

#[test]
fn required_paths_are_present() {
    let available = Kernels::available();
    let required = std::env::var("PHIQ_REQUIRE_PATHS").unwrap_or_default();
    for name in required.split(',').filter(|s| !s.is_empty()) {
        let isa = Isa::from_name(name).unwrap_or_else(|| panic!("unknown path {name}"));
        assert!(
            available.contains(&isa),
            "PHIQ_REQUIRE_PATHS names {name}, which this CPU cannot run"
        );
    }
    let paths = simd_paths();
    eprintln!(
        "x86 paths under test: {:?}",
        paths.iter().map(|p| p.0.name()).collect::<Vec<_>>()
    );
}

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
    for (isa, _) in simd_paths() {
        assert_eq!(Kernels::named(isa.name()).unwrap().isa, isa);
    }
    // The best path is the default.
    let best = *Kernels::available().last().unwrap();
    assert_eq!(Kernels::named("").unwrap().isa, best);
}

#[test]
fn every_type_has_simd_kernels_on_every_path() {
    for (isa, k) in simd_paths() {
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let simd = k.vec_dot(ty).unwrap() as usize;
            assert_ne!(simd, scalar::vec_dot(ty).unwrap() as usize, "{isa:?} {ty}");
            if ty != F16 && ty != F32 {
                assert!(k.vec_dot_x4(ty).is_some(), "{isa:?} {ty} x4");
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
        assert!(k.vec_dot(Q2_K).is_err() && k.vec_dot(BF16).is_err());
    }
}

// ---------------------------------------------------------------------------------
// Inputs.

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.unit()).sum::<f32>() - 6.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Gaussian data whose 32-element blocks span five orders of magnitude.
fn varied(rng: &mut Rng, n: usize) -> Vec<f32> {
    const SCALES: [f32; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];
    (0..n).map(|i| rng.normal() * SCALES[i / 32 % 5]).collect()
}

/// Data whose extreme in every 32-element block (and so every 256) is negative.
fn negative_extremes(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    for (b, block) in x.chunks_exact_mut(32).enumerate() {
        block[(7 * b) % 32] = -9.0;
    }
    x
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize_row(ty, x, &mut out).unwrap();
    out
}

/// Activations for `ty` weights, quantized by `k` (and checked against scalar).
fn quantize_act(k: &Kernels, ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = act_type(ty);
    let mut out = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    k.quantize_act(act).unwrap()(x, &mut out);
    let mut want = vec![0u8; out.len()];
    Kernels::scalar().quantize_act(act).unwrap()(x, &mut want);
    assert_eq!(out, want, "{:?} {act} quantizer", k.isa);
    out
}

fn blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn to_bytes<B: Pod>(blocks: &[B]) -> Vec<u8> {
    bytemuck::cast_slice(blocks).to_vec()
}

/// A copy of the weight row with `edit` applied to every block.
fn edited<B: Pod>(w: &[u8], edit: impl Fn(&mut B)) -> Vec<u8> {
    let mut b: Vec<B> = blocks(w);
    b.iter_mut().for_each(edit);
    to_bytes(&b)
}

fn dequantize(ty: GgmlType, w: &[u8]) -> Vec<f64> {
    let n = w.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    quant::dequantize_row(ty, w, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// Weight values split as the kernels sum them: (scale part, min part).
fn weight_parts(ty: GgmlType, w: &[u8]) -> (Vec<f64>, Vec<f64>) {
    let z = f16::ZERO;
    let (scale, min) = match ty {
        F32 => {
            let v = blocks::<f32>(w).into_iter().map(f64::from).collect();
            return (v, Vec::new());
        }
        F16 => {
            let v = blocks::<f16>(w)
                .into_iter()
                .map(|h| f64::from(h.to_f32()))
                .collect();
            return (v, Vec::new());
        }
        Q4_1 => (
            edited(w, |b: &mut BlockQ4_1| b.m = z),
            edited(w, |b: &mut BlockQ4_1| b.d = z),
        ),
        Q5_1 => (
            edited(w, |b: &mut BlockQ5_1| b.m = z),
            edited(w, |b: &mut BlockQ5_1| b.d = z),
        ),
        Q4_K => (
            edited(w, |b: &mut BlockQ4_K| b.dmin = z),
            edited(w, |b: &mut BlockQ4_K| b.d = z),
        ),
        Q5_K => (
            edited(w, |b: &mut BlockQ5_K| b.dmin = z),
            edited(w, |b: &mut BlockQ5_K| b.d = z),
        ),
        _ => return (dequantize(ty, w), Vec::new()),
    };
    (dequantize(ty, &scale), dequantize(ty, &min))
}

/// Activation values `q·d` (also f32 activations as they are).
fn act_values(act: GgmlType, a: &[u8]) -> Vec<f64> {
    fn values<B: Pod>(a: &[u8], f: impl Fn(&B) -> (f32, Vec<i8>)) -> Vec<f64> {
        let mut out = Vec::new();
        for b in blocks::<B>(a) {
            let (d, qs) = f(&b);
            out.extend(qs.iter().map(|&q| f64::from(q) * f64::from(d)));
        }
        out
    }
    match act {
        Q8_0 => values(a, |b: &BlockQ8_0| (b.d.to_f32(), b.qs.to_vec())),
        Q8_1 => values(a, |b: &BlockQ8_1| (b.d.to_f32(), b.qs.to_vec())),
        Q8_K => values(a, |b: &BlockQ8_K| (b.d, b.qs.to_vec())),
        F32 => blocks::<f32>(a).into_iter().map(f64::from).collect(),
        _ => panic!("{act}"),
    }
}

/// Σ|terms| of a row dot: what the tolerance is relative to.
fn magnitude(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let (scale, min) = weight_parts(ty, w);
    let av = act_values(act_type(ty), a);
    assert_eq!(scale.len(), av.len());
    let s: f64 = scale.iter().zip(&av).map(|(x, y)| (x * y).abs()).sum();
    let m: f64 = min.iter().zip(&av).map(|(x, y)| (x * y).abs()).sum();
    // Q8_1's s is d·Σq rounded to f16: at most a few parts in 1e3 off Σ|m·a|.
    s + 1.01 * m
}

fn row_len(ty: GgmlType, w: &[u8]) -> usize {
    w.len() / ty.type_size() * ty.block_size()
}

/// Checks path `k`'s dot of `w` and `a` against the scalar one: within the tolerance,
/// and bit for bit when `exact` (unit scales, all values exact in f32).
fn check_dot(k: &Kernels, ty: GgmlType, w: &[u8], a: &[u8], exact: bool, what: &str) -> f32 {
    let n = row_len(ty, w);
    let want = scalar::vec_dot(ty).unwrap()(n, w, a);
    let got = k.vec_dot(ty).unwrap()(n, w, a);
    let mag = magnitude(ty, w, a);
    let diff = (f64::from(got) - f64::from(want)).abs();
    let exact = exact && mag < f64::from(1u32 << 24);
    if exact {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{:?} {ty} n={n} {what}: got {got}, scalar {want} (must be exact)",
            k.isa
        );
    } else {
        assert!(
            diff <= TOLERANCE * mag,
            "{:?} {ty} n={n} {what}: got {got}, scalar {want}, diff {diff} > {TOLERANCE}·{mag}",
            k.isa
        );
    }
    got
}

// ---------------------------------------------------------------------------------
// Dot products.

/// Row lengths in blocks: one, odd counts around the 8-block chunks, Phi-2's widths.
fn legacy_lengths() -> Vec<usize> {
    [1, 2, 3, 7, 8, 9, 15, 17, 33, 80, 320]
        .iter()
        .map(|b| b * 32)
        .collect()
}

fn k_lengths() -> Vec<usize> {
    [1, 2, 3, 5, 10, 40].iter().map(|b| b * 256).collect()
}

fn lengths(ty: GgmlType) -> Vec<usize> {
    if ty.block_size() == 256 {
        k_lengths()
    } else {
        legacy_lengths()
    }
}

#[test]
fn dots_equal_scalar_on_quantized_rows() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(11);
        for ty in WEIGHT_TYPES {
            for n in lengths(ty) {
                let cases = [
                    (
                        "normal",
                        (0..n).map(|_| rng.normal()).collect(),
                        (0..n).map(|_| rng.normal()).collect(),
                    ),
                    ("varied", varied(&mut rng, n), varied(&mut rng, n)),
                    (
                        "negative extremes",
                        negative_extremes(&mut rng, n),
                        negative_extremes(&mut rng, n),
                    ),
                    ("mixed", varied(&mut rng, n), negative_extremes(&mut rng, n)),
                ];
                for (what, wx, ax) in cases {
                    let (w, a): (Vec<f32>, Vec<f32>) = (wx, ax);
                    check_dot(
                        &k,
                        ty,
                        &quantize(ty, &w),
                        &quantize_act(&k, ty, &a),
                        false,
                        what,
                    );
                }
            }
        }
    }
}

/// A weight block of random bytes under unit scales (Q4_1/Q5_1: m = 0 or -2, exact
/// in Q8_1's s; K-quants: d = dmin = 1 and random 6-bit scales and mins).
fn unit_weight_block(ty: GgmlType, rng: &mut Rng) -> Vec<u8> {
    let raw = rng.bytes(ty.type_size());
    let one = f16::ONE;
    let m = if rng.next().is_multiple_of(2) {
        f16::ZERO
    } else {
        f16::from_f32(-2.0)
    };
    match ty {
        Q4_0 => edited(&raw, |b: &mut BlockQ4_0| b.d = one),
        Q4_1 => edited(&raw, |b: &mut BlockQ4_1| (b.d, b.m) = (one, m)),
        Q5_0 => edited(&raw, |b: &mut BlockQ5_0| b.d = one),
        Q5_1 => edited(&raw, |b: &mut BlockQ5_1| (b.d, b.m) = (one, m)),
        Q8_0 => edited(&raw, |b: &mut BlockQ8_0| b.d = one),
        Q4_K => edited(&raw, |b: &mut BlockQ4_K| (b.d, b.dmin) = (one, one)),
        Q5_K => edited(&raw, |b: &mut BlockQ5_K| (b.d, b.dmin) = (one, one)),
        Q6_K => edited(&raw, |b: &mut BlockQ6_K| b.d = one),
        _ => panic!("{ty}"),
    }
}

/// An activation block of codes `qs` under unit scale (Q8_1: s = Σq; Q8_K: bsums).
fn unit_act_block(act: GgmlType, qs: &[i8]) -> Vec<u8> {
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    match act {
        Q8_0 => to_bytes(&[BlockQ8_0 {
            d: f16::ONE,
            qs: qs.try_into().unwrap(),
        }]),
        Q8_1 => to_bytes(&[BlockQ8_1 {
            d: f16::ONE,
            s: f16::from_f32(sum as f32),
            qs: qs.try_into().unwrap(),
        }]),
        Q8_K => {
            let mut bsums = [0i16; 16];
            for (s, q) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
                *s = q.iter().map(|&v| i16::from(v)).sum();
            }
            to_bytes(&[BlockQ8_K {
                d: 1.0,
                qs: qs.try_into().unwrap(),
                bsums,
            }])
        }
        _ => panic!("{act}"),
    }
}

/// Random codes, every bit pattern of the weight formats, unit scales: the integer
/// parts must agree exactly. Counts the exact comparisons so none is vacuous.
#[test]
fn integer_parts_are_exact_on_random_codes() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(12);
        for ty in WEIGHT_TYPES {
            let mut exact = 0;
            for blocks in [1usize, 2, 3, 5, 8, 9, 13] {
                for _ in 0..40 {
                    let mut w = Vec::new();
                    let mut a = Vec::new();
                    for _ in 0..blocks {
                        w.extend(unit_weight_block(ty, &mut rng));
                        // Small codes keep K-quant totals inside f32's exact integers.
                        let span = if ty.block_size() == 256 { 8 } else { 255 };
                        let qs: Vec<i8> = (0..ty.block_size())
                            .map(|_| ((rng.next() % span) as i32 - (span as i32 - 1) / 2) as i8)
                            .collect();
                        a.extend(unit_act_block(act_type(ty), &qs));
                    }
                    check_dot(&k, ty, &w, &a, true, "random codes");
                    if magnitude(ty, &w, &a) < f64::from(1u32 << 24) {
                        exact += 1;
                    }
                }
            }
            assert!(exact > 100, "{ty}: only {exact} exact comparisons");
        }
    }
}

/// Weight blocks with every code (and K-quant scale and min) at each extreme.
fn extreme_weight_blocks(ty: GgmlType) -> Vec<Vec<u8>> {
    let one = f16::ONE;
    let m = f16::from_f32(-2.0);
    let mut out = Vec::new();
    for q in [0x00u8, 0xff, 0x88, 0x77, 0xf0, 0x0f] {
        out.push(match ty {
            Q4_0 => to_bytes(&[BlockQ4_0 {
                d: one,
                qs: [q; 16],
            }]),
            Q4_1 => to_bytes(&[BlockQ4_1 {
                d: one,
                m,
                qs: [q; 16],
            }]),
            Q5_0 => to_bytes(&[BlockQ5_0 {
                d: one,
                qh: [q; 4],
                qs: [q; 16],
            }]),
            Q5_1 => to_bytes(&[BlockQ5_1 {
                d: one,
                m,
                qh: [q; 4],
                qs: [q; 16],
            }]),
            Q8_0 => to_bytes(&[BlockQ8_0 {
                d: one,
                qs: [q as i8; 32],
            }]),
            Q4_K => to_bytes(&[BlockQ4_K {
                d: one,
                dmin: one,
                scales: [0xff; 12],
                qs: [q; 128],
            }]),
            Q5_K => to_bytes(&[BlockQ5_K {
                d: one,
                dmin: one,
                scales: [0xff; 12],
                qh: [q; 32],
                qs: [q; 128],
            }]),
            Q6_K => to_bytes(&[BlockQ6_K {
                ql: [q; 128],
                qh: [q; 64],
                scales: [if q & 1 == 0 { -128 } else { 127 }; 16],
                d: one,
            }]),
            _ => panic!("{ty}"),
        });
    }
    if ty == Q8_0 {
        // -128, which ggml's quantizer never writes but a file may hold.
        out.push(to_bytes(&[BlockQ8_0 {
            d: one,
            qs: [-128; 32],
        }]));
        out.push(to_bytes(&[BlockQ8_0 {
            d: one,
            qs: core::array::from_fn(|i| if i % 2 == 0 { -128 } else { 127 }),
        }]));
    }
    out
}

/// Activation codes at ±127: all negative, all positive, alternating, in pairs (what
/// would saturate an i16 pair sum against extreme weights), and matched to signs.
fn extreme_act_codes(len: usize) -> Vec<Vec<i8>> {
    vec![
        vec![-127; len],
        vec![127; len],
        (0..len)
            .map(|i| if i % 2 == 0 { 127 } else { -127 })
            .collect(),
        (0..len)
            .map(|i| if i % 4 < 2 { 127 } else { -127 })
            .collect(),
        (0..len)
            .map(|i| if i < len / 2 { -127 } else { 127 })
            .collect(),
    ]
}

#[test]
fn extreme_codes_do_not_saturate() {
    for (_, k) in simd_paths() {
        for ty in WEIGHT_TYPES {
            let qk = ty.block_size();
            for w in extreme_weight_blocks(ty) {
                for a in extreme_act_codes(qk) {
                    let a = unit_act_block(act_type(ty), &a);
                    check_dot(&k, ty, &w, &a, true, "extreme");
                    // The same blocks many times over, through every chunk position.
                    for reps in [3, 8, 11] {
                        let (wr, ar) = (w.repeat(reps), a.repeat(reps));
                        check_dot(&k, ty, &wr, &ar, true, "extreme, repeated");
                    }
                }
            }
        }
    }
}

/// Hand-computed totals through the SIMD kernels: what saturating i16 pair sums
/// (or a wrong sign) would break.
#[test]
fn extreme_codes_match_hand_computed_totals() {
    for (_, k) in simd_paths() {
        let dot = |ty: GgmlType, w: &[u8], a: &[i8]| {
            k.vec_dot(ty).unwrap()(ty.block_size(), w, &unit_act_block(act_type(ty), a))
        };
        let minus = vec![-127i8; 256];
        // Q4_0 codes 0 (value -8) against -127: 32·8·127.
        let w = to_bytes(&[BlockQ4_0 {
            d: f16::ONE,
            qs: [0; 16],
        }]);
        assert_eq!(dot(Q4_0, &w, &minus[..32]), (32 * 8 * 127) as f32);
        // Q5_0 all bits (value 15).
        let w = to_bytes(&[BlockQ5_0 {
            d: f16::ONE,
            qh: [0xff; 4],
            qs: [0xff; 16],
        }]);
        assert_eq!(dot(Q5_0, &w, &minus[..32]), -(32 * 15 * 127) as f32);
        // Q5_1 codes 31 with m = 0.
        let w = to_bytes(&[BlockQ5_1 {
            d: f16::ONE,
            m: f16::ZERO,
            qh: [0xff; 4],
            qs: [0xff; 16],
        }]);
        assert_eq!(dot(Q5_1, &w, &minus[..32]), -(32 * 31 * 127) as f32);
        // Q8_0 weights -128 against -127: pair sums 2·128·127 = 32512, the i16 edge.
        let w = to_bytes(&[BlockQ8_0 {
            d: f16::ONE,
            qs: [-128; 32],
        }]);
        assert_eq!(dot(Q8_0, &w, &minus[..32]), (32 * 128 * 127) as f32);
        // Q6_K: scale -128 times code -32, every element.
        let w = to_bytes(&[BlockQ6_K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [-128; 16],
            d: f16::ONE,
        }]);
        assert_eq!(dot(Q6_K, &w, &minus), -(256 * 128 * 32 * 127) as f32);
        // Q5_K: 63·31 - 63 per element.
        let w = to_bytes(&[BlockQ5_K {
            d: f16::ONE,
            dmin: f16::ONE,
            scales: [0xff; 12],
            qh: [0xff; 32],
            qs: [0xff; 128],
        }]);
        assert_eq!(dot(Q5_K, &w, &minus), -(256 * (63 * 31 - 63) * 127) as f32);
    }
}

#[test]
fn zero_blocks_give_zero() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(13);
        for ty in WEIGHT_TYPES {
            for n in [ty.block_size(), 9 * ty.block_size()] {
                let zero_w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                let zero_a = quantize_act(&k, ty, &vec![0.0; n]);
                let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let (w, a) = (quantize(ty, &x), quantize_act(&k, ty, &x));
                let dot = k.vec_dot(ty).unwrap();
                assert_eq!(dot(n, &zero_w, &a), 0.0, "{ty}: zero weights");
                assert_eq!(dot(n, &w, &zero_a), 0.0, "{ty}: zero activations");
                assert_eq!(dot(n, &zero_w, &zero_a), 0.0, "{ty}: both zero");
                // Zero blocks among non-zero ones.
                let tb = ty.type_size();
                if w.len() >= 3 * tb {
                    let mut wz = w.clone();
                    wz[tb..2 * tb].fill(0);
                    check_dot(&k, ty, &wz, &a, false, "a zero block");
                }
            }
        }
    }
}

#[test]
fn float_dots_equal_scalar() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(14);
        for n in [1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 2560, 2563, 10240] {
            let w: Vec<f32> = varied(&mut rng, n);
            let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let a_bytes = to_bytes(&a);
            check_dot(&k, F32, &to_bytes(&w), &a_bytes, false, "f32");
            check_dot(&k, F16, &to_bytes(&wh), &a_bytes, false, "f16");
            // Integers: exact.
            let wi: Vec<f32> = (0..n).map(|_| (rng.next() % 64) as f32 - 32.0).collect();
            let ai: Vec<f32> = (0..n).map(|_| (rng.next() % 64) as f32 - 32.0).collect();
            let wih: Vec<f16> = wi.iter().map(|&v| f16::from_f32(v)).collect();
            check_dot(
                &k,
                F32,
                &to_bytes(&wi),
                &to_bytes(&ai),
                true,
                "f32 integers",
            );
            check_dot(
                &k,
                F16,
                &to_bytes(&wih),
                &to_bytes(&ai),
                true,
                "f16 integers",
            );
        }
    }
}

/// Rows that start at odd addresses give the same bits as aligned ones.
#[test]
fn misaligned_rows_give_identical_dots() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(15);
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let n = 9 * ty.block_size().max(32);
            let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let w = quantize(ty, &x);
            let a = if matches!(ty, F16 | F32) {
                to_bytes(&x)
            } else {
                quantize_act(&k, ty, &x)
            };
            let dot = k.vec_dot(ty).unwrap();
            let aligned = dot(n, &w, &a);
            for shift in [1, 3] {
                let s = |v: &[u8]| [vec![0u8; shift], v.to_vec()].concat();
                let (ws, as_) = (s(&w), s(&a));
                assert_eq!(
                    dot(n, &ws[shift..], &as_[shift..]).to_bits(),
                    aligned.to_bits(),
                    "{ty}"
                );
            }
            // Longer buffers than the row: only the row is read.
            let (wl, al) = (
                [&w[..], &[0xff; 300]].concat(),
                [&a[..], &[0xff; 300]].concat(),
            );
            assert_eq!(dot(n, &wl, &al).to_bits(), aligned.to_bits(), "{ty}");
        }
    }
}

#[test]
fn short_rows_panic_rather_than_read_past_the_end() {
    for (_, k) in simd_paths() {
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let n = 2 * ty.block_size().max(32);
            let w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            let act = act_type(ty);
            let a = vec![0u8; act.row_bytes(n as u64).unwrap() as usize];
            let dot = k.vec_dot(ty).unwrap();
            for (wl, al) in [(w.len() - 1, a.len()), (w.len(), a.len() - 1)] {
                let r = std::panic::catch_unwind(|| dot(n, &w[..wl], &a[..al]));
                assert!(r.is_err(), "{ty}: a short row must panic");
            }
            if ty.block_size() > 1 {
                let r = std::panic::catch_unwind(|| dot(n + 1, &w, &a));
                assert!(r.is_err(), "{ty}: a partial block must panic");
            }
        }
    }
}

/// The four-row kernels are four single-row dots, bit for bit.
#[test]
fn x4_equals_four_single_dots() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(16);
        for ty in WEIGHT_TYPES {
            let x4 = k.vec_dot_x4(ty).unwrap();
            let dot = k.vec_dot(ty).unwrap();
            for n in lengths(ty).into_iter().take(6) {
                let w = quantize(ty, &varied(&mut rng, n));
                let acts: Vec<Vec<u8>> = (0..4)
                    .map(|i| {
                        let x = if i == 2 {
                            negative_extremes(&mut rng, n)
                        } else {
                            varied(&mut rng, n)
                        };
                        quantize_act(&k, ty, &x)
                    })
                    .collect();
                let got = x4(n, &w, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                for (t, a) in acts.iter().enumerate() {
                    assert_eq!(
                        got[t].to_bits(),
                        dot(n, &w, a).to_bits(),
                        "{ty} n={n} t={t}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Quantizers.

/// Blocks of 32 (and 256) values that probe the quantizers' rounding and edge cases.
fn quantizer_inputs(rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for n in [256, 512, 2560] {
        rows.push((0..n).map(|_| rng.normal()).collect());
        rows.push(varied(rng, n));
        rows.push(negative_extremes(rng, n));
    }
    // Ties: amax 127 gives d = 1, id = 1, so x is the scaled value itself.
    let ties: Vec<f32> = (0..256)
        .map(|i| match i % 32 {
            0 => 127.0,
            j => (j as f32 - 16.0) * 4.0 + 0.5,
        })
        .collect();
    rows.push(ties.clone());
    rows.push(ties.iter().map(|v| -v).collect());
    // Values a hair under and over the halves.
    rows.push(
        (0..256)
            .map(|i| match i % 32 {
                0 => -127.0,
                j => {
                    let v = (j as f32 - 16.0) * 3.0 + 0.5;
                    if j % 2 == 0 {
                        v.next_down()
                    } else {
                        v.next_up()
                    }
                }
            })
            .collect(),
    );
    rows.push(vec![0.0; 256]);
    rows.push(vec![-0.0; 256]);
    rows.push(vec![0.37; 256]);
    // Tiny, subnormal, huge, mixed magnitudes in one block.
    rows.push((0..256).map(|i| (i as f32 - 128.0) * 1e-40).collect());
    rows.push((0..256).map(|i| (i as f32 - 100.0) * 1e-38).collect());
    rows.push(cos_row(256, 1e-30));
    rows.push(cos_row(256, 1e30));
    let mut huge = cos_row(256, 1e30);
    huge[3] = -3.0e38;
    huge[200] = 3.4e38;
    rows.push(huge);
    rows.push(cos_row(256, 65504.0));
    // One large value among small ones; ties for the largest of either sign.
    let mut one = cos_row(256, 0.001);
    one[77] = -1000.0;
    rows.push(one);
    let mut both = cos_row(256, 1.0);
    both[10] = 8.0;
    both[20] = -8.0;
    rows.push(both.clone());
    both[10] = -8.0;
    both[20] = 8.0;
    rows.push(both);
    // Random bit patterns (finite), every exponent.
    rows.push(
        (0..512)
            .map(|_| {
                loop {
                    let v = f32::from_bits(rng.next() as u32);
                    if v.is_finite() {
                        break v;
                    }
                }
            })
            .collect(),
    );
    rows
}

fn cos_row(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.7).cos() * scale).collect()
}

fn check_quantizer(k: &Kernels, act: GgmlType, x: &[f32], what: &str) {
    let len = act.row_bytes(x.len() as u64).unwrap() as usize;
    let mut want = vec![0u8; len];
    Kernels::scalar().quantize_act(act).unwrap()(x, &mut want);
    let mut got = vec![0xaau8; len];
    k.quantize_act(act).unwrap()(x, &mut got);
    assert!(
        got == want,
        "{:?} {act} {what}: bytes differ from scalar",
        k.isa
    );
    // Into a misaligned buffer.
    let mut buf = vec![0x55u8; len + 1];
    k.quantize_act(act).unwrap()(x, &mut buf[1..]);
    assert!(
        buf[1..] == want[..],
        "{:?} {act} {what}: misaligned output",
        k.isa
    );
}

#[test]
fn quantizers_write_the_scalar_bytes() {
    for (_, k) in simd_paths() {
        let mut rng = Rng(17);
        for (i, x) in quantizer_inputs(&mut rng).iter().enumerate() {
            for act in [Q8_0, Q8_1, Q8_K] {
                check_quantizer(&k, act, x, &format!("input {i}"));
            }
        }
        // Random rows at many scales.
        for _ in 0..200 {
            let scale = 10f32.powi((rng.next() % 20) as i32 - 10);
            let x: Vec<f32> = (0..256).map(|_| rng.normal() * scale).collect();
            for act in [Q8_0, Q8_1, Q8_K] {
                check_quantizer(&k, act, &x, "random");
            }
        }
    }
}

/// Non-finite values: the scalar quantizers define some bytes for them (ggml's on
/// x86-64); the SIMD ones write the same.
#[test]
fn quantizers_match_scalar_on_non_finite_input() {
    for (_, k) in simd_paths() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for pos in [0, 5, 31, 32, 255] {
                let mut x = cos_row(256, 2.0);
                x[pos] = bad;
                for act in [Q8_0, Q8_1, Q8_K] {
                    check_quantizer(&k, act, &x, &format!("{bad} at {pos}"));
                }
            }
        }
        let mut x = vec![0.0f32; 256];
        x[3] = f32::NAN;
        for act in [Q8_0, Q8_1, Q8_K] {
            check_quantizer(&k, act, &x, "NaN among zeros");
        }
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

// ---------------------------------------------------------------------------------
// Matmul.

fn matmul_tolerance(ty: GgmlType, w_row: &[u8], k: &Kernels, x: &[f32]) -> f64 {
    let a = if matches!(ty, F16 | F32) {
        to_bytes(x)
    } else {
        quantize_act(k, ty, x)
    };
    TOLERANCE * magnitude(ty, w_row, &a)
}

/// Each path's matmul equals the scalar matmul within the tolerance, and its own
/// row-by-row dots: bit for bit through the single-row and four-row kernels, within
/// the tolerance through a batch kernel (gemm, one token or several).
#[test]
fn matmul_equals_scalar_matmul() {
    let paths = simd_paths();
    let mut rng = Rng(19);
    for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
        let cols = if ty.block_size() == 256 { 512 } else { 320 };
        let rows = 37;
        let w_rows: Vec<Vec<u8>> = (0..rows)
            .map(|_| quantize(ty, &varied(&mut rng, cols)))
            .collect();
        let data = w_rows.concat();
        let w = Weight {
            packed: None,
            ty,
            data: &data,
            rows,
            cols,
        };
        let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.25 - 4.0).collect();
        for n_tokens in [1, 3, 8, 37] {
            let x: Vec<f32> = (0..n_tokens)
                .flat_map(|t| {
                    if t % 3 == 1 {
                        negative_extremes(&mut rng, cols)
                    } else {
                        varied(&mut rng, cols)
                    }
                })
                .collect();
            let mut want = vec![f32::NAN; n_tokens * rows];
            matmul(&Kernels::scalar(), &w, &x, n_tokens, Some(&bias), &mut want).unwrap();
            for (isa, k) in &paths {
                let mut got = vec![f32::NAN; n_tokens * rows];
                matmul(k, &w, &x, n_tokens, Some(&bias), &mut got).unwrap();
                if let Some(tiles) = packed(k, ty, &data, rows, cols) {
                    // Repacked weights: the same results as the batch kernel's within the
                    // tolerance (checked below through `got`), so compare to `got`.
                    let wp = Weight {
                        packed: Some(&tiles),
                        ..w
                    };
                    let mut gp = vec![f32::NAN; n_tokens * rows];
                    matmul(k, &wp, &x, n_tokens, Some(&bias), &mut gp).unwrap();
                    for (i, (p, g)) in gp.iter().zip(&got).enumerate() {
                        let r = i % rows;
                        let tol = 2.0
                            * matmul_tolerance(ty, &w_rows[r], k, &x[i / rows * cols..][..cols]);
                        assert!(
                            (f64::from(*p) - f64::from(*g)).abs() <= tol,
                            "{isa:?} {ty} packed tokens={n_tokens} i={i}: {p} vs {g}"
                        );
                    }
                }
                let dot = k.vec_dot(ty).unwrap();
                for (t, xt) in x.chunks_exact(cols).enumerate() {
                    let a = if matches!(ty, F16 | F32) {
                        to_bytes(xt)
                    } else {
                        quantize_act(k, ty, xt)
                    };
                    for r in 0..rows {
                        let (g, s) = (got[t * rows + r], want[t * rows + r]);
                        let tol = matmul_tolerance(ty, &w_rows[r], k, xt);
                        assert!(
                            (f64::from(g) - f64::from(s)).abs() <= tol,
                            "{isa:?} {ty} tokens={n_tokens} t={t} r={r}: {g} vs scalar {s} (tol {tol})"
                        );
                        let single = dot(cols, &w_rows[r], &a) + bias[r];
                        if k.gemm(ty).is_none() {
                            // Single tokens and the four-row kernels: the same bits.
                            assert_eq!(g.to_bits(), single.to_bits(), "{isa:?} {ty} t={t} r={r}");
                        } else {
                            let d = (f64::from(g) - f64::from(single)).abs();
                            assert!(
                                d <= tol,
                                "{isa:?} {ty} t={t} r={r}: gemm {g} vs dot {single}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Odd shapes: a single row, rows fewer than a task, no bias.
#[test]
fn matmul_handles_small_and_odd_shapes() {
    let paths = simd_paths();
    let mut rng = Rng(20);
    for ty in [Q4_0, Q5_1, Q4_K, F16] {
        let cols = ty.block_size().max(32) * 3;
        for rows in [1, 5, 17] {
            let data = quantize(ty, &varied(&mut rng, rows * cols));
            let w = Weight {
                packed: None,
                ty,
                data: &data,
                rows,
                cols,
            };
            for n_tokens in [1, 2, 5] {
                let x = varied(&mut rng, n_tokens * cols);
                let mut want = vec![0f32; n_tokens * rows];
                matmul(&Kernels::scalar(), &w, &x, n_tokens, None, &mut want).unwrap();
                for (isa, k) in &paths {
                    let mut got = vec![0f32; n_tokens * rows];
                    matmul(k, &w, &x, n_tokens, None, &mut got).unwrap();
                    for (i, (g, s)) in got.iter().zip(&want).enumerate() {
                        let r = i % rows;
                        let rb = w.row_bytes();
                        let t = i / rows;
                        let tol = matmul_tolerance(
                            ty,
                            &data[r * rb..(r + 1) * rb],
                            k,
                            &x[t * cols..(t + 1) * cols],
                        );
                        assert!(
                            (f64::from(*g) - f64::from(*s)).abs() <= tol,
                            "{isa:?} {ty} {rows}x{cols} t={t}"
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Batch kernels (gemm).

/// Runs path `k`'s batch kernels for `ty` on unpacked weight rows: the gemm over the
/// rows as stored, and the packed kernel (rows repacked first) when the path has one.
/// Each gives rows × tokens, `out[r * tokens + t]`.
fn run_gemm(
    k: &Kernels,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    rows: usize,
    acts: &[Vec<u8>],
) -> Vec<(&'static str, Vec<f32>)> {
    let a = acts.concat();
    let mut runs = Vec::new();
    if let Some((prep, gemm)) = k.gemm(ty) {
        let prepared = prep(n, &a, acts.len());
        let mut out = vec![f32::NAN; rows * acts.len()];
        gemm(n, w, rows, &prepared, acts.len(), &mut out);
        runs.push(("gemm", out));
    }
    if let Some(pk) = k.packed(ty) {
        let tiles = packed(k, ty, w, rows, n).unwrap();
        let prepared = (pk.prepare)(n, &a, acts.len());
        let mut out = vec![f32::NAN; rows * acts.len()];
        (pk.gemm)(n, &tiles, rows, &prepared, acts.len(), &mut out);
        runs.push(("packed", out));
    }
    runs
}

/// `rows` rows of `w` repacked for `k`, if the path repacks `ty`.
fn packed(k: &Kernels, ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    let len = packed_len(k, ty, rows, cols)?;
    let mut tiles = vec![0xa5u8; len];
    let weight = Weight {
        packed: None,
        ty,
        data: w,
        rows,
        cols,
    };
    assert!(pack(k, &weight, &mut tiles));
    Some(tiles)
}

/// The paths with batch kernels; announced, like every path, when missing.
fn gemm_paths() -> Vec<(Isa, Kernels)> {
    let paths: Vec<_> = simd_paths()
        .into_iter()
        .filter(|(_, k)| {
            WEIGHT_TYPES
                .iter()
                .any(|&t| k.gemm(t).is_some() || k.packed(t).is_some())
        })
        .collect();
    if !paths.iter().any(|(isa, _)| *isa == Isa::Avx512) {
        eprintln!("\n*** WARNING: no AVX-512 path here: its batch kernel tests are SKIPPED ***\n");
    }
    paths
}

/// The batch kernels against the scalar dot of every (row, token): tiles of 16 rows
/// and groups of 8 tokens, full and partial.
#[test]
fn gemm_equals_scalar_dots() {
    for (isa, k) in &gemm_paths() {
        let mut rng = Rng(21);
        for ty in WEIGHT_TYPES {
            if k.gemm(ty).is_none() && k.packed(ty).is_none() {
                continue;
            }
            for blocks in [1usize, 3, 4, 5, 10] {
                let n = blocks * ty.block_size();
                for (rows, tokens) in [
                    (1, 1),
                    (7, 1),
                    (33, 1),
                    (5, 2),
                    (16, 8),
                    (17, 9),
                    (40, 19),
                    (3, 33),
                ] {
                    let w_rows: Vec<Vec<u8>> = (0..rows)
                        .map(|_| quantize(ty, &varied(&mut rng, n)))
                        .collect();
                    let acts: Vec<Vec<u8>> = (0..tokens)
                        .map(|t| {
                            let x = if t % 3 == 1 {
                                negative_extremes(&mut rng, n)
                            } else {
                                varied(&mut rng, n)
                            };
                            quantize_act(k, ty, &x)
                        })
                        .collect();
                    for (kind, out) in run_gemm(k, ty, n, &w_rows.concat(), rows, &acts) {
                        for (r, w) in w_rows.iter().enumerate() {
                            for (t, a) in acts.iter().enumerate() {
                                let want = scalar::vec_dot(ty).unwrap()(n, w, a);
                                let got = out[r * tokens + t];
                                let tol = TOLERANCE * magnitude(ty, w, a);
                                assert!(
                                    (f64::from(got) - f64::from(want)).abs() <= tol,
                                    "{isa:?} {kind} {ty} n={n} {rows}x{tokens} r={r} t={t}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Unit scales and codes of every pattern, extremes included: every value the batch
/// kernel forms is then an integer f32 holds, so it must equal the scalar dot exactly.
#[test]
fn gemm_integer_parts_are_exact() {
    for (isa, k) in &gemm_paths() {
        let mut rng = Rng(22);
        for ty in WEIGHT_TYPES {
            if k.gemm(ty).is_none() && k.packed(ty).is_none() {
                continue;
            }
            let qk = ty.block_size();
            // Small codes keep K-quant totals inside f32's exact integers.
            let span = if qk == 256 { 8 } else { 255 };
            for (blocks, tokens) in [(1usize, 11), (2, 11), (5, 11), (1, 1), (4, 1), (7, 1)] {
                let n = blocks * qk;
                let rows = 19;
                let mut w_rows: Vec<Vec<u8>> = (0..rows)
                    .map(|_| {
                        (0..blocks)
                            .flat_map(|_| unit_weight_block(ty, &mut rng))
                            .collect()
                    })
                    .collect();
                for (i, e) in extreme_weight_blocks(ty).into_iter().enumerate() {
                    w_rows[i] = e.repeat(blocks);
                }
                let mut acts: Vec<Vec<u8>> = (0..tokens)
                    .map(|_| {
                        (0..blocks)
                            .flat_map(|_| {
                                let qs: Vec<i8> = (0..qk)
                                    .map(|_| {
                                        ((rng.next() % span) as i32 - (span as i32 - 1) / 2) as i8
                                    })
                                    .collect();
                                unit_act_block(act_type(ty), &qs)
                            })
                            .collect()
                    })
                    .collect();
                // Extreme activations in every token but the first.
                for (i, e) in extreme_act_codes(qk).into_iter().enumerate() {
                    if i + 1 < tokens {
                        acts[i + 1] = unit_act_block(act_type(ty), &e).repeat(blocks);
                    }
                }
                for (kind, out) in run_gemm(k, ty, n, &w_rows.concat(), rows, &acts) {
                    let mut exact = 0;
                    for (r, w) in w_rows.iter().enumerate() {
                        for (t, a) in acts.iter().enumerate() {
                            let want = scalar::vec_dot(ty).unwrap()(n, w, a);
                            let got = out[r * tokens + t];
                            let mag = magnitude(ty, w, a);
                            if mag < f64::from(1u32 << 24) {
                                exact += 1;
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{isa:?} {kind} {ty} n={n} r={r} t={t}: {got} vs {want}"
                                );
                            } else {
                                let d = (f64::from(got) - f64::from(want)).abs();
                                assert!(d <= TOLERANCE * mag, "{isa:?} {kind} {ty} r={r} t={t}");
                            }
                        }
                    }
                    assert!(
                        exact > rows * tokens / 2,
                        "{kind} {ty}: only {exact} exact comparisons"
                    );
                }
            }
        }
    }
}

#[test]
fn gemm_rejects_short_inputs() {
    for (_, k) in &gemm_paths() {
        for ty in WEIGHT_TYPES {
            let Some((prep, gemm)) = k.gemm(ty) else {
                continue;
            };
            let n = 2 * ty.block_size();
            let rb = ty.row_bytes(n as u64).unwrap() as usize;
            let ab = act_type(ty).row_bytes(n as u64).unwrap() as usize;
            let w = vec![0u8; 3 * rb];
            let a = vec![0u8; 2 * ab];
            assert!(std::panic::catch_unwind(|| prep(n, &a[..2 * ab - 1], 2)).is_err());
            assert!(std::panic::catch_unwind(|| prep(n, &a[..ab - 1], 1)).is_err());
            let p1 = prep(n, &a, 1);
            let one = std::panic::catch_unwind(|| {
                gemm(n, &w, 3, &p1[..p1.len() - 1], 1, &mut [0f32; 3]);
            });
            assert!(one.is_err(), "{ty}: short prepared row");
            let mut out1 = [f32::NAN; 3];
            gemm(n, &w, 3, &p1, 1, &mut out1);
            assert!(
                out1.iter().all(|v| *v == 0.0),
                "{ty}: one token, zero blocks"
            );
            let p = prep(n, &a, 2);
            let short_w = std::panic::catch_unwind(|| {
                gemm(n, &w[..3 * rb - 1], 3, &p, 2, &mut [0f32; 6]);
            });
            assert!(short_w.is_err(), "{ty}: short weights");
            let short_p = std::panic::catch_unwind(|| {
                gemm(n, &w, 3, &p[..p.len() - 1], 2, &mut [0f32; 6]);
            });
            assert!(short_p.is_err(), "{ty}: short prepared batch");
            let short_out = std::panic::catch_unwind(|| {
                gemm(n, &w, 3, &p, 2, &mut [0f32; 5]);
            });
            assert!(short_out.is_err(), "{ty}: short output");
            let mut out = [f32::NAN; 6];
            gemm(n, &w, 3, &p, 2, &mut out);
            assert!(out.iter().all(|v| *v == 0.0), "{ty}: zero blocks give zero");
        }
    }
}

#[test]
fn packed_kernels_reject_short_inputs() {
    for (_, k) in &gemm_paths() {
        for ty in WEIGHT_TYPES {
            let Some(pk) = k.packed(ty) else {
                continue;
            };
            let n = 2 * ty.block_size();
            let rb = ty.row_bytes(n as u64).unwrap() as usize;
            let ab = act_type(ty).row_bytes(n as u64).unwrap() as usize;
            let tiles = packed(k, ty, &vec![0u8; 3 * rb], 3, n).unwrap();
            let a = vec![0u8; 2 * ab];
            assert!(std::panic::catch_unwind(|| (pk.prepare)(n, &a[..ab - 1], 1)).is_err());
            for tokens in [1, 2] {
                let p = (pk.prepare)(n, &a, tokens);
                let short = |tl: usize, pl: usize, ol: usize| {
                    std::panic::catch_unwind(|| {
                        (pk.gemm)(n, &tiles[..tl], 3, &p[..pl], tokens, &mut vec![0f32; ol]);
                    })
                    .is_err()
                };
                let (tl, pl, ol) = (tiles.len(), p.len(), 3 * tokens);
                assert!(short(tl - 1, pl, ol), "{ty}: short tiles");
                assert!(short(tl, pl - 1, ol), "{ty}: short prepared");
                assert!(short(tl, pl, ol - 1), "{ty}: short output");
                let mut out = vec![f32::NAN; ol];
                (pk.gemm)(n, &tiles, 3, &p, tokens, &mut out);
                assert!(out.iter().all(|v| *v == 0.0), "{ty}: zero blocks give zero");
            }
        }
    }
}

/// Degenerate batches: no tokens, and rows of zero elements.
#[test]
fn empty_batches_give_empty_or_zero_results() {
    let mut rng = Rng(23);
    for (isa, k) in simd_paths()
        .iter()
        .chain([(Isa::Scalar, Kernels::scalar())].iter())
    {
        for ty in WEIGHT_TYPES {
            let cols = ty.block_size();
            let data = quantize(ty, &varied(&mut rng, 3 * cols));
            let w = Weight {
                packed: None,
                ty,
                data: &data,
                rows: 3,
                cols,
            };
            let mut out: Vec<f32> = Vec::new();
            matmul(k, &w, &[], 0, None, &mut out).unwrap();
            if let Some((prep, gemm)) = k.gemm(ty) {
                let p = prep(0, &[], 2);
                let mut out = [f32::NAN; 6];
                gemm(0, &[], 3, &p, 2, &mut out);
                assert_eq!(out, [0.0; 6], "{isa:?} {ty}");
                let p = prep(cols, &[], 0);
                gemm(cols, &data, 3, &p, 0, &mut []);
            }
        }
    }
}

/// The F16 batch kernel against the scalar dot: lengths that are not a multiple of
/// the vector width, row and token counts around the micro-kernel's 3 x 4, zero rows
/// and the largest f16 values.
#[test]
fn f16_gemm_equals_scalar_dots() {
    let mut rng = Rng(24);
    for (isa, k) in &simd_paths() {
        let (prep, gemm) = k.gemm(F16).expect("every x86 path has an F16 batch kernel");
        for n in [1usize, 7, 8, 9, 33, 320] {
            for (rows, tokens) in [(1, 1), (2, 1), (3, 4), (4, 5), (7, 9), (5, 2)] {
                let w_rows: Vec<Vec<u8>> = (0..rows)
                    .map(|r| {
                        let x: Vec<f32> = match r % 3 {
                            0 => varied(&mut rng, n),
                            1 => vec![0.0; n],
                            _ => (0..n)
                                .map(|i| if i % 2 == 0 { 65504.0 } else { -65504.0 })
                                .collect(),
                        };
                        quantize(F16, &x)
                    })
                    .collect();
                let x: Vec<f32> = (0..tokens * n).map(|_| rng.normal() * 1e-3).collect();
                let a = to_bytes(&x);
                let prepared = prep(n, &a, tokens);
                let mut out = vec![f32::NAN; rows * tokens];
                gemm(n, &w_rows.concat(), rows, &prepared, tokens, &mut out);
                for (r, w) in w_rows.iter().enumerate() {
                    for t in 0..tokens {
                        let at = &a[t * n * 4..(t + 1) * n * 4];
                        let want = scalar::vec_dot(F16).unwrap()(n, w, at);
                        let mag = magnitude(F16, w, at);
                        let got = out[r * tokens + t];
                        assert!(
                            (f64::from(got) - f64::from(want)).abs() <= 1e-6 * mag + 1e-30,
                            "{isa:?} n={n} {rows}x{tokens} r={r} t={t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
