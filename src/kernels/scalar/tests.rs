//! The quantized dot products checked four ways: against exact arithmetic on the
//! dequantized operands, against the f32 dot of the original data (ggml's threshold),
//! integer part by integer part on random and extreme codes, and through the matmul.

use half::f16;

use super::*;
use crate::kernels::matmul::{Weight, matmul};
use crate::kernels::{Kernels, act_type};
use crate::quant::float::test_support::cos_data;

use GgmlType::*;

const WEIGHT_TYPES: [GgmlType; 12] = [
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS,
];

/// Row lengths: one legacy block, one super-block, Phi-2's model and FFN widths.
const LENGTHS: [usize; 4] = [32, 256, 2560, 10240];

/// Deterministic inputs: SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Roughly normal, from the sum of 12 uniforms.
    fn normal(&mut self) -> f32 {
        let unit = |r: &mut Rng| (r.next() >> 40) as f32 / (1u64 << 24) as f32;
        (0..12).map(|_| unit(self)).sum::<f32>() - 6.0
    }

    /// A Q8 code in -127..=127, the range ggml's quantizers produce.
    fn q8(&mut self) -> i8 {
        ((self.next() % 255) as i32 - 127) as i8
    }
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize_row(ty, x, &mut out).unwrap();
    out
}

/// Activations for weights of type `ty`, quantized as the matmul does.
fn quantize_act(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = act_type(ty);
    let mut out = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    Kernels::scalar().quantize_act(act).unwrap()(x, &mut out);
    out
}

fn dot(ty: GgmlType, n: usize, w: &[u8], a: &[u8]) -> f32 {
    vec_dot(ty).unwrap()(n, w, a)
}

fn weight_values(ty: GgmlType, w: &[u8]) -> Vec<f64> {
    let n = w.len() / ty.type_size() * ty.block_size();
    let mut out = vec![0f32; n];
    quant::dequantize_row(ty, w, &mut out).unwrap();
    out.into_iter().map(f64::from).collect()
}

/// Copies of the blocks in `bytes`, whatever their alignment.
fn blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

/// The activations' values `q·d`, by hand: ggml defines no dequantizer for Q8_1 or Q8_K.
fn act_values(act: GgmlType, a: &[u8]) -> Vec<f64> {
    fn values<B: Pod>(a: &[u8], d_and_codes: impl Fn(&B) -> (f32, &[i8])) -> Vec<f64> {
        let blocks: Vec<B> = blocks(a);
        let mut out = Vec::new();
        for b in &blocks {
            let (d, qs) = d_and_codes(b);
            out.extend(qs.iter().map(|&q| f64::from(q) * f64::from(d)));
        }
        out
    }
    match act {
        Q8_0 => values(a, |b: &BlockQ8_0| (b.d.to_f32(), &b.qs[..])),
        Q8_1 => values(a, |b: &BlockQ8_1| (b.d.to_f32(), &b.qs[..])),
        Q8_K => values(a, |b: &BlockQ8_K| (b.d, &b.qs[..])),
        _ => panic!("{act} is not an activation type"),
    }
}

/// Σ w·a and Σ |w|·|a| of the dequantized operands, in f64.
fn dequantized_dot(ty: GgmlType, w: &[u8], a: &[u8]) -> (f64, f64) {
    let (wv, av) = (weight_values(ty, w), act_values(act_type(ty), a));
    assert_eq!(wv.len(), av.len());
    let exact = wv.iter().zip(&av).map(|(x, y)| x * y).sum();
    let magnitude = wv.iter().zip(&av).map(|(x, y)| (x * y).abs()).sum();
    (exact, magnitude)
}

/// Where the Q8_1 kernels depart from the dequantized dot: they apply a block's
/// minimum `m` to `s`, Q8_1's f16 rounding of `d·Σq` (with `d` before its own rounding),
/// where the dequantized dot has `m·d·Σq`. Returns Σ |m|·|s - d·Σq| over the blocks.
fn min_term_slack(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    fn slack<B: Pod>(w: &[u8], a: &[u8], m: impl Fn(&B) -> f16) -> f64 {
        let wb: Vec<B> = blocks(w);
        let ab: Vec<BlockQ8_1> = blocks(a);
        wb.iter()
            .zip(&ab)
            .map(|(x, y)| {
                let sum: i32 = y.qs.iter().map(|&q| i32::from(q)).sum();
                let exact = f64::from(y.d.to_f32()) * f64::from(sum);
                f64::from(m(x).to_f32()).abs() * (f64::from(y.s.to_f32()) - exact).abs()
            })
            .sum()
    }
    match ty {
        Q4_1 => slack(w, a, |b: &BlockQ4_1| b.m),
        Q5_1 => slack(w, a, |b: &BlockQ5_1| b.m),
        _ => 0.0,
    }
}

