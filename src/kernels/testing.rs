//! What every kernel test shares: the paths under test, quantized inputs, the
//! extreme blocks, and the comparison against the scalar reference with its stated
//! tolerance. Every test runs every path this CPU has, like rten's `all_gemms()`.
//!
//! Tolerance. A SIMD kernel computes the same exact i32 block sums as the scalar one
//! and scales and adds them in f32 in another order (and with FMA). Each side is
//! then within a few units of f32 rounding (2⁻²⁴) of every term it adds, summed:
//! |simd - scalar| ≤ 1e-5 · Σ|terms| over a row, the terms being w·a per element (for
//! Q4_1/Q5_1 and Q4_K/Q5_K the scale part and the min part of w separately, since
//! the kernels sum those apart). 1e-5 leaves room for rows of 10240 elements summed
//! in one running f32 sum by the scalar reference. Integer exactness is checked bit
//! for bit: with unit scales and Σ|terms| < 2²⁴ every value either side forms is an
//! integer f32 holds exactly, so any difference in the integer parts (a saturation,
//! a lost bit) shows as a different result.

use bytemuck::Pod;
use half::f16;

pub(crate) use crate::testing::*;

use super::{Isa, Kernels, TileKernel, act_type, scalar, tile};
use crate::quant::{self, *};

use GgmlType::*;

/// The quantized weight types every path computes.
pub(crate) const WEIGHT_TYPES: [GgmlType; 12] = [
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS,
];

/// Relative tolerance of a SIMD result against the scalar one, of Σ|terms|.
pub(crate) const TOLERANCE: f64 = 1e-5;

/// The SIMD paths this CPU runs, each as its table. A path of this architecture the
/// CPU lacks is announced on stderr, loudly; a path `PHIQ_REQUIRE_PATHS` names (CI
/// sets it, per machine and per emulated CPU) that is missing fails the test.
pub(crate) fn paths() -> Vec<Kernels> {
    let available = Kernels::available();
    let required = std::env::var("PHIQ_REQUIRE_PATHS").unwrap_or_default();
    for name in required.split(',').filter(|s| !s.is_empty()) {
        let isa = Isa::from_name(name).unwrap_or_else(|| panic!("PHIQ_REQUIRE_PATHS: {name}?"));
        assert!(
            available.contains(&isa),
            "PHIQ_REQUIRE_PATHS names {name}, which this CPU cannot run"
        );
    }
    let arch: &[Isa] = if cfg!(target_arch = "x86_64") {
        &[Isa::Avx2, Isa::Avx512]
    } else if cfg!(target_arch = "aarch64") {
        &[Isa::Neon, Isa::Dotprod, Isa::I8mm]
    } else {
        &[]
    };
    for isa in arch.iter().filter(|i| !available.contains(i)) {
        eprintln!(
            "*** WARNING: this CPU cannot run the {} path: its tests are SKIPPED ***",
            isa.name()
        );
    }
    available
        .into_iter()
        .filter(|i| *i != Isa::Scalar)
        .map(|i| Kernels::for_isa(i).unwrap())
        .collect()
}

pub(crate) fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quant::quantize_row(ty, x, &mut out).unwrap();
    out
}

/// Activations for `ty` weights, quantized by the scalar reference (f32 as bytes).
pub(crate) fn quantize_act(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let act = act_type(ty);
    let mut out = vec![0u8; act.row_bytes(x.len() as u64).unwrap() as usize];
    Kernels::scalar().quantize_act(act).unwrap()(x, &mut out);
    out
}

