//! AVX2 (+FMA, F16C) kernels.
//!
//! Every function here has `#[target_feature(enable = "avx2,fma,f16c")]`: safe to
//! call only where those features exist, which the path's table guarantees. Inside,
//! the only unsafe operations are loads and stores, each from a reference to a whole
//! array of the loaded size (so in bounds, and `loadu`/`storeu` need no alignment).
//!
//! The 32-element formats are computed two blocks per 256-bit vector: the low 128-bit
//! lane holds 16 elements of block A, the high lane 16 of block B, so a nibble load
//! of `[A.qs | B.qs]` gives elements 0-15 of both (low nibbles) and 16-31 (high). Each
//! lane's i32 sums then belong to one block and are scaled by that block's `dx·dy`.
//!
//! `_mm256_maddubs_epi16` (u8 × i8, pairs summed into i16, saturating) only ever sees
//! weight codes as its unsigned operand, never above 63, against activations in
//! -127..=127: |pair sum| ≤ 2·63·127 = 16002, so it never saturates; Q8_0 weights use
//! the sign trick (|w| ≤ 128 as u8, sign moved onto the activation): ≤ 2·128·127 = 32512.
//! Signed codes (Q4_0: q-8, Q5_0: q-16) are taken as unsigned q and corrected by
//! 8·Σa (16·Σa), computed the same way; each i16 intermediate is bounded in a comment.

use core::arch::x86_64::*;

use bytemuck::Zeroable;
use half::f16;

use super::{Avx2, Avx512};
use crate::kernels::f32_rows::{self, F32Vector};
use crate::quant::{
    self, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0,
    BlockQ8_1, BlockQ8_K,
};

// ---------------------------------------------------------------------------------
// Loads, stores, conversions.

/// Q8 codes (`[i8; 32]`) as the bytes the loads take.
#[inline]
fn qs8(q: &[i8; 32]) -> &[u8; 32] {
    bytemuck::cast_ref(q)
}

/// 16 bytes of `b` from `off`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld128<const N: usize>(b: &[u8; N], off: usize) -> __m128i {
    assert!(off + 16 <= N);
    // SAFETY: bytes off..off+16 are inside `b` (asserted); loadu takes any alignment.
    unsafe { _mm_loadu_si128(b.as_ptr().add(off).cast()) }
}

/// 32 bytes of `b` from `off`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld256<const N: usize>(b: &[u8; N], off: usize) -> __m256i {
    assert!(off + 32 <= N);
    // SAFETY: bytes off..off+32 are inside `b` (asserted); loadu takes any alignment.
    unsafe { _mm256_loadu_si256(b.as_ptr().add(off).cast()) }
}

/// Eight f32 of `x` from `off`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn ld_ps(x: &[f32], off: usize) -> __m256 {
    let x = &x[off..off + 8];
    // SAFETY: `x` holds the 8 floats read; loadu takes any alignment.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn st256(b: &mut [u8; 32], v: __m256i) {
    // SAFETY: `b` is 32 writable bytes; storeu takes any alignment.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// `[lo | hi]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn pair(lo: __m128i, hi: __m128i) -> __m256i {
    _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
}

#[inline]
pub(super) fn h16(b: [u8; 2]) -> u64 {
    u64::from(u16::from_le_bytes(b))
}

/// Eight f16 widened to f32. The words are assembled in general registers (scalar
/// work beside the vector code) and moved over with two `vmovq`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16x8(h: [[u8; 2]; 8]) -> __m256 {
    let mut lo = h16(h[0]) | h16(h[1]) << 16 | h16(h[2]) << 32 | h16(h[3]) << 48;
    let mut hi = h16(h[4]) | h16(h[5]) << 16 | h16(h[6]) << 32 | h16(h[7]) << 48;
    // SAFETY: an empty asm statement on two registers, touching nothing else. It keeps
    // LLVM from rebuilding the words with chains of `vpinsrw`, which cost more.
    unsafe {
        core::arch::asm!(
            "/* {0} {1} */",
            inout(reg) lo,
            inout(reg) hi,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64))
}

/// Two f16 widened to f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16x2(a: [u8; 2], b: [u8; 2]) -> (f32, f32) {
    let v = _mm_cvtph_ps(_mm_cvtsi32_si128((h16(a) | h16(b) << 16) as i32));
    (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    hsum128(s)
}