/// The quantized dot equals the exact dot of the dequantized operands up to f32
/// rounding (1e-5 of Σ|w||a|), plus, for Q8_1, the rounding of its `s`.
fn assert_matches_dequantized(ty: GgmlType, w: &[u8], a: &[u8], what: &str) {
    let n = w.len() / ty.type_size() * ty.block_size();
    let got = f64::from(dot(ty, n, w, a));
    let (exact, magnitude) = dequantized_dot(ty, w, a);
    let tolerance = 1e-5 * magnitude + min_term_slack(ty, w, a);
    assert!(
        (got - exact).abs() <= tolerance,
        "{ty} n={n} {what}: got {got}, exact {exact}, tolerance {tolerance}"
    );
}

/// Gaussian data whose 32-element blocks span five orders of magnitude.
fn varied_scales(rng: &mut Rng, n: usize) -> Vec<f32> {
    const SCALES: [f32; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];
    (0..n).map(|i| rng.normal() * SCALES[i / 32 % 5]).collect()
}

/// Data whose largest magnitude in every 32-element block is negative.
fn negative_extremes(n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = cos_data(n, 2.0).iter().map(|v| -v).collect();
    for (b, block) in x.chunks_exact_mut(32).enumerate() {
        block[(7 * b) % 32] = -5.0;
    }
    x
}

#[test]
fn every_weight_type_has_a_scalar_dot() {
    for ty in WEIGHT_TYPES {
        assert!(Kernels::scalar().vec_dot(ty).is_ok(), "{ty}");
        assert!(Kernels::scalar().quantize_act(act_type(ty)).is_ok(), "{ty}");
    }
}

#[test]
fn quantized_dot_equals_dequantized_dot() {
    let mut rng = Rng(1);
    for ty in WEIGHT_TYPES {
        for n in LENGTHS.into_iter().filter(|n| n % ty.block_size() == 0) {
            let cases = [
                ("cos", cos_data(n, 0.0), cos_data(n, 1.0)),
                (
                    "varied",
                    varied_scales(&mut rng, n),
                    varied_scales(&mut rng, n),
                ),
                (
                    "negative extremes",
                    negative_extremes(n),
                    negative_extremes(n),
                ),
                ("mixed", cos_data(n, 3.0), negative_extremes(n)),
            ];
            for (what, wx, ax) in cases {
                assert_matches_dequantized(ty, &quantize(ty, &wx), &quantize_act(ty, &ax), what);
            }
        }
    }
}

/// ggml's test-quantize-fns: |dot - f32 dot| / n below 0.02 on 4096 cos values.
#[test]
fn quantized_dot_meets_ggmls_dot_product_threshold() {
    const N: usize = 32 * 128;
    let f64_dot = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    };
    let cases = [
        (cos_data(N, 0.0), cos_data(N, 1.0)),
        (cos_data(N, 0.5), negative_extremes(N)),
    ];
    for ty in WEIGHT_TYPES {
        for (wx, ax) in &cases {
            let got = dot(ty, N, &quantize(ty, wx), &quantize_act(ty, ax));
            let err = (f64::from(got) - f64_dot(wx, ax)).abs() / N as f64;
            assert!(err < 0.02, "{ty}: error {err}");
        }
    }
}

/// A block as bytes.
fn bytes_of<B: Pod>(b: &B) -> Vec<u8> {
    bytemuck::bytes_of(b).to_vec()
}

fn q8_0_block(qs: [i8; 32]) -> BlockQ8_0 {
    BlockQ8_0 { d: f16::ONE, qs }
}

fn q8_1_block(qs: [i8; 32]) -> BlockQ8_1 {
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    BlockQ8_1 {
        d: f16::ONE,
        s: f16::from_f32(sum as f32),
        qs,
    }
}

