//! AVX-512 VNNI batch kernel: several weight rows times several tokens at once.
//!
//! One `vpdpbusd` multiplies the same four elements of 16 weight rows (one i32 lane
//! per row) by four activation bytes of one token broadcast to every lane, adding the
//! four products into each lane: 64 useful products per instruction, where a dot
//! product of one row spends most of its instructions on layout and scales.
//!
//! - Weights are repacked on the fly, per matmul task, 16 rows at a time: per block,
//!   each 4-element group of the 16 rows as one vector of unsigned codes, then the
//!   rows' scales (and mins) as f32. The copy lives only while the task runs.
//! - Activations are prepared once per matmul: the codes of 8 tokens block by block,
//!   their scales as f32, the code offset of the weights applied as a per-block
//!   correction (`-8·Σa` for Q4_0: the weights stay unsigned), and the min terms.
//!
//! Every (row, token, sub-block) integer sum is exact, as in the dot products; the
//! f32 scaling and accumulation run in another order, so results equal `vec_dot`
//! within the tolerance of the tests, not bit for bit.

use core::arch::x86_64::*;

use bytemuck::Pod;
use half::f16;

use super::avx2::{ld128, ld256, scales_mins_k4};
use super::{B4_0, B4_1, B4K, B5_0, B5_1, B5K, B6K, B8_0, B8_1, B8K, blocks};

/// Weight rows per tile: one per i32 lane of a 512-bit vector.
const TR: usize = 16;
/// Tokens per pass over a tile.
const TT: usize = 8;

/// A format as this kernel sees it: elements per block, sub-blocks per block (each
/// with its own scale), and whether blocks have min terms.
#[derive(Clone, Copy)]
struct Shape {
    qk: usize,
    subs: usize,
    mins: bool,
}

impl Shape {
    /// 4-element groups per block.
    const fn groups(self) -> usize {
        self.qk / 4
    }

    /// Words per block of a repacked tile: codes, scales, mins.
    const fn w_words(self) -> usize {
        self.groups() * TR + self.subs * TR * (1 + self.mins as usize)
    }

    /// Words per block of a prepared token group: codes, scales, corrections, mins.
    const fn p_words(self) -> usize {
        TT * self.groups() + TT + self.subs * TT * (1 + self.mins as usize)
    }
}

// ---------------------------------------------------------------------------------
// Activation preparation (plain Rust: once per matmul, a small share of the work).

/// One prepared block of one token: its codes, scale, per-sub-block corrections and
/// per-sub-block min multipliers.
struct ActBlock<'a> {
    codes: &'a [u8],
    dy: f32,
    corr: [i32; 16],
    mt: [f32; 16],
}

/// Lays out `tokens` activation rows for [`gemm`]: groups of 8 tokens, block by block.
fn prepare<Y: Pod>(
    n: usize,
    qk: usize,
    shape: Shape,
    a: &[u8],
    tokens: usize,
    block: impl Fn(&Y) -> ActBlock<'_>,
) -> Vec<u32> {
    let nb = n / qk;
    let row = nb * size_of::<Y>();
    let pw = shape.p_words();
    let g = shape.groups();
    let mut out = vec![0u32; tokens.div_ceil(TT) * nb * pw];
    for t in 0..tokens {
        let y: &[Y] = blocks(n, qk, &a[t * row..(t + 1) * row]);
        let (group, tt) = (t / TT, t % TT);
        for (b, yb) in y.iter().enumerate() {
            let p = &mut out[(group * nb + b) * pw..(group * nb + b + 1) * pw];
            let ab = block(yb);
            let (codes, rest) = p.split_at_mut(TT * g);
            for (w, c) in codes[tt * g..(tt + 1) * g]
                .iter_mut()
                .zip(ab.codes.chunks_exact(4))
            {
                *w = u32::from_le_bytes(c.try_into().unwrap());
            }
            let (dy, rest) = rest.split_at_mut(TT);
            dy[tt] = ab.dy.to_bits();
            let (corr, mt) = rest.split_at_mut(shape.subs * TT);
            for s in 0..shape.subs {
                corr[s * TT + tt] = ab.corr[s] as u32;
                if shape.mins {
                    mt[s * TT + tt] = ab.mt[s].to_bits();
                }
            }
        }
    }
    out
}