#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Calls `f` on the blocks eight at a time; a last partial chunk is padded with
/// all-zero blocks, whose scales are 0, so they add +0. `f` has one call site, so
/// it is inlined whole (and the accumulators it updates stay in registers).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn for_chunks<X: Zeroable + Copy, Y: Zeroable + Copy, const T: usize>(
    x: &[X],
    y: [&[Y]; T],
    mut f: impl FnMut(&[X; 8], [&[Y; 8]; T]),
) {
    let nb = x.len();
    assert!(y.iter().all(|y| y.len() == nb));
    let full = nb / 8;
    let rest = nb % 8;
    let mut xp = [X::zeroed(); 8];
    let mut yp = [[Y::zeroed(); 8]; T];
    if rest != 0 {
        xp[..rest].copy_from_slice(&x[8 * full..]);
        for (p, y) in yp.iter_mut().zip(y) {
            p[..rest].copy_from_slice(&y[8 * full..]);
        }
    }
    for c in 0..nb.div_ceil(8) {
        let (xc, yc): (&[X; 8], [&[Y; 8]; T]) = if c < full {
            (
                x[8 * c..8 * c + 8].try_into().unwrap(),
                y.map(|y| <&[Y; 8]>::try_from(&y[8 * c..8 * c + 8]).unwrap()),
            )
        } else {
            (&xp, yp.each_ref())
        };
        f(xc, yc);
    }
}

// ---------------------------------------------------------------------------------
// 32-element formats.

/// Activation elements 0-15 of blocks A and B, and 16-31: `[A.lo|B.lo], [A.hi|B.hi]`.
#[inline]
#[target_feature(enable = "avx2")]
fn act_pair(a: &[u8; 32], b: &[u8; 32]) -> (__m256i, __m256i) {
    (
        pair(ld128(a, 0), ld128(b, 0)),
        pair(ld128(a, 16), ld128(b, 16)),
    )
}

/// Weight codes 0..15 of a block pair in the pair layout: (elements 0-15, 16-31).
#[inline]
#[target_feature(enable = "avx2")]
fn nibble_pair(a: &[u8; 16], b: &[u8; 16]) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let w = pair(ld128(a, 0), ld128(b, 0));
    (
        _mm256_and_si256(w, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4),
    )
}

/// `[bits 0-15 of A | bits 0-15 of B]` and `[bits 16-31 of A | of B]` as 0x10 bytes:
/// the fifth bits of a Q5 block pair in the pair layout.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(qa: [u8; 4], qb: [u8; 4]) -> (__m256i, __m256i) {
    let (a, b) = (u32::from_le_bytes(qa), u32::from_le_bytes(qb));
    let lo = (a & 0xffff) | (b << 16);
    let hi = (a >> 16) | (b & 0xffff_0000);
    let v = _mm256_set1_epi64x((u64::from(lo) | u64::from(hi) << 32) as i64);
    // Byte i of each lane takes the byte of the word holding its bit.
    let lo_idx = _mm256_setr_epi64x(
        0,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let hi_idx = _mm256_add_epi8(lo_idx, _mm256_set1_epi8(4));
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let spread = |idx| {
        let b = _mm256_and_si256(_mm256_shuffle_epi8(v, idx), bit);
        _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(0x10))
    };
    (spread(lo_idx), spread(hi_idx))
}

/// Σ q·a per i32 lane of a block pair, q unsigned codes (< 32) in the pair layout,
/// minus `off`·Σa when `OFF` (8 for Q4_0, 16 for Q5_0). i16 bounds: a pair product
/// sum is ≤ 2·31·127 = 7874, two of them 15748; the offset term ≤ 2·2·16·127 = 8128;
/// the difference ≤ 23876 < 32767.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_isum<const OFF: i8>(lo: __m256i, hi: __m256i, al: __m256i, ah: __m256i) -> __m256i {
    let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, al), _mm256_maddubs_epi16(hi, ah));
    let p = if OFF != 0 {
        let o = _mm256_set1_epi8(OFF);
        let c = _mm256_add_epi16(_mm256_maddubs_epi16(o, al), _mm256_maddubs_epi16(o, ah));
        _mm256_sub_epi16(p, c)
    } else {
        p
    };
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Four f16 (`a | b << 16 | c << 32 | d << 48`) widened to f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn f16x4(h: u64) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi64_si128(h as i64))
}