pub(crate) fn blocks<B: Pod>(bytes: &[u8]) -> Vec<B> {
    bytes
        .chunks_exact(size_of::<B>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

pub(crate) fn to_bytes<B: Pod>(blocks: &[B]) -> Vec<u8> {
    bytemuck::cast_slice(blocks).to_vec()
}

/// A copy of the weight row with `edit` applied to every block.
pub(crate) fn edited<B: Pod>(w: &[u8], edit: impl Fn(&mut B)) -> Vec<u8> {
    let mut b: Vec<B> = blocks(w);
    b.iter_mut().for_each(edit);
    to_bytes(&b)
}

pub(crate) fn dequantize(ty: GgmlType, w: &[u8]) -> Vec<f64> {
    let n = row_len(ty, w);
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
        Q2_K => (
            edited(w, |b: &mut BlockQ2_K| b.dmin = z),
            edited(w, |b: &mut BlockQ2_K| b.d = z),
        ),
        _ => return (dequantize(ty, w), Vec::new()),
    };
    (dequantize(ty, &scale), dequantize(ty, &min))
}

/// Activation values `q·d` (f32 activations as they are).
pub(crate) fn act_values(act: GgmlType, a: &[u8]) -> Vec<f64> {
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
pub(crate) fn magnitude(ty: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    let (scale, min) = weight_parts(ty, w);
    let av = act_values(act_type(ty), a);
    assert_eq!(scale.len(), av.len());
    let s: f64 = scale.iter().zip(&av).map(|(x, y)| (x * y).abs()).sum();
    let m: f64 = min.iter().zip(&av).map(|(x, y)| (x * y).abs()).sum();
    // Q8_1's s is d·Σq rounded to f16: at most a few parts in 1e3 off Σ|m·a|.
    s + 1.01 * m
}

pub(crate) fn row_len(ty: GgmlType, w: &[u8]) -> usize {
    w.len() / ty.type_size() * ty.block_size()
}

/// What a dot of F16 row `w` with f32 activations `x` may differ from the scalar
/// dot by: [`TOLERANCE`] of `Σ|w·x|`, or FP16 arithmetic's error (see
/// [`crate::kernels::F16_ARITH_ERROR`]) for a kernel that computes in it.
pub(crate) fn f16_tolerance(w: &[u8], x: &[f32], f16_arith: bool) -> f64 {
    let w = blocks::<f16>(w);
    let mag: f64 = w
        .iter()
        .zip(x)
        .map(|(w, x)| (f64::from(w.to_f32()) * f64::from(*x)).abs())
        .sum();
    if !f16_arith {
        return TOLERANCE * mag;
    }
    let max_x = x.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
    let sum_w: f64 = w.iter().map(|v| f64::from(v.to_f32().abs())).sum();
    crate::kernels::F16_ARITH_ERROR * mag + max_x * sum_w / f64::from(1u32 << 24)
}

/// Checks `got` for row `w` times activations `a` against the scalar dot: within the
/// tolerance, and bit for bit when `exact` (unit scales, every value exact in f32).
pub(crate) fn check(ty: GgmlType, w: &[u8], a: &[u8], got: f32, exact: bool, what: &str) {
    let n = row_len(ty, w);
    let want = scalar::vec_dot(ty).unwrap()(n, w, a);
    let mag = magnitude(ty, w, a);
    if exact && mag < f64::from(1u32 << 24) {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{ty} n={n} {what}: got {got}, scalar {want} (must be exact)"
        );
    } else {
        let diff = (f64::from(got) - f64::from(want)).abs();
        assert!(
            diff <= TOLERANCE * mag,
            "{ty} n={n} {what}: got {got}, scalar {want}, diff {diff} > {TOLERANCE}·{mag}"
        );
    }
}

/// Row lengths in blocks: one, odd counts around every chunk size, Phi-2's widths.
pub(crate) fn lengths(ty: GgmlType) -> Vec<usize> {
    let blocks: &[usize] = if ty.block_size() == 256 {
        &[1, 2, 3, 5, 10, 40]
    } else {
        &[1, 2, 3, 7, 8, 9, 15, 17, 33, 80, 320]
    };
    blocks.iter().map(|b| b * ty.block_size().max(32)).collect()
}

/// A weight block of random bytes under unit scales (Q4_1/Q5_1: m = 0 or -2, exact
/// in Q8_1's s; K-quants: d = dmin = 1 and random 6-bit scales and mins).
pub(crate) fn unit_weight_block(ty: GgmlType, rng: &mut Rng) -> Vec<u8> {
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
        Q2_K => edited(&raw, |b: &mut BlockQ2_K| (b.d, b.dmin) = (one, one)),
        Q3_K => edited(&raw, |b: &mut BlockQ3_K| b.d = one),
        IQ4_NL => edited(&raw, |b: &mut BlockIQ4_NL| b.d = one),
        IQ4_XS => edited(&raw, |b: &mut BlockIQ4_XS| b.d = one),
        _ => panic!("{ty}"),
    }
}

