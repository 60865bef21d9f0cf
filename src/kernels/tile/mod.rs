//! The packed-tile design every SIMD path shares.
//!
//! Weights are repacked once, at load, into tiles of `R` rows ([`layout`]); a product
//! then runs one tile against a group of `T` tokens at a time, decoding each block of
//! codes once and using it for every token of the group. Three pieces, each written
//! once:
//!
//! - [`layout`]: the tile structs (`BlockQ4_0x<R>`, `BlockQ4_Kx<R>`, ...) and their
//!   packers, plain Rust;
//! - [`formats`]: per weight type, how a tile block meets the prepared activations
//!   (which codes, which scales, which offsets), generic over the engine;
//! - [`Engine`]: what an instruction set supplies, the rten way: loads, byte masks,
//!   the integer dot products of code vectors with activation words, and the scale
//!   arithmetic on per-row and per-token values. Each path (`x86/`, `arm/`, and the
//!   plain-Rust [`reference`] engine the tests run everywhere) implements it in one
//!   small module and picks `R` and `T`.
//!
//! An engine value is a proof that the CPU has its instructions: only detection
//! makes one (see each path's `detect`), which is the one safety argument of every
//! `#[target_feature]` entry point.
//!
//! Results: integer sums are exact (every engine's dots are exact in i32); the f32
//! scaling and accumulation follow the tile order, so a tile's results equal the
//! scalar `vec_dot` within the tolerance the tests state, not bit for bit.

pub mod formats;
pub mod layout;
#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;

use half::f16;

use layout::Lanes;

