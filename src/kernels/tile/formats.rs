//! Per weight type, the product of one tile block with a group of prepared tokens,
//! written once over any [`Engine`]: which code vectors to decode, which activation
//! words they meet, and how the scales, offsets and minimums enter. The formulas are
//! ggml's `vec_dot_*` ones, with integer sums per (sub-)block exact:
//!
//! | type  | per (sub-)block                                    | activations |
//! |-------|----------------------------------------------------|-------------|
//! | Q4_0  | `d·dy·Σ(q - 8)a`                                   | Q8_0        |
//! | Q4_1  | `d·dy·Σqa + m·s`                                   | Q8_1        |
//! | Q5_0  | `d·dy·Σ(q - 16)a`                                  | Q8_0        |
//! | Q5_1  | `d·dy·Σqa + m·s`                                   | Q8_1        |
//! | Q8_0  | `d·dy·Σqa`                                         | Q8_0        |
//! | Q4_K  | `d·dy·Σ_s sc_s·Σqa - dmin·dy·Σ_s m_s·Σa`           | Q8_K        |
//! | Q5_K  | as Q4_K, 5-bit codes                               | Q8_K        |
//! | Q6_K  | `d·dy·Σ_s sc_s·Σ(q - 32)a`                         | Q8_K        |
//! | Q2_K  | `d·dy·Σ_s sc_s·Σqa - dmin·dy·Σ_s m_s·Σa` (per 16)  | Q8_K        |
//! | Q3_K  | `d·dy·Σ_s sc_s·Σ(q - 4)a` (per 16)                 | Q8_K        |
//! | IQ4_NL| `d·dy·Σ v[q]·a` (`v` the non-linear table)         | Q8_0        |
//! | IQ4_XS| `d·dy·Σ_s sc_s·Σ v[q]·a`                           | Q8_K        |
//!
//! Activation words are in element order: word `j` of a block is elements
//! `4j..4j + 4`, which is what the code vectors of `layout.rs` meet.

#![allow(non_camel_case_types)]

use super::layout::{
    BlockF16x, BlockIQ4_NLx, BlockIQ4_XSx, BlockQ2_Kx, BlockQ3_Kx, BlockQ4_0x, BlockQ4_1x,
    BlockQ4_Kx, BlockQ5_0x, BlockQ5_1x, BlockQ5_Kx, BlockQ6_Kx, BlockQ8_0x, Lanes,
};
use super::{Acts, Engine, Format};
use crate::quant::{BlockQ8_0, BlockQ8_1, BlockQ8_K, KVALUES_IQ4NL, QK_K};

pub struct Q4_0;
pub struct Q4_1;
pub struct Q5_0;
pub struct Q5_1;
pub struct Q8_0;
pub struct Q4_K;
pub struct Q5_K;
pub struct Q6_K;
pub struct Q2_K;
pub struct Q3_K;
pub struct IQ4_NL;
pub struct IQ4_XS;
pub struct F16;

/// The low and high nibble codes of four code vectors: `[lo_0..lo_3, hi_0..hi_3]`,
/// i.e. elements `0..16` then `16..32` of a 32-element block.
#[inline(always)]
fn nibble_codes<const R: usize, E: Engine<R>>(e: E, qs: &[Lanes<R>; 4]) -> [E::V; 8] {
    let mut c = [e.load(&qs[0]); 8];
    for (v, q) in qs.iter().enumerate() {
        let x = e.load(q);
        c[v] = e.shift_mask(x, 0, 0x0f);
        c[4 + v] = e.shift_mask(x, -4, 0x0f);
    }
    c
}

/// Adds bit `k` of plane byte `(r, j)` as bit `at` of code `c[i]`, for the plane
/// bits `ks[i]`.
#[inline(always)]
fn add_plane_bits<const R: usize, E: Engine<R>, const N: usize>(
    e: E,
    c: &mut [E::V; N],
    plane: E::V,
    ks: [i32; N],
    width: i32,
) {
    let mask = ((1u32 << width) - 1) << 4;
    for (c, k) in c.iter_mut().zip(ks) {
        *c = e.merge_bits(*c, plane, 4 - k, mask as u8);
    }
}

