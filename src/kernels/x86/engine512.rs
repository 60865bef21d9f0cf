//! The AVX-512 VNNI tile engine: 16 rows per tile (one i32 lane each), 8 tokens per
//! group. One `vpdpbusd` multiplies a code vector (four unsigned codes of each of the
//! 16 rows) by one activation word broadcast to every lane: 64 products per
//! instruction. Codes stay unsigned (`vpdpbusd` is u8 × s8): offsets are corrected by
//! `-offset·Σa` per token, and Q8_0's signed codes are flipped to `q + 128`.

use core::arch::x86_64::*;

use half::f16;

use super::Avx512;
use crate::kernels::tile::layout::Lanes;
use crate::kernels::tile::{Engine, Format, mul_tile};

/// Tokens per full group.
pub(super) const TOKENS: usize = 8;

/// `v` shifted per 16-bit lane by a constant `shift` (left if positive).
macro_rules! shift16 {
    ($v:expr, $shift:expr, $l:ident, $r:ident) => {
        match $shift {
            0 => $v,
            1 => $l::<1>($v),
            2 => $l::<2>($v),
            3 => $l::<3>($v),
            4 => $l::<4>($v),
            5 => $l::<5>($v),
            6 => $l::<6>($v),
            7 => $l::<7>($v),
            -1 => $r::<1>($v),
            -2 => $r::<2>($v),
            -3 => $r::<3>($v),
            -4 => $r::<4>($v),
            -5 => $r::<5>($v),
            -6 => $r::<6>($v),
            -7 => $r::<7>($v),
            s => panic!("byte shift {s}"),
        }
    };
}
pub(super) use shift16;

// SAFETY: an `Avx512` exists only after `Avx512::detect` found every feature these
// methods use (AVX-512 F/BW/VL/VNNI, AVX2, FMA, F16C); each `unsafe` block below
// relies on that alone, plus, for loads and stores, on the reference it is given.
unsafe impl Engine<16> for Avx512 {
    type V = __m512i;
    type I = __m512i;
    type F = __m512;
    type RowsI = __m512i;
    type RowsF = __m512;

    const CENTERS: bool = false;
    const PAIRED: bool = false;
    const Q8_OFFSET: i32 = 128;

    #[inline(always)]
    fn load(self, v: &Lanes<16>) -> __m512i {
        // SAFETY: see the impl; `v` is 64 readable bytes.
        unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
    }

    #[inline(always)]
    fn shift_mask(self, v: __m512i, shift: i32, mask: u8) -> __m512i {
        // SAFETY: see the impl.
        unsafe {
            let s = shift16!(v, shift, _mm512_slli_epi16, _mm512_srli_epi16);
            _mm512_and_si512(s, _mm512_set1_epi8(mask as i8))
        }
    }

    /// The shift, then one `vpternlogd`: `base | (s & mask)`.
    #[inline(always)]
    fn merge_bits(self, base: __m512i, from: __m512i, shift: i32, mask: u8) -> __m512i {
        // SAFETY: see the impl.
        unsafe {
            let s = shift16!(from, shift, _mm512_slli_epi16, _mm512_srli_epi16);
            _mm512_ternarylogic_epi32::<0xf8>(base, s, _mm512_set1_epi8(mask as i8))
        }
    }