/// An instruction set's operations on one tile of `R` rows.
///
/// Accumulators come in arrays of `T`, one per token of the group (or, for a
/// [`PAIRED`](Engine::PAIRED) engine, one per pair of rows and pair of tokens: the
/// engine alone knows which lanes are which). Per-row values ([`Engine::RowsI`],
/// [`Engine::RowsF`]) are loaded once per block and combined with per-token values.
///
/// # Safety
///
/// Implementors are zero-sized proofs that the running CPU has the instructions
/// their methods use: a value must be constructible only after detecting them.
pub unsafe trait Engine<const R: usize>: Copy + Send + Sync + 'static {
    /// One code vector: [`Lanes<R>`] in a register.
    type V: Copy;
    /// One i32 accumulator.
    type I: Copy;
    /// One f32 accumulator.
    type F: Copy;
    /// One i32 value per row, as the engine combines it with accumulators.
    type RowsI: Copy;
    /// One f32 value per row.
    type RowsF: Copy;

    /// Codes are centred at decode (`code - offset`, signed) rather than corrected
    /// by `-offset·Σa` afterwards: engines whose products are signed × signed.
    const CENTERS: bool;
    /// Activations of token pairs are interleaved (`smmla`'s 2×8 operands).
    const PAIRED: bool;
    /// What [`Engine::q8_codes`] adds to Q8_0's signed codes (128 for engines that
    /// multiply unsigned by signed bytes), corrected by `-offset·Σa`.
    const Q8_OFFSET: i32;

    /// How far ahead of the tile block being computed the product asks for weights
    /// ([`Engine::prefetch`], one request per cache line): 0 leaves the stream to the
    /// hardware prefetcher. Generation reads every weight once per token, so this is
    /// what decides whether memory and arithmetic overlap.
    const PREFETCH_AHEAD: usize = 0;
    /// A hint that the cache line at `p` is read soon. `p` may lie past the tiles'
    /// end (the last blocks' requests do): a prefetch never faults.
    #[inline(always)]
    fn prefetch(self, _p: *const u8) {}

    fn load(self, v: &Lanes<R>) -> Self::V;
    /// Per byte: `v` shifted left by `shift` (right if negative), then `& mask`.
    /// Bits shifted in from a neighbouring byte must be outside `mask`.
    fn shift_mask(self, v: Self::V, shift: i32, mask: u8) -> Self::V;
    fn or(self, a: Self::V, b: Self::V) -> Self::V;
    /// `base | (from shifted by shift) & mask` (see [`Engine::shift_mask`]), where
    /// `base` has no bit of `mask` set: how high bits join their nibbles.
    #[inline(always)]
    fn merge_bits(self, base: Self::V, from: Self::V, shift: i32, mask: u8) -> Self::V {
        self.or(base, self.shift_mask(from, shift, mask))
    }
    /// Per byte, wrapping `v - k`.
    fn sub(self, v: Self::V, k: u8) -> Self::V;
    /// Q8_0's signed codes as this engine's dots take them.
    fn q8_codes(self, v: Self::V) -> Self::V;

    /// What one step of a Q4_0 code is worth in [`Engine::q4_0_codes`]'s output: 1,
    /// or 16 for engines that read the signed nibbles in the high half of a byte.
    const Q4_0_UNIT: i32 = 1;
    /// Q4_0's low and high nibble codes of a tile vector (nibbles stored as `q ^ 8`):
    /// unsigned `q` for correcting engines, `(q - 8)·Q4_0_UNIT` for centring ones.
    #[inline(always)]
    fn q4_0_codes(self, x: Self::V) -> [Self::V; 2] {
        let x = self.xor(x, 0x88);
        let (lo, hi) = (self.shift_mask(x, 0, 0x0f), self.shift_mask(x, -4, 0x0f));
        if Self::CENTERS {
            [self.sub(lo, 8), self.sub(hi, 8)]
        } else {
            [lo, hi]
        }
    }
    /// Per byte, `v ^ k`.
    fn xor(self, v: Self::V, k: u8) -> Self::V;
    /// Per byte, `table[v]` for bytes `v` in `0..16` (IQ4's non-linear values: a
    /// byte shuffle on every path).
    fn lookup16(self, v: Self::V, table: &[i8; 16]) -> Self::V;
    /// `q8_codes(lookup16(v, table))`: engines whose `q8_codes` is a byte map apply
    /// it to the table once instead of to every looked-up vector.
    #[inline(always)]
    fn lookup16_q8(self, v: Self::V, table: &[i8; 16]) -> Self::V {
        self.q8_codes(self.lookup16(v, table))
    }

    /// `init[t] + Σ_j codes[j] · word w0 + j` of each token, per row: codes of
    /// magnitude at most `bound` (unsigned 0..=bound, or signed when
    /// [`CENTERS`](Engine::CENTERS)), activations signed bytes. `words` holds the
    /// group's `W` words of one activation block per token (paired for a paired
    /// engine, see [`prepare_group`]).
    fn dots<const N: usize, const T: usize>(
        self,
        init: [Self::I; T],
        codes: &[Self::V; N],
        words: &[u32],
        w: usize,
        w0: usize,
        bound: i32,
    ) -> [Self::I; T];
    /// [`Engine::dots`] for codes from [`Engine::q8_codes`] (any byte).
    fn dots_q8<const N: usize, const T: usize>(
        self,
        init: [Self::I; T],
        codes: &[Self::V; N],
        words: &[u32],
        w: usize,
        w0: usize,
    ) -> [Self::I; T];

    /// [`Engine::dots`] is exact for every unsigned code byte whatever its `bound`
    /// (u8 × s8 products summed in i32, as VNNI's `vpdpbusd`): a 2-bit code can be
    /// masked where it lies, as `c·4^k`, and its sums shifted back once
    /// ([`Engine::shr_exact`]), instead of shifting every code vector down.
    const WIDE_CODES: bool = false;
    /// Every i32 lane `>> s` (arithmetic): exact on sums of codes scaled by `2^s`.
    fn shr_exact<const T: usize>(self, x: [Self::I; T], s: u32) -> [Self::I; T];

    fn zero_i<const T: usize>(self) -> [Self::I; T];
    /// Every row of token `t` set to `v[t]`.
    fn splat_tokens<const T: usize>(self, v: &[i32; T]) -> [Self::I; T];
    /// `acc + x · rows`.
    fn mla_rows<const T: usize>(
        self,
        acc: [Self::I; T],
        x: [Self::I; T],
        rows: Self::RowsI,
    ) -> [Self::I; T];
    /// `acc + rows ⊗ tokens`.
    fn mla_outer<const T: usize>(
        self,
        acc: [Self::I; T],
        rows: Self::RowsI,
        tokens: &[i32; T],
    ) -> [Self::I; T];
    /// [`Engine::mla_rows`] where every `x` is within i16 (a sum over 16 elements of
    /// 2-bit codes) and every row value in `0..2¹⁵` (unsigned scales, from
    /// [`Engine::rows_u8`] or [`Engine::rows_nibbles`]): engines whose 16-bit
    /// multiply-add is cheaper than a 32-bit multiply take it.
    #[inline(always)]
    fn mla_rows_i16<const T: usize>(
        self,
        acc: [Self::I; T],
        x: [Self::I; T],
        rows: Self::RowsI,
    ) -> [Self::I; T] {
        self.mla_rows(acc, x, rows)
    }
    /// [`Engine::mla_outer`] where every row value is in `0..2¹⁵` (unsigned, as for
    /// [`Engine::mla_rows_i16`]) and every token value within i16 (K-quant minimums
    /// against activation sums of 16 or 32 codes).
    #[inline(always)]
    fn mla_outer_i16<const T: usize>(
        self,
        acc: [Self::I; T],
        rows: Self::RowsI,
        tokens: &[i32; T],
    ) -> [Self::I; T] {
        self.mla_outer(acc, rows, tokens)
    }

    fn rows_u8(self, b: &[u8; R]) -> Self::RowsI;
    fn rows_i8(self, b: &[i8; R]) -> Self::RowsI;
    /// Two rows of signed bytes at once (Q6_K's sub-block scales).
    #[inline(always)]
    fn rows_i8_x2(self, b: &[[i8; R]; 2]) -> [Self::RowsI; 2] {
        [self.rows_i8(&b[0]), self.rows_i8(&b[1])]
    }
    /// Each row's byte split in its low and high nibbles (Q2_K's scale and min).
    #[inline(always)]
    fn rows_nibbles(self, b: &[u8; R]) -> [Self::RowsI; 2] {
        let (mut lo, mut hi) = ([0u8; R], [0u8; R]);
        for ((lo, hi), &b) in lo.iter_mut().zip(&mut hi).zip(b) {
            *lo = b & 0x0f;
            *hi = b >> 4;
        }
        [self.rows_u8(&lo), self.rows_u8(&hi)]
    }
    fn rows_f16(self, b: &[f16; R]) -> Self::RowsF;
    fn rows_f32(self, b: &[f32; R]) -> Self::RowsF;
    /// Every row's value times `k`.
    fn scale_rows(self, r: Self::RowsF, k: f32) -> Self::RowsF;

    fn zero_f<const T: usize>(self) -> [Self::F; T];
    /// `acc + f32(x) · (rows ⊗ tokens)`.
    fn fma_scaled<const T: usize>(
        self,
        acc: [Self::F; T],
        x: [Self::I; T],
        rows: Self::RowsF,
        tokens: &[f32; T],
    ) -> [Self::F; T];
    /// `acc + rows ⊗ tokens`.
    fn fma_outer<const T: usize>(
        self,
        acc: [Self::F; T],
        rows: Self::RowsF,
        tokens: &[f32; T],
    ) -> [Self::F; T];
    fn add_f<const T: usize>(self, a: [Self::F; T], b: [Self::F; T]) -> [Self::F; T];
    /// Writes the group's results token-major: `out[t * R + r]`.
    fn store<const T: usize>(self, acc: &[Self::F; T], out: &mut [f32]);
}