/// An activation block of codes `qs` under unit scale (Q8_1: s = Σq; Q8_K: bsums).
pub(crate) fn unit_act_block(act: GgmlType, qs: &[i8]) -> Vec<u8> {
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

/// Random activation codes for `blocks` blocks of `ty`'s activations under unit
/// scales, small for K-quants so that totals stay exact integers in f32.
pub(crate) fn unit_acts(ty: GgmlType, blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let span = if ty.block_size() == 256 { 8 } else { 255 };
    (0..blocks)
        .flat_map(|_| {
            let qs: Vec<i8> = (0..ty.block_size())
                .map(|_| ((rng.next() % span) as i32 - (span as i32 - 1) / 2) as i8)
                .collect();
            unit_act_block(act_type(ty), &qs)
        })
        .collect()
}

/// Weight blocks with every code (and K-quant scale and min) at each extreme.
pub(crate) fn extreme_weight_blocks(ty: GgmlType) -> Vec<Vec<u8>> {
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
            // Scale and min nibbles at 0 or 15 with the codes.
            Q2_K => to_bytes(&[BlockQ2_K {
                scales: [q; 16],
                qs: [q; 64],
                d: one,
                dmin: one,
            }]),
            // Scale bytes all-0 (-32) or all-1 (31), third bits with the codes.
            Q3_K => to_bytes(&[BlockQ3_K {
                hmask: [q; 32],
                qs: [q; 64],
                scales: [if q & 1 == 0 { 0x00 } else { 0xff }; 12],
                d: one,
            }]),
            IQ4_NL => to_bytes(&[BlockIQ4_NL {
                d: one,
                qs: [q; 16],
            }]),
            IQ4_XS => to_bytes(&[BlockIQ4_XS {
                d: one,
                scales_h: u16::from_le_bytes([q, q]),
                scales_l: [q; 4],
                qs: [q; 128],
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
pub(crate) fn extreme_act_codes(len: usize) -> Vec<Vec<i8>> {
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

/// Bytes in a buffer aligned for every tile and activation type (u64-backed).
pub(crate) struct Aligned(Vec<u64>, usize);

impl Aligned {
    pub(crate) fn new(len: usize) -> Aligned {
        Aligned(vec![0; len.div_ceil(8)], len)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.0)[..self.1]
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.0)[..self.1]
    }
}

/// Runs tile kernel `tk` on `rows` weight rows of `cols` elements (`w`, back to back)
/// and the activation rows `acts` (in `ty`'s activation type), straight through its
/// `pack`, `prepare`, `gemv` and `gemm` in the groups matmul uses: `[t][r]`.
pub(crate) fn run_tiles(
    tk: &TileKernel,
    cols: usize,
    w: &[u8],
    rows: usize,
    acts: &[Vec<u8>],
) -> Vec<f32> {
    let tb = (tk.tile_bytes)(cols);
    let n_tiles = rows.div_ceil(tk.rows);
    let mut tiles = Aligned::new(n_tiles * tb);
    let rb = w.len() / rows;
    for (i, tile) in tiles.bytes_mut().chunks_exact_mut(tb).enumerate() {
        let r0 = i * tk.rows;
        let nr = (rows - r0).min(tk.rows);
        (tk.pack)(cols, &w[r0 * rb..(r0 + nr) * rb], nr, tile);
    }
    let mut out = vec![f32::NAN; acts.len() * rows];
    for (t0, n) in tile::token_groups(acts.len(), tk.max_tokens) {
        let rows_of: Vec<&[u8]> = acts[t0..t0 + n].iter().map(|a| &a[..]).collect();
        let mut group = vec![0u32; (tk.group_words)(cols, n)];
        (tk.prepare)(cols, &rows_of, &mut group);
        let mut local = vec![f32::NAN; n * tk.rows];
        for (i, tile) in tiles.bytes().chunks_exact(tb).enumerate() {
            if n == 1 {
                (tk.gemv)(cols, tile, &group, &mut local);
            } else {
                (tk.gemm)(cols, tile, &group, n, &mut local);
            }
            let r0 = i * tk.rows;
            for t in 0..n {
                for r in r0..(r0 + tk.rows).min(rows) {
                    out[(t0 + t) * rows + r] = local[t * tk.rows + r - r0];
                }
            }
        }
    }
    out
}
