//! The aarch64 tile engines over 4-row tiles (one i32 lane per row of a 128-bit
//! vector): [`Arm<Neon>`] multiplies with widening `smull`/`smlal` (every core: Pi 3
//! and 4), [`Arm<Dotprod>`] with `sdot` by element (Pi 5's Cortex-A76 and later).
//! Everything else about them is one body: codes are centred at decode (both
//! multiply signed by signed bytes), scales are f32 lanes per row.
//!
//! Widening: a code vector times one activation word broadcast (`ld1r`) gives eight
//! i16 products per half, each lane one (row, element) pair; lanes accumulate in i16
//! for as many code vectors as cannot overflow (bound·127 per product), then two
//! pairwise widening adds give one i32 per row. `sdot` by element does a whole code
//! vector against one word of a loaded activation vector in one instruction.

use core::arch::aarch64::*;
use core::arch::asm;

use half::f16;

use super::{Dotprod, Neon};
use crate::kernels::tile::Engine;
use crate::kernels::tile::layout::Lanes;

/// Tokens per full group.
pub(super) const TOKENS: usize = 8;

/// A 4-row engine multiplying with `M`'s integer dot products.
#[derive(Clone, Copy)]
pub(super) struct Arm<M> {
    pub(super) m: M,
}

/// The integer products of one aarch64 path: `init[t] + Σ_j codes[j]·word(t, j)` per
/// row, codes signed with magnitude at most `bound`.
pub(super) trait IntDots: Copy + Send + Sync + 'static {
    fn dots<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [int32x4_t; T];

    /// See `Engine::Q4_0_UNIT`.
    const Q4_0_UNIT: i32;
    /// See `Engine::q4_0_codes`.
    fn q4_0_codes(self, x: int8x16_t) -> [int8x16_t; 2];
}

impl IntDots for Neon {
    const Q4_0_UNIT: i32 = 1;

    /// The signed nibbles by shifts (an arithmetic right shift sign-extends):
    /// widening products stay small enough to sum in i16.
    #[inline(always)]
    fn q4_0_codes(self, x: int8x16_t) -> [int8x16_t; 2] {
        // SAFETY: Advanced SIMD is on every aarch64 core.
        unsafe { [vshrq_n_s8::<4>(vshlq_n_s8::<4>(x)), vshrq_n_s8::<4>(x)] }
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            // Code vectors whose products one i16 lane can sum.
            let depth = (i16::MAX as i32 / (bound.max(1) * 127)).max(1) as usize;
            let mut acc = init;
            for (t, acc) in acc.iter_mut().enumerate() {
                let a: &[u32; N] = words[t * w + w0..][..N].try_into().unwrap();
                for (cs, ws) in codes.chunks(depth).zip(a.chunks(depth)) {
                    let (mut lo, mut hi) = (vdupq_n_s16(0), vdupq_n_s16(0));
                    for (c, word) in cs.iter().zip(ws) {
                        let a = vreinterpretq_s8_u32(vld1q_dup_u32(word));
                        lo = vmlal_s8(lo, vget_low_s8(*c), vget_low_s8(a));
                        hi = vmlal_high_s8(hi, *c, a);
                    }
                    let rows = vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
                    *acc = vaddq_s32(*acc, rows);
                }
            }
            acc
        }
    }
}

/// `acc` plus `sdot` of code vector `c[l]` with word `l` of `a`, for `l` in 0..4.
#[target_feature(enable = "neon,dotprod")]
#[inline]
fn sdot4(mut acc: int32x4_t, c: &[int8x16_t], a: int8x16_t) -> int32x4_t {
    // SAFETY: this function's own `target_feature` says the CPU has SDOT; the
    // instructions touch no memory.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {c0:v}.16b, {a:v}.4b[0]",
            "sdot {acc:v}.4s, {c1:v}.16b, {a:v}.4b[1]",
            "sdot {acc:v}.4s, {c2:v}.16b, {a:v}.4b[2]",
            "sdot {acc:v}.4s, {c3:v}.16b, {a:v}.4b[3]",
            acc = inout(vreg) acc,
            c0 = in(vreg) c[0], c1 = in(vreg) c[1], c2 = in(vreg) c[2], c3 = in(vreg) c[3],
            a = in(vreg) a,
            options(pure, nomem, nostack),
        )
    };
    acc
}