/// Codes centred by `off` on centring engines; otherwise the `-off·Σa` each token's
/// sum starts from (`corr` per token, as the prepared sums hold it).
#[inline(always)]
fn offset<const R: usize, E: Engine<R>, const N: usize, const T: usize>(
    e: E,
    c: &mut [E::V; N],
    off: u8,
    corr: [i32; T],
) -> [E::I; T] {
    if off == 0 {
        e.zero_i()
    } else if E::CENTERS {
        for c in c.iter_mut() {
            *c = e.sub(*c, off);
        }
        e.zero_i()
    } else {
        e.splat_tokens(&corr)
    }
}

/// The code magnitude bound after [`offset`]: `max` unsigned, or `off` centred.
const fn bound<const R: usize, E: Engine<R>>(max: i32, off: i32) -> i32 {
    if E::CENTERS && off > 0 { off } else { max }
}

/// The 32-element formats: `Q` codes of up to five bits, optional minimum.
macro_rules! legacy_format {
    ($name:ident, $tile:ident, $act:ty, off: $off:expr, five: $five:expr, mins: $mins:expr) => {
        impl Format for $name {
            type Tile<const R: usize> = $tile<R>;
            type Act = $act;
            const QK: usize = 32;
            const W: usize = 8;
            const S: usize = 1;

            /// The sum comes as the `-offset·Σa` a correcting engine starts from.
            fn act<'a>(y: &'a $act, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
                sums[0] = -($off as i32) * y.qs.iter().map(|&q| i32::from(q)).sum::<i32>();
                let m = legacy_second_term(y);
                (bytemuck::cast_slice(&y.qs), y.d.to_f32(), m)
            }

            #[inline(always)]
            fn mul<const R: usize, E: Engine<R>, const T: usize>(
                e: E,
                tb: &$tile<R>,
                a: &Acts<'_, T>,
                mut acc: [E::F; T],
            ) -> [E::F; T] {
                for k in 0..2 {
                    let mut c = nibble_codes(e, &tb.qs[k]);
                    if $five {
                        let plane = e.load(five_plane(tb, k));
                        add_plane_bits(e, &mut c, plane, [0, 2, 4, 6, 1, 3, 5, 7], 1);
                    }
                    let max = if $five { 31 } else { 15 };
                    let init = offset(e, &mut c, $off, a.sums(k, 0));
                    let b = bound::<R, E>(max, $off as i32);
                    let isum = e.dots(init, &c, a.words(k), a.w(), 0, b);
                    acc = e.fma_scaled(acc, isum, e.rows_f16(&tb.d[k]), a.d(k));
                    if $mins {
                        acc = e.fma_outer(acc, e.rows_f16(min_row(tb, k)), a.m(k));
                    }
                }
                acc
            }
        }
    };
}

/// Q8_1's `s` (`d·Σq`, which meets the weights' minimum); 0 for Q8_0.
trait SecondTerm {
    fn second(&self) -> f32;
}
impl SecondTerm for BlockQ8_0 {
    fn second(&self) -> f32 {
        0.0
    }
}
impl SecondTerm for BlockQ8_1 {
    fn second(&self) -> f32 {
        self.s.to_f32()
    }
}
fn legacy_second_term(y: &impl SecondTerm) -> f32 {
    y.second()
}

/// The fifth-bit plane of block `k` of a tile block (Q5 formats only).
trait FivePlane<const R: usize> {
    fn plane(&self, k: usize) -> &Lanes<R>;
}
/// The minimums of block `k` (formats with minimums only).
trait MinRow<const R: usize> {
    fn mins(&self, k: usize) -> &[half::f16; R];
}
fn five_plane<const R: usize>(tb: &impl FivePlane<R>, k: usize) -> &Lanes<R> {
    tb.plane(k)
}
fn min_row<const R: usize>(tb: &impl MinRow<R>, k: usize) -> &[half::f16; R] {
    tb.mins(k)
}