fn q8_k_block(qs: [i8; QK_K]) -> BlockQ8_K {
    let mut bsums = [0i16; 16];
    for (s, q) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| i16::from(v)).sum();
    }
    BlockQ8_K { d: 1.0, qs, bsums }
}

/// An activation block of type `act` with codes `qs` and unit scale.
fn act_block(act: GgmlType, qs: &[i8]) -> Vec<u8> {
    scaled_act_block(act, qs, 1.0)
}

/// An activation block of type `act` with codes `qs` and scale `d` (Q8_0/Q8_1 round
/// it to f16; Q8_1's `s` is `d·Σq` as ggml computes it).
fn scaled_act_block(act: GgmlType, qs: &[i8], d: f32) -> Vec<u8> {
    let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
    match act {
        Q8_0 => bytes_of(&BlockQ8_0 {
            d: f16::from_f32(d),
            ..q8_0_block(qs.try_into().unwrap())
        }),
        Q8_1 => bytes_of(&BlockQ8_1 {
            d: f16::from_f32(d),
            s: f16::from_f32(sum as f32 * d),
            ..q8_1_block(qs.try_into().unwrap())
        }),
        Q8_K => bytes_of(&BlockQ8_K {
            d,
            ..q8_k_block(qs.try_into().unwrap())
        }),
        _ => panic!("{act} is not an activation type"),
    }
}

fn pod_read<B: Pod>(bytes: &[u8]) -> B {
    bytemuck::pod_read_unaligned(bytes)
}

/// A weight block of random codes (and 6-bit or 8-bit sub-block scales) under random
/// finite super-scales of varied size.
fn random_weight_block(ty: GgmlType, rng: &mut Rng) -> Vec<u8> {
    let raw: Vec<u8> = (0..ty.type_size()).map(|_| rng.next() as u8).collect();
    let (d, m) = (
        f16::from_f32(rng.normal() * 0.01),
        f16::from_f32(rng.normal()),
    );
    match ty {
        Q4_0 => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ4_0| b.d = d)),
        Q4_1 => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ4_1| {
            (b.d, b.m) = (d, m)
        })),
        Q5_0 => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ5_0| b.d = d)),
        Q5_1 => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ5_1| {
            (b.d, b.m) = (d, m)
        })),
        Q8_0 => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ8_0| b.d = d)),
        Q4_K => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ4_K| {
            (b.d, b.dmin) = (d, f16::from_f32(m.to_f32() * 0.01))
        })),
        Q5_K => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ5_K| {
            (b.d, b.dmin) = (d, f16::from_f32(m.to_f32() * 0.01))
        })),
        Q6_K => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ6_K| b.d = d)),
        Q2_K => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ2_K| {
            (b.d, b.dmin) = (d, f16::from_f32(m.to_f32() * 0.01))
        })),
        Q3_K => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockQ3_K| b.d = d)),
        IQ4_NL => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockIQ4_NL| b.d = d)),
        IQ4_XS => bytes_of(&with_fields(&pod_read(&raw), |b: &mut BlockIQ4_XS| b.d = d)),
        _ => panic!("{ty} has no quantized dot"),
    }
}

/// A row of `n` random weights and activations, built from integers and exact f32
/// operations only, so it is the same on every IEEE platform.
fn random_operands(ty: GgmlType, n: usize, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
    let (mut w, mut a) = (Vec::new(), Vec::new());
    for _ in 0..n / ty.block_size() {
        w.extend(random_weight_block(ty, rng));
        let qs: Vec<i8> = (0..ty.block_size()).map(|_| rng.q8()).collect();
        a.extend(scaled_act_block(
            act_type(ty),
            &qs,
            rng.normal().abs() * 0.05,
        ));
    }
    (w, a)
}

/// Σ code·a per lane (element index mod 8), the codes read back through the
/// dequantizer, which must give exact small integers.
fn brute_lanes(ty: GgmlType, w: &[u8], a: &[i8]) -> [i64; LANES] {
    let mut lanes = [0i64; LANES];
    for (i, (v, &q)) in weight_values(ty, w).into_iter().zip(a).enumerate() {
        assert_eq!(v.fract(), 0.0, "{ty}: code {v} at {i}");
        lanes[i % LANES] += v as i64 * i64::from(q);
    }
    lanes
}

