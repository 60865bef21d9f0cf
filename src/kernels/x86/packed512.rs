//! Q4_0 and Q4_K weights repacked at load time into tiles of 16 rows for AVX-512 VNNI
//! (ggml repacks the same two types on x86, into `block_q4_0x8` and `block_q4_Kx8`).
//!
//! Streaming 18-byte blocks row by row, the matrix-vector product spent its cycles
//! gathering codes and scales with word permutes and waiting on 4 KiB pages of the
//! file map. In a tile the 16 rows' codes of one block are 256 contiguous bytes, still
//! nibble-packed, in exactly the order `vpdpbusd` wants them (one 32-bit lane per
//! row), and the tile is read front to back from one huge-page buffer.
//!
//! Q4_0 tile layout, `cols / 32` blocks, taken in pairs (an odd last block is paired with
//! zeros): per pair, 576 bytes (nine cache lines, so every vector load is aligned):
//!
//! ```text
//! [codes of block 2p: 4 x 64 B][codes of block 2p+1: 4 x 64 B][d of 2p: 16 x f16][d of 2p+1: 16 x f16]
//! ```
//!
//! Codes vector `j` of a block holds, in lane `r`, bytes `4j..4j+4` of row `r`'s `qs`:
//! its low nibbles are elements `4j..4j+4`, its high nibbles `16+4j..16+4j+4`. Rows
//! past the matrix's end are zero blocks (scale 0).
//!
//! Q4_K tile layout, per super-block of 256 elements (2368 bytes, 37 cache lines):
//!
//! ```text
//! [codes: 32 x 64 B][sc: 8 sub-blocks x 16 u8][m: 8 x 16 u8][d: 16 x f16][dmin: 16 x f16]
//! ```
//!
//! Codes vector `v` holds, in lane `r`, bytes `4v..4v+4` of row `r`'s `qs`: its low
//! nibbles belong to sub-block `2(v/8)`, its high nibbles to `2(v/8)+1`, elements
//! `4(v%8)..` of each. The 6-bit scales and mins are unpacked, one byte each.
//!
//! The integer sums are exact, as in `vec_dot_q4_0_q8_0` and `vec_dot_q4_K_q8_K`; scaling and accumulation run
//! in another order, so results equal it within the tests' tolerance, not bit for bit.

use core::arch::x86_64::*;

use half::f16;

use super::B8_0;
use super::gemm512::prep_q8_0;

/// Rows per tile: one per 32-bit lane of a 512-bit vector.
pub(super) const TILE_ROWS: usize = 16;
/// Tokens per pass of the batch kernel over a tile (the prepared groups' size).
const TT: usize = 8;
const BLOCK: usize = 18;
pub(super) const PAIR_BYTES: usize = 576;

/// Bytes of one tile of `cols` columns.
pub(super) fn tile_bytes(cols: usize) -> usize {
    (cols / 32).div_ceil(2) * PAIR_BYTES
}

/// Packs `rows` (at most 16) Q4_0 rows of `cols` columns, back to back in `w`, into
/// one tile. Plain code: it runs once per weight, at load.
pub(super) fn pack(cols: usize, w: &[u8], rows: usize, out: &mut [u8]) {
    let nb = cols / 32;
    let rb = nb * BLOCK;
    assert!(rows <= TILE_ROWS && w.len() >= rows * rb && out.len() == tile_bytes(cols));
    out.fill(0);
    for r in 0..rows {
        for b in 0..nb {
            let blk = &w[r * rb + b * BLOCK..r * rb + (b + 1) * BLOCK];
            let (pair, half) = (b / 2, b % 2);
            let base = pair * PAIR_BYTES;
            for j in 0..4 {
                let at = base + half * 256 + j * 64 + r * 4;
                out[at..at + 4].copy_from_slice(&blk[2 + 4 * j..6 + 4 * j]);
            }
            let at = base + 512 + half * 32 + r * 2;
            out[at..at + 2].copy_from_slice(&blk[..2]);
        }
    }
}

