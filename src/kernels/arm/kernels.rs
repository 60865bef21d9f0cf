//! The quantized dot products, written once for every int8 engine.
//!
//! [`quantized_kernels!`] expands, in the module that invokes it, to one
//! `#[target_feature(enable = $features)]` function per weight type, plus `vec_dot`,
//! the lookup the table uses. The module supplies the int8 engine (all exact in i32):
//!
//! - `dot32_small(w0, a0, w1, a1) -> i32`: Σ w·a over 32 elements whose weights are
//!   in -32..=32 (activations: any i8);
//! - `dot32(w0, a0, w1, a1) -> i32`: the same for any i8 weights (Q8_0);
//! - `acc32(acc, w0, a0, w1, a1, sc)` / `acc16(acc, w, a, sc)`: `acc + sc·(w·a)` over
//!   32 / 16 elements (weights in -32..=32, |sc| ≤ 128), spread over the eight i32
//!   lanes of `acc` in whatever way the engine likes; NEON keeps the scalar path's
//!   lanes (element index mod 8), which makes its K-quant results the scalar ones.
//!
//! Float arithmetic follows the scalar path expression by expression (Rust never
//! fuses a multiply and an add), so the 32-element formats give the scalar result
//! to the bit on every engine; K-quants too on NEON, within the stated tolerance on
//! engines whose lanes differ (see `arm/tests.rs`).
//!
//! Reads stay in bounds by construction: a row is cut into `[u8; SIZE]` blocks after
//! one length check (`row_blocks`), and every load takes a constant offset into one
//! such array, checked by `ld_u8` (at compile time once inlined).

