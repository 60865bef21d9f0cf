use super::*;
use crate::quant::{GgmlType, nearest_int};

/// Deterministic inputs without libm: SplitMix64.
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
    fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum K {
    Q4,
    Q5,
    Q6,
    Q8,
}

const ALL: [K; 4] = [K::Q4, K::Q5, K::Q6, K::Q8];

fn quantize(k: K, x: &[f32]) -> Vec<u8> {
    let nb = x.len() / QK_K;
    match k {
        K::Q4 => bytes(&mut vec![BlockQ4_K::zeroed(); nb], |y| {
            quantize_row_q4_k_ref(x, y)
        }),
        K::Q5 => bytes(&mut vec![BlockQ5_K::zeroed(); nb], |y| {
            quantize_row_q5_k_ref(x, y)
        }),
        K::Q6 => bytes(&mut vec![BlockQ6_K::zeroed(); nb], |y| {
            quantize_row_q6_k_ref(x, y)
        }),
        K::Q8 => bytes(&mut vec![BlockQ8_K::zeroed(); nb], |y| {
            quantize_row_q8_k_ref(x, y)
        }),
    }
}

fn bytes<B: bytemuck::Pod>(y: &mut [B], f: impl FnOnce(&mut [B])) -> Vec<u8> {
    f(y);
    bytemuck::cast_slice(y).to_vec()
}

fn dequantize(k: K, q: &[u8]) -> Vec<f32> {
    let mut y = vec![0.0; q.len() / size_of_block(k) * QK_K];
    match k {
        K::Q4 => dequantize_row_q4_k(&blocks(q), &mut y),
        K::Q5 => dequantize_row_q5_k(&blocks(q), &mut y),
        K::Q6 => dequantize_row_q6_k(&blocks(q), &mut y),
        K::Q8 => dequantize_row_q8_k(&blocks(q), &mut y),
    }
    y
}