fn f16_of(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

fn q8_0_sum(qs: &[u8; 32]) -> i32 {
    qs.iter().map(|&q| i32::from(q as i8)).sum()
}

const LEGACY: Shape = Shape {
    qk: 32,
    subs: 1,
    mins: false,
};
const LEGACY_MINS: Shape = Shape {
    qk: 32,
    subs: 1,
    mins: true,
};
const K4: Shape = Shape {
    qk: 256,
    subs: 8,
    mins: true,
};
const K6: Shape = Shape {
    qk: 256,
    subs: 16,
    mins: false,
};

/// Q8_0 activations for weights whose codes are offset by `OFF` (Q4_0: 8, Q5_0: 16,
/// Q8_0 stored as w + 128: 128).
pub(super) fn prep_q8_0<const OFF: i32>(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    prepare(n, 32, LEGACY, a, tokens, |y: &B8_0| {
        let mut corr = [0; 16];
        corr[0] = -OFF * q8_0_sum(&y.qs);
        ActBlock {
            codes: &y.qs,
            dy: f16_of(y.d),
            corr,
            mt: [0.0; 16],
        }
    })
}

/// Q8_1 activations (Q4_1, Q5_1): the min term is `m·s`.
pub(super) fn prep_q8_1(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    prepare(n, 32, LEGACY_MINS, a, tokens, |y: &B8_1| {
        let mut mt = [0.0; 16];
        mt[0] = f16_of(y.s);
        ActBlock {
            codes: &y.qs,
            dy: f16_of(y.d),
            corr: [0; 16],
            mt,
        }
    })
}

fn bsums(y: &B8K) -> [i32; 16] {
    core::array::from_fn(|i| i32::from(i16::from_le_bytes([y.bsums[2 * i], y.bsums[2 * i + 1]])))
}

/// Q8_K activations for Q4_K/Q5_K: the min term of sub-block `s` is
/// `-dmin·m_s · d·Σa_s`, the activation half of it here.
pub(super) fn prep_q8_k4(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    prepare(n, 256, K4, a, tokens, |y: &B8K| {
        let d = f32::from_le_bytes(y.d);
        let bs = bsums(y);
        let mut mt = [0.0; 16];
        for (s, m) in mt.iter_mut().take(8).enumerate() {
            *m = d * (bs[2 * s] + bs[2 * s + 1]) as f32;
        }
        ActBlock {
            codes: &y.qs,
            dy: d,
            corr: [0; 16],
            mt,
        }
    })
}

/// Q8_K activations for Q6_K: codes are offset by 32 per 16-element sub-block.
pub(super) fn prep_q8_k6(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    prepare(n, 256, K6, a, tokens, |y: &B8K| ActBlock {
        codes: &y.qs,
        dy: f32::from_le_bytes(y.d),
        corr: bsums(y).map(|s| -32 * s),
        mt: [0.0; 16],
    })
}

// ---------------------------------------------------------------------------------
// One token (matrix-vector, generation): no repacking, the activation row laid out
// once to match the weights as they load.
//
// Four 32-element blocks per 512-bit vector, block k in 128-bit lane k: elements
// 0-15 (low nibbles) in one vector, 16-31 (high) in another. The activations of a
// quad of blocks are prepared as [low halves (64 B)][high halves (64 B)][the code
// offset correction, in the first i32 lane of each block][dy, 4 lanes per block]
// [for Q8_1: s, in the first lane of each block].

/// Words of one prepared quad of blocks.
const fn quad_words(mins: bool) -> usize {
    16 * (4 + mins as usize)
}

/// Lays out one Q8_0/Q8_1 activation row for [`mv_legacy`], quads of blocks, the last
/// padded with zero blocks. `off` is the weights' code offset; `s` gives Q8_1's `s`.
fn prep_quads<Y: Pod>(
    n: usize,
    a: &[u8],
    off: i32,
    mins: bool,
    parts: impl Fn(&Y) -> (&[u8; 32], [u8; 2], Option<[u8; 2]>),
) -> Vec<u32> {
    let y: &[Y] = blocks(n, 32, &a[..n / 32 * size_of::<Y>()]);
    let qw = quad_words(mins);
    let mut out = vec![0u32; y.len().div_ceil(4) * qw];
    for (o, quad) in out.chunks_exact_mut(qw).zip(y.chunks(4)) {
        for (k, yb) in quad.iter().enumerate() {
            let (qs, d, s) = parts(yb);
            for i in 0..4 {
                o[4 * k + i] = u32::from_le_bytes(qs[4 * i..4 * i + 4].try_into().unwrap());
                o[16 + 4 * k + i] =
                    u32::from_le_bytes(qs[16 + 4 * i..20 + 4 * i].try_into().unwrap());
                o[48 + 4 * k + i] = f16_of(d).to_bits();
            }
            let sum: i32 = qs.iter().map(|&v| i32::from(v as i8)).sum();
            o[32 + 4 * k] = (-off * sum) as u32;
            if mins {
                o[64 + 4 * k] = f16_of(s.unwrap_or_default()).to_bits();
            }
        }
    }
    out
}

/// Word indices for `vpermt2w` over two 64-byte loads of a quad of blocks, the first
/// at byte 0 and the second ending at its last byte (at `4·size - 64`): result word
/// `i` is the word at byte `at(i)` of the quad (even, as every legacy field offset).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn word_index(size: usize, at: impl Fn(usize) -> usize) -> __m512i {
    let second = 4 * size - 64;
    let idx: [u16; 32] = core::array::from_fn(|i| {
        let byte = at(i);
        debug_assert!(byte.is_multiple_of(2) && byte + 2 <= 4 * size);
        if byte + 2 <= 64 {
            (byte / 2) as u16
        } else {
            (32 + (byte - second) / 2) as u16
        }
    });
    let words: [u32; 16] = bytemuck::cast(idx);
    ld512(&words, 0)
}

