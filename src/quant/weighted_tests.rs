//! The importance-weighted quantizers (`quantize_row_weighted`) against ggml's
//! `quantize_row_*_impl`, and what the weights must do: change the bytes, and lower the
//! error they weigh.

use super::*;
use crate::testing::Rng;

const ROWS: usize = 8;
const N: usize = 1024;
const WEIGHTED: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Eight rows of 1024 (every path of the fits: an outlier, blocks spanning decades,
/// rounding ties, all-negative, zero blocks, a large offset, tiny values) and one
/// importance vector (zero columns, a zero run of whole sub-blocks, huge columns).
/// The same generator, written in C against libggml-base, gave the hashes below.
fn golden() -> (Vec<f32>, Vec<f32>) {
    const DECADES: [f32; 8] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3];
    let mut rng = Rng(0x1a7e);
    let mut x = Vec::with_capacity(ROWS * N);
    for r in 0..ROWS {
        let mut row = rng.normals(N);
        match r {
            1 => row[(rng.next() % N as u64) as usize] *= 1000.0,
            2 => row
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v *= DECADES[(i / 32) % 8]),
            3 => row.iter_mut().for_each(|v| *v = (*v * 4.0).round() * 0.5),
            4 => row.iter_mut().for_each(|v| *v = -v.abs()),
            5 => row[..N / 2].fill(0.0),
            6 => row.iter_mut().for_each(|v| *v = *v * 1e-3 - 1000.0),
            7 => row.iter_mut().for_each(|v| *v *= 1e-20),
            _ => {}
        }
        x.extend(row);
    }
    let w = (0..N)
        .map(|i| {
            let (a, b) = (rng.unit(), rng.unit());
            match i {
                _ if i % 101 == 0 => 1e6,
                _ if i % 13 == 0 || (256..320).contains(&i) => 0.0,
                _ => a * b * 10.0,
            }
        })
        .collect();
    (x, w)
}

fn quantize(ty: GgmlType, x: &[f32], w: Option<&[f32]>) -> Vec<u8> {
    let row_bytes = ty.row_bytes(N as u64).unwrap() as usize;
    let mut out = vec![0u8; x.len() / N * row_bytes];
    for (xr, q) in x.chunks_exact(N).zip(out.chunks_exact_mut(row_bytes)) {
        quantize_row_weighted(ty, xr, w, q).unwrap();
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hashes of what ggml's `ggml_quantize_chunk` (libggml-base of llama.cpp b10470,
/// x86-64, no FMA contraction) writes for [`golden`] with its importance vector.
#[test]
fn weighted_quantizers_match_ggml_known_answers() {
    let (x, w) = golden();
    let expected = [
        0x06d2_ad81_43ee_5878u64,
        0xdee7_28b2_ad2d_ee84,
        0x3ea2_f626_7b15_e269,
        0x5844_5985_07e5_3fbb,
        0x85d7_5571_f4d0_ef8c,
        0xc7f0_a49d_720e_c454,
        0xf91f_bd55_f2ac_b688,
        0x9f6e_9e75_5bfd_cce0,
        0x73b0_b6f6_6982_c126,
        0x92a1_aeb5_e9cd_eab7,
        0xb897_26a1_aeeb_2243,
    ];
    for (ty, h) in WEIGHTED.into_iter().zip(expected) {
        let got = fnv1a(&quantize(ty, &x, Some(&w)));
        assert_eq!(got, h, "{ty}: {got:#018x}");
    }
}

/// Without weights, the same rows as `llama-quantize` writes them (`ggml_quantize_chunk`
/// with no matrix: the `_ref` quantizers for Q2_K/Q3_K, and for IQ4 the same search as
/// with weights, under `x²`), for the types the known-answer tests elsewhere do not cover.
#[test]
fn unweighted_new_types_match_ggml_known_answers() {
    let (x, _) = golden();
    let expected = [
        (GgmlType::Q2_K, 0x2752_af60_ec51_e854u64),
        (GgmlType::Q3_K, 0x2cdc_9bd9_1c44_4df6),
        (GgmlType::IQ4_NL, 0xa5a5_3eb7_a7eb_a544),
        (GgmlType::IQ4_XS, 0xe7ff_cc45_8447_4a5a),
    ];
    for (ty, h) in expected {
        let got = fnv1a(&quantize(ty, &x, None));
        assert_eq!(got, h, "{ty}: {got:#018x}");
    }
}

fn weighted_error(ty: GgmlType, x: &[f32], q: &[u8], w: &[f32]) -> f64 {
    let row_bytes = q.len() / (x.len() / N);
    let mut back = vec![0f32; N];
    let mut err = 0f64;
    for (xr, qr) in x.chunks_exact(N).zip(q.chunks_exact(row_bytes)) {
        dequantize_row(ty, qr, &mut back).unwrap();
        for ((&a, &b), &wi) in xr.iter().zip(&back).zip(w) {
            err += f64::from(wi) * f64::from(a - b).powi(2);
        }
    }
    err
}

/// On Gaussian rows with uneven importance, the weighted quantizers write other bytes
/// than the reference and have the lower error under the weights they were given:
/// ignoring the weights fails this for every type.
#[test]
fn importance_lowers_the_weighted_error_of_every_type() {
    let mut rng = Rng(7);
    let x = rng.normals(ROWS * N);
    let w: Vec<f32> = (0..N)
        .map(|_| {
            let u = rng.unit();
            u * u * u * 100.0
        })
        .collect();
    for ty in WEIGHTED {
        let plain = quantize(ty, &x, None);
        let weighted = quantize(ty, &x, Some(&w));
        assert_ne!(plain, weighted, "{ty}: the weights changed nothing");
        let (e0, e1) = (
            weighted_error(ty, &x, &plain, &w),
            weighted_error(ty, &x, &weighted, &w),
        );
        assert!(e1 < 0.95 * e0, "{ty}: weighted error {e1} vs {e0} without");
    }
    // Q8_0 has no weighted path in ggml: the weights are ignored.
    assert_eq!(
        quantize(GgmlType::Q8_0, &x, None),
        quantize(GgmlType::Q8_0, &x, Some(&w))
    );
}

#[test]
fn weights_of_the_wrong_length_are_refused() {
    let x = vec![1.0f32; 64];
    let mut out = vec![0u8; 36];
    let err = quantize_row_weighted(GgmlType::Q4_0, &x, Some(&[1.0; 32]), &mut out).unwrap_err();
    assert_eq!(err, QuantError::WeightsLength { n: 64, got: 32 });
}