macro_rules! no_plane {
    ($($t:ident),*) => {$(
        impl<const R: usize> FivePlane<R> for $t<R> {
            fn plane(&self, _: usize) -> &Lanes<R> {
                unreachable!("{} has no fifth bits", stringify!($t))
            }
        }
    )*};
}
macro_rules! plane {
    ($($t:ident),*) => {$(
        impl<const R: usize> FivePlane<R> for $t<R> {
            #[inline(always)]
            fn plane(&self, k: usize) -> &Lanes<R> {
                &self.qh[k]
            }
        }
    )*};
}
macro_rules! no_mins {
    ($($t:ident),*) => {$(
        impl<const R: usize> MinRow<R> for $t<R> {
            fn mins(&self, _: usize) -> &[half::f16; R] {
                unreachable!("{} has no minimums", stringify!($t))
            }
        }
    )*};
}
macro_rules! mins {
    ($($t:ident),*) => {$(
        impl<const R: usize> MinRow<R> for $t<R> {
            #[inline(always)]
            fn mins(&self, k: usize) -> &[half::f16; R] {
                &self.m[k]
            }
        }
    )*};
}
no_plane!(BlockQ4_1x);
plane!(BlockQ5_0x, BlockQ5_1x);
no_mins!(BlockQ5_0x);
mins!(BlockQ4_1x, BlockQ5_1x);

legacy_format!(Q4_1, BlockQ4_1x, BlockQ8_1, off: 0, five: false, mins: true);
legacy_format!(Q5_0, BlockQ5_0x, BlockQ8_0, off: 16, five: true, mins: false);
legacy_format!(Q5_1, BlockQ5_1x, BlockQ8_1, off: 0, five: true, mins: true);

/// Q4_0: the tile holds each nibble as `q ^ 8`, the value `q - 8` in four-bit two's
/// complement (see `layout.rs`), so that each engine decodes it in its cheapest way
/// ([`Engine::q4_0_codes`]); codes may come scaled by [`Engine::Q4_0_UNIT`].
impl Format for Q4_0 {
    type Tile<const R: usize> = BlockQ4_0x<R>;
    type Act = BlockQ8_0;
    const QK: usize = 32;
    const W: usize = 8;
    const S: usize = 1;

    /// The sum comes as the `-8·Σa` a correcting engine's integer sum starts from.
    fn act<'a>(y: &'a BlockQ8_0, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        sums[0] = -8 * y.qs.iter().map(|&q| i32::from(q)).sum::<i32>();
        (bytemuck::cast_slice(&y.qs), y.d.to_f32(), 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockQ4_0x<R>,
        a: &Acts<'_, T>,
        mut acc: [E::F; T],
    ) -> [E::F; T] {
        for k in 0..2 {
            let mut c = [e.load(&tb.qs[k][0]); 8];
            for (v, q) in tb.qs[k].iter().enumerate() {
                [c[v], c[4 + v]] = e.q4_0_codes(e.load(q));
            }
            let (init, bound) = if E::CENTERS {
                (e.zero_i(), 8 * E::Q4_0_UNIT)
            } else {
                (e.splat_tokens(&a.sums(k, 0)), 15)
            };
            let isum = e.dots(init, &c, a.words(k), a.w(), 0, bound);
            let d = e.rows_f16(&tb.d[k]);
            let d = if E::Q4_0_UNIT == 1 {
                d
            } else {
                e.scale_rows(d, 1.0 / E::Q4_0_UNIT as f32)
            };
            acc = e.fma_scaled(acc, isum, d, a.d(k));
        }
        acc
    }
}

impl Format for Q8_0 {
    type Tile<const R: usize> = BlockQ8_0x<R>;
    type Act = BlockQ8_0;
    const QK: usize = 32;
    const W: usize = 8;
    const S: usize = 1;

    fn act<'a>(y: &'a BlockQ8_0, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        sums[0] = y.qs.iter().map(|&q| i32::from(q)).sum();
        (bytemuck::cast_slice(&y.qs), y.d.to_f32(), 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockQ8_0x<R>,
        a: &Acts<'_, T>,
        mut acc: [E::F; T],
    ) -> [E::F; T] {
        for k in 0..2 {
            let mut c = [e.load(&tb.qs[k][0]); 8];
            for (c, q) in c.iter_mut().zip(&tb.qs[k]) {
                *c = e.q8_codes(e.load(q));
            }
            let init = if E::Q8_OFFSET != 0 {
                let mut sums = a.sums(k, 0);
                for s in sums.iter_mut() {
                    *s *= -E::Q8_OFFSET;
                }
                e.splat_tokens(&sums)
            } else {
                e.zero_i()
            };
            let isum = e.dots_q8(init, &c, a.words(k), a.w(), 0);
            acc = e.fma_scaled(acc, isum, e.rows_f16(&tb.d[k]), a.d(k));
        }
        acc
    }
}