/// `[ma·sa, mb·sb, -, -]`: the min terms of a Q4_1/Q5_1 block pair (lanes 2 and 3
/// hold s², ignored).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn pair_min_terms(ma: [u8; 2], mb: [u8; 2], sa: [u8; 2], sb: [u8; 2]) -> __m128 {
    let v = f16x4(h16(ma) | h16(mb) << 16 | h16(sa) << 32 | h16(sb) << 48);
    _mm_mul_ps(v, _mm_movehl_ps(v, v))
}

/// Where a Q4_1/Q5_1 block keeps its minimum `m`, and a Q8_1 block its `s`.
pub(super) type MinFields<X, Y> = Option<(fn(&X) -> [u8; 2], fn(&Y) -> [u8; 2])>;

/// The legacy 32-element dot: `codes(a, b)` gives the code vectors of a block pair,
/// `OFF` the code offset; `mins` adds Σ m·s (Q4_1/Q5_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn legacy_dot<X: Zeroable + Copy, Y: Zeroable + Copy, const T: usize, const OFF: i8>(
    x: &[X],
    y: [&[Y]; T],
    dx: impl Fn(&X) -> [u8; 2],
    dy: impl Fn(&Y) -> [u8; 2],
    qy: impl Fn(&Y) -> &[u8; 32],
    codes: impl Fn(&X, &X) -> (__m256i, __m256i),
    mins: MinFields<X, Y>,
) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    for_chunks(x, y, |xc, yc| {
        let sx = f16x8(xc.each_ref().map(&dx));
        let s8: [__m256; T] =
            core::array::from_fn(|t| _mm256_mul_ps(sx, f16x8(yc[t].each_ref().map(&dy))));
        for k in 0..4 {
            let (xa, xb) = (&xc[2 * k], &xc[2 * k + 1]);
            let (lo, hi) = codes(xa, xb);
            let (i0, i1) = (2 * k as i32, 2 * k as i32 + 1);
            let idx = _mm256_setr_epi32(i0, i0, i0, i0, i1, i1, i1, i1);
            for t in 0..T {
                let (ya, yb) = (&yc[t][2 * k], &yc[t][2 * k + 1]);
                let (al, ah) = act_pair(qy(ya), qy(yb));
                let i = pair_isum::<OFF>(lo, hi, al, ah);
                let s = _mm256_permutevar8x32_ps(s8[t], idx);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), s, acc[t]);
                if let Some((m, ms)) = mins {
                    let p = pair_min_terms(m(xa), m(xb), ms(ya), ms(yb));
                    acc_m[t] = _mm_add_ps(acc_m[t], p);
                }
            }
        }
    });
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]);
        if mins.is_some() {
            let m = acc_m[t];
            out[t] += _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
        }
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q4_0<const T: usize>(x: &[BlockQ4_0], y: [&[BlockQ8_0]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 8>(
        x,
        y,
        |b| b.d.to_le_bytes(),
        |b| b.d.to_le_bytes(),
        |b| bytemuck::cast_ref(&b.qs),
        |a, b| nibble_pair(&a.qs, &b.qs),
        None,
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q4_1<const T: usize>(x: &[BlockQ4_1], y: [&[BlockQ8_1]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 0>(
        x,
        y,
        |b| b.d.to_le_bytes(),
        |b| b.d.to_le_bytes(),
        |b| bytemuck::cast_ref(&b.qs),
        |a, b| nibble_pair(&a.qs, &b.qs),
        Some((|b| b.m.to_le_bytes(), |b| b.s.to_le_bytes())),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q5_0<const T: usize>(x: &[BlockQ5_0], y: [&[BlockQ8_0]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 16>(
        x,
        y,
        |b| b.d.to_le_bytes(),
        |b| b.d.to_le_bytes(),
        |b| bytemuck::cast_ref(&b.qs),
        |a, b| {
            let (lo, hi) = nibble_pair(&a.qs, &b.qs);
            let (bl, bh) = fifth_bits(a.qh, b.qh);
            (_mm256_or_si256(lo, bl), _mm256_or_si256(hi, bh))
        },
        None,
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q5_1<const T: usize>(x: &[BlockQ5_1], y: [&[BlockQ8_1]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 0>(
        x,
        y,
        |b| b.d.to_le_bytes(),
        |b| b.d.to_le_bytes(),
        |b| bytemuck::cast_ref(&b.qs),
        |a, b| {
            let (lo, hi) = nibble_pair(&a.qs, &b.qs);
            let (bl, bh) = fifth_bits(a.qh, b.qh);
            (_mm256_or_si256(lo, bl), _mm256_or_si256(hi, bh))
        },
        Some((|b| b.m.to_le_bytes(), |b| b.s.to_le_bytes())),
    )
}

/// `[xa·ya, xb·yb, -, -]`.
#[inline]
#[target_feature(enable = "avx2,f16c")]
pub(super) fn pair_scale2(xa: [u8; 2], xb: [u8; 2], ya: [u8; 2], yb: [u8; 2]) -> __m128 {
    let v = f16x4(h16(xa) | h16(xb) << 16 | h16(ya) << 32 | h16(yb) << 48);
    _mm_mul_ps(v, _mm_movehl_ps(v, v))
}

/// Q8_0 × Q8_0, one block per vector: |w| (as u8; -128 gives 128) times a with w's
/// sign, pair sums ≤ 2·128·127 = 32512.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q8_0<const T: usize>(x: &[BlockQ8_0], y: [&[BlockQ8_0]; T]) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let ones = _mm256_set1_epi16(1);
    for_chunks(x, y, |xc, yc| {
        for k in 0..4 {
            let (xa, xb) = (&xc[2 * k], &xc[2 * k + 1]);
            let (wa, wb) = (ld256(qs8(&xa.qs), 0), ld256(qs8(&xb.qs), 0));
            let (ua, ub) = (_mm256_sign_epi8(wa, wa), _mm256_sign_epi8(wb, wb));
            for t in 0..T {
                let (ya, yb) = (&yc[t][2 * k], &yc[t][2 * k + 1]);
                let aa = _mm256_sign_epi8(ld256(qs8(&ya.qs), 0), wa);
                let ab = _mm256_sign_epi8(ld256(qs8(&yb.qs), 0), wb);
                let ia = _mm256_madd_epi16(_mm256_maddubs_epi16(ua, aa), ones);
                let ib = _mm256_madd_epi16(_mm256_maddubs_epi16(ub, ab), ones);
                let s = _mm256_castps128_ps256(pair_scale2(
                    xa.d.to_le_bytes(),
                    xb.d.to_le_bytes(),
                    ya.d.to_le_bytes(),
                    yb.d.to_le_bytes(),
                ));
                let sa = _mm256_permutevar8x32_ps(s, _mm256_setzero_si256());
                let sb = _mm256_permutevar8x32_ps(s, _mm256_set1_epi32(1));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), sa, acc[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ib), sb, acc[t]);
            }
        }
    });
    acc.map(|a| hsum(a))
}

// ---------------------------------------------------------------------------------
// K-quants.

/// The 6-bit scales and mins of a Q4_K/Q5_K super-block as 16 bytes
/// `[sc0..sc7, m0..m7]` (ggml's `get_scale_min_k4` for every sub-block at once).
#[inline]
pub(super) fn scales_mins_k4(s: &[u8; 12]) -> [u8; 16] {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (w(0), w(1), w(2));
    let (m6, m4, m2) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    let sc_lo = u0 & m6;
    let sc_hi = (u2 & m4) | ((u0 >> 6) & m2) << 4;
    let m_lo = u1 & m6;
    let m_hi = ((u2 >> 4) & m4) | ((u1 >> 6) & m2) << 4;
    let mut out = [0u8; 16];
    for (o, v) in out.chunks_exact_mut(4).zip([sc_lo, sc_hi, m_lo, m_hi]) {
        o.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// `pshufb` indices making every i16 of a vector scale `s` (of eight i16 in a lane).
static SCALE_SHUF: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut s = 0;
    while s < 8 {
        let mut i = 0;
        while i < 32 {
            t[s][i] = (2 * s + i % 2) as u8;
            i += 1;
        }
        s += 1;
    }
    t
};

/// `pshufb` indices for Q6_K: in lane 0 every i16 is scale `2k`, in lane 1 `2k + 1`.
static SCALE_PAIR_SHUF: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            let s = 2 * k + i / 16;
            t[k][i] = (2 * s + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    t
};

/// The fifth bit (bit `s` of each byte) of Q5_K sub-block `s`, moved to 0x10.
#[inline]
#[target_feature(enable = "avx2")]
fn q5k_bit(hb: __m256i, s: usize) -> __m256i {
    let v = match s {
        0 => _mm256_slli_epi16::<4>(hb),
        1 => _mm256_slli_epi16::<3>(hb),
        2 => _mm256_slli_epi16::<2>(hb),
        3 => _mm256_slli_epi16::<1>(hb),
        4 => hb,
        5 => _mm256_srli_epi16::<1>(hb),
        6 => _mm256_srli_epi16::<2>(hb),
        _ => _mm256_srli_epi16::<3>(hb),
    };
    _mm256_and_si256(v, _mm256_set1_epi8(0x10))
}

/// Q4_K and Q5_K: per 64 elements the low nibbles are sub-block `2j`, the high ones
/// `2j + 1`. maddubs pairs ≤ 2·31·127 = 7874; × 6-bit scale in madd: i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_dot<X: Copy, const T: usize, const FIVE: bool>(
    x: &[X],
    y: [&[BlockQ8_K]; T],
    parts: impl Fn(&X) -> (f16, f16, &[u8; 12], &[u8; 128], Option<&[u8; 32]>),
) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    for (i, xb) in x.iter().enumerate() {
        let (d, dmin, scales, qs, qh) = parts(xb);
        let (d, dmin) = f16x2(d.to_le_bytes(), dmin.to_le_bytes());
        let sm = _mm256_cvtepu8_epi16(ld128(&scales_mins_k4(scales), 0));
        let sc = _mm256_permute2x128_si256::<0x00>(sm, sm);
        let mins = _mm256_extracti128_si256::<1>(sm);
        let hb = qh.map(|h| ld256(h, 0));
        let mut sumi = [_mm256_setzero_si256(); T];
        for j in 0..4 {
            let q = ld256(qs, 32 * j);
            let mut lo = _mm256_and_si256(q, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
            if FIVE && let Some(hb) = hb {
                lo = _mm256_or_si256(lo, q5k_bit(hb, 2 * j));
                hi = _mm256_or_si256(hi, q5k_bit(hb, 2 * j + 1));
            }
            let s_lo = _mm256_shuffle_epi8(sc, ld256(&SCALE_SHUF[2 * j], 0));
            let s_hi = _mm256_shuffle_epi8(sc, ld256(&SCALE_SHUF[2 * j + 1], 0));
            for t in 0..T {
                let a: &[u8; 256] = bytemuck::cast_ref(&y[t][i].qs);
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ld256(a, 64 * j)), s_lo);
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ld256(a, 64 * j + 32)), s_hi);
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(pl, ph));
            }
        }
        for t in 0..T {
            let yb = &y[t][i];
            let dy = yb.d;
            // bsums pairwise: the sums of the eight 32-element sub-blocks (≤ 4064).
            let bs = ld256(bytemuck::cast_ref::<_, [u8; 32]>(&yb.bsums), 0);
            let b8 = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            let pm = _mm_madd_epi16(mins, b8);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * dy), acc[t]);
            acc_m[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(pm), _mm_set1_ps(dmin * dy), acc_m[t]);
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) - hsum128(acc_m[t]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q4_k<const T: usize>(x: &[BlockQ4_K], y: [&[BlockQ8_K]; T]) -> [f32; T] {
    k4_dot::<_, T, false>(x, y, |b| (b.d, b.dmin, &b.scales, &b.qs, None))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q5_k<const T: usize>(x: &[BlockQ5_K], y: [&[BlockQ8_K]; T]) -> [f32; T] {
    k4_dot::<_, T, true>(x, y, |b| (b.d, b.dmin, &b.scales, &b.qs, Some(&b.qh)))
}

/// Q6_K: codes 0..63 (value q-32); per 128 elements four vectors of 32, each two
/// 16-element sub-blocks (one per lane). maddubs pairs ≤ 2·63·127 = 16002; the -32
/// goes through `bsums`: 32·Σ sc·bsum.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_q6_k<const T: usize>(x: &[BlockQ6_K], y: [&[BlockQ8_K]; T]) -> [f32; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = [_mm256_setzero_ps(); T];
    for (i, xb) in x.iter().enumerate() {
        let sc16 = _mm256_cvtepi8_epi16(ld128(bytemuck::cast_ref::<_, [u8; 16]>(&xb.scales), 0));
        let mut sumi = [_mm256_setzero_si256(); T];
        for h in 0..2 {
            let sc = if h == 0 {
                _mm256_permute2x128_si256::<0x00>(sc16, sc16)
            } else {
                _mm256_permute2x128_si256::<0x11>(sc16, sc16)
            };
            let l1 = ld256(&xb.ql, 64 * h);
            let l2 = ld256(&xb.ql, 64 * h + 32);
            let qh = ld256(&xb.qh, 32 * h);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m2)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l2, m4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0c))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(l2), m4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xc0u8 as i8))),
                ),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let s = _mm256_shuffle_epi8(sc, ld256(&SCALE_PAIR_SHUF[k], 0));
                for t in 0..T {
                    let a = ld256(
                        bytemuck::cast_ref::<_, [u8; 256]>(&y[t][i].qs),
                        128 * h + 32 * k,
                    );
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qk, a), s);
                    sumi[t] = _mm256_add_epi32(sumi[t], p);
                }
            }
        }
        let d = xb.d.to_f32();
        for t in 0..T {
            let yb = &y[t][i];
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(
                ld256(bytemuck::cast_ref::<_, [u8; 32]>(&yb.bsums), 0),
                sc16,
            ));
            let dy = yb.d;
            let s = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr));
            acc[t] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * dy), acc[t]);
        }
    }
    acc.map(|a| hsum(a))
}