/// Sets the f16 fields of a block that `edit` names (scales and mins).
fn with_fields<B: Pod>(b: &B, edit: impl Fn(&mut B)) -> B {
    let mut b = *b;
    edit(&mut b);
    b
}

/// Checks the integer part the kernel computes for weight block `w` and activation
/// codes `a` against the sum of dequantized codes times activation codes (computed
/// in i64 from the block with its scales set to 1 and, for the minimum, to 0/1).
/// Returns the kernel's total Σ w·a in codes.
fn check_integer_part(ty: GgmlType, w: &[u8], a: &[i8]) -> i64 {
    let y = act_block(act_type(ty), a);
    let one = f16::ONE;
    let no_min = f16::ZERO;
    match ty {
        Q4_0 => check_block(ty, w, a, &y, |b: &mut BlockQ4_0| b.d = one, q4_0_isum),
        Q4_1 => check_block(
            ty,
            w,
            a,
            &y,
            |b: &mut BlockQ4_1| (b.d, b.m) = (one, no_min),
            q4_1_isum,
        ),
        Q5_0 => check_block(ty, w, a, &y, |b: &mut BlockQ5_0| b.d = one, q5_0_isum),
        Q5_1 => check_block(
            ty,
            w,
            a,
            &y,
            |b: &mut BlockQ5_1| (b.d, b.m) = (one, no_min),
            q5_1_isum,
        ),
        Q8_0 => check_block(ty, w, a, &y, |b: &mut BlockQ8_0| b.d = one, q8_0_isum),
        Q4_K => check_super_block::<BlockQ4_K>(ty, w, a, |b, d, dmin| (b.d, b.dmin) = (d, dmin)),
        Q5_K => check_super_block::<BlockQ5_K>(ty, w, a, |b, d, dmin| (b.d, b.dmin) = (d, dmin)),
        Q6_K => check_super_block::<BlockQ6_K>(ty, w, a, |b, d, _| b.d = d),
        Q2_K => check_super_block::<BlockQ2_K>(ty, w, a, |b, d, dmin| (b.d, b.dmin) = (d, dmin)),
        Q3_K => check_super_block::<BlockQ3_K>(ty, w, a, |b, d, _| b.d = d),
        IQ4_NL => check_block(ty, w, a, &y, |b: &mut BlockIQ4_NL| b.d = one, iq4_nl_isum),
        IQ4_XS => check_super_block::<BlockIQ4_XS>(ty, w, a, |b, d, _| b.d = d),
        _ => panic!("{ty} has no quantized dot"),
    }
}

/// The 32-element case of [`check_integer_part`]: `unit` sets the block's scale to 1
/// (and its minimum to 0), so the dequantizer returns the codes themselves.
fn check_block<B: Pod, A: Pod>(
    ty: GgmlType,
    w: &[u8],
    a: &[i8],
    y: &[u8],
    unit: impl Fn(&mut B),
    isum: fn(&B, &A) -> i32,
) -> i64 {
    let x = with_fields(&pod_read(w), unit);
    let got = isum(&x, &pod_read(y));
    let want: i64 = brute_lanes(ty, &bytes_of(&x), a).iter().sum();
    assert_eq!(i64::from(got), want, "{ty}");
    want
}

/// The K-quant case of [`check_integer_part`]: lanes from the block with d = 1 and
/// dmin = 0 (values `scale·q`), mins from d = 0 and dmin = 1 (values `-min`).
fn check_super_block<B: SuperBlock>(
    ty: GgmlType,
    w: &[u8],
    a: &[i8],
    set: impl Fn(&mut B, f16, f16),
) -> i64 {
    let x: B = pod_read(w);
    let y: BlockQ8_K = pod_read(&act_block(Q8_K, a));
    let got = x.isums(&y);
    let scaled = with_fields(&x, |b| set(b, f16::ONE, f16::ZERO));
    let lanes = brute_lanes(ty, &bytes_of(&scaled), a);
    assert_eq!(got.lanes.map(i64::from), lanes, "{ty} lanes");
    let mins: i64 = if x.dmin().is_some() {
        let minus_mins = with_fields(&x, |b| set(b, f16::ZERO, f16::ONE));
        -brute_lanes(ty, &bytes_of(&minus_mins), a)
            .iter()
            .sum::<i64>()
    } else {
        0
    };
    assert_eq!(i64::from(got.mins), mins, "{ty} mins");
    lanes.iter().sum::<i64>() - mins
}

