//! The x86 tile engines, one body for both vector widths (see `kernels::tile`):
//!
//! - [`Avx512`]: 16 rows per tile (one i32 lane each), groups of 8 tokens. One
//!   `vpdpbusd` multiplies a code vector (four unsigned codes of each of the 16 rows)
//!   by one activation word broadcast to every lane: 64 products per instruction.
//!   Q8_0's signed codes are flipped to `q + 128` and corrected by `-128·Σa`.
//! - [`Avx2`]: 8 rows per tile, groups of 4 tokens. Without VNNI, `vpmaddubsw`
//!   (unsigned codes × signed activation bytes, pair sums in i16) then `vpmaddwd` by
//!   ones give each lane the sum of its four products. Codes of at most 31 (4- and
//!   5-bit) let four `vpmaddubsw` results add in i16 first (4·2·31·127 < 2¹⁵), 6-bit
//!   codes two. Q8_0's signed codes use the sign trick (`|w|` times `a` carrying `w`'s
//!   sign), exact for activations in -127..=127, which every Q8 quantizer writes.
//!
//! Both keep codes unsigned (u8 × s8 products): offsets are corrected by
//! `-offset·Σa` per token (`CENTERS = false`).

use core::arch::x86_64::*;

use half::f16;

use super::{Avx2, Avx512};
use crate::kernels::tile::layout::Lanes;
use crate::kernels::tile::{Engine, tile_entries};

/// `v` shifted per 16-bit lane by a constant `shift` (left if positive), with the
/// width's immediate shifts `$l`, `$r`.
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