/// The `vpermt2w` indices of a legacy format, computed once per matmul task: built
/// per row they cost as much as the row's arithmetic.
#[derive(Clone, Copy)]
struct QuadIndex {
    qs_idx: __m512i,
    dm_idx: __m512i,
    qh_idx: __m512i,
}

impl QuadIndex {
    /// For blocks of type `X` with `qs`, `m` and `qh` at byte offsets `QS`, `M`, `QH`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    fn new<X: Pod, const QS: usize, const M: usize, const QH: usize>() -> QuadIndex {
        let size = size_of::<X>();
        assert!((18..=32).contains(&size));
        QuadIndex {
            // Lane k of the codes: the 16 bytes of `qs` of block k. The scales: d (and
            // m) of block k, four times each, in words 4k..4k+4 (m in 16 + 4k..).
            qs_idx: word_index(size, |i| (i / 8) * size + QS + 2 * (i % 8)),
            dm_idx: word_index(size, |i| (i % 16 / 4) * size + if i < 16 { 0 } else { M }),
            // Words 0-3: the low halves of the four qh, 4-7 the high halves.
            qh_idx: word_index(size, |i| {
                (i % 4) * size + QH + if i % 8 < 4 { 0 } else { 2 }
            }),
        }
    }
}

/// One weight row of a legacy type times a prepared activation row. `QS`, `M` and
/// `QH` are the byte offsets of the fields in a block (`d` is at 0); `M`/`QH` unused
/// when the type has no min / no fifth bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mv_legacy<
    X: Pod,
    const MINS: bool,
    const FIVE: bool,
    const QS: usize,
    const M: usize,
    const QH: usize,
