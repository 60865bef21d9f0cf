//! AVX-512 (F, BW, VL, VNNI) kernels, with AVX2, FMA and F16C.
//!
//! `vpdpbusd` (u8 × i8, four products summed into each i32 lane, no saturation)
//! replaces AVX2's `maddubs` + `madd` pair, and `vpdpwssd` (i16 × i16 into i32)
//! scales the K-quant sub-block sums. Every product sum is exact in i32, so these
//! kernels have no saturation bounds to keep; they keep activations in -127..=127
//! only for the Q8_0 sign trick.
//!
//! Layout of the 4- and 5-bit 32-element formats: two blocks per 512-bit vector,
//! weights `[A 0-15 | A 16-31 | B 0-15 | B 16-31]` from broadcast loads of the nibble
//! bytes shifted by 0 or 4 per 128-bit lane, activations as stored; each block's
//! eight i32 lane sums are scaled by its `dx·dy`. Q8_0: one block per 256-bit vector,
//! the lane sums of eight blocks reduced together and scaled at once. K-quants: 64
//! elements per 512-bit vector.
//!
//! `matmul` reaches these only where the batch kernels of `gemm512.rs` do not apply
//! (F16/F32 weights, single tokens of Q8_0 and the K-quants); they are also the four-
//! row kernels.

use core::arch::x86_64::*;

use bytemuck::Pod;
use half::f16;

use super::avx2::{MinFields, f16x4, f16x8, for_chunks, h16, hsum, hsum128, ld128, ld256};
use super::{B4_0, B4_1, B4K, B5_0, B5_1, B5K, B6K, B8_0, B8_1, B8K};

pub(super) use super::avx2::{dot_f16, dot_f32};

/// The sums of the eight i32 lanes of each of eight vectors, as one vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn reduce8(v: [__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let h03 = _mm256_hadd_epi32(h01, h23);
    let h47 = _mm256_hadd_epi32(h45, h67);
    // Lanes: [v0..v3 low halves | v0..v3 high halves], likewise v4..v7.
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(h03, h47),
        _mm256_permute2x128_si256::<0x31>(h03, h47),
    )
}

/// `[a | b]`: two 256-bit halves from two loads, the second a masked broadcast
/// (a load and a blend: no lane-crossing shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair512(a: &[u8; 32], b: &[u8; 32]) -> __m512i {
    let lo = _mm512_castsi256_si512(ld256(a, 0));
    _mm512_mask_broadcast_i64x4(lo, 0xf0, ld256(b, 0))
}

/// Weight codes 0..15 of two blocks: `[A low nibbles | A high | B low | B high]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibbles512(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    let v = _mm512_broadcast_i32x4(ld128(a, 0));
    let v = _mm512_mask_broadcast_i32x4(v, 0xff00, ld128(b, 0));
    let v = _mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
    _mm512_and_si512(v, _mm512_set1_epi8(0x0f))
}

/// The fifth bits of two Q5 blocks as 0x10 bytes, in the layout of [`nibbles512`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn fifth_bits512(a: [u8; 4], b: [u8; 4]) -> __m512i {
    let k = u64::from(u32::from_le_bytes(a)) | u64::from(u32::from_le_bytes(b)) << 32;
    _mm512_maskz_mov_epi8(k, _mm512_set1_epi8(0x10))
}