/// Words of one prepared block of one token: 8 code words, the `-8·Σa` correction,
/// the scale.
pub(super) const MV_WORDS: usize = 10;

/// Lays out Q8_0 activation rows for [`gemm`]: one token compactly (matrix-vector),
/// a batch as groups of 8 tokens (the layout of the unpacked batch kernel).
pub(super) fn prepare(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    if tokens != 1 {
        return prep_q8_0::<8>(n, a, tokens);
    }
    let nb = n / 32;
    let y: &[B8_0] = bytemuck::cast_slice(&a[..nb * size_of::<B8_0>()]);
    let mut out = vec![0u32; nb * MV_WORDS];
    for (o, yb) in out.chunks_exact_mut(MV_WORDS).zip(y) {
        for (w, c) in o[..8].iter_mut().zip(yb.qs.chunks_exact(4)) {
            *w = u32::from_le_bytes(c.try_into().unwrap());
        }
        let sum: i32 = yb.qs.iter().map(|&q| i32::from(q as i8)).sum();
        o[8] = (-8 * sum) as u32;
        o[9] = f16::from_le_bytes(yb.d).to_f32().to_bits();
    }
    out
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn ld512(b: &[u8], at: usize) -> __m512i {
    let b = &b[at..at + 64];
    // SAFETY: `b` holds the 64 bytes read; loadu takes any alignment.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

/// The 16 rows' f16 scales of block `b` of a tile, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales(tile: &[u8], b: usize) -> __m512 {
    let at = b / 2 * PAIR_BYTES + 512 + b % 2 * 32;
    let s = &tile[at..at + 32];
    // SAFETY: `s` holds the 32 bytes read.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s.as_ptr().cast()) })
}

/// The eight code vectors of block `b`: `[lo_0, hi_0, lo_1, hi_1, ...]`, where `lo_j`
/// meets activation word `j` and `hi_j` word `4 + j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn codes(tile: &[u8], b: usize) -> [__m512i; 8] {
    let base = b / 2 * PAIR_BYTES + b % 2 * 256;
    let m4 = _mm512_set1_epi8(0x0f);
    let mut c = [_mm512_setzero_si512(); 8];
    for j in 0..4 {
        let v = ld512(tile, base + 64 * j);
        c[2 * j] = _mm512_and_si512(v, m4);
        c[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
    }
    c
}

/// One tile times one prepared token: the 16 rows' dot products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_mv(tile: &[u8], p: &[u32], nb: usize) -> __m512 {
    let mut acc = _mm512_setzero_ps();
    for (b, a) in p.chunks_exact(MV_WORDS).take(nb).enumerate() {
        let c = codes(tile, b);
        let mut isum = _mm512_set1_epi32(a[8] as i32);
        for j in 0..4 {
            isum = _mm512_dpbusd_epi32(isum, c[2 * j], _mm512_set1_epi32(a[j] as i32));
            isum = _mm512_dpbusd_epi32(isum, c[2 * j + 1], _mm512_set1_epi32(a[4 + j] as i32));
        }
        let s = _mm512_mul_ps(scales(tile, b), _mm512_set1_ps(f32::from_bits(a[9])));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc);
    }
    acc
}