>(
    x: &[X],
    p: &[u32],
    idx: &QuadIndex,
) -> f32 {
    let qw = quad_words(MINS);
    let size = size_of::<X>();
    assert!(p.len() == x.len().div_ceil(4) * qw);
    let QuadIndex {
        qs_idx,
        dm_idx,
        qh_idx,
    } = *idx;
    let m4 = _mm512_set1_epi8(0x0f);
    let sixteen = _mm512_set1_epi8(0x10);
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm512_setzero_ps();
    let full = x.len() / 4;
    let mut pad = [X::zeroed(); 4];
    pad[..x.len() % 4].copy_from_slice(&x[4 * full..]);
    for (i, pq) in p.chunks_exact(qw).enumerate() {
        // Zero blocks pad the last quad: their scales are 0, so they add +0.
        let quad: &[X; 4] = if i < full {
            x[4 * i..4 * i + 4].try_into().unwrap()
        } else {
            &pad
        };
        let bytes: &[u8] = bytemuck::cast_slice(quad);
        let first: &[u8; 64] = bytes[..64].try_into().unwrap();
        let last: &[u8; 64] = bytes[4 * size - 64..].try_into().unwrap();
        // SAFETY: two loads of 64 bytes, each from a reference to 64 bytes.
        let (l0, l1) = unsafe {
            (
                _mm512_loadu_si512(first.as_ptr().cast()),
                _mm512_loadu_si512(last.as_ptr().cast()),
            )
        };
        let v = _mm512_permutex2var_epi16(l0, qs_idx, l1);
        let mut lo = _mm512_and_si512(v, m4);
        let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
        if FIVE {
            // Bits 0-15 of block k's qh belong to its lane of `lo`, 16-31 to `hi`:
            // the low words of the four qh side by side are `lo`'s byte mask.
            let h = _mm512_castsi512_si128(_mm512_permutex2var_epi16(l0, qh_idx, l1));
            let kl = _mm_cvtsi128_si64(h) as u64;
            let kh = _mm_extract_epi64::<1>(h) as u64;
            lo = _mm512_or_si512(lo, _mm512_maskz_mov_epi8(kl, sixteen));
            hi = _mm512_or_si512(hi, _mm512_maskz_mov_epi8(kh, sixteen));
        }
        let al = ld512(pq, 0);
        let ah = ld512(pq, 16);
        let isum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(ld512(pq, 32), lo, al), hi, ah);
        let dm = _mm512_permutex2var_epi16(l0, dm_idx, l1);
        let dx = _mm512_cvtph_ps(_mm512_castsi512_si256(dm));
        let s = _mm512_mul_ps(dx, _mm512_castsi512_ps(ld512(pq, 48)));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc);
        if MINS {
            let mx = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dm));
            acc_m = _mm512_fmadd_ps(mx, _mm512_castsi512_ps(ld512(pq, 64)), acc_m);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc, acc_m))
}