impl IntDots for Dotprod {
    const Q4_0_UNIT: i32 = 16;

    /// The signed nibbles in the high half of each byte, one instruction each.
    #[inline(always)]
    fn q4_0_codes(self, x: int8x16_t) -> [int8x16_t; 2] {
        x16_nibbles(x)
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
        _bound: i32,
    ) -> [int32x4_t; T] {
        // SAFETY: `self` is a `Dotprod`, made only by detecting FEAT_DotProd, which
        // `sdot4` needs; the loads read the four words `ws` refers to.
        unsafe {
            const { assert!(N.is_multiple_of(4)) };
            let mut acc = init;
            for (t, acc) in acc.iter_mut().enumerate() {
                let a: &[u32; N] = words[t * w + w0..][..N].try_into().unwrap();
                for (cs, ws) in codes.chunks_exact(4).zip(a.chunks_exact(4)) {
                    let a = vreinterpretq_s8_u32(vld1q_u32(ws.as_ptr()));
                    *acc = sdot4(*acc, cs, a);
                }
            }
            acc
        }
    }
}

/// `base` with the bits of `mask` taken from `from` shifted by `shift` (BIT).
#[inline(always)]
pub(super) fn merge_bits(base: int8x16_t, from: int8x16_t, shift: i32, mask: u8) -> int8x16_t {
    // SAFETY: Advanced SIMD is on every aarch64 core.
    unsafe {
        let s = vshlq_u8(vreinterpretq_u8_s8(from), vdupq_n_s8(shift as i8));
        let m = vdupq_n_u8(mask);
        vreinterpretq_s8_u8(vbslq_u8(m, s, vreinterpretq_u8_s8(base)))
    }
}

/// Eight signed bytes (four rows of two consecutive groups) as two i32 vectors.
#[inline(always)]
pub(super) fn rows_i8_x2(b: &[[i8; 4]; 2]) -> [int32x4_t; 2] {
    // SAFETY: Advanced SIMD is on every aarch64 core; `b` is 8 readable bytes.
    unsafe {
        let v = vmovl_s8(vld1_s8(b.as_ptr().cast()));
        [vmovl_s16(vget_low_s16(v)), vmovl_high_s16(v)]
    }
}

/// Q4_0's signed nibbles ×16: the low one shifted up, the high one masked.
#[inline(always)]
pub(super) fn x16_nibbles(x: int8x16_t) -> [int8x16_t; 2] {
    // SAFETY: Advanced SIMD is on every aarch64 core.
    unsafe { [vshlq_n_s8::<4>(x), vandq_s8(x, vdupq_n_s8(-16))] }
}

/// Four f16 (8 bytes) widened to f32 (FCVTL: base Advanced SIMD, every core).
#[inline(always)]
pub(super) fn f16x4(b: &[f16; 4]) -> float32x4_t {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe {
        let h = vcreate_u16(u64::from_le_bytes(bytemuck::cast(*b)));
        let out: float32x4_t;
        {
            asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) out, in(vreg) h, options(pure, nomem, nostack))
        };
        out
    }
}

/// Every i32 lane of `x` shifted right by `s` (arithmetic).
#[inline(always)]
pub(super) fn shr_lanes<const T: usize>(x: [int32x4_t; T], s: u32) -> [int32x4_t; T] {
    let mut x = x;
    for x in &mut x {
        // SAFETY: Advanced SIMD is on every aarch64 core.
        *x = unsafe { vshlq_s32(*x, vdupq_n_s32(-(s as i32))) };
    }
    x
}

/// Four bytes widened to i32 lanes (`signed`: as i8).
#[inline(always)]
pub(super) fn bytes4(b: [u8; 4], signed: bool) -> int32x4_t {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe {
        let v = vcreate_u8(u64::from(u32::from_le_bytes(b)));
        if signed {
            vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_u8(v))))
        } else {
            vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(vmovl_u8(v))))
        }
    }
}

/// The byte operations every 4-row engine shares.
#[inline(always)]
pub(super) fn load(v: &Lanes<4>) -> int8x16_t {
    // SAFETY: `v` is 16 readable bytes; LD1 takes any alignment.
    unsafe { vld1q_s8(v.as_ptr().cast()) }
}

