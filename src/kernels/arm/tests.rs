//! Every aarch64 path this CPU runs, against the scalar reference.
//!
//! What "equal" means:
//! - activation quantizers: the same bytes;
//! - F32, F16 and the 32-element formats on every path, K-quants on `neon`: the same
//!   f32, bit for bit (NaN = NaN);
//! - K-quants on `dotprod`/`i8mm` (`sdot` groups lanes differently from the scalar
//!   code): integer parts exact, so only the float summation order differs, and
//!   |simd - scalar| ≤ (nb + 16)·2⁻²³·M, with nb the number of super-blocks and
//!   M = Σ over elements of (|d·sc·q| + |dmin·m|)·|a|, the sum of the magnitudes
//!   of every term. (Each side's rounding is at most (nb + 10)·2⁻²⁴·M: one rounding
//!   for the integer-to-float conversion and the scale product, at most nb + 8 for
//!   the additions a term goes through.)
//!
//! Run under QEMU_CPU=cortex-a53/a72 (neon), cortex-a76 (+dotprod) and max (+i8mm):
//! each test prints the paths it covered, and a path the emulated CPU lacks would
//! die with SIGILL.

use half::f16;

use super::{available, table};
use crate::kernels::{Isa, KernelError, Kernels, act_type};
use crate::quant::float::test_support::cos_data;
use crate::quant::{self, GgmlType};
use crate::testing::Rng;

use GgmlType::*;

const QUANTIZED: [GgmlType; 8] = [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K];
const ALL_TYPES: [GgmlType; 10] = [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K];

/// The SIMD paths under test (all this CPU has), printed so a log shows them.
fn paths(test: &str) -> Vec<Kernels> {
    let isas = available();
    let names: Vec<&str> = isas.iter().map(|i| i.name()).collect();
    println!("{test}: aarch64 paths covered: {}", names.join(", "));
    assert!(!isas.is_empty(), "every aarch64 CPU has NEON");
    isas.into_iter()
        .map(|isa| table(isa).expect("an available path has a table"))
        .collect()
}

/// Whether `isa` must give the scalar f32 result to the bit for `ty`.
fn bit_exact(isa: Isa, ty: GgmlType) -> bool {
    isa == Isa::Neon || !matches!(ty, Q4_K | Q5_K | Q6_K)
}

fn scalar_dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    Kernels::scalar().vec_dot(ty).unwrap()(n, w, a)
}

/// The f16 stored at `b[at..]`, and the f32.
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The activations' values `d·q` (Q8_0, Q8_1, Q8_K), in f64.
fn act_values(act: GgmlType, a: &[u8]) -> Vec<f64> {
    // Block size and where the codes start; the scale is at 0 (f32 for Q8_K).
    let (size, qs) = match act {
        Q8_0 => (34, 2),
        Q8_1 => (36, 4),
        Q8_K => (292, 4),
        _ => panic!("{act} is not an activation type"),
    };
    let qk = act.block_size();
    a.chunks_exact(size)
        .flat_map(|b| {
            let d = f64::from(if act == Q8_K {
                f32_at(b, 0)
            } else {
                f16_at(b, 0)
            });
            b[qs..qs + qk].iter().map(move |&q| f64::from(q as i8) * d)
        })
        .collect()
}