// ---------------------------------------------------------------------------------
// The kernel.

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn ld512(w: &[u32], off: usize) -> __m512i {
    let w = &w[off..off + 16];
    // SAFETY: `w` holds the 16 words read; loadu takes any alignment.
    unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn st512(w: &mut [u32], off: usize, v: __m512i) {
    let w = &mut w[off..off + 16];
    // SAFETY: `w` holds the 16 words written; storeu takes any alignment.
    unsafe { _mm512_storeu_si512(w.as_mut_ptr().cast(), v) }
}

/// Rows 0-15 of eight dwords each, transposed: vector `c` holds dword `c` of every
/// row. An 8x8 transpose in each 256-bit half (rows 0-7 low, 8-15 high).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn transpose16x8(r: &[__m256i; 16]) -> [__m512i; 8] {
    let z: [__m512i; 8] =
        core::array::from_fn(|i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(r[i]), r[i + 8]));
    // t[2i], t[2i+1]: rows 2i and 2i+1 interleaved by dword.
    let t: [__m512i; 8] = core::array::from_fn(|i| {
        let (a, b) = (z[i & !1], z[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[k]: dwords (k % 4, k % 4 + 4) of rows 0-3 (k < 4) or 4-7, per half.
    let u: [__m512i; 8] = core::array::from_fn(|k| {
        let base = if k < 4 { 0 } else { 4 };
        let (a, b) = match k % 4 {
            0 | 1 => (t[base], t[base + 2]),
            _ => (t[base + 1], t[base + 3]),
        };
        if k % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    let lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    let hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    core::array::from_fn(|c| {
        let (a, b) = (u[c % 4], u[c % 4 + 4]);
        _mm512_permutex2var_epi64(a, if c < 4 { lo } else { hi }, b)
    })
}

/// Repacks up to 16 rows (missing rows read as zero blocks) of `nb` blocks: `decode`
/// gives a block's codes in element order, its sub-block scales and min multipliers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn repack<X: Pod, const C: usize, const S: usize>(
    rows: &[&[X]],
    nb: usize,
    shape: Shape,
    decode: &impl Fn(&X) -> ([__m256i; C], [f32; S], [f32; S]),
) -> Vec<u32> {
    let ww = shape.w_words();
    let g = shape.groups();
    let mut out = vec![0u32; nb * ww];
    let zero = X::zeroed();
    for (b, o) in out.chunks_exact_mut(ww).enumerate() {
        let mut codes = [[_mm256_setzero_si256(); 16]; C];
        let mut scl = [[0f32; TR]; S];
        let mut mnr = [[0f32; TR]; S];
        for r in 0..TR {
            let x = rows.get(r).map_or(&zero, |row| &row[b]);
            let (c, s, m) = decode(x);
            for (k, v) in c.into_iter().enumerate() {
                codes[k][r] = v;
            }
            for j in 0..S {
                scl[j][r] = s[j];
                mnr[j][r] = m[j];
            }
        }
        for (k, rows) in codes.iter().enumerate() {
            for (c, v) in transpose16x8(rows).into_iter().enumerate() {
                st512(o, (8 * k + c) * TR, v);
            }
        }
        for j in 0..S {
            o[g * TR + j * TR..g * TR + (j + 1) * TR].copy_from_slice(&scl[j].map(f32::to_bits));
            if shape.mins {
                let at = g * TR + S * TR + j * TR;
                o[at..at + TR].copy_from_slice(&mnr[j].map(f32::to_bits));
            }
        }
    }
    out
}

/// One tile (16 rows, repacked) times one prepared group of 8 tokens: per token, the
/// 16 rows' dot products. `GPS` is the 4-element groups per sub-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_group<const S: usize, const GPS: usize, const MINS: bool>(
    w: &[u32],
    p: &[u32],
    nb: usize,
    shape: Shape,
) -> [__m512; TT] {
    let (ww, pw, g) = (shape.w_words(), shape.p_words(), shape.groups());
    assert!(w.len() >= nb * ww && p.len() >= nb * pw && g == S * GPS);
    let mut acc = [_mm512_setzero_ps(); TT];
    for (wb, pb) in w.chunks_exact(ww).zip(p.chunks_exact(pw)).take(nb) {
        let (codes, rest) = pb.split_at(TT * g);
        let (dy, rest) = rest.split_at(TT);
        let (corr, mt) = rest.split_at(S * TT);
        let mut inner = [_mm512_setzero_ps(); TT];
        for s in 0..S {
            let wv: [__m512i; GPS] = core::array::from_fn(|j| ld512(wb, (s * GPS + j) * TR));
            let scl = _mm512_castsi512_ps(ld512(wb, g * TR + s * TR));
            for t in 0..TT {
                let mut isum = _mm512_set1_epi32(corr[s * TT + t] as i32);
                for (j, &wj) in wv.iter().enumerate() {
                    let a = _mm512_set1_epi32(codes[t * g + s * GPS + j] as i32);
                    isum = _mm512_dpbusd_epi32(isum, wj, a);
                }
                inner[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scl, inner[t]);
            }
            if MINS {
                let mnr = _mm512_castsi512_ps(ld512(wb, g * TR + S * TR + s * TR));
                for t in 0..TT {
                    let m = _mm512_set1_ps(f32::from_bits(mt[s * TT + t]));
                    acc[t] = _mm512_fmadd_ps(mnr, m, acc[t]);
                }
            }
        }
        for t in 0..TT {
            let d = _mm512_set1_ps(f32::from_bits(dy[t]));
            acc[t] = _mm512_fmadd_ps(inner[t], d, acc[t]);
        }
    }
    acc
}

/// `out[r * tokens + t]` for every weight row of `x` and token of `prepared`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn gemm<X: Pod, const C: usize, const S: usize, const GPS: usize, const MINS: bool>(
    x: &[&[X]],
    shape: Shape,
    prepared: &[u32],
    tokens: usize,
    out: &mut [f32],
    decode: impl Fn(&X) -> ([__m256i; C], [f32; S], [f32; S]),
) {
    let rows = x.len();
    let nb = x.first().map_or(0, |r| r.len());
    let pw = shape.p_words();
    assert!(x.iter().all(|r| r.len() == nb));
    assert_eq!(
        prepared.len(),
        tokens.div_ceil(TT) * nb * pw,
        "prepared batch"
    );
    assert_eq!(out.len(), rows * tokens);
    if nb == 0 || tokens == 0 {
        out.fill(0.0);
        return;
    }
    let tiles: Vec<Vec<u32>> = x
        .chunks(TR)
        .map(|t| repack(t, nb, shape, &decode))
        .collect();
    for (group, p) in prepared.chunks_exact(nb * pw).enumerate() {
        for (ti, tile) in tiles.iter().enumerate() {
            let acc = tile_group::<S, GPS, MINS>(tile, p, nb, shape);
            for (t, v) in acc.iter().enumerate() {
                let token = group * TT + t;
                if token >= tokens {
                    break;
                }
                let mut lanes = [0u32; 16];
                st512(&mut lanes, 0, _mm512_castps_si512(*v));
                for (r, &l) in lanes.iter().enumerate() {
                    let row = ti * TR + r;
                    if row < rows {
                        out[row * tokens + token] = f32::from_bits(l);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Decoders: a block's codes (unsigned, element order), sub-block scales and mins.

/// Codes 0..15 of a 32-element block: `[low nibbles | high nibbles]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    let b = _mm256_broadcastsi128_si256(ld128(qs, 0));
    let b = _mm256_srlv_epi64(b, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(b, _mm256_set1_epi8(0x0f))
}

/// The fifth bits of a Q5 block as 0x10 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fifth_bits(qh: [u8; 4]) -> __m256i {
    _mm256_maskz_mov_epi8(u32::from_le_bytes(qh), _mm256_set1_epi8(0x10))
}

/// Q4_K/Q5_K: per 64 elements the low nibbles, then the high ones; Q5_K's fifth bit
/// of element `32s + i` is bit `s` of `qh[i]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_codes(qs: &[u8; 128], qh: Option<&[u8; 32]>) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut c = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        let q = ld256(qs, 32 * j);
        c[2 * j] = _mm256_and_si256(q, m4);
        c[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
    }
    if let Some(qh) = qh {
        let hb = ld256(qh, 0);
        for (s, v) in c.iter_mut().enumerate() {
            let k = _mm256_test_epi8_mask(hb, _mm256_set1_epi8(1 << s));
            *v = _mm256_or_si256(*v, _mm256_maskz_mov_epi8(k, _mm256_set1_epi8(0x10)));
        }
    }
    c
}

/// Q4_K/Q5_K scales `d·sc` and min multipliers `-dmin·m` per 32-element sub-block.
fn k4_scales(d: [u8; 2], dmin: [u8; 2], scales: &[u8; 12]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_of(d), f16_of(dmin));
    let sm = scales_mins_k4(scales);
    (
        core::array::from_fn(|s| d * f32::from(sm[s])),
        core::array::from_fn(|s| -(dmin * f32::from(sm[8 + s]))),
    )
}

/// Q6_K codes 0..63 in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn q6k_codes(x: &B6K) -> [__m256i; 8] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut c = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let l1 = ld256(&x.ql, 64 * h);
        let l2 = ld256(&x.ql, 64 * h + 32);
        let qh = ld256(&x.qh, 32 * h);
        c[4 * h] = _mm256_or_si256(
            _mm256_and_si256(l1, m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2)),
        );
        c[4 * h + 1] = _mm256_or_si256(
            _mm256_and_si256(l2, m4),
            _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c))),
        );
        c[4 * h + 2] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
            _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
        );
        c[4 * h + 3] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l2), m4),
            _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8))),
        );
    }
    c
}