/// One tile times one prepared group of 8 tokens (the layout of `prep_q8_0`: per
/// block 8 tokens x 8 code words, then 8 scales, then 8 corrections).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_mm(tile: &[u8], p: &[u32], nb: usize) -> [__m512; TT] {
    const PW: usize = TT * 8 + 2 * TT;
    let mut acc = [_mm512_setzero_ps(); TT];
    for (b, pb) in p.chunks_exact(PW).take(nb).enumerate() {
        let c = codes(tile, b);
        let scl = scales(tile, b);
        let (a, rest) = pb.split_at(TT * 8);
        let (dy, corr) = rest.split_at(TT);
        for t in 0..TT {
            let a = &a[8 * t..8 * t + 8];
            let mut isum = _mm512_set1_epi32(corr[t] as i32);
            for j in 0..4 {
                isum = _mm512_dpbusd_epi32(isum, c[2 * j], _mm512_set1_epi32(a[j] as i32));
                isum = _mm512_dpbusd_epi32(isum, c[2 * j + 1], _mm512_set1_epi32(a[4 + j] as i32));
            }
            let s = _mm512_mul_ps(scl, _mm512_set1_ps(f32::from_bits(dy[t])));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc[t]);
        }
    }
    acc
}

/// How a packed format meets the shared driver [`drive`].
struct Format<MV, MM> {
    /// Bytes of one tile of a row of `cols` elements.
    tile_bytes: usize,
    /// Prepared words of one token, and of one group of [`TT`] tokens.
    mv_words: usize,
    mm_words: usize,
    /// A tile times one prepared token, and times one prepared group of 8.
    mv: MV,
    mm: MM,
}

/// `out[r * tokens + t]` for the `rows` rows held by `tiles` (whole tiles back to
/// back, the last possibly padded) and every prepared token.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn drive<MV, MM>(
    f: Format<MV, MM>,
    tiles: &[u8],
    rows: usize,
    prepared: &[u32],
    tokens: usize,
    out: &mut [f32],
) where
    MV: Fn(&[u8], &[u32]) -> __m512,
    MM: Fn(&[u8], &[u32]) -> [__m512; TT],
{
    assert!(tiles.len() == rows.div_ceil(TILE_ROWS) * f.tile_bytes && out.len() == rows * tokens);
    if tokens == 1 {
        assert_eq!(prepared.len(), f.mv_words, "prepared row");
    } else {
        assert_eq!(
            prepared.len(),
            tokens.div_ceil(TT) * f.mm_words,
            "prepared batch"
        );
    }
    if f.tile_bytes == 0 {
        out.fill(0.0);
        return;
    }
    let mut lanes = [0f32; TILE_ROWS];
    for (i, tile) in tiles.chunks_exact(f.tile_bytes).enumerate() {
        let r0 = i * TILE_ROWS;
        let nr = (rows - r0).min(TILE_ROWS);
        if tokens == 1 {
            // SAFETY: `lanes` holds the 16 floats stored.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), (f.mv)(tile, prepared)) };
            out[r0..r0 + nr].copy_from_slice(&lanes[..nr]);
            continue;
        }
        for (g, p) in prepared.chunks_exact(f.mm_words).enumerate() {
            let acc = (f.mm)(tile, p);
            for (t, v) in acc.iter().enumerate() {
                let token = g * TT + t;
                if token >= tokens {
                    break;
                }
                // SAFETY: as above.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *v) };
                for (r, &l) in lanes[..nr].iter().enumerate() {
                    out[(r0 + r) * tokens + token] = l;
                }
            }
        }
    }
}

/// Q4_0: see the module comment.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm(
    cols: usize,
    tiles: &[u8],
    rows: usize,
    prepared: &[u32],
    tokens: usize,
    out: &mut [f32],
) {
    let nb = cols / 32;
    let f = Format {
        tile_bytes: tile_bytes(cols),
        mv_words: nb * MV_WORDS,
        mm_words: nb * (TT * 8 + 2 * TT),
        mv: |t: &[u8], p: &[u32]| tile_mv(t, p, nb),
        mm: |t: &[u8], p: &[u32]| tile_mm(t, p, nb),
    };
    drive(f, tiles, rows, prepared, tokens, out);
}

// ---------------------------------------------------------------------------------
// Q4_K.

const QK_K: usize = 256;
const K4_BLOCK: usize = 144;
const K4_TILE_BLOCK: usize = 2368;
const K4_SC: usize = 2048;
const K4_M: usize = K4_SC + 128;
const K4_D: usize = K4_M + 128;
const K4_DMIN: usize = K4_D + 32;