fn dequantize(ty: GgmlType, w: &[u8]) -> Vec<f64> {
    let n = w.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    quant::dequantize_row(ty, w, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// M of the module comment for a K-quant row: Σ (|d·sc·q| + |dmin·m|)·|a|, the two
/// weight parts read back through the dequantizer with `dmin` (resp. `d`) set to 0.
fn k_magnitude(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let size = ty.type_size();
    let zeroing = |at: usize| -> Vec<f64> {
        let mut w = w.to_vec();
        for b in w.chunks_exact_mut(size) {
            b[at..at + 2].fill(0);
        }
        dequantize(ty, &w)
    };
    let (scaled, mins) = match ty {
        Q4_K | Q5_K => (zeroing(2), zeroing(0)),
        Q6_K => (dequantize(ty, w), vec![0.0; w.len() / size * 256]),
        _ => panic!("{ty} is not a K-quant"),
    };
    let av = act_values(Q8_K, a);
    scaled
        .iter()
        .zip(&mins)
        .zip(&av)
        .map(|((s, m), a)| (s.abs() + m.abs()) * a.abs())
        .sum()
}

/// How far path `isa` may be from scalar for this row: `None` for bit-exact.
fn tolerance(isa: Isa, ty: GgmlType, w: &[u8], a: &[u8]) -> Option<f64> {
    if bit_exact(isa, ty) {
        return None;
    }
    let nb = (w.len() / ty.type_size()) as f64;
    Some((nb + 16.0) * f64::from(f32::EPSILON) * k_magnitude(ty, w, a))
}

/// Asserts that `got` (path `isa`) equals the scalar `want` as the module comment says.
fn assert_dot_eq(isa: Isa, ty: GgmlType, w: &[u8], a: &[u8], got: f32, want: f32, what: &str) {
    match tolerance(isa, ty, w, a) {
        None => assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{} {ty} {what}: {got:e} ({:#x}) vs scalar {want:e} ({:#x})",
            isa.name(),
            got.to_bits(),
            want.to_bits()
        ),
        Some(tol) => {
            let diff = (f64::from(got) - f64::from(want)).abs();
            assert!(
                diff <= tol,
                "{} {ty} {what}: {got:e} vs scalar {want:e}, diff {diff:e} > tolerance {tol:e}",
                isa.name()
            );
        }
    }
}

/// Checks one row on one path against scalar, aligned and at an odd address.
fn check_dot(k: &Kernels, ty: GgmlType, w: &[u8], a: &[u8], what: &str) -> f32 {
    let n = w.len() / ty.type_size() * ty.block_size();
    let want = scalar_dot(ty, n, w, a);
    let dot = k.vec_dot(ty).unwrap();
    let got = dot(n, w, a);
    assert_dot_eq(k.isa, ty, w, a, got, want, what);
    let shifted = |v: &[u8]| [&[0u8][..], v].concat();
    let (ws, as_) = (shifted(w), shifted(a));
    let moved = dot(n, &ws[1..], &as_[1..]);
    assert!(
        moved.to_bits() == got.to_bits() || (moved.is_nan() && got.is_nan()),
        "{} {ty} {what}: misaligned rows give {moved} not {got}",
        k.isa.name()
    );
    got
}

// ---------------------------------------------------------------- detection

#[test]
fn detected_paths_match_cpu_features() {
    let neon = std::arch::is_aarch64_feature_detected!("neon");
    let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
    let i8mm = std::arch::is_aarch64_feature_detected!("i8mm");
    let mut expected = Vec::new();
    if neon {
        expected.push(Isa::Neon);
        if dotprod {
            expected.push(Isa::Dotprod);
            if i8mm {
                expected.push(Isa::I8mm);
            }
        }
    }
    assert!(neon, "aarch64 without NEON");
    assert_eq!(available(), expected);
    assert_eq!(
        Kernels::available(),
        [vec![Isa::Scalar], expected.clone()].concat()
    );
    for isa in [Isa::Neon, Isa::Dotprod, Isa::I8mm, Isa::Avx2, Isa::Avx512] {
        let supported = expected.contains(&isa);
        assert_eq!(table(isa).is_some(), supported, "{}", isa.name());
        match Kernels::for_isa(isa) {
            Ok(k) => assert!(supported && k.isa == isa, "{}", isa.name()),
            Err(e) => {
                assert!(!supported, "{}", isa.name());
                assert_eq!(e, KernelError::Unsupported(isa.name()));
            }
        }
    }
    // Under qemu-user the emulated model is known: check detection itself.
    let model = std::env::var("QEMU_CPU").unwrap_or_default();
    let by_model: Option<&[Isa]> = match model.as_str() {
        "cortex-a53" | "cortex-a72" => Some(&[Isa::Neon]),
        "cortex-a76" => Some(&[Isa::Neon, Isa::Dotprod]),
        "max" => Some(&[Isa::Neon, Isa::Dotprod, Isa::I8mm]),
        _ => None,
    };
    if let Some(want) = by_model {
        assert_eq!(available(), want, "QEMU_CPU={model}");
    }
    println!(
        "QEMU_CPU={model:?}: dotprod {dotprod}, i8mm {i8mm}; paths {:?}",
        Kernels::available()
    );
    paths("detected_paths_match_cpu_features");
}

#[test]
fn every_type_has_a_kernel_on_every_path() {
    for k in paths("every_type_has_a_kernel_on_every_path") {
        for ty in ALL_TYPES {
            assert!(k.vec_dot(ty).is_ok(), "{} {ty}", k.isa.name());
            assert!(
                k.quantize_act(act_type(ty)).is_ok(),
                "{} {ty}",
                k.isa.name()
            );
        }
        // The 2-3 bit and IQ4 types: tile kernels on every path (their rows are the
        // scalar dots).
        for ty in [Q2_K, Q3_K, IQ4_NL, IQ4_XS] {
            assert!(k.vec_dot(ty).is_ok(), "{} {ty}", k.isa.name());
            assert!(k.tiles(ty, 256).is_some(), "{} {ty} tiles", k.isa.name());
        }
        // As the scalar table: no kernel for types phiq does not multiply.
        for ty in [BF16, IQ2_XS, IQ3_S] {
            assert!(k.vec_dot(ty).is_err(), "{} {ty}", k.isa.name());
        }
    }
}

// ---------------------------------------------------------------- quantizers

/// Rows (of 512 elements: two Q8_K blocks, sixteen Q8_0) that stress the quantizers.
fn quantizer_inputs() -> Vec<(&'static str, Vec<f32>)> {
    let n = 512;
    let mut rng = Rng(7);
    let mut v = vec![
        ("zeros", vec![0.0; n]),
        ("negative zeros", vec![-0.0; n]),
        ("cos", cos_data(n, 0.3)),
    ];
    const SCALES: [f32; 6] = [1e-3, 0.1, 1.0, 10.0, 1e3, 3e30];
    v.push((
        "normal, scale per block",
        (0..n).map(|i| rng.normal() * SCALES[i / 32 % 6]).collect(),
    ));
    // Largest magnitude negative, in every 32 and every 256.
    let mut neg = cos_data(n, 1.0);
    for (b, blk) in neg.chunks_exact_mut(32).enumerate() {
        blk[(7 * b) % 32] = -5.0 - b as f32;
    }
    v.push(("negative extremes", neg));
    // amax 127 (Q8_0: id = 1) and max -127 (Q8_K: iscale = 1): x·id are exact ties.
    let ties: Vec<f32> = (0..n)
        .map(|i| match i % 32 {
            0 => -127.0,
            j => (j as f32 - 16.0) * 7.5 + 0.5,
        })
        .collect();
    v.push(("ties", ties));
    // Equal magnitudes of both signs: the first one sets Q8_K's sign.
    v.push((
        "+-equal",
        (0..n)
            .map(|i| if i % 3 == 0 { 4.0 } else { -4.0 })
            .collect(),
    ));
    v.push((
        "-+equal",
        (0..n)
            .map(|i| if i % 3 == 0 { -4.0 } else { 4.0 })
            .collect(),
    ));
    v.push((
        "one element per block",
        (0..n)
            .map(|i| if i % 32 == 5 { -0.3 } else { 0.0 })
            .collect(),
    ));
    // Subnormal and tiny rows: 1/d or -127/max overflow; scalar code decides.
    v.push((
        "subnormal",
        (0..n).map(|i| (i as f32 - 256.0) * 1e-42).collect(),
    ));
    v.push(("tiny", cos_data(n, 0.0).iter().map(|x| x * 1e-37).collect()));
    // d subnormal, 1/d finite: the vector code's own business.
    v.push((
        "tiny, finite inverse",
        cos_data(n, 0.0).iter().map(|x| x * 5e-37).collect(),
    ));
    v.push((
        "huge",
        cos_data(n, 2.0).iter().map(|x| x * 1.5e38).collect(),
    ));
    // Non-finite values go through the scalar code too.
    let mut bad = cos_data(n, 0.5);
    bad[3] = f32::NAN;
    bad[40] = f32::INFINITY;
    bad[300] = f32::NEG_INFINITY;
    bad[301] = f32::NAN;
    v.push(("nan and inf", bad));
    v
}

#[test]
fn activation_quantizers_are_byte_identical() {
    for k in paths("activation_quantizers_are_byte_identical") {
        for act in [Q8_0, Q8_1, Q8_K, F32] {
            let simd = k.quantize_act(act).unwrap();
            let reference = Kernels::scalar().quantize_act(act).unwrap();
            for (what, x) in quantizer_inputs() {
                for len in [act.block_size(), x.len()] {
                    let x = &x[..len];
                    let bytes = act.row_bytes(len as u64).unwrap() as usize;
                    let mut want = vec![0u8; bytes];
                    reference(x, &mut want);
                    // Aligned and at an odd address.
                    let mut buf = vec![0xa5u8; bytes + 1];
                    simd(x, &mut buf[..bytes]);
                    assert!(
                        buf[..bytes] == want[..],
                        "{} {act} {what} n={len}",
                        k.isa.name()
                    );
                    simd(x, &mut buf[1..]);
                    assert!(
                        buf[1..] == want[..],
                        "{} {act} {what} n={len} misaligned",
                        k.isa.name()
                    );
                }
            }
        }
    }
}

#[test]
fn activation_quantizers_match_on_random_rows() {
    let mut rng = Rng(8);
    for k in paths("activation_quantizers_match_on_random_rows") {
        for act in [Q8_0, Q8_1, Q8_K] {
            for _ in 0..20 {
                let scale = (rng.normal() * 8.0).exp2();
                let x: Vec<f32> = (0..1024).map(|_| rng.normal() * scale).collect();
                let bytes = act.row_bytes(x.len() as u64).unwrap() as usize;
                let (mut want, mut got) = (vec![0u8; bytes], vec![0u8; bytes]);
                Kernels::scalar().quantize_act(act).unwrap()(&x, &mut want);
                k.quantize_act(act).unwrap()(&x, &mut got);
                assert!(got == want, "{} {act} scale {scale}", k.isa.name());
            }
        }
    }
}

// ---------------------------------------------------------------- dot products

/// Byte offsets of the f16 scale fields of a weight block (set to finite values;
/// every other byte of a block is a valid code or 6/8-bit scale, taken at random).
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => panic!("{ty}"),
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn random_weights(ty: GgmlType, nb: usize, rng: &mut Rng) -> Vec<u8> {
    let mut w = rng.bytes(nb * ty.type_size());
    for b in w.chunks_exact_mut(ty.type_size()) {
        for &at in scale_fields(ty) {
            put_f16(b, at, rng.normal() * 0.02);
        }
    }
    w
}

/// An activation block of `act` with codes `qs` (any i8, -128 included) and scale `d`;
/// Q8_1's `s` and Q8_K's `bsums` consistent with them, as the quantizers make them.
fn act_block(act: GgmlType, qs: &[i8], d: f32) -> Vec<u8> {
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    let codes = qs.iter().map(|&q| q as u8);
    match act {
        Q8_0 => [&f16::from_f32(d).to_le_bytes()[..]]
            .concat()
            .into_iter()
            .chain(codes)
            .collect(),
        Q8_1 => [
            f16::from_f32(d).to_le_bytes(),
            f16::from_f32(sum as f32 * d).to_le_bytes(),
        ]
        .concat()
        .into_iter()
        .chain(codes)
        .collect(),
        Q8_K => {
            let bsums = qs.chunks_exact(16).flat_map(|c| {
                let s: i16 = c.iter().map(|&q| i16::from(q)).sum();
                s.to_le_bytes()
            });
            d.to_le_bytes()
                .into_iter()
                .chain(codes)
                .chain(bsums)
                .collect()
        }
        _ => panic!("{act}"),
    }
}

fn random_acts(ty: GgmlType, nb: usize, rng: &mut Rng) -> Vec<u8> {
    let act = act_type(ty);
    (0..nb)
        .flat_map(|_| {
            let qs: Vec<i8> = (0..ty.block_size()).map(|_| rng.next() as i8).collect();
            act_block(act, &qs, rng.unit() * 0.1 + 1e-3)
        })
        .collect()
}

#[test]
fn random_blocks_match_scalar() {
    let mut rng = Rng(9);
    for k in paths("random_blocks_match_scalar") {
        let (mut worst, mut differing, mut compared) = (0f64, 0usize, 0usize);
        for ty in QUANTIZED {
            let counts: &[usize] = if ty.block_size() == 256 {
                &[1, 2, 5]
            } else {
                &[1, 2, 7, 16]
            };
            for &nb in counts {
                for trial in 0..12 {
                    let w = random_weights(ty, nb, &mut rng);
                    let a = random_acts(ty, nb, &mut rng);
                    let got = check_dot(&k, ty, &w, &a, &format!("random nb={nb} #{trial}"));
                    if let Some(tol) = tolerance(k.isa, ty, &w, &a) {
                        let want = scalar_dot(ty, nb * ty.block_size(), &w, &a);
                        let diff = (f64::from(got) - f64::from(want)).abs();
                        worst = worst.max(diff / tol);
                        differing += usize::from(diff > 0.0);
                        compared += 1;
                    }
                }
            }
        }
        if compared > 0 {
            println!(
                "{} K-quants: {differing} of {compared} rows differ from scalar; largest \
                 difference {worst:.3} of the tolerance",
                k.isa.name()
            );
        }
    }
}

/// Weight blocks with every code at its lowest or highest, 6-bit scales and mins
/// at 63 (Q6_K: i8 scales at -128 or 127), scales 1 (Q4_1/Q5_1: minimum -2).
fn extreme_weights(ty: GgmlType) -> Vec<Vec<u8>> {
    let block = |fill: u8, scale_byte: u8| {
        let mut b = vec![fill; ty.type_size()];
        match ty {
            Q4_K | Q5_K => b[4..16].fill(scale_byte),
            Q6_K => b[192..208].fill(scale_byte),
            _ => {}
        }
        for (i, &at) in scale_fields(ty).iter().enumerate() {
            put_f16(&mut b, at, if i == 0 { 1.0 } else { -2.0 });
        }
        b
    };
    match ty {
        // Q8_0 codes -128 (0x80) and 127 (0x7f): products up to 16384, two of
        // which already overflow an i16.
        Q8_0 => vec![block(0x80, 0), block(0x7f, 0)],
        Q6_K => vec![block(0x00, 0x80), block(0xff, 0x7f), block(0xff, 0x80)],
        _ => vec![block(0x00, 0xff), block(0xff, 0xff)],
    }
}

fn extreme_act_codes(len: usize) -> Vec<Vec<i8>> {
    vec![
        vec![-128; len],
        vec![-127; len],
        vec![127; len],
        (0..len)
            .map(|i| if i % 2 == 0 { 127 } else { -128 })
            .collect(),
        (0..len)
            .map(|i| if i % 16 < 8 { -128 } else { 127 })
            .collect(),
        // All negative but varied: integer parts with many significant bits.
        (0..len)
            .map(|i| (-128 + (i * 37 % 61) as i32) as i8)
            .collect(),
    ]
}

#[test]
fn extreme_blocks_match_scalar_and_hand_totals() {
    let mut rng = Rng(12);
    for k in paths("extreme_blocks_match_scalar_and_hand_totals") {
        for ty in QUANTIZED {
            let qk = ty.block_size();
            for (wi, w) in extreme_weights(ty).iter().enumerate() {
                for (ai, qs) in extreme_act_codes(qk).iter().enumerate() {
                    let a = act_block(act_type(ty), qs, 1.0);
                    let what = format!("extreme w#{wi} a#{ai}");
                    check_dot(&k, ty, w, &a, &what);
                    // Many blocks: the same pair repeated, alternating with its negation.
                    let neg: Vec<i8> = qs.iter().map(|&q| q.saturating_neg()).collect();
                    let a2 = [a.clone(), act_block(act_type(ty), &neg, 0.5)].concat();
                    let w2 = [w.clone(), w.clone()].concat();
                    check_dot(&k, ty, &w2.repeat(5), &a2.repeat(5), &format!("{what} x10"));
                    // Large integer parts under full-mantissa scales: the f32 products
                    // round, so the grouping of each block's float term shows.
                    for trial in 0..8 {
                        let mut w = w.clone();
                        for &at in scale_fields(ty) {
                            put_f16(&mut w, at, rng.normal() * 0.02);
                        }
                        let a = act_block(act_type(ty), qs, rng.unit() * 0.1 + 1e-3);
                        check_dot(&k, ty, &w, &a, &format!("{what} scaled #{trial}"));
                    }
                }
            }
        }
        // Totals by hand, so the check does not rest on the scalar code alone.
        let dot = |ty: GgmlType, w: &[u8], a: &[u8]| k.vec_dot(ty).unwrap()(ty.block_size(), w, a);
        let minus128 = |ty: GgmlType| act_block(act_type(ty), &vec![-128; ty.block_size()], 1.0);
        // Q8_0: 32 products of -128·-128 = 524288, which an i16 sum would wrap.
        assert_eq!(
            dot(Q8_0, &extreme_weights(Q8_0)[0], &minus128(Q8_0)),
            524288.0
        );
        // Q4_0 codes -8 against -128.
        assert_eq!(
            dot(Q4_0, &extreme_weights(Q4_0)[0], &minus128(Q4_0)),
            32.0 * 8.0 * 128.0
        );
        // Q5_1 codes 31, m = -2: 32·31·-128 - 2·(32·-128).
        assert_eq!(
            dot(Q5_1, &extreme_weights(Q5_1)[1], &minus128(Q5_1)),
            -32.0 * 31.0 * 128.0 + 2.0 * 32.0 * 128.0
        );
        // Q4_K codes 15, scales and mins 63, d = 1, dmin = -2: each weight is
        // 63·15 + 2·63, times -128, 256 times.
        assert_eq!(
            dot(Q4_K, &extreme_weights(Q4_K)[1], &minus128(Q4_K)),
            -256.0 * (63.0 * 15.0 + 2.0 * 63.0) * 128.0
        );
        // Q6_K codes -32 under scale -128, against -128: -(2^24 · 2) in total.
        assert_eq!(
            dot(Q6_K, &extreme_weights(Q6_K)[0], &minus128(Q6_K)),
            -256.0 * 128.0 * 32.0 * 128.0
        );
    }
}

#[test]
fn zero_blocks_give_zero() {
    for k in paths("zero_blocks_give_zero") {
        for ty in ALL_TYPES {
            let n = 2 * ty.block_size().max(32);
            let bytes = |t: GgmlType| t.row_bytes(n as u64).unwrap() as usize;
            let zero_w = vec![0u8; bytes(ty)];
            let mut zero_a = vec![0u8; bytes(act_type(ty))];
            k.quantize_act(act_type(ty)).unwrap()(&vec![0.0; n], &mut zero_a);
            let mut w = vec![0u8; bytes(ty)];
            quant::quantize_row(ty, &cos_data(n, 0.0), &mut w).unwrap();
            let mut a = vec![0u8; bytes(act_type(ty))];
            k.quantize_act(act_type(ty)).unwrap()(&cos_data(n, 1.0), &mut a);
            for (what, w, a) in [
                ("zero weights", &zero_w, &a),
                ("zero activations", &w, &zero_a),
                ("both zero", &zero_w, &zero_a),
            ] {
                let got = check_dot(&k, ty, w, a, what);
                assert_eq!(got, 0.0, "{} {ty} {what}", k.isa.name());
            }
        }
    }
}

/// Data as the model sees it: rows quantized by the reference quantizers, activations
/// by the path's own quantizer, one block and a Phi-2 row of 2560.
#[test]
fn quantized_rows_match_scalar() {
    let mut rng = Rng(10);
    for k in paths("quantized_rows_match_scalar") {
        for ty in ALL_TYPES {
            for n in [ty.block_size().max(32), 2560] {
                let neg: Vec<f32> = cos_data(n, 2.0)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| if i % 32 == 9 { -6.0 } else { -v })
                    .collect();
                let varied: Vec<f32> = (0..n)
                    .map(|i| rng.normal() * [0.01, 1.0, 100.0][i / 32 % 3])
                    .collect();
                for (what, wx, ax) in [
                    ("cos", cos_data(n, 0.0), cos_data(n, 1.0)),
                    ("negative extremes", cos_data(n, 0.5), neg),
                    (
                        "varied",
                        varied.clone(),
                        varied.iter().rev().copied().collect(),
                    ),
                ] {
                    let mut w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                    quant::quantize_row(ty, &wx, &mut w).unwrap();
                    let act = act_type(ty);
                    let mut a = vec![0u8; act.row_bytes(n as u64).unwrap() as usize];
                    k.quantize_act(act).unwrap()(&ax, &mut a);
                    check_dot(&k, ty, &w, &a, &format!("{what} n={n}"));
                }
            }
        }
    }
}

/// F32/F16 rows of every length class (the eight-lane body and the tail), with
/// subnormal, signed-zero and largest-f16 values.
#[test]
fn float_rows_match_scalar_bit_for_bit() {
    let mut rng = Rng(11);
    for k in paths("float_rows_match_scalar_bit_for_bit") {
        for n in [1, 7, 8, 9, 31, 64, 100, 2560] {
            let x: Vec<f32> = (0..n)
                .map(|i| match i % 13 {
                    0 => -0.0,
                    1 => 65504.0,
                    2 => 6e-8,
                    3 => -1e-40,
                    _ => rng.normal() * 3.0,
                })
                .collect();
            let y: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let w32: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
            let w16: Vec<u8> = x
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect();
            let a: Vec<u8> = bytemuck::cast_slice(&y).to_vec();
            check_dot(&k, F32, &w32, &a, &format!("n={n}"));
            check_dot(&k, F16, &w16, &a, &format!("n={n}"));
        }
    }
}

#[test]
fn short_buffers_panic_instead_of_reading_past_them() {
    for k in paths("short_buffers_panic_instead_of_reading_past_them") {
        for ty in ALL_TYPES {
            let n = 2 * ty.block_size().max(32);
            let w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            let a = vec![0u8; act_type(ty).row_bytes(n as u64).unwrap() as usize];
            let dot = k.vec_dot(ty).unwrap();
            let short_w = std::panic::catch_unwind(|| dot(n, &w[..w.len() - 1], &a));
            let short_a = std::panic::catch_unwind(|| dot(n, &w, &a[..a.len() - 1]));
            assert!(
                short_w.is_err() && short_a.is_err(),
                "{} {ty}",
                k.isa.name()
            );
        }
        for act in [Q8_0, Q8_1, Q8_K] {
            let x = vec![1.0f32; 256];
            let mut out = vec![0u8; act.row_bytes(256).unwrap() as usize + 1];
            let q = k.quantize_act(act).unwrap();
            assert!(std::panic::catch_unwind(move || q(&x, &mut out)).is_err());
        }
    }
}

/// F16 rows of `hd` elements, `stride` bytes apart, `n` of them, from `values`
/// (cycled); the bytes between rows hold NaN, which a kernel reading them would show.
fn cache_rows(values: &[f32], hd: usize, stride: usize, n: usize) -> Vec<u8> {
    let mut out = vec![0xffu8; (n - 1) * stride + 2 * hd];
    for p in 0..n {
        for c in 0..hd {
            put_f16(
                &mut out,
                p * stride + 2 * c,
                values[(p * hd + c) % values.len()],
            );
        }
    }
    out
}

/// What FP16 attention may differ from the widening reference by, per output:
/// `F16_ARITH_ERROR` of `Σ|a·b|` plus the f16 underflow of the smaller factor.
fn attn_tolerance(terms: impl Iterator<Item = (f32, f32)>) -> f64 {
    let (mut mag, mut under) = (0f64, 0f64);
    for (a, b) in terms {
        mag += (f64::from(a) * f64::from(b)).abs();
        under += f64::from(a.abs().max(b.abs())) / f64::from(1u32 << 24);
    }
    crate::kernels::F16_ARITH_ERROR * mag + 64.0 * under
}

/// The FP16 attention kernels (dotprod, i8mm) against the widening reference: key
/// rows at a stride (with poison between them), every head size they take, row
/// counts around the 8-row value blocks, random and extreme values.
#[test]
fn attention_f16_matches_scalar_within_fp16_error() {
    use crate::kernels::scalar::{attn_scores_f16, attn_values_f16};
    let mut rng = Rng(41);
    for k in paths("attention_f16_matches_scalar_within_fp16_error") {
        let Some(a) = k.attn_f16 else {
            assert_eq!(k.isa, Isa::Neon, "{} has FEAT_FP16", k.isa.name());
            continue;
        };
        for &hd in a.head_dims {
            let stride = 2 * hd * 3 + 16;
            for n in [1, 7, 8, 9, 16, 23, 40] {
                let kinds = [
                    ("normal", rng.normals(n * hd)),
                    ("big", vec![65504.0; n * hd]),
                    ("varied", crate::testing::varied(&mut rng, n * hd)),
                ];
                for (kind, data) in kinds {
                    let what = format!("{} hd={hd} n={n} {kind}", k.isa.name());
                    let rows = cache_rows(&data, hd, stride, n);
                    let q = rng.normals(hd);
                    let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
                    (a.scores)(&q, &rows, stride, &mut got);
                    attn_scores_f16(&q, &rows, stride, &mut want);
                    for p in 0..n {
                        let row = (0..hd).map(|c| (q[c], f16_at(&rows, p * stride + 2 * c)));
                        let tol = attn_tolerance(row);
                        let diff = f64::from((got[p] - want[p]).abs());
                        assert!(
                            got[p].is_finite() && diff <= tol,
                            "scores {what} p={p}: {} vs {} (tol {tol})",
                            got[p],
                            want[p]
                        );
                    }
                    let mut w: Vec<f32> = (0..n).map(|_| rng.unit()).collect();
                    if kind == "big" {
                        w.fill(1.0);
                    }
                    let (mut got, mut want) = (vec![0f32; hd], vec![0f32; hd]);
                    (a.values)(&w, &rows, stride, &mut got);
                    attn_values_f16(&w, &rows, stride, &mut want);
                    for c in 0..hd {
                        let col = (0..n).map(|p| (w[p], f16_at(&rows, p * stride + 2 * c)));
                        let tol = attn_tolerance(col);
                        let diff = f64::from((got[c] - want[c]).abs());
                        assert!(
                            got[c].is_finite() && diff <= tol,
                            "values {what} c={c}: {} vs {} (tol {tol})",
                            got[c],
                            want[c]
                        );
                    }
                }
            }
            let rows = cache_rows(&[1.0], hd, stride, 4);
            let short = &rows[..rows.len() - 1];
            let q = vec![1.0; hd];
            assert!(
                std::panic::catch_unwind(|| (a.scores)(&q, short, stride, &mut [0.0; 4])).is_err()
            );
            assert!(
                std::panic::catch_unwind(|| (a.values)(
                    &[1.0; 4],
                    short,
                    stride,
                    &mut vec![0.0; hd]
                ))
                .is_err()
            );
        }
    }
}