/// Q8_K's bsums (per 16 elements) summed in pairs: per 32-element sub-block.
fn bsums32(y: &BlockQ8_K, sums: &mut [i32]) {
    for (s, v) in sums.iter_mut().enumerate() {
        *v = i32::from(y.bsums[2 * s]) + i32::from(y.bsums[2 * s + 1]);
    }
}

/// Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and minimums.
macro_rules! k4_format {
    ($name:ident, $tile:ident, five: $five:expr) => {
        impl Format for $name {
            type Tile<const R: usize> = $tile<R>;
            type Act = BlockQ8_K;
            const QK: usize = QK_K;
            const W: usize = 64;
            const S: usize = 8;

            fn act<'a>(y: &'a BlockQ8_K, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
                bsums32(y, sums);
                (bytemuck::cast_slice(&y.qs), y.d, 0.0)
            }

            #[inline(always)]
            fn mul<const R: usize, E: Engine<R>, const T: usize>(
                e: E,
                tb: &$tile<R>,
                a: &Acts<'_, T>,
                acc: [E::F; T],
            ) -> [E::F; T] {
                let words = a.words(0);
                let mut total = e.zero_i::<T>();
                for c in 0..4 {
                    let (mut lo, mut hi) = ([e.load(&tb.qs[0]); 8], [e.load(&tb.qs[0]); 8]);
                    for v in 0..8 {
                        let x = e.load(&tb.qs[8 * c + v]);
                        lo[v] = e.shift_mask(x, 0, 0x0f);
                        hi[v] = e.shift_mask(x, -4, 0x0f);
                    }
                    if $five {
                        k5_high_bits(e, tb, c, &mut lo, &mut hi);
                    }
                    let max = if $five { 31 } else { 15 };
                    let zero = e.zero_i::<T>();
                    let il = e.dots(zero, &lo, words, a.w(), 16 * c, max);
                    let ih = e.dots(zero, &hi, words, a.w(), 16 * c + 8, max);
                    total = e.mla_rows(total, il, e.rows_u8(&tb.sc[2 * c]));
                    total = e.mla_rows(total, ih, e.rows_u8(&tb.sc[2 * c + 1]));
                }
                let mut mins = e.zero_i::<T>();
                for s in 0..8 {
                    // Minimums ≤ 63, |Σa| ≤ 32·128: 16-bit products.
                    mins = e.mla_outer_i16(mins, e.rows_u8(&tb.m[s]), &a.sums(0, s));
                }
                let d = a.d(0);
                let acc = e.fma_scaled(acc, total, e.rows_f16(&tb.d), d);
                let mut neg = *d;
                for v in neg.iter_mut() {
                    *v = -*v;
                }
                e.fma_scaled(acc, mins, e.rows_f16(&tb.dmin), &neg)
            }
        }
    };
}

/// Q5_K's fifth bits for the sixteen code vectors of chunk `c` (vectors `8c..8c + 8`
/// in planes `2c`, `2c + 1`).
#[inline(always)]
fn k5_high_bits<const R: usize, E: Engine<R>, Tb: K5Planes<R>>(
    e: E,
    tb: &Tb,
    c: usize,
    lo: &mut [E::V; 8],
    hi: &mut [E::V; 8],
) {
    for h in 0..2 {
        let plane = e.load(tb.k5_plane(2 * c + h));
        let (l, hh) = (&mut lo[4 * h..4 * h + 4], &mut hi[4 * h..4 * h + 4]);
        for v in 0..4 {
            let k = 2 * v as i32;
            l[v] = e.merge_bits(l[v], plane, 4 - k, 0x10);
            hh[v] = e.merge_bits(hh[v], plane, 3 - k, 0x10);
        }
    }
}

/// Fifth-bit planes of a K-quant tile block (Q5_K only).
trait K5Planes<const R: usize> {
    fn k5_plane(&self, p: usize) -> &Lanes<R>;
}
impl<const R: usize> K5Planes<R> for BlockQ4_Kx<R> {
    fn k5_plane(&self, _: usize) -> &Lanes<R> {
        unreachable!("Q4_K has no fifth bits")
    }
}
impl<const R: usize> K5Planes<R> for BlockQ5_Kx<R> {
    #[inline(always)]
    fn k5_plane(&self, p: usize) -> &Lanes<R> {
        &self.qh[p]
    }
}