fn blocks<B: bytemuck::Pod>(q: &[u8]) -> Vec<B> {
    q.chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

fn size_of_block(k: K) -> usize {
    match k {
        K::Q4 => size_of::<BlockQ4_K>(),
        K::Q5 => size_of::<BlockQ5_K>(),
        K::Q6 => size_of::<BlockQ6_K>(),
        K::Q8 => size_of::<BlockQ8_K>(),
    }
}

fn round_trip(k: K, x: &[f32]) -> Vec<f32> {
    dequantize(k, &quantize(k, x))
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    (s / a.len() as f64).sqrt()
}

use bytemuck::Zeroable;

#[test]
fn block_sizes_match_ggml() {
    for (k, ty) in ALL.iter().zip([
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
    ]) {
        assert_eq!(size_of_block(*k), ty.type_size(), "{ty}");
        assert_eq!(ty.block_size(), QK_K);
    }
}

#[test]
fn nearest_int_is_ties_to_even_in_ggmls_range() {
    let mut rng = Rng(1);
    let specials = [
        0.5f32,
        1.5,
        2.5,
        -0.5,
        -1.5,
        -2.5,
        4_194_303.0,
        -4_194_303.0,
        -0.0,
        0.49999997,
    ];
    let randoms = (0..100_000).map(|_| (rng.unit() - 0.5) * 8.0e6);
    let halves = (-2000..2000).map(|i| i as f32 + 0.5);
    for v in specials.into_iter().chain(randoms).chain(halves) {
        assert_eq!(ggml_nearest_int(v), nearest_int(v), "{v}");
    }
}

#[test]
fn nearest_int_outside_range_reproduces_ggmls_bits() {
    // x + 1.5·2²³ leaves the binade where the mantissa is the integer.
    assert_eq!(ggml_nearest_int(f32::INFINITY), -0x40_0000);
    assert_eq!(ggml_nearest_int(f32::NEG_INFINITY), -0x40_0000);
    assert_eq!(ggml_nearest_int(f32::NAN), 0);
    assert_eq!(ggml_nearest_int(8_388_608.0), -0x20_0000);
}

/// ggml's test-quantize-fns data and metric (`sqrt(Σd²)/n`, not an RMSE), plus a
/// true RMSE bound taken from this implementation with ~10% headroom.
#[test]
fn round_trip_error_meets_ggml_thresholds() {
    let n = 32 * 128;
    for (k, true_rmse) in [(K::Q4, 0.07), (K::Q5, 0.038), (K::Q6, 0.019)] {
        for offset in [0.0f32, 1.0, 7.5] {
            let x: Vec<f32> = (0..n)
                .map(|i| (0.1 + 2.0 * f64::from((i as f32 + offset).cos())) as f32)
                .collect();
            let y = round_trip(k, &x);
            let ggml_metric = rmse(&x, &y) * (n as f64).sqrt() / n as f64;
            assert!(ggml_metric < 0.002, "{k:?} offset {offset}: {ggml_metric}");
            assert!(
                rmse(&x, &y) < true_rmse,
                "{k:?} offset {offset}: {}",
                rmse(&x, &y)
            );
        }
    }
}

#[test]
fn gaussian_rows_have_bounded_relative_error() {
    let mut rng = Rng(2);
    for (k, rel) in [(K::Q4, 0.12), (K::Q5, 0.06), (K::Q6, 0.03), (K::Q8, 0.01)] {
        for scale in [1e-3f32, 1.0, 300.0] {
            let x: Vec<f32> = rng.normals(8 * QK_K).iter().map(|v| v * scale).collect();
            let e = rmse(&x, &round_trip(k, &x)) / f64::from(scale);
            assert!(e < rel, "{k:?} scale {scale}: relative RMSE {e}");
        }
    }
}

#[test]
fn all_zero_super_blocks_are_all_zero_bytes() {
    for k in ALL {
        let x = vec![0.0f32; 2 * QK_K];
        let q = quantize(k, &x);
        assert!(q.iter().all(|&b| b == 0), "{k:?}");
        // Q6_K yields -0.0: 0·0·(0 - 32).
        assert!(dequantize(k, &q).iter().all(|&v| v == 0.0), "{k:?}");
    }
}

#[test]
fn zero_sub_blocks_next_to_data_stay_exact_zeros() {
    let mut rng = Rng(3);
    for k in ALL {
        let mut x = rng.normals(QK_K);
        x[32..64].fill(0.0);
        let y = round_trip(k, &x);
        assert!(y.iter().all(|v| v.is_finite()), "{k:?}");
        // Q4_K/Q5_K subtract a per-sub-block min, which is 0 for an all-zero one.
        assert!(
            y[32..64].iter().all(|&v| v == 0.0),
            "{k:?}: {:?}",
            &y[32..64]
        );
    }
}

#[test]
fn negative_extremes_keep_their_sign_and_magnitude() {
    let mut rng = Rng(4);
    for k in ALL {
        let mut x: Vec<f32> = rng.normals(QK_K).iter().map(|v| -v.abs()).collect();
        x[77] = -40.0;
        let y = round_trip(k, &x);
        assert!((y[77] + 40.0).abs() < 40.0 * 0.01, "{k:?}: {}", y[77]);
        assert!(y.iter().all(|&v| v <= 0.5), "{k:?}");
        let mut x = rng.normals(QK_K);
        x[200] = -1000.0;
        let y = round_trip(k, &x);
        assert!((y[200] + 1000.0).abs() < 1000.0 * 0.01, "{k:?}: {}", y[200]);
    }
}

#[test]
fn extreme_value_is_reproduced_closely() {
    // The largest magnitude sets the super-block scale; ggml's fits keep it within
    // about half a quantization step.
    let mut rng = Rng(5);
    for (k, steps) in [(K::Q4, 15.0), (K::Q5, 31.0), (K::Q6, 32.0), (K::Q8, 127.0)] {
        let mut x = rng.normals(QK_K);
        x[3] = 9.0;
        let y = round_trip(k, &x);
        assert!((y[3] - 9.0).abs() <= 9.0 / steps, "{k:?}: {}", y[3]);
    }
}

#[test]
fn subnormal_rows_do_not_produce_nan() {
    let mut rng = Rng(6);
    for k in ALL {
        let x: Vec<f32> = (0..QK_K)
            .map(|_| f32::from_bits((rng.next() as u32) & 0x807f_ffff))
            .collect();
        let y = round_trip(k, &x);
        for (a, b) in x.iter().zip(&y) {
            assert!(
                b.is_finite() && (a - b).abs() <= 2.0 * f32::MIN_POSITIVE,
                "{k:?}: {a} -> {b}"
            );
        }
    }
}

#[test]
fn subnormal_scale_overflow_matches_ggml() {
    // 63 / (subnormal scale) is +inf; ggml's nearest_int maps inf to -2²², whose low
    // byte is 0: every stored 6-bit scale is 0, not 63.
    let x = vec![f32::from_bits(7); QK_K];
    let mut y = [BlockQ4_K::zeroed()];
    quantize_row_q4_k_ref(&x, &mut y);
    assert_eq!(y[0].scales, [0; K_SCALE_SIZE]);
    assert_eq!(y[0].d.to_bits(), 0);
}

#[test]
fn tiny_scales_use_f16_subnormals() {
    let mut rng = Rng(7);
    // σ chosen so that d is an f16 subnormal (< 6.1e-5 and ≥ 6e-8): about σ/118 for
    // Q4_K, σ/236 for Q5_K, σ/1000 for Q6_K. Coarse, but not flushed to zero.
    for (k, sigma, rel) in [
        (K::Q4, 2e-5f32, 0.1),
        (K::Q5, 2e-5, 0.06),
        (K::Q6, 3e-4, 0.07),
    ] {
        let x: Vec<f32> = rng.normals(QK_K).iter().map(|v| v * sigma).collect();
        let y = round_trip(k, &x);
        let e = rmse(&x, &y) / f64::from(sigma);
        assert!(e < rel, "{k:?}: relative RMSE {e}");
    }
}

#[test]
fn scales_near_f16_max_stay_finite() {
    let mut rng = Rng(8);
    // Largest per-sub-block scale stays below 65504 · 63 / 15 for Q4_K.
    for k in [K::Q4, K::Q5, K::Q6] {
        let x: Vec<f32> = rng.normals(QK_K).iter().map(|v| v * 4.0e4).collect();
        let y = round_trip(k, &x);
        let e = rmse(&x, &y) / 4.0e4;
        assert!(y.iter().all(|v| v.is_finite()) && e < 0.12, "{k:?}: {e}");
    }
}

#[test]
fn scales_beyond_f16_store_infinity_like_ggml() {
    for k in [K::Q4, K::Q5, K::Q6] {
        // Large enough for d > 65504, small enough that Σx² stays finite.
        let x: Vec<f32> = (0..QK_K).map(|i| (i as f32 - 128.0) * 1e7).collect();
        let q = quantize(k, &x);
        let d = match k {
            K::Q4 => blocks::<BlockQ4_K>(&q)[0].d,
            K::Q5 => blocks::<BlockQ5_K>(&q)[0].d,
            _ => blocks::<BlockQ6_K>(&q)[0].d,
        };
        assert!(d.is_infinite(), "{k:?}: {d}");
    }
}

#[test]
fn max_magnitude_rows_do_not_panic() {
    for k in ALL {
        for v in [f32::MAX, -f32::MAX] {
            let mut x = vec![v; QK_K];
            x[1] = -v;
            x[2] = 0.0;
            let _ = round_trip(k, &x);
        }
    }
}

#[test]
fn q8_k_bsums_are_sums_of_qs() {
    let mut rng = Rng(9);
    let x: Vec<f32> = rng.normals(4 * QK_K).iter().map(|v| v * 3.0).collect();
    let mut y = vec![BlockQ8_K::zeroed(); 4];
    quantize_row_q8_k_ref(&x, &mut y);
    for (b, xb) in y.iter().zip(x.chunks_exact(QK_K)) {
        for (s, q) in b.bsums.iter().zip(b.qs.chunks_exact(16)) {
            assert_eq!(i32::from(*s), q.iter().map(|&v| i32::from(v)).sum::<i32>());
        }
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert_eq!(b.qs.iter().map(|q| q.unsigned_abs()).max(), Some(127));
        assert!((b.d.abs() - amax / 127.0).abs() <= amax / 127.0 * 1e-6);
    }
}

#[test]
fn q8_k_scale_sign_follows_the_extreme() {
    let mut x = vec![0.25f32; QK_K];
    x[10] = -2.0;
    let mut y = [BlockQ8_K::zeroed()];
    quantize_row_q8_k_ref(&x, &mut y);
    assert!(y[0].d > 0.0);
    assert_eq!(y[0].qs[10], -127);
    x[10] = 2.0;
    quantize_row_q8_k_ref(&x, &mut y);
    assert!(y[0].d < 0.0);
    assert_eq!(y[0].qs[10], -127);
}

#[test]
fn scale_packing_round_trips_every_6_bit_value() {
    for base in 0..64u8 {
        let ls: [u8; 8] = std::array::from_fn(|j| (base + 7 * j as u8) % 64);
        let lm: [u8; 8] = std::array::from_fn(|j| (base + 13 * j as u8 + 5) % 64);
        let scales = ls.map(f32::from);
        let mins = lm.map(f32::from);
        // max 63 makes inv = 1, so the levels are the values themselves.
        let packed = pack_scales_mins(&scales, &mins, 63.0, 63.0);
        for j in 0..8 {
            assert_eq!(
                get_scale_min_k4(j, &packed),
                (ls[j], lm[j]),
                "base {base} j {j}"
            );
        }
    }
}

#[test]
fn dequantization_of_hand_made_blocks() {
    let mut b = BlockQ4_K::zeroed();
    b.d = half::f16::from_f32(0.5);
    b.dmin = half::f16::from_f32(0.25);
    b.scales[0] = 2; // sub-block 0: scale 2, min 3
    b.scales[4] = 3;
    b.scales[8] = 0x45; // sub-block 4: scale 5, min 4
    b.qs[0] = 0x9F; // element 0 = 15, element 32 = 9
    b.qs[64] = 0x07; // element 128 = 7
    let mut y = vec![0.0; QK_K];
    dequantize_row_q4_k(&[b], &mut y);
    assert_eq!(y[0], 0.5 * 2.0 * 15.0 - 0.25 * 3.0);
    assert_eq!(y[32], 0.0);
    assert_eq!(y[128], 0.5 * 5.0 * 7.0 - 0.25 * 4.0);

    let mut b = BlockQ6_K::zeroed();
    b.d = half::f16::from_f32(0.125);
    b.scales = [-3; 16];
    b.ql[0] = 0x21; // element 0 low nibble 1, element 64 low nibble 2
    b.qh[0] = 0b10_00_00_11; // element 0 high bits 3, element 96 high bits 2
    let mut y = vec![0.0; QK_K];
    dequantize_row_q6_k(&[b], &mut y);
    assert_eq!(y[0], 0.125 * -3.0 * (49.0 - 32.0));
    assert_eq!(y[64], 0.125 * -3.0 * (2.0 - 32.0));
    assert_eq!(y[96], 0.125 * -3.0 * (32.0 - 32.0));
}

/// Rows exercising every path of the reference quantizers, reproducible without libm.
fn golden_input() -> Vec<f32> {
    const DECADES: [f32; 8] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3];
    let mut rng = Rng(0x9e11);
    let mut x = Vec::new();
    for kind in 0..8 {
        for _ in 0..4 {
            let mut b = rng.normals(QK_K);
            match kind {
                1 => b[(rng.next() % QK_K as u64) as usize] *= 1000.0,
                2 => {
                    for v in &mut b {
                        *v = f32::from_bits(rng.next() as u32 & 0x807f_ffff);
                    }
                }
                // A large offset with a tiny spread: ggml's nearest_int leaves its range.
                3 => b.iter_mut().for_each(|v| *v = *v * 1e-3 - 1000.0),
                4 => b
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v *= DECADES[i / 32]),
                // Multiples of 0.5 hit rounding ties.
                5 => b.iter_mut().for_each(|v| *v = (*v * 4.0).round() * 0.5),
                6 => b.iter_mut().for_each(|v| *v = -v.abs()),
                7 => b[..128].fill(0.0),
                _ => {}
            }
            x.extend(b);
        }
    }
    x
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hashes of the bytes ggml's own `quantize_row_*_K_ref` (x86-64, no FMA contraction)
/// writes for [`golden_input`]; the full comparison against ggml is a local harness.
#[test]
fn quantizers_match_ggml_known_answers() {
    let x = golden_input();
    let expected = [
        (K::Q4, 0xcb5a_ca3d_5242_3bc1u64),
        (K::Q5, 0x355c_a5a6_2bf3_07f9),
        (K::Q6, 0x3141_0dc7_2240_5c64),
        (K::Q8, 0x998d_7236_d40b_4e44),
    ];
    for (k, h) in expected {
        assert_eq!(
            fnv1a(&quantize(k, &x)),
            h,
            "{k:?}: {:#018x}",
            fnv1a(&quantize(k, &x))
        );
    }
}

/// The same known-answer check for the formats added later, through
/// `quantize_row` (one row of the whole input): hashes of `ggml_quantize_chunk`'s
/// output without an importance matrix, which is what `llama-quantize` writes (the
/// `_ref` quantizers for Q2_K and Q3_K; IQ4's search under `x²`).
#[test]
fn low_bit_quantizers_match_ggml_known_answers() {
    let x = golden_input();
    let expected = [
        (GgmlType::Q2_K, 0x2687_97ae_3cc1_18ffu64),
        (GgmlType::Q3_K, 0xb222_4742_75b3_ab90),
        (GgmlType::IQ4_NL, 0xfebb_0746_e81c_cb10),
        (GgmlType::IQ4_XS, 0x3a5e_a136_f7fe_a8ef),
    ];
    for (ty, h) in expected {
        let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        crate::quant::quantize_row(ty, &x, &mut out).unwrap();
        assert_eq!(fnv1a(&out), h, "{ty}: {:#018x}", fnv1a(&out));
    }
}