// ---------------------------------------------------------------------------------
// Float weights.

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len() / 4;
    let ld = |b: &[u8], i: usize| {
        let c: &[u8; 32] = b[4 * i..4 * i + 32].try_into().unwrap();
        _mm256_castsi256_ps(ld256(c, 0))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let body = n / 32 * 32;
    for i in (0..body).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(ld(w, i + 8 * k), ld(a, i + 8 * k), *acc);
        }
    }
    let mut i = body;
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld(w, i), ld(a, i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let f = |b: &[u8], i: usize| f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    hsum(v) + (i..n).map(|i| f(w, i) * f(a, i)).sum::<f32>()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len() / 2;
    let lw = |i: usize| {
        let c: &[u8; 16] = w[2 * i..2 * i + 16].try_into().unwrap();
        _mm256_cvtph_ps(ld128(c, 0))
    };
    let la = |i: usize| {
        let c: &[u8; 32] = a[4 * i..4 * i + 32].try_into().unwrap();
        _mm256_castsi256_ps(ld256(c, 0))
    };
    let mut acc = [_mm256_setzero_ps(); 4];
    let body = n / 32 * 32;
    for i in (0..body).step_by(32) {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(lw(i + 8 * k), la(i + 8 * k), *acc);
        }
    }
    let mut i = body;
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(lw(i), la(i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let tail = (i..n).map(|i| {
        let wi = f16::from_le_bytes([w[2 * i], w[2 * i + 1]]).to_f32();
        wi * f32::from_le_bytes(a[4 * i..4 * i + 4].try_into().unwrap())
    });
    hsum(v) + tail.sum::<f32>()
}

/// `y += a·x`, eight lanes per fused multiply-add.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy rows");
    let va = _mm256_set1_ps(a);
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact_mut(8);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        // SAFETY: both chunks hold exactly eight f32; loadu/storeu take any alignment.
        unsafe {
            let v = _mm256_fmadd_ps(
                va,
                _mm256_loadu_ps(xs.as_ptr()),
                _mm256_loadu_ps(ys.as_ptr()),
            );
            _mm256_storeu_ps(ys.as_mut_ptr(), v);
        }
    }
    for (y, &x) in yc.into_remainder().iter_mut().zip(xc.remainder()) {
        *y = a.mul_add(x, *y);
    }
}