#[inline(always)]
pub(super) fn shift_mask(v: int8x16_t, shift: i32, mask: u8) -> int8x16_t {
    // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
    // the references they are given.
    unsafe {
        let s = vshlq_u8(vreinterpretq_u8_s8(v), vdupq_n_s8(shift as i8));
        vreinterpretq_s8_u8(vandq_u8(s, vdupq_n_u8(mask)))
    }
}

/// The methods every 4-row aarch64 engine shares: the byte operations on code
/// vectors and the accumulators' zeros and sums (Advanced SIMD, on every core).
macro_rules! neon_byte_ops {
    () => {
        #[inline(always)]
        fn load(self, v: &Lanes<4>) -> int8x16_t {
            $crate::kernels::arm::engine::load(v)
        }
        #[inline(always)]
        fn shift_mask(self, v: int8x16_t, shift: i32, mask: u8) -> int8x16_t {
            $crate::kernels::arm::engine::shift_mask(v, shift, mask)
        }
        /// One BIT after the shift: the masked bits of the shifted plane into `base`.
        #[inline(always)]
        fn merge_bits(self, base: int8x16_t, from: int8x16_t, shift: i32, mask: u8) -> int8x16_t {
            $crate::kernels::arm::engine::merge_bits(base, from, shift, mask)
        }
        #[inline(always)]
        fn or(self, a: int8x16_t, b: int8x16_t) -> int8x16_t {
            // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
            // the references they are given.
            unsafe { vorrq_s8(a, b) }
        }
        #[inline(always)]
        fn sub(self, v: int8x16_t, k: u8) -> int8x16_t {
            // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
            // the references they are given.
            unsafe { vsubq_s8(v, vdupq_n_s8(k as i8)) }
        }
        #[inline(always)]
        fn q8_codes(self, v: int8x16_t) -> int8x16_t {
            v
        }
        #[inline(always)]
        fn xor(self, v: int8x16_t, k: u8) -> int8x16_t {
            // SAFETY: Advanced SIMD is on every aarch64 core.
            unsafe { veorq_s8(v, vdupq_n_s8(k as i8)) }
        }
        /// One TBL: indices 0..16 pick bytes of the table.
        #[inline(always)]
        fn lookup16(self, v: int8x16_t, table: &[i8; 16]) -> int8x16_t {
            // SAFETY: Advanced SIMD is on every aarch64 core; the load reads the 16
            // bytes of `table`.
            unsafe { vqtbl1q_s8(vld1q_s8(table.as_ptr()), vreinterpretq_u8_s8(v)) }
        }
        #[inline(always)]
        fn zero_i<const T: usize>(self) -> [int32x4_t; T] {
            // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
            // the references they are given.
            unsafe { [vdupq_n_s32(0); T] }
        }
        #[inline(always)]
        fn zero_f<const T: usize>(self) -> [float32x4_t; T] {
            // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
            // the references they are given.
            unsafe { [vdupq_n_f32(0.0); T] }
        }
        #[inline(always)]
        fn add_f<const T: usize>(
            self,
            a: [float32x4_t; T],
            b: [float32x4_t; T],
        ) -> [float32x4_t; T] {
            // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
            // the references they are given.
            unsafe { core::array::from_fn(|t| vaddq_f32(a[t], b[t])) }
        }
    };
}
pub(super) use neon_byte_ops;

// SAFETY: an `Arm<M>` holds an `M`, a proof of detection (`Neon` or `Dotprod`): every
// intrinsic below is base Advanced SIMD, and `M::dots` uses only what `M` proves.
unsafe impl<M: IntDots> Engine<4> for Arm<M> {
    type V = int8x16_t;
    type I = int32x4_t;
    type F = float32x4_t;
    type RowsI = int32x4_t;
    type RowsF = float32x4_t;

    const CENTERS: bool = true;
    const PAIRED: bool = false;
    const Q8_OFFSET: i32 = 0;

    neon_byte_ops!();

    /// One 8-byte load, widened twice.
    #[inline(always)]
    fn rows_i8_x2(self, b: &[[i8; 4]; 2]) -> [int32x4_t; 2] {
        rows_i8_x2(b)
    }