/// An x86 engine: the methods both widths share, written once over the width's
/// types and intrinsics (integer, float, and the per-row loads of `R` bytes or
/// halves), plus the `specific` ones (dots, the Q8_0 representation).
macro_rules! x86_engine {
    (
        $engine:ident, $r:literal, $i:ty, $f:ty,
        [$load:ident, $and:ident, $or:ident, $xor:ident, $sub8:ident, $set8:ident,
         $sll:ident, $srl:ident, $sra:ident, $zero:ident, $set32:ident, $add32:ident,
         $mullo:ident],
        [$loadps:ident, $storeps:ident, $zerops:ident, $set1ps:ident, $addps:ident,
         $mulps:ident, $fmadd:ident, $cvt:ident],
        [$ldb:ident, $cvtu8:ident, $cvti8:ident, $ldh:ident, $cvtph:ident],
        { $($specific:tt)* }
    ) => {
        // SAFETY: an engine value exists only after its `detect` found every feature
        // these methods use; each `unsafe` block below relies on that alone, plus, for
        // loads and stores, on the reference it is given (in bounds by its type).
        unsafe impl Engine<$r> for $engine {
            type V = $i;
            type I = $i;
            type F = $f;
            type RowsI = $i;
            type RowsF = $f;

            const CENTERS: bool = false;
            const PAIRED: bool = false;
            /// Measured on full-size Phi-2 (2 threads, `phiq bench -n 32`): Q4_K_M
            /// read 15.9 GB/s of weights with the hardware prefetcher alone and
            /// 21.5 with requests 4 KiB ahead; 8 and 16 KiB did as well, 1 and 2 KiB
            /// less, 32 KiB less again. Q2_K: 12.2 -> 18-19.
            const PREFETCH_AHEAD: usize = 8192;

            #[inline(always)]
            fn prefetch(self, p: *const u8) {
                // SAFETY: a prefetch is a hint: it reads nothing the program sees and
                // never faults, whatever `p` is.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
            }

            $($specific)*

            #[inline(always)]
            fn load(self, v: &Lanes<$r>) -> $i {
                // SAFETY: see the impl.
                unsafe { $load(v.as_ptr().cast()) }
            }

            #[inline(always)]
            fn shift_mask(self, v: $i, shift: i32, mask: u8) -> $i {
                // SAFETY: see the impl.
                unsafe { $and(shift16!(v, shift, $sll, $srl), $set8(mask as i8)) }
            }

            #[inline(always)]
            fn or(self, a: $i, b: $i) -> $i {
                // SAFETY: see the impl.
                unsafe { $or(a, b) }
            }

            #[inline(always)]
            fn sub(self, v: $i, k: u8) -> $i {
                // SAFETY: see the impl.
                unsafe { $sub8(v, $set8(k as i8)) }
            }

            #[inline(always)]
            fn xor(self, v: $i, k: u8) -> $i {
                // SAFETY: see the impl.
                unsafe { $xor(v, $set8(k as i8)) }
            }

            #[inline(always)]
            fn shr_exact<const T: usize>(self, x: [$i; T], s: u32) -> [$i; T] {
                let mut x = x;
                for x in &mut x {
                    // SAFETY: see the impl.
                    *x = unsafe { $sra(*x, _mm_cvtsi32_si128(s as i32)) };
                }
                x
            }

            #[inline(always)]
            fn zero_i<const T: usize>(self) -> [$i; T] {
                // SAFETY: see the impl.
                [unsafe { $zero() }; T]
            }

            #[inline(always)]
            fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [$i; T] {
                let mut out = self.zero_i::<T>();
                for (o, &x) in out.iter_mut().zip(v) {
                    // SAFETY: see the impl.
                    *o = unsafe { $set32(x) };
                }
                out
            }

            #[inline(always)]
            fn mla_rows<const T: usize>(self, acc: [$i; T], x: [$i; T], rows: $i) -> [$i; T] {
                let mut acc = acc;
                for (a, x) in acc.iter_mut().zip(x) {
                    // SAFETY: see the impl.
                    *a = unsafe { $add32(*a, $mullo(x, rows)) };
                }
                acc
            }

            #[inline(always)]
            fn mla_outer<const T: usize>(self, acc: [$i; T], rows: $i, tokens: &[i32; T]) -> [$i; T] {
                let mut acc = acc;
                for (a, &t) in acc.iter_mut().zip(tokens) {
                    // SAFETY: see the impl.
                    *a = unsafe { $add32(*a, $mullo(rows, $set32(t))) };
                }
                acc
            }

            /// Through [`Self::madd16`]: rows unsigned (high halves zero), so each
            /// lane's high-half product adds nothing.
            #[inline(always)]
            fn mla_rows_i16<const T: usize>(self, acc: [$i; T], x: [$i; T], rows: $i) -> [$i; T] {
                let mut acc = acc;
                for (a, x) in acc.iter_mut().zip(x) {
                    *a = self.madd16(*a, x, rows);
                }
                acc
            }

            #[inline(always)]
            fn mla_outer_i16<const T: usize>(self, acc: [$i; T], rows: $i, tokens: &[i32; T]) -> [$i; T] {
                let mut acc = acc;
                for (a, &t) in acc.iter_mut().zip(tokens) {
                    // SAFETY: see the impl.
                    *a = self.madd16(*a, rows, unsafe { $set32(t) });
                }
                acc
            }

            #[inline(always)]
            fn rows_nibbles(self, b: &[u8; $r]) -> [$i; 2] {
                // SAFETY: see the impl.
                unsafe {
                    let x = $cvtu8($ldb(b.as_ptr().cast()));
                    [$and(x, $set32(0x0f)), $srl::<4>(x)]
                }
            }

            #[inline(always)]
            fn rows_u8(self, b: &[u8; $r]) -> $i {
                // SAFETY: see the impl.
                unsafe { $cvtu8($ldb(b.as_ptr().cast())) }
            }

            #[inline(always)]
            fn rows_i8(self, b: &[i8; $r]) -> $i {
                // SAFETY: see the impl.
                unsafe { $cvti8($ldb(b.as_ptr().cast())) }
            }

            #[inline(always)]
            fn rows_f16(self, b: &[f16; $r]) -> $f {
                // SAFETY: see the impl.
                unsafe { $cvtph($ldh(b.as_ptr().cast())) }
            }

            #[inline(always)]
            fn rows_f32(self, b: &[f32; $r]) -> $f {
                // SAFETY: see the impl.
                unsafe { $loadps(b.as_ptr()) }
            }

            #[inline(always)]
            fn scale_rows(self, r: $f, k: f32) -> $f {
                // SAFETY: see the impl.
                unsafe { $mulps(r, $set1ps(k)) }
            }

            #[inline(always)]
            fn zero_f<const T: usize>(self) -> [$f; T] {
                // SAFETY: see the impl.
                [unsafe { $zerops() }; T]
            }

            #[inline(always)]
            fn fma_scaled<const T: usize>(
                self,
                acc: [$f; T],
                x: [$i; T],
                rows: $f,
                tokens: &[f32; T],
            ) -> [$f; T] {
                let mut acc = acc;
                for ((a, x), &t) in acc.iter_mut().zip(x).zip(tokens) {
                    // SAFETY: see the impl.
                    *a = unsafe { $fmadd($cvt(x), $mulps(rows, $set1ps(t)), *a) };
                }
                acc
            }

            #[inline(always)]
            fn fma_outer<const T: usize>(self, acc: [$f; T], rows: $f, tokens: &[f32; T]) -> [$f; T] {
                let mut acc = acc;
                for (a, &t) in acc.iter_mut().zip(tokens) {
                    // SAFETY: see the impl.
                    *a = unsafe { $fmadd(rows, $set1ps(t), *a) };
                }
                acc
            }

            #[inline(always)]
            fn add_f<const T: usize>(self, a: [$f; T], b: [$f; T]) -> [$f; T] {
                let mut a = a;
                for (a, b) in a.iter_mut().zip(b) {
                    // SAFETY: see the impl.
                    *a = unsafe { $addps(*a, b) };
                }
                a
            }

            #[inline(always)]
            fn store<const T: usize>(self, acc: &[$f; T], out: &mut [f32]) {
                for (v, o) in acc.iter().zip(out.chunks_exact_mut($r)) {
                    // SAFETY: see the impl; `o` holds the floats written.
                    unsafe { $storeps(o.as_mut_ptr(), *v) }
                }
            }
        }
    };
}