/// [`f32_rows::axpy_rows`] on eight lanes.
#[target_feature(enable = "avx2,fma")]
pub(super) fn axpy_rows(s: Avx2, a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    f32_rows::axpy_rows(s, a, x, stride, y)
}

/// [`f32_rows::axpy_rows`] on sixteen lanes.
#[target_feature(enable = "avx2,fma,avx512f")]
pub(super) fn axpy_rows_512(s: Avx512, a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    f32_rows::axpy_rows(s, a, x, stride, y)
}

// SAFETY: an `Avx2` exists only after detecting AVX2 and FMA, all these use; loads
// and stores take any alignment.
unsafe impl F32Vector for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller's pointer is valid for 8 reads; see the impl.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller's pointer is valid for 8 writes; see the impl.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn splat(self, a: f32) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_set1_ps(a) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, x: __m256, y: __m256) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_fmadd_ps(a, x, y) }
    }
}

// SAFETY: an `Avx512` exists only after detecting AVX-512F, all these use; loads and
// stores take any alignment.
unsafe impl F32Vector for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller's pointer is valid for 16 reads; see the impl.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller's pointer is valid for 16 writes; see the impl.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    fn splat(self, a: f32) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_set1_ps(a) }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, x: __m512, y: __m512) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_fmadd_ps(a, x, y) }
    }
}