k4_format!(Q4_K, BlockQ4_Kx, five: false);
k4_format!(Q5_K, BlockQ5_Kx, five: true);

impl Format for Q6_K {
    type Tile<const R: usize> = BlockQ6_Kx<R>;
    type Act = BlockQ8_K;
    const QK: usize = QK_K;
    const W: usize = 64;
    const S: usize = 16;

    /// The sums come as the `-32·Σa` each sub-block's integer sum starts from.
    fn act<'a>(y: &'a BlockQ8_K, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        for (v, b) in sums.iter_mut().zip(&y.bsums) {
            *v = -32 * i32::from(*b);
        }
        (bytemuck::cast_slice(&y.qs), y.d, 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockQ6_Kx<R>,
        a: &Acts<'_, T>,
        acc: [E::F; T],
    ) -> [E::F; T] {
        let words = a.words(0);
        let mut total = e.zero_i::<T>();
        // Group g: code vectors 4g..4g + 4 (planes 2g, 2g + 1), low nibbles sub-block
        // 2g, high nibbles 2g + 1, their two scales loaded together. Codes stay unsigned (0..63) on every engine: the -32
        // offset enters through the prepared sums, one per sub-block and token,
        // cheaper than four subtractions.
        for g in 0..8 {
            let (mut lo, mut hi) = ([e.load(&tb.ql[0]); 4], [e.load(&tb.ql[0]); 4]);
            for v in 0..4 {
                let x = e.load(&tb.ql[4 * g + v]);
                lo[v] = e.shift_mask(x, 0, 0x0f);
                hi[v] = e.shift_mask(x, -4, 0x0f);
            }
            for p in 0..2 {
                let plane = e.load(&tb.qh[2 * g + p]);
                for v in 0..2 {
                    let k = 2 * (2 * v as i32);
                    let i = 2 * p + v;
                    lo[i] = e.merge_bits(lo[i], plane, 4 - k, 0x30);
                    hi[i] = e.merge_bits(hi[i], plane, 2 - k, 0x30);
                }
            }
            let sc = e.rows_i8_x2(tb.sc[2 * g..2 * g + 2].try_into().unwrap());
            for (h, codes) in [&lo, &hi].into_iter().enumerate() {
                let s = 2 * g + h;
                let init = e.splat_tokens(&a.sums(0, s));
                let isum = e.dots(init, codes, words, a.w(), 4 * s, 63);
                total = e.mla_rows(total, isum, sc[h]);
            }
        }
        e.fma_scaled(acc, total, e.rows_f32(&tb.d), a.d(0))
    }
}

/// The four code vectors (bit pairs `k`) of each of the four loaded 2-bit vectors
/// `4g..4g + 4` of a Q2_K/Q3_K tile: `[k][i]` is elements `64k + 16g + 4i..+4`, the
/// sixteen elements of sub-block `4k + g`.
///
/// `wide`: each code left where it lies, `c·4^k` (see [`Engine::WIDE_CODES`]).
#[inline(always)]
fn two_bit_codes<const R: usize, E: Engine<R>>(
    e: E,
    qs: &[Lanes<R>],
    g: usize,
    wide: bool,
) -> [[E::V; 4]; 4] {
    // Loops, not `array::from_fn`/`map`: a closure is compiled without the kernel's
    // target features, so the intrinsics it calls would not be inlined (Q2_K and Q3_K
    // generation ran at a fifth of Q4_K's bytes per second that way).
    let mut x = [e.load(&qs[4 * g]); 4];
    for (i, x) in x.iter_mut().enumerate().skip(1) {
        *x = e.load(&qs[4 * g + i]);
    }
    let mut c = [x; 4];
    for (k, c) in c.iter_mut().enumerate() {
        for (c, &x) in c.iter_mut().zip(&x) {
            *c = if wide {
                e.shift_mask(x, 0, 0x03 << (2 * k))
            } else {
                e.shift_mask(x, -2 * k as i32, 0x03)
            };
        }
    }
    c
}