/// Bytes of one Q4_K tile of `cols` columns.
pub(super) fn tile_bytes_k4(cols: usize) -> usize {
    cols / QK_K * K4_TILE_BLOCK
}

/// Packs up to 16 Q4_K rows into one tile (see the module comment).
pub(super) fn pack_k4(cols: usize, w: &[u8], rows: usize, out: &mut [u8]) {
    let nb = cols / QK_K;
    let rb = nb * K4_BLOCK;
    assert!(rows <= TILE_ROWS && w.len() >= rows * rb && out.len() == tile_bytes_k4(cols));
    out.fill(0);
    for r in 0..rows {
        for b in 0..nb {
            let blk = &w[r * rb + b * K4_BLOCK..r * rb + (b + 1) * K4_BLOCK];
            let o = &mut out[b * K4_TILE_BLOCK..(b + 1) * K4_TILE_BLOCK];
            let qs = &blk[16..144];
            for v in 0..32 {
                o[v * 64 + r * 4..v * 64 + r * 4 + 4].copy_from_slice(&qs[4 * v..4 * v + 4]);
            }
            let sm = super::avx2::scales_mins_k4(blk[4..16].try_into().unwrap());
            for s in 0..8 {
                o[K4_SC + 16 * s + r] = sm[s];
                o[K4_M + 16 * s + r] = sm[8 + s];
            }
            o[K4_D + 2 * r..K4_D + 2 * r + 2].copy_from_slice(&blk[0..2]);
            o[K4_DMIN + 2 * r..K4_DMIN + 2 * r + 2].copy_from_slice(&blk[2..4]);
        }
    }
}

/// Prepared words of one Q8_K super-block for a group of `g` tokens: the codes
/// (64 words a token), the eight sub-block sums (a word each, a token), the scales.
const fn k4_words(g: usize) -> usize {
    g * (64 + 8 + 1)
}

/// Lays out Q8_K activation rows for [`gemm_k4`]: one token alone, a batch in groups
/// of 8 (the last padded with zero tokens).
pub(super) fn prepare_k4(n: usize, a: &[u8], tokens: usize) -> Vec<u32> {
    let nb = n / QK_K;
    let row = nb * size_of::<super::B8K>();
    let g = if tokens == 1 { 1 } else { TT };
    let pw = k4_words(g);
    let mut out = vec![0u32; tokens.div_ceil(g) * nb * pw];
    for t in 0..tokens {
        let y: &[super::B8K] = bytemuck::cast_slice(&a[t * row..(t + 1) * row]);
        let (group, tt) = (t / g, t % g);
        for (b, yb) in y.iter().enumerate() {
            let p = &mut out[(group * nb + b) * pw..(group * nb + b + 1) * pw];
            for (w, c) in p[tt * 64..(tt + 1) * 64]
                .iter_mut()
                .zip(yb.qs.chunks_exact(4))
            {
                *w = u32::from_le_bytes(c.try_into().unwrap());
            }
            let bs =
                |i: usize| i32::from(i16::from_le_bytes([yb.bsums[2 * i], yb.bsums[2 * i + 1]]));
            for s in 0..8 {
                p[g * 64 + tt * 8 + s] = (bs(2 * s) + bs(2 * s + 1)) as u32;
            }
            p[g * 72 + tt] = f32::from_le_bytes(yb.d).to_bits();
        }
    }
    out
}

/// The 16 rows' sub-block scales (`at` = [`K4_SC`]) or mins ([`K4_M`]) of sub-block `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_bytes(tb: &[u8], at: usize, s: usize) -> __m512i {
    let b = &tb[at + 16 * s..at + 16 * s + 16];
    // SAFETY: `b` holds the 16 bytes read.
    _mm512_cvtepu8_epi32(unsafe { _mm_loadu_si128(b.as_ptr().cast()) })
}