// ---------------------------------------------------------------------------------
// Activation quantizers: the bytes of the scalar reference, block by block.

/// 32 codes packed from four vectors of eight i32 in -128..=127, in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn pack_i8(q: [__m256i; 4]) -> __m256i {
    let p01 = _mm256_packs_epi32(q[0], q[1]);
    let p23 = _mm256_packs_epi32(q[2], q[3]);
    let p = _mm256_packs_epi16(p01, p23);
    // The packs interleave 128-bit lanes: dwords come out as 0 2 4 6 1 3 5 7.
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// C's `roundf` (ties away from zero) then conversion, for |v| < 2²³: adding the
/// largest float below 0.5 with v's sign and truncating rounds exactly as `roundf`
/// (0.49999997 + 0.5 would round up to 1 in f32; this addend never crosses an
/// integer it should not). `_mm256_round_ps` would round ties to even.
#[inline]
#[target_feature(enable = "avx2")]
fn roundf_epi32(v: __m256) -> __m256i {
    let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
    let half = _mm256_or_ps(sign, _mm256_set1_ps(0.499_999_97));
    _mm256_cvttps_epi32(_mm256_add_ps(v, half))
}

/// [`roundf_epi32`] on eight values, for the tests.
#[cfg(test)]
#[target_feature(enable = "avx2")]
pub(super) fn roundf_x8(v: [f32; 8]) -> [i32; 8] {
    let r = roundf_epi32(ld_ps(&v, 0));
    let mut out = [0u8; 32];
    st256(&mut out, r);
    bytemuck::cast(out)
}