/// A weight type as the tile design computes it: its tile layout, its activation
/// format, and the block product.
pub trait Format: 'static {
    type Tile<const R: usize>: layout::Layout<R>;
    /// The activation block (`BlockQ8_0`, `BlockQ8_1` or `BlockQ8_K`).
    type Act: bytemuck::Pod;
    /// Elements per activation block.
    const QK: usize;
    /// Words of codes per activation block (`QK / 4` bytes; F16's f32 activations:
    /// `QK`).
    const W: usize;
    /// Per-block activation sums kept per token (over sub-blocks of `QK / S`).
    const S: usize;
    /// Whether a paired engine takes this format's activations in token pairs
    /// (integer codes); F16's f32 activations stay one token after another.
    const PAIRED_ACTS: bool = true;

    /// The activation block's codes, its scale and its second term (Q8_1's `s`, else
    /// 0); writes the code sums of its `S` sub-blocks into `sums`.
    fn act<'a>(y: &'a Self::Act, sums: &mut [i32]) -> (&'a [u8], f32, f32);

    /// `acc` plus one tile block times the group's prepared activations.
    fn mul<const R: usize, E: Engine<R>, const T: usize>(
        e: E,
        tb: &Self::Tile<R>,
        a: &Acts<'_, T>,
        acc: [E::F; T],
    ) -> [E::F; T];
}