// ---------------------------------------------------------------------------------
// Entry points, one per weight type (the wrappers in `mod.rs` check the lengths).
// One token (generation) goes to the matrix-vector kernel above for the 32-element
// formats with nibbles; Q8_0 and the K-quants are near memory speed with their dot
// products already, so one token there takes the activation row as it is.

fn rows<X: Pod>(n: usize, qk: usize, w: &[u8], rows: usize) -> Vec<&[X]> {
    let rb = n / qk * size_of::<X>();
    (0..rows)
        .map(|r| blocks(n, qk, &w[r * rb..(r + 1) * rb]))
        .collect()
}

/// An activation row kept as it is, in words.
fn raw_words(a: &[u8], bytes: usize) -> Vec<u32> {
    a[..bytes]
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect()
}

/// The activation row of [`raw_words`], as bytes again.
fn raw_bytes(p: &[u32], bytes: usize) -> &[u8] {
    assert_eq!(p.len(), bytes.div_ceil(4), "prepared row");
    &bytemuck::cast_slice(p)[..bytes]
}

pub(super) fn prep_q4_0(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return prep_quads(n, a, 8, false, |y: &B8_0| (&y.qs, y.d, None));
    }
    prep_q8_0::<8>(n, a, tokens)
}

pub(super) fn prep_q5_0(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return prep_quads(n, a, 16, false, |y: &B8_0| (&y.qs, y.d, None));
    }
    prep_q8_0::<16>(n, a, tokens)
}