/// The codes of a Q8_0/Q8_1 block, its f32 scale and the sum of its codes; `None`
/// for blocks the scalar reference should do (a non-finite value, or a scale so
/// small that 1/d overflows: both outside the range where rounding above is valid).
#[inline]
#[target_feature(enable = "avx2")]
fn q8_block(x: &[f32; 32]) -> Option<(f32, __m256i, i32)> {
    let v = [ld_ps(x, 0), ld_ps(x, 8), ld_ps(x, 16), ld_ps(x, 24)];
    // Non-negative floats order as their bits: an integer max of |v| is exact.
    let abs = v.map(|v| _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fff_ffff)));
    let m = _mm256_max_epi32(
        _mm256_max_epi32(abs[0], abs[1]),
        _mm256_max_epi32(abs[2], abs[3]),
    );
    let m = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    let bits = _mm_cvtsi128_si32(m) as u32;
    if bits >= 0x7f80_0000 {
        return None;
    }
    let amax = f32::from_bits(bits);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if !id.is_finite() {
        return None;
    }
    let idv = _mm256_set1_ps(id);
    let q = v.map(|v| roundf_epi32(_mm256_mul_ps(v, idv)));
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    Some((d, pack_i8(q), _mm_cvtsi128_si32(s)))
}

#[target_feature(enable = "avx2")]
pub(super) fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let xb: &[f32; 32] = xb.try_into().unwrap();
        match q8_block(xb) {
            Some((d, q, _)) => {
                yb.d = f16::from_f32(d);
                st256(bytemuck::cast_mut(&mut yb.qs), q);
            }
            None => {
                let mut b = [quant::BlockQ8_0::zeroed()];
                quant::quantize_row_q8_0_ref(xb, &mut b);
                *yb = b[0];
            }
        }
    }
}