impl Format for Q2_K {
    type Tile<const R: usize> = BlockQ2_Kx<R>;
    type Act = BlockQ8_K;
    const QK: usize = QK_K;
    const W: usize = 64;
    const S: usize = 16;

    fn act<'a>(y: &'a BlockQ8_K, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        for (v, b) in sums.iter_mut().zip(&y.bsums) {
            *v = i32::from(*b);
        }
        (bytemuck::cast_slice(&y.qs), y.d, 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockQ2_Kx<R>,
        a: &Acts<'_, T>,
        acc: [E::F; T],
    ) -> [E::F; T] {
        let words = a.words(0);
        let mut total = e.zero_i::<T>();
        let mut mins = e.zero_i::<T>();
        // Wide codes save a shift per code vector and cost one per token's sum: for
        // fewer than 4 tokens (generation) that is a saving.
        let wide = E::WIDE_CODES && T < 4;
        for g in 0..4 {
            for (k, c) in two_bit_codes(e, &tb.qs, g, wide).iter().enumerate() {
                let s = 4 * k + g;
                let [sc, m] = e.rows_nibbles(&tb.scales[s]);
                let b = if wide { 3 << (2 * k) } else { 3 };
                let mut isum = e.dots(e.zero_i(), c, words, a.w(), 16 * k + 4 * g, b);
                if wide && k > 0 {
                    isum = e.shr_exact(isum, 2 * k as u32);
                }
                // |isum| ≤ 16·3·128, |Σa| ≤ 16·128: 16-bit products.
                total = e.mla_rows_i16(total, isum, sc);
                mins = e.mla_outer_i16(mins, m, &a.sums(0, s));
            }
        }
        let d = a.d(0);
        let acc = e.fma_scaled(acc, total, e.rows_f16(&tb.d), d);
        let neg = d.map(|v| -v);
        e.fma_scaled(acc, mins, e.rows_f16(&tb.dmin), &neg)
    }
}

impl Format for Q3_K {
    type Tile<const R: usize> = BlockQ3_Kx<R>;
    type Act = BlockQ8_K;
    const QK: usize = QK_K;
    const W: usize = 64;
    const S: usize = 16;

    /// The sums come as the `-4·Σa` a correcting engine's sub-block sum starts from.
    fn act<'a>(y: &'a BlockQ8_K, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        for (v, b) in sums.iter_mut().zip(&y.bsums) {
            *v = -4 * i32::from(*b);
        }
        (bytemuck::cast_slice(&y.qs), y.d, 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockQ3_Kx<R>,
        a: &Acts<'_, T>,
        acc: [E::F; T],
    ) -> [E::F; T] {
        let words = a.words(0);
        let mut total = e.zero_i::<T>();
        for g in 0..4 {
            let planes = [e.load(&tb.qh[2 * g]), e.load(&tb.qh[2 * g + 1])];
            for (k, mut c) in two_bit_codes(e, &tb.qs, g, false).into_iter().enumerate() {
                for (i, c) in c.iter_mut().enumerate() {
                    let bit = (4 * (k % 2) + i) as i32;
                    *c = e.merge_bits(*c, planes[k / 2], 2 - bit, 0x04);
                }
                let s = 4 * k + g;
                let init = offset(e, &mut c, 4, a.sums(0, s));
                let b = bound::<R, E>(7, 4);
                let isum = e.dots(init, &c, words, a.w(), 16 * k + 4 * g, b);
                total = e.mla_rows(total, isum, e.rows_i8(&tb.sc[s]));
            }
        }
        e.fma_scaled(acc, total, e.rows_f16(&tb.d), a.d(0))
    }
}

/// IQ4 codes as the engine's any-byte dots take them: each nibble's table value.
#[inline(always)]
fn iq4_values<const R: usize, E: Engine<R>>(e: E, qs: &[Lanes<R>; 4]) -> [E::V; 8] {
    // A loop, not `map`: see `two_bit_codes`.
    let mut c = nibble_codes(e, qs);
    for c in &mut c {
        *c = e.lookup16_q8(*c, &KVALUES_IQ4NL);
    }
    c
}