    #[inline(always)]
    fn or(self, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_or_si512(a, b) }
    }

    #[inline(always)]
    fn sub(self, v: __m512i, k: u8) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_sub_epi8(v, _mm512_set1_epi8(k as i8)) }
    }

    #[inline(always)]
    fn xor(self, v: __m512i, k: u8) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_xor_si512(v, _mm512_set1_epi8(k as i8)) }
    }

    #[inline(always)]
    fn q8_codes(self, v: __m512i) -> __m512i {
        // SAFETY: see the impl.
        unsafe { _mm512_xor_si512(v, _mm512_set1_epi8(-128)) }
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [__m512i; T],
        codes: &[__m512i; N],
        words: &[u32],
        w: usize,
        w0: usize,
        _bound: i32,
    ) -> [__m512i; T] {
        self.dots_q8(init, codes, words, w, w0)
    }

    #[inline(always)]
    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [__m512i; T],
        codes: &[__m512i; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [__m512i; T] {
        let mut acc = init;
        for (t, acc) in acc.iter_mut().enumerate() {
            let a: &[u32; N] = words[t * w + w0..][..N].try_into().unwrap();
            for (c, &a) in codes.iter().zip(a) {
                // SAFETY: see the impl.
                *acc = unsafe { _mm512_dpbusd_epi32(*acc, *c, _mm512_set1_epi32(a as i32)) };
            }
        }
        acc
    }

    #[inline(always)]
    fn zero_i<const T: usize>(self) -> [__m512i; T] {
        // SAFETY: see the impl.
        [unsafe { _mm512_setzero_si512() }; T]
    }

    #[inline(always)]
    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [__m512i; T] {
        let mut out = self.zero_i::<T>();
        for (o, &x) in out.iter_mut().zip(v) {
            // SAFETY: see the impl.
            *o = unsafe { _mm512_set1_epi32(x) };
        }
        out
    }

    #[inline(always)]
    fn mla_rows<const T: usize>(
        self,
        acc: [__m512i; T],
        x: [__m512i; T],
        rows: __m512i,
    ) -> [__m512i; T] {
        let mut acc = acc;
        for (a, x) in acc.iter_mut().zip(x) {
            // SAFETY: see the impl.
            *a = unsafe { _mm512_add_epi32(*a, _mm512_mullo_epi32(x, rows)) };
        }
        acc
    }

    #[inline(always)]
    fn mla_outer<const T: usize>(
        self,
        acc: [__m512i; T],
        rows: __m512i,
        tokens: &[i32; T],
    ) -> [__m512i; T] {
        let mut acc = acc;
        for (a, &t) in acc.iter_mut().zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe { _mm512_add_epi32(*a, _mm512_mullo_epi32(rows, _mm512_set1_epi32(t))) };
        }
        acc
    }

    #[inline(always)]
    fn rows_u8(self, b: &[u8; 16]) -> __m512i {
        // SAFETY: see the impl; `b` is 16 readable bytes.
        unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_i8(self, b: &[i8; 16]) -> __m512i {
        // SAFETY: see the impl; `b` is 16 readable bytes.
        unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_f16(self, b: &[f16; 16]) -> __m512 {
        // SAFETY: see the impl; `b` is 32 readable bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_f32(self, b: &[f32; 16]) -> __m512 {
        // SAFETY: see the impl; `b` is 16 readable floats.
        unsafe { _mm512_loadu_ps(b.as_ptr()) }
    }

    #[inline(always)]
    fn scale_rows(self, r: __m512, k: f32) -> __m512 {
        // SAFETY: see the impl.
        unsafe { _mm512_mul_ps(r, _mm512_set1_ps(k)) }
    }

    #[inline(always)]
    fn zero_f<const T: usize>(self) -> [__m512; T] {
        // SAFETY: see the impl.
        [unsafe { _mm512_setzero_ps() }; T]
    }

    #[inline(always)]
    fn fma_scaled<const T: usize>(
        self,
        acc: [__m512; T],
        x: [__m512i; T],
        rows: __m512,
        tokens: &[f32; T],
    ) -> [__m512; T] {
        let mut acc = acc;
        for ((a, x), &t) in acc.iter_mut().zip(x).zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe {
                let s = _mm512_mul_ps(rows, _mm512_set1_ps(t));
                _mm512_fmadd_ps(_mm512_cvtepi32_ps(x), s, *a)
            };
        }
        acc
    }

    #[inline(always)]
    fn fma_outer<const T: usize>(
        self,
        acc: [__m512; T],
        rows: __m512,
        tokens: &[f32; T],
    ) -> [__m512; T] {
        let mut acc = acc;
        for (a, &t) in acc.iter_mut().zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe { _mm512_fmadd_ps(rows, _mm512_set1_ps(t), *a) };
        }
        acc
    }

    #[inline(always)]
    fn add_f<const T: usize>(self, a: [__m512; T], b: [__m512; T]) -> [__m512; T] {
        let mut a = a;
        for (a, b) in a.iter_mut().zip(b) {
            // SAFETY: see the impl.
            *a = unsafe { _mm512_add_ps(*a, b) };
        }
        a
    }

    #[inline(always)]
    fn store<const T: usize>(self, acc: &[__m512; T], out: &mut [f32]) {
        for (v, o) in acc.iter().zip(out.chunks_exact_mut(16)) {
            // SAFETY: see the impl; `o` is 16 writable floats.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *v) }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn mul<F: Format, const T: usize>(e: Avx512, tile: &[u8], group: &[u32], out: &mut [f32]) {
    mul_tile::<F, Avx512, 16, T>(e, tile, group, out)
}

/// One tile of 16 rows times one prepared token.
pub(super) fn gemv_16x1<F: Format>(_cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]) {
    let e = Avx512::get();
    // SAFETY: `e` exists, so this CPU has the features `mul` enables.
    unsafe { mul::<F, 1>(e, tile, group, out) }
}

/// One tile of 16 rows times a prepared group of `n` tokens (8, 4 or 2).
pub(super) fn gemm_16x8<F: Format>(
    _cols: usize,
    tile: &[u8],
    group: &[u32],
    n: usize,
    out: &mut [f32],
) {
    let e = Avx512::get();
    // SAFETY: `e` exists, so this CPU has the features `mul` enables.
    unsafe {
        match n {
            8 => mul::<F, 8>(e, tile, group, out),
            4 => mul::<F, 4>(e, tile, group, out),
            2 => mul::<F, 2>(e, tile, group, out),
            _ => mul::<F, 1>(e, tile, group, out),
        }
    }
}
