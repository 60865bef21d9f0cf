//! Q4_0 weights repacked at load time into tiles of 16 rows for AVX-512 VNNI
//! (ggml repacks Q4_0 the same way on x86, into its `block_q4_0x8`).
//!
//! Streaming 18-byte blocks row by row, the matrix-vector product spent its cycles
//! gathering codes and scales with word permutes and waiting on 4 KiB pages of the
//! file map. In a tile the 16 rows' codes of one block are 256 contiguous bytes, still
//! nibble-packed, in exactly the order `vpdpbusd` wants them (one 32-bit lane per
//! row), and the tile is read front to back from one huge-page buffer.
//!
//! Tile layout, `cols / 32` blocks, taken in pairs (an odd last block is paired with
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
//! The integer sums are exact, as in `vec_dot_q4_0_q8_0`; scaling and accumulation run
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
const PAIR_BYTES: usize = 576;

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
const MV_WORDS: usize = 10;

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

/// `out[r * tokens + t]` for the `rows` rows held by `tiles` (whole tiles back to
/// back, the last possibly padded) and every prepared token.
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
    let tb = tile_bytes(cols);
    assert!(tiles.len() == rows.div_ceil(TILE_ROWS) * tb && out.len() == rows * tokens);
    if tokens == 1 {
        assert_eq!(prepared.len(), nb * MV_WORDS, "prepared row");
    } else {
        assert_eq!(prepared.len(), tokens.div_ceil(TT) * nb * (TT * 8 + 2 * TT));
    }
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    let mut lanes = [0f32; TILE_ROWS];
    for (i, tile) in tiles.chunks_exact(tb).enumerate() {
        let r0 = i * TILE_ROWS;
        let nr = (rows - r0).min(TILE_ROWS);
        if tokens == 1 {
            // SAFETY: `lanes` holds the 16 floats stored.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), tile_mv(tile, prepared, nb)) };
            out[r0..r0 + nr].copy_from_slice(&lanes[..nr]);
            continue;
        }
        for (g, p) in prepared.chunks_exact(nb * (TT * 8 + 2 * TT)).enumerate() {
            let acc = tile_mm(tile, p, nb);
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