/// The `-Q8_OFFSET·Σa` an engine whose any-byte codes carry an offset starts from.
#[inline(always)]
fn q8_offset_init<const R: usize, E: Engine<R>, const T: usize>(e: E, sums: [i32; T]) -> [E::I; T] {
    if E::Q8_OFFSET != 0 {
        e.splat_tokens(&sums.map(|s| -E::Q8_OFFSET * s))
    } else {
        e.zero_i()
    }
}

impl Format for IQ4_NL {
    type Tile<const R: usize> = BlockIQ4_NLx<R>;
    type Act = BlockQ8_0;
    const QK: usize = 32;
    const W: usize = 8;
    const S: usize = 1;

    fn act<'a>(y: &'a BlockQ8_0, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        sums[0] = y.qs.iter().map(|&q| i32::from(q)).sum();
        (bytemuck::cast_slice(&y.qs), y.d.to_f32(), 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockIQ4_NLx<R>,
        a: &Acts<'_, T>,
        mut acc: [E::F; T],
    ) -> [E::F; T] {
        for k in 0..2 {
            let c = iq4_values(e, &tb.qs[k]);
            let init = q8_offset_init(e, a.sums(k, 0));
            let isum = e.dots_q8(init, &c, a.words(k), a.w(), 0);
            acc = e.fma_scaled(acc, isum, e.rows_f16(&tb.d[k]), a.d(k));
        }
        acc
    }
}

impl Format for IQ4_XS {
    type Tile<const R: usize> = BlockIQ4_XSx<R>;
    type Act = BlockQ8_K;
    const QK: usize = QK_K;
    const W: usize = 64;
    const S: usize = 8;

    fn act<'a>(y: &'a BlockQ8_K, sums: &mut [i32]) -> (&'a [u8], f32, f32) {
        bsums32(y, sums);
        (bytemuck::cast_slice(&y.qs), y.d, 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockIQ4_XSx<R>,
        a: &Acts<'_, T>,
        acc: [E::F; T],
    ) -> [E::F; T] {
        let words = a.words(0);
        let mut total = e.zero_i::<T>();
        for s in 0..8 {
            let c = iq4_values(e, tb.qs[4 * s..4 * s + 4].try_into().unwrap());
            let init = q8_offset_init(e, a.sums(0, s));
            let isum = e.dots_q8(init, &c, words, a.w(), 8 * s);
            total = e.mla_rows(total, isum, e.rows_i8(&tb.sc[s]));
        }
        e.fma_scaled(acc, total, e.rows_f16(&tb.d), a.d(0))
    }
}

/// Element `i` of each token's eight f32 activations.
#[inline(always)]
fn column<const T: usize>(words: &[u32], i: usize) -> [f32; T] {
    let mut x = [0f32; T];
    for (t, x) in x.iter_mut().enumerate() {
        *x = f32::from_bits(words[t * 8 + i]);
    }
    x
}

impl Format for F16 {
    type Tile<const R: usize> = BlockF16x<R>;
    /// Eight f32 activations, unquantized.
    type Act = [f32; 8];
    const QK: usize = 8;
    const W: usize = 8;
    const S: usize = 0;
    const PAIRED_ACTS: bool = false;

    fn act<'a>(y: &'a [f32; 8], _: &mut [i32]) -> (&'a [u8], f32, f32) {
        (bytemuck::cast_slice(y), 1.0, 0.0)
    }

    #[inline(always)]
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &BlockF16x<R>,
        a: &Acts<'_, T>,
        mut acc: [E::F; T],
    ) -> [E::F; T] {
        let words = a.words(0);
        let x = |i: usize| column::<T>(words, i);
        if T >= 4 {
            for (i, w) in tb.w.iter().enumerate() {
                acc = e.fma_outer(acc, e.rows_f16(w), &x(i));
            }
            return acc;
        }
        // Few tokens: two chains of four multiply-adds per block, so that one
        // accumulator's latency does not bound a stream of weights.
        let (mut even, mut odd) = (e.zero_f::<T>(), e.zero_f::<T>());
        for i in (0..8).step_by(2) {
            even = e.fma_outer(even, e.rows_f16(&tb.w[i]), &x(i));
            odd = e.fma_outer(odd, e.rows_f16(&tb.w[i + 1]), &x(i + 1));
        }
        e.add_f(acc, e.add_f(even, odd))
    }
}