x86_engine!(
    Avx512,
    16,
    __m512i,
    __m512,
    [
        _mm512_loadu_si512,
        _mm512_and_si512,
        _mm512_or_si512,
        _mm512_xor_si512,
        _mm512_sub_epi8,
        _mm512_set1_epi8,
        _mm512_slli_epi16,
        _mm512_srli_epi16,
        _mm512_sra_epi32,
        _mm512_setzero_si512,
        _mm512_set1_epi32,
        _mm512_add_epi32,
        _mm512_mullo_epi32
    ],
    [
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_add_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_cvtepi32_ps
    ],
    [
        _mm_loadu_si128,
        _mm512_cvtepu8_epi32,
        _mm512_cvtepi8_epi32,
        _mm256_loadu_si256,
        _mm512_cvtph_ps
    ],
    {
        const Q8_OFFSET: i32 = 128;
        const WIDE_CODES: bool = true;

        #[inline(always)]
        fn q8_codes(self, v: __m512i) -> __m512i {
            self.xor(v, 0x80)
        }

        /// `vpshufb` within each 128-bit lane, the table in all four.
        #[inline(always)]
        fn lookup16(self, v: __m512i, table: &[i8; 16]) -> __m512i {
            // SAFETY: see the impl; the load reads the 16 bytes of `table`.
            unsafe {
                let t = _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast()));
                _mm512_shuffle_epi8(t, v)
            }
        }

        /// The table's bytes flipped once, as `q8_codes` would flip each result.
        #[inline(always)]
        fn lookup16_q8(self, v: __m512i, table: &[i8; 16]) -> __m512i {
            // SAFETY: see the impl; the load reads the 16 bytes of `table`.
            unsafe {
                let t = _mm512_broadcast_i32x4(_mm_loadu_si128(table.as_ptr().cast()));
                _mm512_shuffle_epi8(self.xor(t, 0x80), v)
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

        /// `vpdpbusd` is exact for any unsigned code: no bound to respect.
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
    }
);

impl Avx512 {
    /// `acc + a·b` per i16, pairs summed into i32 lanes: one `vpdpwssd`.
    #[inline(always)]
    fn madd16(self, acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: an `Avx512` exists only after detection (see the `Engine` impl).
        unsafe { _mm512_dpwssd_epi32(acc, a, b) }
    }
}

impl Avx2 {
    /// `acc + a·b` per i16, pairs summed into i32 lanes: `vpmaddwd`, then the add.
    #[inline(always)]
    fn madd16(self, acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: an `Avx2` exists only after detection (see the `Engine` impl).
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
    }

    /// Σ of the i16 pair sums `p` into i32 lanes.
    #[inline(always)]
    fn widen(self, p: __m256i) -> __m256i {
        // SAFETY: an `Avx2` exists only after detection (see the `Engine` impl).
        unsafe { _mm256_madd_epi16(p, _mm256_set1_epi16(1)) }
    }
}

x86_engine!(
    Avx2,
    8,
    __m256i,
    __m256,
    [
        _mm256_loadu_si256,
        _mm256_and_si256,
        _mm256_or_si256,
        _mm256_xor_si256,
        _mm256_sub_epi8,
        _mm256_set1_epi8,
        _mm256_slli_epi16,
        _mm256_srli_epi16,
        _mm256_sra_epi32,
        _mm256_setzero_si256,
        _mm256_set1_epi32,
        _mm256_add_epi32,
        _mm256_mullo_epi32
    ],
    [
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_add_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_cvtepi32_ps
    ],
    [
        _mm_loadl_epi64,
        _mm256_cvtepu8_epi32,
        _mm256_cvtepi8_epi32,
        _mm_loadu_si128,
        _mm256_cvtph_ps
    ],
    {
        const Q8_OFFSET: i32 = 0;

        #[inline(always)]
        fn q8_codes(self, v: __m256i) -> __m256i {
            v
        }

        /// `vpshufb` within each 128-bit lane, the table in both.
        #[inline(always)]
        fn lookup16(self, v: __m256i, table: &[i8; 16]) -> __m256i {
            // SAFETY: see the impl; the load reads the 16 bytes of `table`.
            unsafe {
                let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(table.as_ptr().cast()));
                _mm256_shuffle_epi8(t, v)
            }
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
    }
);

/// Tokens per full group of each engine.
pub(super) const TOKENS_512: usize = 8;
pub(super) const TOKENS_256: usize = 4;

pub(super) mod avx512 {
    use super::*;
    tile_entries!(
        engine: Avx512, rows: 16,
        features: "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", get: Avx512::get(),
        gemv: gemv_16x1, gemm: gemm_16x8 [8, 4, 2]
    );
}

pub(super) mod avx2 {
    use super::*;
    tile_entries!(
        engine: Avx2, rows: 8, features: "avx2,fma,f16c", get: Avx2::get(),
        gemv: gemv_8x1, gemm: gemm_8x4 [4, 2]
    );
}
