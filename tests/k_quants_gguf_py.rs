//! phiq's K-quant dequantizers against gguf-py (llama.cpp's own Python GGUF library),
//! bit for bit, over blocks written by phiq's quantizers from varied rows and over
//! random bytes. Any NaN equals any NaN, as in quant_gguf_py.rs: on x86-64 even the
//! payloads agree, but which operand's payload survives is up to the CPU and compiler.
//!
//! gguf-py's Q2_K..Q6_K, IQ4_NL and IQ4_XS dequantizers perform the same f32
//! operations in the same order as ggml's (`d·sc`, `dmin·m`, then `d·q - dm`; Q3_K,
//! Q6_K and IQ4_XS `(d·sc)·q`; IQ4_NL `d·v[q]`), so no case is excluded. gguf-py cannot
//! quantize these types; byte identity of phiq's quantizers with ggml's C code is
//! checked by the known-answer unit tests in src/quant and against llama-quantize's
//! own rows in tests/llama_types.rs.

mod common;

use common::{Rng, read_f32, run_py};
use phiq::quant::{GgmlType, QK_K, dequantize_row, quantize_row};

const KINDS: usize = 14;
/// Super-blocks per input kind: 14 kinds give 1120 super-blocks per type.
const BLOCKS_PER_KIND: usize = 80;
/// Blocks of random bytes per type, most with a drawn f16 scale.
const RANDOM_BLOCKS: usize = 2000;

fn normals(rng: &mut Rng, scale: f32) -> Vec<f32> {
    (0..QK_K).map(|_| rng.normal() * scale).collect()
}

fn decade(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    10f32.powf(rng.range(lo, hi))
}

fn super_block(rng: &mut Rng, kind: usize) -> Vec<f32> {
    let s = decade(rng, -3.0, 3.0);
    let mut x = normals(rng, s);
    match kind {
        1 => {
            for _ in 0..1 + rng.below(4) {
                x[rng.below(QK_K)] *= 1000.0;
            }
        }
        2 => x.fill(0.0),
        3 => x.iter_mut().for_each(|v| {
            *v = f32::from_bits(rng.next_u64() as u32 & 0x807f_ffff);
        }),
        // d overflows f16 beyond about 1e6; Σx² overflows f32 beyond about 1e18.
        4 => {
            let h = decade(rng, 3.0, 30.0);
            x.iter_mut().for_each(|v| *v *= h);
        }
        5 => {
            let t = decade(rng, -38.0, -3.0);
            x.iter_mut().for_each(|v| *v *= t);
        }
        6 => x.iter_mut().for_each(|v| *v = -v.abs()),
        7 => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            x[rng.below(QK_K)] = -amax * rng.range(1.0, 3.0);
        }
        // A large offset with a tiny spread drives ggml's nearest_int out of range.
        8 => {
            let off = decade(rng, 0.0, 8.0);
            let spread = off * decade(rng, -8.0, 0.0);
            x.iter_mut().for_each(|v| *v = -off + *v / s * spread);
        }
        9 => {
            let zero = rng.below(8);
            for (j, c) in x.chunks_mut(32).enumerate() {
                let m = if j == zero {
                    0.0
                } else {
                    decade(rng, -6.0, 6.0)
                };
                c.iter_mut().for_each(|v| *v *= m);
            }
        }
        10 => x.iter_mut().for_each(|v| {
            if rng.below(8) != 0 {
                *v = 0.0;
            }
        }),
        11 => x
            .iter_mut()
            .for_each(|v| *v = (rng.below(65) as f32 - 32.0) * 0.5),
        12 => x.iter_mut().for_each(|v| {
            loop {
                let r = f32::from_bits(rng.next_u64() as u32);
                if r.is_finite() {
                    *v = r;
                    break;
                }
            }
        }),
        13 => {
            let offset = rng.range(0.0, 100.0);
            x.iter_mut().enumerate().for_each(|(i, v)| {
                *v = 0.1 + 2.0 * (i as f32 + offset).cos();
            });
        }
        _ => {}
    }
    x
}