#[test]
fn integer_parts_are_exact_on_random_codes() {
    let mut rng = Rng(2);
    for ty in WEIGHT_TYPES {
        for _ in 0..200 {
            let w: Vec<u8> = (0..ty.type_size()).map(|_| rng.next() as u8).collect();
            let a: Vec<i8> = (0..ty.block_size()).map(|_| rng.q8()).collect();
            check_integer_part(ty, &w, &a);
        }
    }
}

/// Weight blocks with every code at its lowest and at its highest, and (K-quants)
/// every 6-bit scale and min at 63, Q6_K's scales at -128 and 127.
fn extreme_weight_blocks(ty: GgmlType) -> [Vec<u8>; 2] {
    let one = f16::ONE;
    let m = f16::from_f32(-2.0);
    match ty {
        Q4_0 => [0x00, 0xff].map(|q| {
            bytes_of(&BlockQ4_0 {
                d: one,
                qs: [q; 16],
            })
        }),
        Q4_1 => [0x00, 0xff].map(|q| {
            bytes_of(&BlockQ4_1 {
                d: one,
                m,
                qs: [q; 16],
            })
        }),
        Q5_0 => [0x00, 0xff].map(|q| {
            let qh = [q; 4];
            bytes_of(&BlockQ5_0 {
                d: one,
                qh,
                qs: [q; 16],
            })
        }),
        Q5_1 => [0x00, 0xff].map(|q| {
            let qh = [q; 4];
            bytes_of(&BlockQ5_1 {
                d: one,
                m,
                qh,
                qs: [q; 16],
            })
        }),
        Q8_0 => [-127i8, 127].map(|q| bytes_of(&q8_0_block([q; 32]))),
        Q4_K => [0x00, 0xff].map(|q| {
            let b = BlockQ4_K {
                d: one,
                dmin: one,
                scales: [0xff; 12],
                qs: [q; 128],
            };
            bytes_of(&b)
        }),
        Q5_K => [0x00, 0xff].map(|q| {
            let (scales, qh, qs) = ([0xff; 12], [q; 32], [q; 128]);
            bytes_of(&BlockQ5_K {
                d: one,
                dmin: one,
                scales,
                qh,
                qs,
            })
        }),
        Q6_K => [(0x00, -128i8), (0xff, 127)].map(|(q, sc)| {
            let b = BlockQ6_K {
                ql: [q; 128],
                qh: [q; 64],
                scales: [sc; 16],
                d: one,
            };
            bytes_of(&b)
        }),
        // Codes 0 and 3, scales and mins 15.
        Q2_K => [0x00, 0xff].map(|q| {
            bytes_of(&BlockQ2_K {
                scales: [0xff; 16],
                qs: [q; 64],
                d: one,
                dmin: one,
            })
        }),
        // Codes -4 (no high bit) and 3, scales -32 and 31.
        Q3_K => [(0x00, 0x00), (0xff, 0xff)].map(|(q, sc)| {
            bytes_of(&BlockQ3_K {
                hmask: [q; 32],
                qs: [q; 64],
                scales: [sc; 12],
                d: one,
            })
        }),
        IQ4_NL => [0x00, 0xff].map(|q| {
            bytes_of(&BlockIQ4_NL {
                d: one,
                qs: [q; 16],
            })
        }),
        // Values -127 and 113 under scales -32 and 31.
        IQ4_XS => [(0x00, 0x0000u16, 0x00), (0xff, 0xffff, 0xff)].map(|(q, h, l)| {
            bytes_of(&BlockIQ4_XS {
                d: one,
                scales_h: h,
                scales_l: [l; 4],
                qs: [q; 128],
            })
        }),
        _ => panic!("{ty} has no quantized dot"),
    }
}

/// Activation codes at ±127: all negative, all positive, alternating.
fn extreme_act_codes(len: usize) -> [Vec<i8>; 3] {
    [
        vec![-127; len],
        vec![127; len],
        (0..len)
            .map(|i| if i % 2 == 0 { 127 } else { -127 })
            .collect(),
    ]
}