macro_rules! quantized_kernels {
    ($features:literal) => {
        use crate::kernels::arm::common::{
            add_scaled, f16_at, fifth_bits, k_fold, ld_s8, ld_u8, mins_dot, q8_k_d, row_blocks,
            scales_mins_k4,
        };
        use crate::kernels::{VecDotFn, scalar};
        use crate::quant::GgmlType;

        use crate::quant::{
            BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0,
            BlockQ8_1, BlockQ8_K,
        };
        use core::mem::offset_of;

        // Block sizes and field offsets in bytes: `crate::quant`'s block structs, the
        // one definition of ggml's layouts, read here as byte arrays.
        const Q4_0: usize = size_of::<BlockQ4_0>();
        const Q4_1: usize = size_of::<BlockQ4_1>();
        const Q5_0: usize = size_of::<BlockQ5_0>();
        const Q5_1: usize = size_of::<BlockQ5_1>();
        const Q8_0: usize = size_of::<BlockQ8_0>();
        const Q8_1: usize = size_of::<BlockQ8_1>();
        const Q4_K: usize = size_of::<BlockQ4_K>();
        const Q5_K: usize = size_of::<BlockQ5_K>();
        const Q6_K: usize = size_of::<BlockQ6_K>();
        const Q8_K: usize = size_of::<BlockQ8_K>();
        const Q4_0_QS: usize = offset_of!(BlockQ4_0, qs);
        const Q4_1_M: usize = offset_of!(BlockQ4_1, m);
        const Q4_1_QS: usize = offset_of!(BlockQ4_1, qs);
        const Q5_0_QH: usize = offset_of!(BlockQ5_0, qh);
        const Q5_0_QS: usize = offset_of!(BlockQ5_0, qs);
        const Q5_1_M: usize = offset_of!(BlockQ5_1, m);
        const Q5_1_QH: usize = offset_of!(BlockQ5_1, qh);
        const Q5_1_QS: usize = offset_of!(BlockQ5_1, qs);
        const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
        const Q8_1_S: usize = offset_of!(BlockQ8_1, s);
        const Q8_1_QS: usize = offset_of!(BlockQ8_1, qs);
        const QK_DMIN: usize = offset_of!(BlockQ4_K, dmin);
        const QK_SCALES: usize = offset_of!(BlockQ4_K, scales);
        const Q4_K_QS: usize = offset_of!(BlockQ4_K, qs);
        const Q5_K_QH: usize = offset_of!(BlockQ5_K, qh);
        const Q5_K_QS: usize = offset_of!(BlockQ5_K, qs);
        const Q6_K_QL: usize = offset_of!(BlockQ6_K, ql);
        const Q6_K_QH: usize = offset_of!(BlockQ6_K, qh);
        const Q6_K_SCALES: usize = offset_of!(BlockQ6_K, scales);
        const Q6_K_D: usize = offset_of!(BlockQ6_K, d);
        const Q8_K_QS: usize = offset_of!(BlockQ8_K, qs);
        const _: () = {
            // Every block starts with its scale `d` (Q6_K's is last), and Q5_K's
            // header is Q4_K's.
            assert!(offset_of!(BlockQ4_0, d) == 0 && offset_of!(BlockQ8_K, d) == 0);
            assert!(
                offset_of!(BlockQ5_K, dmin) == QK_DMIN
                    && offset_of!(BlockQ5_K, scales) == QK_SCALES
            );
        };

        #[target_feature(enable = $features)]
        #[inline]
        fn s8(v: uint8x16_t) -> int8x16_t {
            vreinterpretq_s8_u8(v)
        }

        /// The low and high nibbles of 16 bytes, as codes 0..15.
        #[target_feature(enable = $features)]
        #[inline]
        fn nibbles(q: uint8x16_t) -> (uint8x16_t, uint8x16_t) {
            (vandq_u8(q, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(q))
        }

        /// Q4_0 × Q8_0: codes 0..15 stand for -8..7; `(isum·dx)·dy` per block.
        #[target_feature(enable = $features)]
        pub(super) fn q4_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q4_0, Q8_0>(n, 32, w, a);
            let eight = vdupq_n_s8(8);
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (lo, hi) = nibbles(ld_u8(x, Q4_0_QS));
                let w0 = vsubq_s8(s8(lo), eight);
                let w1 = vsubq_s8(s8(hi), eight);
                let isum = dot32_small(w0, ld_s8(y, Q8_0_QS), w1, ld_s8(y, Q8_0_QS + 16));
                sumf += isum as f32 * f16_at(x, 0) * f16_at(y, 0);
            }
            sumf
        }

        /// Q4_1 × Q8_1: codes 0..15; `(dx·dy)·isum + m·s` per block.
        #[target_feature(enable = $features)]
        pub(super) fn q4_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q4_1, Q8_1>(n, 32, w, a);
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (lo, hi) = nibbles(ld_u8(x, Q4_1_QS));
                let isum = dot32_small(s8(lo), ld_s8(y, Q8_1_QS), s8(hi), ld_s8(y, Q8_1_QS + 16));
                sumf += (f16_at(x, 0) * f16_at(y, 0)) * isum as f32
                    + f16_at(x, Q4_1_M) * f16_at(y, Q8_1_S);
            }
            sumf
        }

        /// Q5_0 × Q8_0: 5-bit codes stand for -16..15; `(dx·dy)·isum` per block.
        #[target_feature(enable = $features)]
        pub(super) fn q5_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q5_0, Q8_0>(n, 32, w, a);
            let sixteen = vdupq_n_u8(16);
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (set0, set1) = fifth_bits(u32::from_le_bytes(
                    x[Q5_0_QH..Q5_0_QH + 4].try_into().unwrap(),
                ));
                let (lo, hi) = nibbles(ld_u8(x, Q5_0_QS));
                // code - 16 = nibble - (16 unless the fifth bit is set)
                let w0 = vsubq_s8(s8(lo), s8(vbicq_u8(sixteen, set0)));
                let w1 = vsubq_s8(s8(hi), s8(vbicq_u8(sixteen, set1)));
                let isum = dot32_small(w0, ld_s8(y, Q8_0_QS), w1, ld_s8(y, Q8_0_QS + 16));
                sumf += (f16_at(x, 0) * f16_at(y, 0)) * isum as f32;
            }
            sumf
        }

        /// Q5_1 × Q8_1: codes 0..31; `(dx·dy)·isum + m·s` per block.
        #[target_feature(enable = $features)]
        pub(super) fn q5_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q5_1, Q8_1>(n, 32, w, a);
            let sixteen = vdupq_n_u8(16);
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (set0, set1) = fifth_bits(u32::from_le_bytes(
                    x[Q5_1_QH..Q5_1_QH + 4].try_into().unwrap(),
                ));
                let (lo, hi) = nibbles(ld_u8(x, Q5_1_QS));
                let w0 = vorrq_u8(lo, vandq_u8(sixteen, set0));
                let w1 = vorrq_u8(hi, vandq_u8(sixteen, set1));
                let isum = dot32_small(s8(w0), ld_s8(y, Q8_1_QS), s8(w1), ld_s8(y, Q8_1_QS + 16));
                sumf += (f16_at(x, 0) * f16_at(y, 0)) * isum as f32
                    + f16_at(x, Q5_1_M) * f16_at(y, Q8_1_S);
            }
            sumf
        }

        /// Q8_0 × Q8_0: any i8 codes; `isum·(dx·dy)` per block.
        #[target_feature(enable = $features)]
        pub(super) fn q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q8_0, Q8_0>(n, 32, w, a);
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let isum = dot32(
                    ld_s8(x, Q8_0_QS),
                    ld_s8(y, Q8_0_QS),
                    ld_s8(x, Q8_0_QS + 16),
                    ld_s8(y, Q8_0_QS + 16),
                );
                sumf += isum as f32 * (f16_at(x, 0) * f16_at(y, 0));
            }
            sumf
        }

        /// Q4_K × Q8_K. Per 64 elements, 32 bytes of `qs`: low nibbles are sub-block
        /// 2c, high nibbles 2c + 1; the mins enter through Q8_K's `bsums`.
        #[target_feature(enable = $features)]
        pub(super) fn q4_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q4_K, Q8_K>(n, 256, w, a);
            let mut lanes = [vdupq_n_f32(0.0); 2];
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (sc, m) = scales_mins_k4(x[QK_SCALES..QK_SCALES + 12].try_into().unwrap());
                let mut acc = [vdupq_n_s32(0); 2];
                for c in 0..4 {
                    let (lo0, hi0) = nibbles(ld_u8(x, Q4_K_QS + 32 * c));
                    let (lo1, hi1) = nibbles(ld_u8(x, Q4_K_QS + 16 + 32 * c));
                    let at = Q8_K_QS + 64 * c;
                    let (a0, a1) = (ld_s8(y, at), ld_s8(y, at + 16));
                    let (a2, a3) = (ld_s8(y, at + 32), ld_s8(y, at + 48));
                    acc = acc32(acc, s8(lo0), a0, s8(lo1), a1, i32::from(sc[2 * c]));
                    acc = acc32(acc, s8(hi0), a2, s8(hi1), a3, i32::from(sc[2 * c + 1]));
                }
                let yd = q8_k_d(y);
                lanes = add_scaled(lanes, acc, f16_at(x, 0) * yd);
                sumf -= f16_at(x, QK_DMIN) * yd * mins_dot(y, &m) as f32;
            }
            k_fold(sumf, lanes)
        }

        /// Q5_K × Q8_K: as Q4_K, with bit `sub` of `qh[i]` the fifth bit of element
        /// `32·sub + i`.
        #[target_feature(enable = $features)]
        pub(super) fn q5_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q5_K, Q8_K>(n, 256, w, a);
            let one = vdupq_n_u8(1);
            let two = vdupq_n_u8(2);
            let mut lanes = [vdupq_n_f32(0.0); 2];
            let mut sumf = 0.0f32;
            for (x, y) in xs.iter().zip(ys) {
                let (sc, m) = scales_mins_k4(x[QK_SCALES..QK_SCALES + 12].try_into().unwrap());
                // qh[0..16] and qh[16..32], shifted right by 2 per 64 elements.
                let mut h = [ld_u8(x, Q5_K_QH), ld_u8(x, Q5_K_QH + 16)];
                let mut acc = [vdupq_n_s32(0); 2];
                for c in 0..4 {
                    let (lo0, hi0) = nibbles(ld_u8(x, Q5_K_QS + 32 * c));
                    let (lo1, hi1) = nibbles(ld_u8(x, Q5_K_QS + 16 + 32 * c));
                    let even = h.map(|v| vshlq_n_u8::<4>(vandq_u8(v, one)));
                    let odd = h.map(|v| vshlq_n_u8::<3>(vandq_u8(v, two)));
                    h = h.map(|v| vshrq_n_u8::<2>(v));
                    let at = Q8_K_QS + 64 * c;
                    let (a0, a1) = (ld_s8(y, at), ld_s8(y, at + 16));
                    let (a2, a3) = (ld_s8(y, at + 32), ld_s8(y, at + 48));
                    let (w0, w1) = (vorrq_u8(lo0, even[0]), vorrq_u8(lo1, even[1]));
                    let (w2, w3) = (vorrq_u8(hi0, odd[0]), vorrq_u8(hi1, odd[1]));
                    acc = acc32(acc, s8(w0), a0, s8(w1), a1, i32::from(sc[2 * c]));
                    acc = acc32(acc, s8(w2), a2, s8(w3), a3, i32::from(sc[2 * c + 1]));
                }
                let yd = q8_k_d(y);
                lanes = add_scaled(lanes, acc, f16_at(x, 0) * yd);
                sumf -= f16_at(x, QK_DMIN) * yd * mins_dot(y, &m) as f32;
            }
            k_fold(sumf, lanes)
        }

        /// Q6_K × Q8_K. Per 128 elements: `ql` 64 bytes (L0..L3), `qh` 32 (H0, H1).
        /// Element `i + 32k` (i < 32) is a nibble of `ql[i]` (k = 0, 2) or `ql[i + 32]`
        /// (k = 1, 3), low for k < 2, topped by bits 2k, 2k+1 of `qh[i]`, minus 32;
        /// every 16 elements have their own i8 scale.
        #[target_feature(enable = $features)]
        pub(super) fn q6_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
            let (xs, ys) = row_blocks::<Q6_K, Q8_K>(n, 256, w, a);
            let m4 = vdupq_n_u8(0x0f);
            let thirty_two = vdupq_n_s8(32);
            let mut lanes = [vdupq_n_f32(0.0); 2];
            for (x, y) in xs.iter().zip(ys) {
                let mut acc = [vdupq_n_s32(0); 2];
                for half in 0..2 {
                    let l: [uint8x16_t; 4] =
                        core::array::from_fn(|j| ld_u8(x, Q6_K_QL + 64 * half + 16 * j));
                    let h = [
                        ld_u8(x, Q6_K_QH + 32 * half),
                        ld_u8(x, Q6_K_QH + 16 + 32 * half),
                    ];
                    for k in 0..4 {
                        for i in 0..2 {
                            let src = l[i + if k % 2 == 1 { 2 } else { 0 }];
                            let low = if k < 2 {
                                vandq_u8(src, m4)
                            } else {
                                vshrq_n_u8::<4>(src)
                            };
                            let top = match k {
                                0 => vshlq_n_u8::<4>(vandq_u8(h[i], vdupq_n_u8(0x03))),
                                1 => vshlq_n_u8::<2>(vandq_u8(h[i], vdupq_n_u8(0x0c))),
                                2 => vandq_u8(h[i], vdupq_n_u8(0x30)),
                                _ => vshrq_n_u8::<2>(vandq_u8(h[i], vdupq_n_u8(0xc0))),
                            };
                            let code = vsubq_s8(s8(vorrq_u8(low, top)), thirty_two);
                            let act = ld_s8(y, Q8_K_QS + 128 * half + 32 * k + 16 * i);
                            let sc = x[Q6_K_SCALES + 8 * half + 2 * k + i] as i8;
                            acc = acc16(acc, code, act, i32::from(sc));
                        }
                    }
                }
                lanes = add_scaled(lanes, acc, f16_at(x, Q6_K_D) * q8_k_d(y));
            }
            k_fold(0.0, lanes)
        }

        crate::kernels::arm::kernels::safe_entries! {
            q4_0_entry => q4_0, q4_1_entry => q4_1, q5_0_entry => q5_0,
            q5_1_entry => q5_1, q8_0_entry => q8_0, q4_k_entry => q4_k,
            q5_k_entry => q5_k, q6_k_entry => q6_k,
        }

        /// This path's dot for `ty`: its own for the quantized types, the shared NEON
        /// ones for F32/F16, the scalar lookup (`None`) for the rest. Call only from
        /// `arm::table`, after detection.
        pub(super) fn vec_dot(ty: GgmlType) -> Option<VecDotFn> {
            use GgmlType as T;
            let f: VecDotFn = match ty {
                T::Q4_0 => q4_0_entry,
                T::Q4_1 => q4_1_entry,
                T::Q5_0 => q5_0_entry,
                T::Q5_1 => q5_1_entry,
                T::Q8_0 => q8_0_entry,
                T::Q4_K => q4_k_entry,
                T::Q5_K => q5_k_entry,
                T::Q6_K => q6_k_entry,
                _ => {
                    return crate::kernels::arm::common::float_vec_dot(ty)
                        .or_else(|| scalar::vec_dot(ty));
                }
            };
            Some(f)
        }
    };
}

/// Safe entry points for the table: plain `fn`s wrapping the `#[target_feature]`
/// kernels, handed out only by the path's `vec_dot`.
macro_rules! safe_entries {
    ($($entry:ident => $kernel:ident),* $(,)?) => {$(
        fn $entry(n: usize, w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: reachable only through this path's table, which `arm::table`
            // builds after `is_aarch64_feature_detected!` confirmed every feature
            // the kernel is compiled with.
            unsafe { $kernel(n, w, a) }
        }
    )*};
}

pub(super) use {quantized_kernels, safe_entries};