/// Byte offsets of a block's f16 scales (d, and dmin or, for IQ4_XS, other bits).
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q6_K => &[208],
        GgmlType::Q3_K => &[108],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::IQ4_NL => &[0],
        _ => &[0, 2],
    }
}

fn quantized_blocks(ty: GgmlType, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(KINDS * BLOCKS_PER_KIND * QK_K);
    for _ in 0..BLOCKS_PER_KIND {
        for kind in 0..KINDS {
            x.extend(super_block(&mut rng, kind));
        }
    }
    let mut q = vec![0u8; x.len() / ty.block_size() * ty.type_size()];
    quantize_row(ty, &x, &mut q).unwrap();
    q
}

/// A random f16: mostly normal, often subnormal or zero, sometimes inf or NaN.
fn random_f16(rng: &mut Rng) -> [u8; 2] {
    let sign = (rng.below(2) as u16) << 15;
    let man = rng.below(0x400) as u16;
    let bits = sign
        | match rng.below(8) {
            0 => man.max(1),
            1 => 0,
            2 => 0x7c00 | man,
            _ => ((1 + rng.below(30) as u16) << 10) | man,
        };
    bits.to_le_bytes()
}

/// Random blocks; three in four get drawn f16 scales ([`scale_offsets`]), so subnormal
/// and special scales are covered.
fn random_blocks(ty: GgmlType, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let size = ty.type_size();
    let mut bytes = rng.bytes(RANDOM_BLOCKS * size);
    for b in bytes.chunks_exact_mut(size).take(RANDOM_BLOCKS * 3 / 4) {
        for &at in scale_offsets(ty) {
            b[at..at + 2].copy_from_slice(&random_f16(&mut rng));
        }
    }
    bytes
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_dequantize_against_gguf_py(ty: GgmlType, seed: u64) {
    let mut data = quantized_blocks(ty, seed);
    data.extend(random_blocks(ty, seed ^ 0x5eed));

    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.bin"), dir.path().join("out.f32"));
    std::fs::write(&src, &data).unwrap();
    run_py("quant_ref.py", &[&"dequantize", &ty.name(), &src, &dst]);
    let theirs = read_f32(&dst);

    let (ts, qk) = (ty.type_size(), ty.block_size());
    let mut ours = vec![0f32; data.len() / ts * qk];
    dequantize_row(ty, &data, &mut ours).unwrap();
    assert_eq!(ours.len(), theirs.len(), "{ty}: dequantized length");
    let bad: Vec<String> = (0..ours.len())
        .filter(|&i| !same_f32(ours[i], theirs[i]))
        .take(3)
        .map(|i| {
            let blk = &data[i / qk * ts..(i / qk + 1) * ts];
            format!(
                "element {i}: phiq {} gguf-py {} in block {blk:02x?}",
                ours[i], theirs[i]
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{ty}: dequantization differs:\n{}",
        bad.join("\n")
    );
    // Keep the inputs honest: finite outputs must dominate, and NaN must occur.
    let nan = ours.iter().filter(|v| v.is_nan()).count();
    assert!(nan > 0 && nan * 4 < ours.len(), "{ty}: {nan} NaN outputs");
}

#[test]
fn q4_k_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::Q4_K, 41);
}

#[test]
fn q5_k_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::Q5_K, 51);
}

#[test]
fn q6_k_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::Q6_K, 61);
}

#[test]
fn q2_k_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::Q2_K, 21);
}

#[test]
fn q3_k_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::Q3_K, 31);
}

#[test]
fn iq4_nl_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::IQ4_NL, 20);
}

#[test]
fn iq4_xs_dequantization_matches_gguf_py() {
    check_dequantize_against_gguf_py(GgmlType::IQ4_XS, 23);
}