#[test]
fn extreme_codes_give_exact_integer_parts_and_close_dots() {
    for ty in WEIGHT_TYPES {
        let qk = ty.block_size();
        for w in extreme_weight_blocks(ty) {
            for a in extreme_act_codes(qk) {
                let expected = check_integer_part(ty, &w, &a);
                // Unit scales (Q4_1/Q5_1: m = -2, exact in s) leave only f32 rounding
                // of sums of integers.
                let got = f64::from(dot(ty, qk, &w, &act_block(act_type(ty), &a)));
                let min_term: i64 = match ty {
                    Q4_1 | Q5_1 => -2 * a.iter().map(|&q| i64::from(q)).sum::<i64>(),
                    _ => 0,
                };
                let want = (expected + min_term) as f64;
                assert!(
                    (got - want).abs() <= want.abs() * 1e-6,
                    "{ty}: got {got}, want {want}"
                );
                assert_matches_dequantized(ty, &w, &act_block(act_type(ty), &a), "extreme");
            }
        }
    }
}

/// Totals worked out by hand, so the check does not rest on the dequantizers alone.
#[test]
fn extreme_codes_match_hand_computed_totals() {
    let minus = vec![-127i8; 256];
    let [lowest, highest] = extreme_weight_blocks(Q4_0);
    // 32 codes of -8 (resp. +7) against -127.
    assert_eq!(
        check_integer_part(Q4_0, &lowest, &minus[..32]),
        32 * 8 * 127
    );
    assert_eq!(
        check_integer_part(Q4_0, &highest, &minus[..32]),
        -32 * 7 * 127
    );
    let [_, highest] = extreme_weight_blocks(Q5_0);
    assert_eq!(
        check_integer_part(Q5_0, &highest, &minus[..32]),
        -32 * 15 * 127
    );
    let [_, highest] = extreme_weight_blocks(Q4_K);
    // Each element is 63·15 - 63 = 882.
    assert_eq!(check_integer_part(Q4_K, &highest, &minus), -256 * 882 * 127);
    let [_, highest] = extreme_weight_blocks(Q5_K);
    assert_eq!(
        check_integer_part(Q5_K, &highest, &minus),
        -256 * (63 * 31 - 63) * 127
    );
    let [lowest, _] = extreme_weight_blocks(Q6_K);
    // Scale -128 times code -32, every element.
    assert_eq!(
        check_integer_part(Q6_K, &lowest, &minus),
        -256 * 128 * 32 * 127
    );
    let w = bytes_of(&lowest_q4_k_times_one_block());
    let a = q8_k_block([-127; 256]);
    assert_eq!(
        dot(Q4_K, 256, &w, bytes_of(&a).as_slice()),
        -(256.0 * 63.0 * -127.0)
    );
}

/// Q4_K with every code 0: each value is `-dmin·63`.
fn lowest_q4_k_times_one_block() -> BlockQ4_K {
    BlockQ4_K {
        d: f16::ONE,
        dmin: f16::ONE,
        scales: [0xff; 12],
        qs: [0; 128],
    }
}

#[test]
fn many_extreme_blocks_accumulate_like_one() {
    for ty in WEIGHT_TYPES {
        let qk = ty.block_size();
        let [lowest, highest] = extreme_weight_blocks(ty);
        let [minus, plus, _] = extreme_act_codes(qk);
        let (w1, a1) = (lowest, act_block(act_type(ty), &minus));
        let (w2, a2) = (highest, act_block(act_type(ty), &plus));
        let one = dot(ty, qk, &w1, &a1) + dot(ty, qk, &w2, &a2);
        let blocks = 8;
        let w: Vec<u8> = [w1, w2].concat().repeat(blocks / 2);
        let a: Vec<u8> = [a1, a2].concat().repeat(blocks / 2);
        let got = dot(ty, qk * blocks, &w, &a);
        let want = one * (blocks / 2) as f32;
        assert!(
            (got - want).abs() <= want.abs() * 1e-6,
            "{ty}: {got} vs {want}"
        );
        assert_matches_dequantized(ty, &w, &a, "many extreme blocks");
    }
}