/// Q4_1 and Q5_1.
pub(super) fn prep_q4_1(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return prep_quads(n, a, 0, true, |y: &B8_1| (&y.qs, y.d, Some(y.s)));
    }
    prep_q8_1(n, a, tokens)
}

pub(super) fn prep_q8_0_weights(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return raw_words(a, n / 32 * size_of::<B8_0>());
    }
    prep_q8_0::<128>(n, a, tokens)
}

pub(super) fn prep_k4(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return raw_words(a, n / 256 * size_of::<B8K>());
    }
    prep_q8_k4(n, a, tokens)
}

pub(super) fn prep_k6(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens == 1 {
        return raw_words(a, n / 256 * size_of::<B8K>());
    }
    prep_q8_k6(n, a, tokens)
}

/// Every row of `x` times a prepared activation row (legacy formats; offsets as in
/// [`mv_legacy`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mv_rows<
    X: Pod,
    const MINS: bool,
    const FIVE: bool,
    const QS: usize,
    const M: usize,
    const QH: usize,
>(
    x: &[&[X]],
    p: &[u32],
    out: &mut [f32],
) {
    assert_eq!(out.len(), x.len());
    let idx = QuadIndex::new::<X, QS, M, QH>();
    for (o, xr) in out.iter_mut().zip(x) {
        *o = mv_legacy::<X, MINS, FIVE, QS, M, QH>(xr, p, &idx);
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q4_0(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B4_0>(n, 32, w, r);
    if t == 1 {
        return mv_rows::<_, false, false, 2, 0, 0>(&x, p, out);
    }
    gemm::<_, 1, 1, 8, false>(&x, LEGACY, p, t, out, |b| {
        ([nibbles(&b.qs)], [f16_of(b.d)], [0.0])
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q4_1(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B4_1>(n, 32, w, r);
    if t == 1 {
        return mv_rows::<_, true, false, 4, 2, 0>(&x, p, out);
    }
    gemm::<_, 1, 1, 8, true>(&x, LEGACY_MINS, p, t, out, |b| {
        ([nibbles(&b.qs)], [f16_of(b.d)], [f16_of(b.m)])
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q5_0(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B5_0>(n, 32, w, r);
    if t == 1 {
        return mv_rows::<_, false, true, 6, 0, 2>(&x, p, out);
    }
    gemm::<_, 1, 1, 8, false>(&x, LEGACY, p, t, out, |b| {
        let c = _mm256_or_si256(nibbles(&b.qs), fifth_bits(b.qh));
        ([c], [f16_of(b.d)], [0.0])
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q5_1(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B5_1>(n, 32, w, r);
    if t == 1 {
        return mv_rows::<_, true, true, 8, 2, 4>(&x, p, out);
    }
    gemm::<_, 1, 1, 8, true>(&x, LEGACY_MINS, p, t, out, |b| {
        let c = _mm256_or_si256(nibbles(&b.qs), fifth_bits(b.qh));
        ([c], [f16_of(b.d)], [f16_of(b.m)])
    });
}

/// Q8_0 weights as `w + 128` (unsigned), the 128 taken back by `prep_q8_0::<128>`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q8_0(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B8_0>(n, 32, w, r);
    if t == 1 {
        let y = blocks::<B8_0>(n, 32, raw_bytes(p, n / 32 * size_of::<B8_0>()));
        assert_eq!(out.len(), r);
        for (o, xr) in out.iter_mut().zip(&x) {
            *o = super::avx512::dot_q8_0::<1>(xr, [y])[0];
        }
        return;
    }
    gemm::<_, 1, 1, 8, false>(&x, LEGACY, p, t, out, |b| {
        let c = _mm256_xor_si256(ld256(&b.qs, 0), _mm256_set1_epi8(-128));
        ([c], [f16_of(b.d)], [0.0])
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q4_k(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B4K>(n, 256, w, r);
    if t == 1 {
        let y = blocks::<B8K>(n, 256, raw_bytes(p, n / 256 * size_of::<B8K>()));
        assert_eq!(out.len(), r);
        for (o, xr) in out.iter_mut().zip(&x) {
            *o = super::avx512::dot_q4_k::<1>(xr, [y])[0];
        }
        return;
    }
    gemm::<_, 8, 8, 8, true>(&x, K4, p, t, out, |b| {
        let (s, m) = k4_scales(b.d, b.dmin, &b.scales);
        (k4_codes(&b.qs, None), s, m)
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q5_k(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B5K>(n, 256, w, r);
    if t == 1 {
        let y = blocks::<B8K>(n, 256, raw_bytes(p, n / 256 * size_of::<B8K>()));
        assert_eq!(out.len(), r);
        for (o, xr) in out.iter_mut().zip(&x) {
            *o = super::avx512::dot_q5_k::<1>(xr, [y])[0];
        }
        return;
    }
    gemm::<_, 8, 8, 8, true>(&x, K4, p, t, out, |b| {
        let (s, m) = k4_scales(b.d, b.dmin, &b.scales);
        (k4_codes(&b.qs, Some(&b.qh)), s, m)
    });
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_q6_k(n: usize, w: &[u8], r: usize, p: &[u32], t: usize, out: &mut [f32]) {
    let x = rows::<B6K>(n, 256, w, r);
    if t == 1 {
        let y = blocks::<B8K>(n, 256, raw_bytes(p, n / 256 * size_of::<B8K>()));
        assert_eq!(out.len(), r);
        for (o, xr) in out.iter_mut().zip(&x) {
            *o = super::avx512::dot_q6_k::<1>(xr, [y])[0];
        }
        return;
    }
    gemm::<_, 8, 16, 4, false>(&x, K6, p, t, out, |b| {
        let d = f16_of(b.d);
        let scl = core::array::from_fn(|s| d * f32::from(b.scales[s] as i8));
        (q6k_codes(b), scl, [0.0; 16])
    });
}