/// The 32-element dot, two blocks per 512-bit vector: `codes(a, b)` gives their
/// codes (unsigned), `OFF` the code offset (8 for Q4_0, 16 for Q5_0, applied as
/// OFF·Σa); `mins` adds Σ m·s (Q4_1/Q5_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn legacy_dot<X: Pod, Y: Pod, const T: usize, const OFF: i8>(
    x: &[X],
    y: [&[Y]; T],
    dx: impl Fn(&X) -> [u8; 2],
    dy: impl Fn(&Y) -> [u8; 2],
    qy: impl Fn(&Y) -> &[u8; 32],
    codes: impl Fn(&X, &X) -> __m512i,
    mins: MinFields<X, Y>,
) -> [f32; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    let off = _mm512_set1_epi8(OFF);
    for_chunks(x, y, |xc, yc| {
        let sx = f16x8(xc.each_ref().map(&dx));
        let s8: [__m512; T] = core::array::from_fn(|t| {
            _mm512_castps256_ps512(_mm256_mul_ps(sx, f16x8(yc[t].each_ref().map(&dy))))
        });
        for k in 0..4 {
            let w = codes(&xc[2 * k], &xc[2 * k + 1]);
            let idx = _mm512_set1_epi32(2 * k as i32);
            let idx = _mm512_mask_add_epi32(idx, 0xff00, idx, _mm512_set1_epi32(1));
            for t in 0..T {
                let a = pair512(qy(&yc[t][2 * k]), qy(&yc[t][2 * k + 1]));
                let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, a);
                let p = if OFF != 0 {
                    _mm512_sub_epi32(p, _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, a))
                } else {
                    p
                };
                let s = _mm512_permutexvar_ps(idx, s8[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), s, acc[t]);
                if let Some((m, ms)) = mins {
                    let (xa, xb, ya, yb) =
                        (&xc[2 * k], &xc[2 * k + 1], &yc[t][2 * k], &yc[t][2 * k + 1]);
                    let v = f16x4(
                        h16(m(xa)) | h16(m(xb)) << 16 | h16(ms(ya)) << 32 | h16(ms(yb)) << 48,
                    );
                    // [ma·sa, mb·sb, -, -]: lanes 2 and 3 (s²) are never read.
                    acc_m[t] = _mm_add_ps(acc_m[t], _mm_mul_ps(v, _mm_movehl_ps(v, v)));
                }
            }
        }
    });
    let mut out = [0f32; T];
    for t in 0..T {
        let a = acc[t];
        let v = _mm256_add_ps(
            _mm512_castps512_ps256(a),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a))),
        );
        out[t] = hsum(v);
        if mins.is_some() {
            let m = acc_m[t];
            out[t] += _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
        }
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q4_0<const T: usize>(x: &[B4_0], y: [&[B8_0]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 8>(
        x,
        y,
        |b| b.d,
        |b| b.d,
        |b| &b.qs,
        |a, b| nibbles512(&a.qs, &b.qs),
        None,
    )
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q4_1<const T: usize>(x: &[B4_1], y: [&[B8_1]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 0>(
        x,
        y,
        |b| b.d,
        |b| b.d,
        |b| &b.qs,
        |a, b| nibbles512(&a.qs, &b.qs),
        Some((|b| b.m, |b| b.s)),
    )
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q5_0<const T: usize>(x: &[B5_0], y: [&[B8_0]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 16>(
        x,
        y,
        |b| b.d,
        |b| b.d,
        |b| &b.qs,
        |a, b| _mm512_or_si512(nibbles512(&a.qs, &b.qs), fifth_bits512(a.qh, b.qh)),
        None,
    )
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q5_1<const T: usize>(x: &[B5_1], y: [&[B8_1]; T]) -> [f32; T] {
    legacy_dot::<_, _, T, 0>(
        x,
        y,
        |b| b.d,
        |b| b.d,
        |b| &b.qs,
        |a, b| _mm512_or_si512(nibbles512(&a.qs, &b.qs), fifth_bits512(a.qh, b.qh)),
        Some((|b| b.m, |b| b.s)),
    )
}

/// Q8_0 × Q8_0: |w| (u8; -128 gives 128) times a with w's sign.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q8_0<const T: usize>(x: &[B8_0], y: [&[B8_0]; T]) -> [f32; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for_chunks(x, y, |xc, yc| {
        let w: [__m256i; 8] = core::array::from_fn(|k| ld256(&xc[k].qs, 0));
        let u: [__m256i; 8] = core::array::from_fn(|k| _mm256_sign_epi8(w[k], w[k]));
        let sx = f16x8(xc.each_ref().map(|b| b.d));
        for t in 0..T {
            let i: [__m256i; 8] = core::array::from_fn(|k| {
                let a = _mm256_sign_epi8(ld256(&yc[t][k].qs, 0), w[k]);
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), u[k], a)
            });
            let s = _mm256_mul_ps(sx, f16x8(yc[t].each_ref().map(|b| b.d)));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(i)), s, acc[t]);
        }
    });
    acc.map(|a| hsum(a))
}

// ---------------------------------------------------------------------------------
// K-quants: as the AVX2 kernels, with `vpdpwssd` applying the sub-block scales.

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

