//! The AVX2 path's kernel for Q4_0 weights repacked into `packed512`'s 16-row tiles
//! (the same bytes, so one packer and one activation layout serve both paths).
//!
//! A 64-byte codes vector of a tile holds rows 0-7 in its low 32 bytes and rows 8-15
//! in its high 32: each half is one `ymm` with a 32-bit lane per row. Without VNNI,
//! `vpmaddubsw` (codes 0..15 unsigned times activations signed: pair sums of at most
//! 2·15·128, far from i16 saturation) then `vpmaddwd` by ones give each lane the sum
//! of its four products, as `vpdpbusd` does.
//!
//! Integer sums are exact; scaling and accumulation run in another order than the
//! dot product's, so results equal it within the tests' tolerance.

use core::arch::x86_64::*;

use super::packed512::{MV_WORDS, PAIR_BYTES, TILE_ROWS, tile_bytes};

/// Tokens per prepared group (`prep_q8_0`'s layout, as `packed512`).
const TT: usize = 8;
const MM_WORDS: usize = TT * 8 + 2 * TT;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld256(b: &[u8], at: usize) -> __m256i {
    let b = &b[at..at + 32];
    // SAFETY: `b` holds the 32 bytes read; loadu takes any alignment.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// `acc` plus, per 32-bit lane, the four products of unsigned `w` and signed `a`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot4(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_add_epi32(
        acc,
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)),
    )
}

/// The eight code vectors of block `b` for rows `8h..8h+8` of a tile: `[lo_0, hi_0,
/// ...]`, `lo_j` meeting activation word `j`, `hi_j` word `4 + j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn codes(tile: &[u8], b: usize, h: usize) -> [__m256i; 8] {
    let base = b / 2 * PAIR_BYTES + b % 2 * 256 + 32 * h;
    let m4 = _mm256_set1_epi8(0x0f);
    let mut c = [_mm256_setzero_si256(); 8];
    for j in 0..4 {
        let v = ld256(tile, base + 64 * j);
        c[2 * j] = _mm256_and_si256(v, m4);
        c[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
    }
    c
}

/// The scales of block `b` for rows `8h..8h+8`, as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales(tile: &[u8], b: usize, h: usize) -> __m256 {
    let at = b / 2 * PAIR_BYTES + 512 + b % 2 * 32 + 16 * h;
    let s = &tile[at..at + 16];
    // SAFETY: `s` holds the 16 bytes read.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) })
}

/// Half `h` of a tile times one prepared token (`packed512::prepare`, one token).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_mv(tile: &[u8], h: usize, p: &[u32], nb: usize) -> __m256 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in p.chunks_exact(MV_WORDS).take(nb).enumerate() {
        let c = codes(tile, b, h);
        let mut isum = _mm256_set1_epi32(a[8] as i32);
        for j in 0..4 {
            isum = dot4(isum, c[2 * j], _mm256_set1_epi32(a[j] as i32));
            isum = dot4(isum, c[2 * j + 1], _mm256_set1_epi32(a[4 + j] as i32));
        }
        let s = _mm256_mul_ps(scales(tile, b, h), _mm256_set1_ps(f32::from_bits(a[9])));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc);
    }
    acc
}

/// Half `h` of a tile times one prepared group of 8 tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_mm(tile: &[u8], h: usize, p: &[u32], nb: usize) -> [__m256; TT] {
    let mut acc = [_mm256_setzero_ps(); TT];
    for (b, pb) in p.chunks_exact(MM_WORDS).take(nb).enumerate() {
        let c = codes(tile, b, h);
        let scl = scales(tile, b, h);
        let (a, rest) = pb.split_at(TT * 8);
        let (dy, corr) = rest.split_at(TT);
        for t in 0..TT {
            let a = &a[8 * t..8 * t + 8];
            let mut isum = _mm256_set1_epi32(corr[t] as i32);
            for j in 0..4 {
                isum = dot4(isum, c[2 * j], _mm256_set1_epi32(a[j] as i32));
                isum = dot4(isum, c[2 * j + 1], _mm256_set1_epi32(a[4 + j] as i32));
            }
            let s = _mm256_mul_ps(scl, _mm256_set1_ps(f32::from_bits(dy[t])));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc[t]);
        }
    }
    acc
}

/// `out[r * tokens + t]` for the `rows` rows held by `tiles` and every prepared token.
#[target_feature(enable = "avx2,fma,f16c")]
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
        assert_eq!(
            prepared.len(),
            tokens.div_ceil(TT) * nb * MM_WORDS,
            "prepared batch"
        );
    }
    if nb == 0 {
        out.fill(0.0);
        return;
    }
    let mut lanes = [0f32; 8];
    for (i, tile) in tiles.chunks_exact(tb).enumerate() {
        for h in 0..2 {
            let r0 = i * TILE_ROWS + 8 * h;
            if r0 >= rows {
                break;
            }
            let nr = (rows - r0).min(8);
            if tokens == 1 {
                // SAFETY: `lanes` holds the 8 floats stored.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), half_mv(tile, h, prepared, nb)) };
                out[r0..r0 + nr].copy_from_slice(&lanes[..nr]);
                continue;
            }
            for (g, p) in prepared.chunks_exact(nb * MM_WORDS).enumerate() {
                let acc = half_mm(tile, h, p, nb);
                for (t, v) in acc.iter().enumerate() {
                    let token = g * TT + t;
                    if token >= tokens {
                        break;
                    }
                    // SAFETY: as above.
                    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *v) };
                    for (r, &l) in lanes[..nr].iter().enumerate() {
                        out[(r0 + r) * tokens + token] = l;
                    }
                }
            }
        }
    }
}