#[target_feature(enable = "avx2")]
pub(super) fn quantize_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    for (xb, yb) in x.chunks_exact(32).zip(y) {
        let xb: &[f32; 32] = xb.try_into().unwrap();
        match q8_block(xb) {
            Some((d, q, sum)) => {
                yb.d = f16::from_f32(d);
                yb.s = f16::from_f32(sum as f32 * d);
                st256(bytemuck::cast_mut(&mut yb.qs), q);
            }
            None => {
                let mut b = [quant::BlockQ8_1::zeroed()];
                quant::quantize_row_q8_1_ref(xb, &mut b);
                *yb = b[0];
            }
        }
    }
}

/// ggml's `quantize_row_q8_K_ref`, every input included: `nearest_int` is the same
/// bit trick (exact for any f32, NaN and infinities too), codes are narrowed to i8 by
/// truncation as C's store does, and the maximum is the first of largest magnitude.
#[target_feature(enable = "avx2")]
pub(super) fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8_K]) {
    let abs_mask = _mm256_set1_ps(-0.0);
    for (xb, yb) in x.chunks_exact(256).zip(y) {
        // max_ps(|v|, acc) returns acc when |v| is NaN: NaN never wins, as in C.
        let mut m = _mm256_setzero_ps();
        for i in (0..256).step_by(8) {
            m = _mm256_max_ps(_mm256_andnot_ps(abs_mask, ld_ps(xb, i)), m);
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        if amax == 0.0 {
            *yb = BlockQ8_K::zeroed();
            continue;
        }
        let target = _mm256_set1_ps(amax);
        let mut max = amax;
        for i in (0..256).step_by(8) {
            let v = ld_ps(xb, i);
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                _mm256_andnot_ps(abs_mask, v),
                target,
            ));
            if hit != 0 {
                max = xb[i + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let is = _mm256_set1_ps(iscale);
        let magic = _mm256_set1_ps(12_582_912.0);
        let low = _mm256_set1_epi32(0x007f_ffff);
        let bias = _mm256_set1_epi32(0x0040_0000);
        let byte = _mm256_set1_epi32(0xff);
        let mut sums = [0i16; 16];
        for c in 0..8 {
            let q: [__m256i; 4] = core::array::from_fn(|k| {
                let b = _mm256_add_ps(_mm256_mul_ps(is, ld_ps(xb, 32 * c + 8 * k)), magic);
                let n = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(b), low), bias);
                // min(127), then the low byte, as C's store into int8_t.
                _mm256_and_si256(_mm256_min_epi32(n, _mm256_set1_epi32(127)), byte)
            });
            // Values 0..=255: the unsigned packs are exact.
            let p01 = _mm256_packus_epi32(q[0], q[1]);
            let p23 = _mm256_packus_epi32(q[2], q[3]);
            let p = _mm256_packus_epi16(p01, p23);
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            let qs: &mut [u8; 256] = bytemuck::cast_mut(&mut yb.qs);
            let out: &mut [u8; 32] = (&mut qs[32 * c..32 * c + 32]).try_into().unwrap();
            st256(out, p);
            // Σ of 8 codes as (q + 128) by sad, less 8·128.
            let sad = _mm256_sad_epu8(
                _mm256_xor_si256(p, _mm256_set1_epi8(-128)),
                _mm256_setzero_si256(),
            );
            let s0 = _mm256_extract_epi64::<0>(sad) + _mm256_extract_epi64::<1>(sad) - 2048;
            let s1 = _mm256_extract_epi64::<2>(sad) + _mm256_extract_epi64::<3>(sad) - 2048;
            sums[2 * c] = s0 as i16;
            sums[2 * c + 1] = s1 as i16;
        }
        yb.bsums = sums;
        yb.d = 1.0 / iscale;
    }
}
