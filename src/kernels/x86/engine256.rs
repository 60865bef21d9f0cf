//! The AVX2 tile engine: 8 rows per tile (one i32 lane each), 4 tokens per group.
//! Without VNNI, `vpmaddubsw` (unsigned codes × signed activation bytes, pair sums in
//! i16) then `vpmaddwd` by ones give each lane the sum of its four products, as
//! `vpdpbusd` does. Codes of at most 31 (4- and 5-bit) let four `vpmaddubsw` results
//! add in i16 first (4·2·31·127 < 2¹⁵), 6-bit codes two. Q8_0's signed codes use
//! the sign trick (`|w|` times `a` carrying `w`'s sign), exact for activations in
//! -127..=127, which every Q8 quantizer writes.

use core::arch::x86_64::*;

use half::f16;

use super::Avx2;
use super::engine512::shift16;
use crate::kernels::tile::layout::Lanes;
use crate::kernels::tile::{Engine, Format, mul_tile};

/// Tokens per full group.
pub(super) const TOKENS: usize = 4;

impl Avx2 {
    /// Σ of the i16 pair sums `p` into i32 lanes.
    #[inline(always)]
    fn widen(self, p: __m256i) -> __m256i {
        // SAFETY: an `Avx2` exists only after detection (see the `Engine` impl).
        unsafe { _mm256_madd_epi16(p, _mm256_set1_epi16(1)) }
    }
}

// SAFETY: an `Avx2` exists only after `Avx2::detect` found AVX2, FMA and F16C; each
// `unsafe` block below relies on that alone, plus, for loads and stores, on the
// reference it is given.
unsafe impl Engine<8> for Avx2 {
    type V = __m256i;
    type I = __m256i;
    type F = __m256;
    type RowsI = __m256i;
    type RowsF = __m256;

    const CENTERS: bool = false;
    const PAIRED: bool = false;
    const Q8_OFFSET: i32 = 0;

    #[inline(always)]
    fn load(self, v: &Lanes<8>) -> __m256i {
        // SAFETY: see the impl; `v` is 32 readable bytes.
        unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
    }

    #[inline(always)]
    fn shift_mask(self, v: __m256i, shift: i32, mask: u8) -> __m256i {
        // SAFETY: see the impl.
        unsafe {
            let s = shift16!(v, shift, _mm256_slli_epi16, _mm256_srli_epi16);
            _mm256_and_si256(s, _mm256_set1_epi8(mask as i8))
        }
    }