/// Words per activation block: its codes.
const fn words<F: Format>() -> usize {
    F::W
}

/// Activation blocks per tile block.
fn act_blocks_per_tile_block<F: Format>() -> usize {
    use layout::Layout;
    <F::Tile<4> as Layout<4>>::QK * <F::Tile<4> as Layout<4>>::DEPTH / F::QK
}

/// Elements a row's length must be a multiple of for format `F`'s tiles.
pub fn cols_multiple<F: Format>() -> usize {
    use layout::Layout;
    <F::Tile<4> as Layout<4>>::QK.max(F::QK)
}

/// Words of one prepared activation block for `n` tokens: codes, sums, scales,
/// second terms.
pub const fn block_words<F: Format>(n: usize) -> usize {
    n * (words::<F>() + F::S + 2)
}

/// Activation blocks a row of `cols` elements takes in the tiles: whole tile blocks.
pub fn padded_blocks<F: Format>(cols: usize) -> usize {
    let depth = act_blocks_per_tile_block::<F>();
    (cols / F::QK).div_ceil(depth) * depth
}

/// The prepared activations of one tile block's worth of blocks for a group of `T`
/// tokens: per activation block, `[codes: T·W][sums: T·S][d: T][m: T]`.
pub struct Acts<'a, const T: usize> {
    p: &'a [u32],
    w: usize,
    s: usize,
}

impl<'a, const T: usize> Acts<'a, T> {
    #[inline(always)]
    fn block(&self, k: usize) -> &'a [u32] {
        let n = T * (self.w + self.s + 2);
        &self.p[k * n..(k + 1) * n]
    }

    /// The code words of activation block `k` (for [`Engine::dots`]).
    #[inline(always)]
    pub fn words(&self, k: usize) -> &'a [u32] {
        &self.block(k)[..T * self.w]
    }

    /// The sums of sub-block `s` of activation block `k`, per token.
    #[inline(always)]
    pub fn sums(&self, k: usize, s: usize) -> [i32; T] {
        let b = &self.block(k)[T * self.w..];
        let mut out = [0i32; T];
        for (t, o) in out.iter_mut().enumerate() {
            *o = b[t * self.s + s] as i32;
        }
        out
    }

    /// Activation block `k`'s scale per token.
    #[inline(always)]
    pub fn d(&self, k: usize) -> &'a [f32; T] {
        let b = &self.block(k)[T * (self.w + self.s)..][..T];
        bytemuck::cast_slice(b).try_into().unwrap()
    }

    /// Activation block `k`'s second term per token (Q8_1's `s`).
    #[inline(always)]
    pub fn m(&self, k: usize) -> &'a [f32; T] {
        let b = &self.block(k)[T * (self.w + self.s + 1)..][..T];
        bytemuck::cast_slice(b).try_into().unwrap()
    }

    pub fn w(&self) -> usize {
        self.w
    }
}

/// Lays out `n` tokens' activation rows (`rows[t]`, each `cols` elements in `F::Act`
/// blocks) into `out` ([`group_words`] long): block by block, each as [`Acts`] reads
/// it, codes paired by tokens when `paired`. Blocks past the row's end (padding the
/// last tile block) are zero.
pub fn prepare_group<F: Format>(cols: usize, rows: &[&[u8]], paired: bool, out: &mut [u32]) {
    let n = rows.len();
    let (w, s) = (words::<F>(), F::S);
    let bw = block_words::<F>(n);
    let nb = cols / F::QK;
    assert!(
        !paired || n.is_multiple_of(2),
        "paired groups hold token pairs"
    );
    assert_eq!(
        out.len(),
        padded_blocks::<F>(cols) * bw,
        "prepared group length"
    );
    out.fill(0);
    let mut sums = vec![0i32; s];
    for (t, row) in rows.iter().enumerate() {
        let row = &row[..nb * size_of::<F::Act>()];
        crate::quant::with_blocks(row, |blocks: &[F::Act]| {
            for (b, y) in blocks.iter().enumerate() {
                let o = &mut out[b * bw..(b + 1) * bw];
                let (codes, d, m) = F::act(y, &mut sums);
                for (j, c) in codes.chunks_exact(4).enumerate() {
                    let word = u32::from_le_bytes(c.try_into().unwrap());
                    let at = if paired {
                        // Pair p, word pair q: [t0 w2q, t0 w2q+1, t1 w2q, t1 w2q+1].
                        (t / 2) * 2 * w + (j / 2) * 4 + (t % 2) * 2 + j % 2
                    } else {
                        t * w + j
                    };
                    o[at] = word;
                }
                for (k, v) in sums.iter().enumerate() {
                    o[n * w + t * s + k] = *v as u32;
                }
                o[n * (w + s) + t] = d.to_bits();
                o[n * (w + s + 1) + t] = m.to_bits();
            }
        });
    }
}