    const Q4_0_UNIT: i32 = M::Q4_0_UNIT;

    #[inline(always)]
    fn q4_0_codes(self, x: int8x16_t) -> [int8x16_t; 2] {
        self.m.q4_0_codes(x)
    }

    #[inline(always)]
    fn dots<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [int32x4_t; T] {
        self.m.dots(init, codes, words, w, w0, bound)
    }

    #[inline(always)]
    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [int32x4_t; T],
        codes: &[int8x16_t; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [int32x4_t; T] {
        self.m.dots(init, codes, words, w, w0, 128)
    }

    #[inline(always)]
    fn shr_exact<const T: usize>(self, x: [int32x4_t; T], s: u32) -> [int32x4_t; T] {
        shr_lanes(x, s)
    }

    #[inline(always)]
    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe { v.map(|x| vdupq_n_s32(x)) }
    }

    #[inline(always)]
    fn mla_rows<const T: usize>(
        self,
        acc: [int32x4_t; T],
        x: [int32x4_t; T],
        rows: int32x4_t,
    ) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe { core::array::from_fn(|t| vmlaq_s32(acc[t], x[t], rows)) }
    }

    #[inline(always)]
    fn mla_outer<const T: usize>(
        self,
        acc: [int32x4_t; T],
        rows: int32x4_t,
        tokens: &[i32; T],
    ) -> [int32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe { core::array::from_fn(|t| vmlaq_n_s32(acc[t], rows, tokens[t])) }
    }

    #[inline(always)]
    fn rows_u8(self, b: &[u8; 4]) -> int32x4_t {
        bytes4(*b, false)
    }

    #[inline(always)]
    fn rows_i8(self, b: &[i8; 4]) -> int32x4_t {
        bytes4(bytemuck::cast(*b), true)
    }

    #[inline(always)]
    fn rows_f16(self, b: &[f16; 4]) -> float32x4_t {
        f16x4(b)
    }

    #[inline(always)]
    fn rows_f32(self, b: &[f32; 4]) -> float32x4_t {
        // SAFETY: `b` is four readable floats.
        unsafe { vld1q_f32(b.as_ptr()) }
    }

    #[inline(always)]
    fn scale_rows(self, r: float32x4_t, k: f32) -> float32x4_t {
        // SAFETY: Advanced SIMD is on every aarch64 core.
        unsafe { vmulq_n_f32(r, k) }
    }

    #[inline(always)]
    fn fma_scaled<const T: usize>(
        self,
        acc: [float32x4_t; T],
        x: [int32x4_t; T],
        rows: float32x4_t,
        tokens: &[f32; T],
    ) -> [float32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            core::array::from_fn(|t| {
                vfmaq_f32(acc[t], vcvtq_f32_s32(x[t]), vmulq_n_f32(rows, tokens[t]))
            })
        }
    }

    #[inline(always)]
    fn fma_outer<const T: usize>(
        self,
        acc: [float32x4_t; T],
        rows: float32x4_t,
        tokens: &[f32; T],
    ) -> [float32x4_t; T] {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe { core::array::from_fn(|t| vfmaq_n_f32(acc[t], rows, tokens[t])) }
    }

    #[inline(always)]
    fn store<const T: usize>(self, acc: &[float32x4_t; T], out: &mut [f32]) {
        // SAFETY: Advanced SIMD is on every aarch64 core; loads and stores touch only
        // the references they are given.
        unsafe {
            for (v, o) in acc.iter().zip(out.chunks_exact_mut(4)) {
                vst1q_f32(o.as_mut_ptr(), *v)
            }
        }
    }
}

pub(super) mod neon {
    use super::*;
    crate::kernels::tile::tile_entries!(
        engine: Arm<Neon>, rows: 4, features: "neon", get: Arm { m: Neon::get() },
        gemv: gemv_4x1, gemm: gemm_4x8 [8, 4, 2]
    );
}

pub(super) mod dotprod {
    use super::*;
    crate::kernels::tile::tile_entries!(
        engine: Arm<Dotprod>, rows: 4, features: "neon,dotprod", get: Arm { m: Dotprod::get() },
        gemv: gemv_4x1, gemm: gemm_4x8 [8, 4, 2]
    );
}