#[test]
fn zero_blocks_give_zero() {
    for ty in WEIGHT_TYPES {
        let n = 2 * ty.block_size();
        let zero_w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        let zero_a = quantize_act(ty, &vec![0.0; n]);
        let (w, a) = (
            quantize(ty, &cos_data(n, 0.0)),
            quantize_act(ty, &cos_data(n, 1.0)),
        );
        assert_eq!(dot(ty, n, &zero_w, &a), 0.0, "{ty}: zero weights");
        assert_eq!(dot(ty, n, &w, &zero_a), 0.0, "{ty}: zero activations");
        assert_eq!(dot(ty, n, &zero_w, &zero_a), 0.0, "{ty}: both zero");
    }
}

#[test]
fn misaligned_rows_give_identical_dots() {
    for ty in WEIGHT_TYPES {
        let n = 512;
        let (w, a) = (
            quantize(ty, &cos_data(n, 0.0)),
            quantize_act(ty, &cos_data(n, 1.0)),
        );
        let shifted = |v: &[u8]| [&[0u8][..], v].concat();
        let (ws, as_) = (shifted(&w), shifted(&a));
        let aligned = dot(ty, n, &w, &a);
        assert_eq!(
            dot(ty, n, &ws[1..], &as_[1..]).to_bits(),
            aligned.to_bits(),
            "{ty}"
        );
    }
}

/// The matmul gives, bit for bit, `vec_dot` of each weight row with each token's
/// activations quantized alone, plus the bias.
#[test]
fn matmul_equals_row_by_row_dots() {
    let (rows, cols) = (37, 512);
    let k = Kernels::scalar();
    for ty in WEIGHT_TYPES {
        let w_rows: Vec<Vec<u8>> = (0..rows)
            .map(|r| quantize(ty, &cos_data(cols, r as f32 * 0.37)))
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
        for n_tokens in [1, 5] {
            let x: Vec<f32> = (0..n_tokens)
                .flat_map(|t| {
                    negative_extremes(cols)
                        .into_iter()
                        .map(move |v| v * (t + 1) as f32)
                })
                .collect();
            for bias in [None, Some(&bias[..])] {
                let mut out = vec![f32::NAN; n_tokens * rows];
                matmul(&k, &w, &x, n_tokens, bias, &mut out).unwrap();
                for (t, xt) in x.chunks_exact(cols).enumerate() {
                    let a = quantize_act(ty, xt);
                    for (r, wr) in w_rows.iter().enumerate() {
                        let want = dot(ty, cols, wr, &a) + bias.map_or(0.0, |b| b[r]);
                        let got = out[t * rows + r];
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty} t={t} r={r}");
                    }
                }
            }
        }
    }
}

/// What ggml's own `ggml_vec_dot_*_generic` (ggml-cpu/quants.c, built by gcc 12 -O2
/// for x86-64, so without FMA contraction) returned for [`random_operands`] of 2560
/// and 10240 elements: the scalar kernels keep ggml's float order, not only its values.
/// (A build that contracts to FMA, e.g. `-march=native` or aarch64, differs from this
/// in the last bits; Rust never contracts.)
const GGML_GENERIC_BITS: [(GgmlType, [u32; 2]); 8] = [
    (Q4_0, [0xc190_72f7, 0x3fe1_8ed9]),
    (Q4_1, [0xc318_e34f, 0x42ff_3644]),
    (Q5_0, [0xc1c6_3f2c, 0x3efb_4874]),
    (Q5_1, [0x4377_4c71, 0xc332_3792]),
    (Q8_0, [0x4107_7fde, 0x426a_0231]),
    (Q4_K, [0x43af_5da8, 0xc4c0_f40f]),
    (Q5_K, [0x438b_28da, 0x431b_d734]),
    (Q6_K, [0x43da_b3aa, 0xc435_9d60]),
];

#[test]
fn results_are_ggmls_generic_bit_for_bit() {
    for (ty, bits) in GGML_GENERIC_BITS {
        let mut rng = Rng(ty.id().into());
        for (n, want) in [2560, 10240].into_iter().zip(bits) {
            let (w, a) = random_operands(ty, n, &mut rng);
            let got = dot(ty, n, &w, &a);
            assert_eq!(
                got.to_bits(),
                want,
                "{ty} n={n}: {got} vs {}",
                f32::from_bits(want)
            );
        }
    }
}