/// Words [`prepare_group`] writes for `n` tokens of `cols` elements.
pub fn group_words<F: Format>(cols: usize, n: usize) -> usize {
    padded_blocks::<F>(cols) * block_words::<F>(n)
}

/// `out[t * R + r]` = row `r` of the tile `tile` (one tile of [`layout::tile_bytes`])
/// times token `t` of a prepared group of `T` tokens.
#[inline(always)]
pub fn mul_tile<F: Format, E: Engine<R>, const R: usize, const T: usize>(
    e: E,
    tile: &[u8],
    group: &[u32],
    out: &mut [f32],
) {
    let depth = act_blocks_per_tile_block::<F>();
    let tbs: &[F::Tile<R>] = bytemuck::cast_slice(tile);
    let per = depth * block_words::<F>(T);
    assert_eq!(group.len(), tbs.len() * per, "prepared group for this tile");
    assert_eq!(out.len(), T * R, "tile output");
    let mut acc = e.zero_f::<T>();
    for (tb, p) in tbs.iter().zip(group.chunks_exact(per)) {
        if E::PREFETCH_AHEAD > 0 {
            let ahead = (tb as *const F::Tile<R>)
                .cast::<u8>()
                .wrapping_add(E::PREFETCH_AHEAD);
            for o in (0..size_of::<F::Tile<R>>()).step_by(64) {
                e.prefetch(ahead.wrapping_add(o));
            }
        }
        let a = Acts::<T> {
            p,
            w: words::<F>(),
            s: F::S,
        };
        acc = F::mul::<R, E, T>(e, tb, &a, acc);
    }
    e.store(&acc, out);
}