/// Q4_K and Q5_K, 64 elements per 512-bit vector: the 32 nibble bytes of sub-blocks
/// `2j` and `2j + 1` broadcast to both halves and shifted by 0 and 4 give the codes of
/// elements `64j..64j + 64` in order, against one load of activations. maddubs pairs
/// (≤ 2·31·127) then `vpdpwssd` by the 6-bit scales of the two sub-blocks.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn k4_dot<X: Copy, const T: usize, const FIVE: bool>(
    x: &[X],
    y: [&[B8K]; T],
    parts: impl Fn(&X) -> (&[u8; 2], &[u8; 2], &[u8; 12], &[u8; 128], Option<&[u8; 32]>),
) -> [f32; T] {
    assert!(y.iter().all(|y| y.len() == x.len()));
    let m4 = _mm512_set1_epi8(0x0f);
    let halves = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm_setzero_ps(); T];
    for (i, xb) in x.iter().enumerate() {
        let (d, dmin, scales, qs, qh) = parts(xb);
        let dd = _mm_cvtph_ps(_mm_cvtsi32_si128((h16(*d) | h16(*dmin) << 16) as i32));
        let sm = _mm256_cvtepu8_epi16(scales_mins_vec(scales));
        let sc = _mm512_castsi256_si512(sm);
        let mins = _mm256_extracti128_si256::<1>(sm);
        let hb = qh.map(|h| _mm512_broadcast_i64x4(ld256(h, 0)));
        let mut sumi = [_mm512_setzero_si512(); T];
        for j in 0..4 {
            let q = _mm512_broadcast_i64x4(ld256(qs, 32 * j));
            let mut v = _mm512_and_si512(_mm512_srlv_epi64(q, halves), m4);
            if FIVE && let Some(hb) = hb {
                // Bit 2j of qh[i] tops element 64j + i, bit 2j + 1 element 64j + 32 + i.
                let bits = _mm512_mask_blend_epi8(
                    0xffff_ffff_0000_0000,
                    _mm512_set1_epi8(1 << (2 * j)),
                    _mm512_set1_epi8(1 << (2 * j + 1)),
                );
                let k = _mm512_test_epi8_mask(hb, bits);
                v = _mm512_or_si512(v, _mm512_maskz_mov_epi8(k, _mm512_set1_epi8(0x10)));
            }
            // i16 scales: sub-block 2j in the low half, 2j + 1 in the high half.
            let s = _mm512_permutexvar_epi16(
                _mm512_mask_blend_epi16(
                    0xffff_0000,
                    _mm512_set1_epi16(2 * j as i16),
                    _mm512_set1_epi16(2 * j as i16 + 1),
                ),
                sc,
            );
            for t in 0..T {
                let a = ld512(&y[t][i].qs, 64 * j);
                sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(v, a), s);
            }
        }
        for t in 0..T {
            let yb = &y[t][i];
            let dy = _mm_set1_ps(f32::from_le_bytes(yb.d));
            let dd = _mm_mul_ps(dd, dy);
            let bs = ld256(&yb.bsums, 0);
            let b8 = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            let pm = _mm_madd_epi16(mins, b8);
            let d = _mm512_broadcastss_ps(dd);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), d, acc[t]);
            let dmin = _mm_movehdup_ps(dd);
            acc_m[t] = _mm_fmadd_ps(
                _mm_cvtepi32_ps(pm),
                _mm_shuffle_ps::<0>(dmin, dmin),
                acc_m[t],
            );
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(acc[t]) - hsum128(acc_m[t]);
    }
    out
}

/// `avx2::scales_mins_k4` in vector registers: `[sc0..sc7, m0..m7]` from the 12 packed
/// bytes (`u0..u2` their little-endian words): bytes 0-3 `u0 & 63`, 4-7
/// `(u2 & 15) | (u0 >> 6) << 4`, 8-11 `u1 & 63`, 12-15 `(u2 >> 4 & 15) | (u1 >> 6) << 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales_mins_vec(s: &[u8; 12]) -> __m128i {
    let w = |i: usize| i32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let v = _mm_setr_epi32(w(0), w(1), w(2), 0);
    // a = [u0, u2, u1, u2 >> 4], b = [0, u0, 0, u1]
    let a = _mm_srlv_epi32(
        _mm_shuffle_epi32::<0b10_01_10_00>(v),
        _mm_setr_epi32(0, 0, 0, 4),
    );
    let b = _mm_shuffle_epi32::<0b01_00_00_00>(v);
    let low = _mm_and_si128(
        a,
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    // Bits 6-7 of each byte of u0 (u1) to bits 4-5, into lanes 1 and 3.
    let top = _mm_and_si128(
        _mm_srli_epi32::<2>(b),
        _mm_setr_epi32(0, 0x3030_3030, 0, 0x3030_3030),
    );
    _mm_or_si128(low, top)
}

/// 64 bytes of `b` from `off`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn ld512<const N: usize>(b: &[u8; N], off: usize) -> __m512i {
    assert!(off + 64 <= N);
    // SAFETY: bytes off..off+64 are inside `b` (asserted); loadu takes any alignment.
    unsafe { _mm512_loadu_si512(b.as_ptr().add(off).cast()) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q4_k<const T: usize>(x: &[B4K], y: [&[B8K]; T]) -> [f32; T] {
    k4_dot::<_, T, false>(x, y, |b| (&b.d, &b.dmin, &b.scales, &b.qs, None))
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q5_k<const T: usize>(x: &[B5K], y: [&[B8K]; T]) -> [f32; T] {
    k4_dot::<_, T, true>(x, y, |b| (&b.d, &b.dmin, &b.scales, &b.qs, Some(&b.qh)))
}

/// Q6_K: codes 0..63 (value q-32), maddubs pairs ≤ 2·63·127, `vpdpwssd` by the i8
/// scales; the -32 through `bsums`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_q6_k<const T: usize>(x: &[B6K], y: [&[B8K]; T]) -> [f32; T] {
    assert!(y.iter().all(|y| y.len() == x.len()));
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut acc = [_mm256_setzero_ps(); T];
    for (i, xb) in x.iter().enumerate() {
        let sc16 = _mm256_cvtepi8_epi16(ld128(&xb.scales, 0));
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
                    let a = ld256(&y[t][i].qs, 128 * h + 32 * k);
                    sumi[t] = _mm256_dpwssd_epi32(sumi[t], _mm256_maddubs_epi16(qk, a), s);
                }
            }
        }
        let d = f16::from_le_bytes(xb.d).to_f32();
        for t in 0..T {
            let yb = &y[t][i];
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(ld256(&yb.bsums, 0), sc16));
            let dy = f32::from_le_bytes(yb.d);
            let s = _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], corr));
            acc[t] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * dy), acc[t]);
        }
    }
    acc.map(|a| hsum(a))
}