/// The 16 rows' f16 at byte `at` of a tile block, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_f16(tb: &[u8], at: usize) -> __m512 {
    let b = &tb[at..at + 32];
    // SAFETY: `b` holds the 32 bytes read.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(b.as_ptr().cast()) })
}

/// One Q4_K tile block times `T` prepared tokens of a group of `g`: per token, the
/// 16 rows' `Σ sc·isum` and `Σ m·bsum`, exact integers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_block<const T: usize>(tb: &[u8], p: &[u32]) -> ([__m512i; T], [__m512i; T]) {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut sumi = [_mm512_setzero_si512(); T];
    for j in 0..4 {
        let sc_lo = k4_bytes(tb, K4_SC, 2 * j);
        let sc_hi = k4_bytes(tb, K4_SC, 2 * j + 1);
        let mut lo = [_mm512_setzero_si512(); 8];
        let mut hi = [_mm512_setzero_si512(); 8];
        for q in 0..8 {
            let v = ld512(tb, (8 * j + q) * 64);
            lo[q] = _mm512_and_si512(v, m4);
            hi[q] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
        }
        for t in 0..T {
            let a = &p[t * 64 + 16 * j..t * 64 + 16 * j + 16];
            let mut il = _mm512_setzero_si512();
            let mut ih = _mm512_setzero_si512();
            for q in 0..8 {
                il = _mm512_dpbusd_epi32(il, lo[q], _mm512_set1_epi32(a[q] as i32));
                ih = _mm512_dpbusd_epi32(ih, hi[q], _mm512_set1_epi32(a[8 + q] as i32));
            }
            let s = _mm512_add_epi32(_mm512_mullo_epi32(il, sc_lo), _mm512_mullo_epi32(ih, sc_hi));
            sumi[t] = _mm512_add_epi32(sumi[t], s);
        }
    }
    let bsum = &p[T * 64..T * 72];
    let mut summ = [_mm512_setzero_si512(); T];
    for s in 0..8 {
        let m = k4_bytes(tb, K4_M, s);
        for t in 0..T {
            let b = _mm512_set1_epi32(bsum[t * 8 + s] as i32);
            summ[t] = _mm512_add_epi32(summ[t], _mm512_mullo_epi32(m, b));
        }
    }
    (sumi, summ)
}

/// One Q4_K tile times `T` prepared tokens (a group of `T`), accumulated in f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_tile<const T: usize>(tile: &[u8], p: &[u32], nb: usize) -> [__m512; T] {
    let pw = k4_words(T);
    let mut acc = [_mm512_setzero_ps(); T];
    for (tb, pb) in tile
        .chunks_exact(K4_TILE_BLOCK)
        .zip(p.chunks_exact(pw))
        .take(nb)
    {
        let (sumi, summ) = k4_block::<T>(tb, pb);
        let d = k4_f16(tb, K4_D);
        let dmin = k4_f16(tb, K4_DMIN);
        for t in 0..T {
            let dy = _mm512_set1_ps(f32::from_bits(pb[T * 72 + t]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(d, dy), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ[t]), _mm512_mul_ps(dmin, dy), acc[t]);
        }
    }
    acc
}

/// Q4_K: see the module comment.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn gemm_k4(
    cols: usize,
    tiles: &[u8],
    rows: usize,
    prepared: &[u32],
    tokens: usize,
    out: &mut [f32],
) {
    let nb = cols / QK_K;
    let f = Format {
        tile_bytes: tile_bytes_k4(cols),
        mv_words: nb * k4_words(1),
        mm_words: nb * k4_words(TT),
        mv: |t: &[u8], p: &[u32]| k4_tile::<1>(t, p, nb)[0],
        mm: |t: &[u8], p: &[u32]| k4_tile::<TT>(t, p, nb),
    };
    drive(f, tiles, rows, prepared, tokens, out);
}