/// How a batch of `tokens` splits into groups: as many of `max` as fit, then powers
/// of two for the rest (7 = 4 + 2 + 1 with `max` 8). Every path's prepared layout and
/// its product follow this split.
pub fn token_groups(tokens: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut t0 = 0;
    std::iter::from_fn(move || {
        if t0 >= tokens {
            return None;
        }
        let left = tokens - t0;
        let n = if left >= max {
            max
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        t0 += n;
        Some((t0 - n, n))
    })
}

/// [`crate::kernels::TileKernel::tile_bytes`] of format `F` in tiles of `R` rows.
pub fn tile_bytes_of<F: Format, const R: usize>(cols: usize) -> usize {
    use layout::Layout;
    layout::tile_bytes::<F::Tile<R>, R>(cols / <F::Tile<R> as Layout<R>>::QK)
}

/// [`crate::kernels::TileKernel::pack`] of format `F` in tiles of `R` rows.
pub fn pack_of<F: Format, const R: usize>(cols: usize, w: &[u8], rows: usize, out: &mut [u8]) {
    use layout::Layout;
    assert!(
        cols.is_multiple_of(cols_multiple::<F>()),
        "row of {cols} is not whole blocks"
    );
    layout::pack::<F::Tile<R>, R>(cols / <F::Tile<R> as Layout<R>>::QK, w, rows, out)
}

/// [`crate::kernels::TileKernel::prepare`] for engines that take tokens one by one.
pub fn prepare_plain<F: Format>(cols: usize, rows: &[&[u8]], out: &mut [u32]) {
    prepare_group::<F>(cols, rows, false, out)
}

/// [`crate::kernels::TileKernel::prepare`] for a paired engine's groups (a single
/// token stays unpaired: one token is the dot engine's).
pub fn prepare_paired<F: Format>(cols: usize, rows: &[&[u8]], out: &mut [u32]) {
    prepare_group::<F>(cols, rows, F::PAIRED_ACTS && rows.len() >= 2, out)
}

/// Something generic over a [`Format`], called with the format of a weight type
/// (see [`for_type`]).
pub trait PerFormat {
    type Out;
    fn call<F: Format>(self) -> Self::Out;
}

/// `p.call::<F>()` with `F` the tile format of `ty`, if the tile design computes it.
pub fn for_type<P: PerFormat>(ty: crate::quant::GgmlType, p: P) -> Option<P::Out> {
    use crate::quant::GgmlType as G;
    Some(match ty {
        G::Q4_0 => p.call::<formats::Q4_0>(),
        G::Q4_1 => p.call::<formats::Q4_1>(),
        G::Q5_0 => p.call::<formats::Q5_0>(),
        G::Q5_1 => p.call::<formats::Q5_1>(),
        G::Q8_0 => p.call::<formats::Q8_0>(),
        G::Q4_K => p.call::<formats::Q4_K>(),
        G::Q5_K => p.call::<formats::Q5_K>(),
        G::Q6_K => p.call::<formats::Q6_K>(),
        G::Q2_K => p.call::<formats::Q2_K>(),
        G::Q3_K => p.call::<formats::Q3_K>(),
        G::IQ4_NL => p.call::<formats::IQ4_NL>(),
        G::IQ4_XS => p.call::<formats::IQ4_XS>(),
        G::F16 => p.call::<formats::F16>(),
        _ => return None,
    })
}

/// An engine's entry points, plain `fn`s for the table: `$gemv` (one tile times one
/// prepared token) and `$gemm` (one tile times a group of the listed sizes), each
/// making the engine value through `$get` (detection; it panics only if a table was
/// built without it) and calling one `#[target_feature]` instance of [`mul_tile`].
macro_rules! tile_entries {
    (
        engine: $e:ty, rows: $r:literal, features: $features:literal, get: $get:expr,
        $(gemv: $gemv:ident,)? gemm: $gemm:ident [$($n:literal),*]
    ) => {
        #[target_feature(enable = $features)]
        fn mul<F: $crate::kernels::tile::Format, const T: usize>(
            e: $e,
            tile: &[u8],
            group: &[u32],
            out: &mut [f32],
        ) {
            $crate::kernels::tile::mul_tile::<F, $e, $r, T>(e, tile, group, out)
        }

        $(
            #[doc = concat!("One tile of ", $r, " rows times one prepared token.")]
            pub(crate) fn $gemv<F: $crate::kernels::tile::Format>(
                _cols: usize,
                tile: &[u8],
                group: &[u32],
                out: &mut [f32],
            ) {
                let e = $get;
                // SAFETY: `e` exists, so this CPU has the features `mul` enables.
                unsafe { mul::<F, 1>(e, tile, group, out) }
            }
        )?

        #[doc = concat!("One tile of ", $r, " rows times a prepared group of `n` tokens.")]
        pub(crate) fn $gemm<F: $crate::kernels::tile::Format>(
            _cols: usize,
            tile: &[u8],
            group: &[u32],
            n: usize,
            out: &mut [f32],
        ) {
            let e = $get;
            match n {
                // SAFETY: `e` exists, so this CPU has the features `mul` enables.
                $($n => unsafe { mul::<F, $n>(e, tile, group, out) },)*
                _ => panic!("no {}-token group kernel", n),
            }
        }
    };
}
pub(crate) use tile_entries;

/// The table record of format `F` in tiles of `R` rows, with an engine's entry
/// points and its full group size (activations paired for a paired engine's `gemm`).
pub fn tile_kernel<F: Format, const R: usize>(
    max_tokens: usize,
    paired: bool,
    gemv: fn(usize, &[u8], &[u32], &mut [f32]),
    gemm: fn(usize, &[u8], &[u32], usize, &mut [f32]),
) -> crate::kernels::TileKernel {
    crate::kernels::TileKernel {
        rows: R,
        max_tokens,
        cols_multiple: cols_multiple::<F>(),
        tile_bytes: tile_bytes_of::<F, R>,
        pack: pack_of::<F, R>,
        group_words: group_words::<F>,
        prepare: if paired {
            prepare_paired::<F>
        } else {
            prepare_plain::<F>
        },
        gemv,
        gemm,
        f16_arith: false,
    }
}