    #[inline(always)]
    fn or(self, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_or_si256(a, b) }
    }

    #[inline(always)]
    fn sub(self, v: __m256i, k: u8) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_sub_epi8(v, _mm256_set1_epi8(k as i8)) }
    }

    #[inline(always)]
    fn xor(self, v: __m256i, k: u8) -> __m256i {
        // SAFETY: see the impl.
        unsafe { _mm256_xor_si256(v, _mm256_set1_epi8(k as i8)) }
    }

    #[inline(always)]
    fn q8_codes(self, v: __m256i) -> __m256i {
        v
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [__m256i; T],
        codes: &[__m256i; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [__m256i; T] {
        // Products whose i16 pair sums may add before widening.
        let depth = if bound <= 31 { 4 } else { 2 };
        let mut acc = init;
        for (t, acc) in acc.iter_mut().enumerate() {
            let a: &[u32; N] = words[t * w + w0..][..N].try_into().unwrap();
            for (cs, a) in codes.chunks(depth).zip(a.chunks(depth)) {
                // SAFETY: see the impl.
                let p = unsafe {
                    let mut p = _mm256_setzero_si256();
                    for (c, &a) in cs.iter().zip(a) {
                        let m = _mm256_maddubs_epi16(*c, _mm256_set1_epi32(a as i32));
                        p = _mm256_add_epi16(p, m);
                    }
                    p
                };
                // SAFETY: see the impl.
                *acc = unsafe { _mm256_add_epi32(*acc, self.widen(p)) };
            }
        }
        acc
    }

    #[inline(always)]
    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [__m256i; T],
        codes: &[__m256i; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [__m256i; T] {
        let mut abs = *codes;
        for a in abs.iter_mut() {
            // SAFETY: see the impl.
            *a = unsafe { _mm256_abs_epi8(*a) };
        }
        let mut acc = init;
        for (t, acc) in acc.iter_mut().enumerate() {
            let a: &[u32; N] = words[t * w + w0..][..N].try_into().unwrap();
            for ((c, u), &a) in codes.iter().zip(&abs).zip(a) {
                // SAFETY: see the impl.
                *acc = unsafe {
                    let s = _mm256_sign_epi8(_mm256_set1_epi32(a as i32), *c);
                    _mm256_add_epi32(*acc, self.widen(_mm256_maddubs_epi16(*u, s)))
                };
            }
        }
        acc
    }

    #[inline(always)]
    fn zero_i<const T: usize>(self) -> [__m256i; T] {
        // SAFETY: see the impl.
        [unsafe { _mm256_setzero_si256() }; T]
    }

    #[inline(always)]
    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [__m256i; T] {
        let mut out = self.zero_i::<T>();
        for (o, &x) in out.iter_mut().zip(v) {
            // SAFETY: see the impl.
            *o = unsafe { _mm256_set1_epi32(x) };
        }
        out
    }

    #[inline(always)]
    fn mla_rows<const T: usize>(
        self,
        acc: [__m256i; T],
        x: [__m256i; T],
        rows: __m256i,
    ) -> [__m256i; T] {
        let mut acc = acc;
        for (a, x) in acc.iter_mut().zip(x) {
            // SAFETY: see the impl.
            *a = unsafe { _mm256_add_epi32(*a, _mm256_mullo_epi32(x, rows)) };
        }
        acc
    }

    #[inline(always)]
    fn mla_outer<const T: usize>(
        self,
        acc: [__m256i; T],
        rows: __m256i,
        tokens: &[i32; T],
    ) -> [__m256i; T] {
        let mut acc = acc;
        for (a, &t) in acc.iter_mut().zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe { _mm256_add_epi32(*a, _mm256_mullo_epi32(rows, _mm256_set1_epi32(t))) };
        }
        acc
    }

    #[inline(always)]
    fn rows_u8(self, b: &[u8; 8]) -> __m256i {
        // SAFETY: see the impl; `b` is 8 readable bytes.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_i8(self, b: &[i8; 8]) -> __m256i {
        // SAFETY: see the impl; `b` is 8 readable bytes.
        unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_f16(self, b: &[f16; 8]) -> __m256 {
        // SAFETY: see the impl; `b` is 16 readable bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().cast())) }
    }

    #[inline(always)]
    fn rows_f32(self, b: &[f32; 8]) -> __m256 {
        // SAFETY: see the impl; `b` is 8 readable floats.
        unsafe { _mm256_loadu_ps(b.as_ptr()) }
    }

    #[inline(always)]
    fn scale_rows(self, r: __m256, k: f32) -> __m256 {
        // SAFETY: see the impl.
        unsafe { _mm256_mul_ps(r, _mm256_set1_ps(k)) }
    }

    #[inline(always)]
    fn zero_f<const T: usize>(self) -> [__m256; T] {
        // SAFETY: see the impl.
        [unsafe { _mm256_setzero_ps() }; T]
    }

    #[inline(always)]
    fn fma_scaled<const T: usize>(
        self,
        acc: [__m256; T],
        x: [__m256i; T],
        rows: __m256,
        tokens: &[f32; T],
    ) -> [__m256; T] {
        let mut acc = acc;
        for ((a, x), &t) in acc.iter_mut().zip(x).zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe {
                let s = _mm256_mul_ps(rows, _mm256_set1_ps(t));
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(x), s, *a)
            };
        }
        acc
    }

    #[inline(always)]
    fn fma_outer<const T: usize>(
        self,
        acc: [__m256; T],
        rows: __m256,
        tokens: &[f32; T],
    ) -> [__m256; T] {
        let mut acc = acc;
        for (a, &t) in acc.iter_mut().zip(tokens) {
            // SAFETY: see the impl.
            *a = unsafe { _mm256_fmadd_ps(rows, _mm256_set1_ps(t), *a) };
        }
        acc
    }

    #[inline(always)]
    fn add_f<const T: usize>(self, a: [__m256; T], b: [__m256; T]) -> [__m256; T] {
        let mut a = a;
        for (a, b) in a.iter_mut().zip(b) {
            // SAFETY: see the impl.
            *a = unsafe { _mm256_add_ps(*a, b) };
        }
        a
    }

    #[inline(always)]
    fn store<const T: usize>(self, acc: &[__m256; T], out: &mut [f32]) {
        for (v, o) in acc.iter().zip(out.chunks_exact_mut(8)) {
            // SAFETY: see the impl; `o` is 8 writable floats.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *v) }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn mul<F: Format, const T: usize>(e: Avx2, tile: &[u8], group: &[u32], out: &mut [f32]) {
    mul_tile::<F, Avx2, 8, T>(e, tile, group, out)
}

/// One tile of 8 rows times one prepared token.
pub(super) fn gemv_8x1<F: Format>(_cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]) {
    let e = Avx2::get();
    // SAFETY: `e` exists, so this CPU has the features `mul` enables.
    unsafe { mul::<F, 1>(e, tile, group, out) }
}

/// One tile of 8 rows times a prepared group of `n` tokens (4 or 2).
pub(super) fn gemm_8x4<F: Format>(
    _cols: usize,
    tile: &[u8],
    group: &[u32],
    n: usize,
    out: &mut [f32],
) {
    let e = Avx2::get();
    // SAFETY: `e` exists, so this CPU has the features `mul` enables.
    unsafe {
        match n {
            4 => mul::<F, 4>(e, tile, group, out),
            2 => mul::<F, 2>(e, tile, group, out),
            _ => mul::<F, 1>(e, tile, group, out),
        }
    }
}
