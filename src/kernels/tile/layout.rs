//! The repacked weight layouts: one named struct per block family, generic over the
//! tile's row count `R` (the engine's i32 lanes: 16 for AVX-512, 8 for AVX2, 4 for
//! NEON), like ggml's `block_q4_0x8` and `block_q4_Kx8`.
//!
//! Every layout interleaves its rows four bytes at a time: a *code vector*
//! ([`Lanes`]) holds, in lane `r`, four consecutive code bytes of row `r`, which is
//! what `vpdpbusd`, `sdot` (by element) and a widening multiply against one
//! broadcast activation word consume, and what `smmla` takes after zipping two
//! vectors. Nibble-packed bytes stay packed: lane `r` of code vector `v` is bytes
//! `4v..4v + 4` of the row's `qs`, so the low nibbles of a vector are four consecutive
//! elements and the high nibbles four others; the activations follow in natural order
//! (see `formats.rs`). The bytes per weight are the file's (plus 2.8% for K-quant
//! scales unpacked to a byte each), in one sequential stream per tile.
//!
//! The fifth bit of Q5 codes and the two high bits of Q6_K codes are regrouped into
//! *planes* of the same shape as a code vector, so that every path recovers them with
//! a shift and a mask: in a Q5 plane, bit `k` of byte `(r, j)` belongs to code byte
//! `(r, j)` of code vector `k / 2` of the plane's group, low nibble for even `k`, high
//! for odd; in a Q6_K plane, bits `2k..2k + 2` likewise.
//!
//! The 32-element formats are tiled two blocks at a time so that every tile block is
//! a whole number of vectors: with `R = 16`, 576 bytes for Q4_0, nine cache lines.
//! A row of an odd number of blocks ends in a zero block (scale 0).

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::quant::{
    BlockIQ4_NL, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0,
    BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, iq4_xs_scale,
    k_quants::{get_scale_min_k4, two_bit_code},
    q3_k_scale,
};

/// One code vector: four bytes of each of `R` rows.
pub type Lanes<const R: usize> = [[u8; 4]; R];

/// Two Q4_0 blocks of `R` rows (ggml's `block_q4_0x4`/`x8`, two blocks deep).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_0x<const R: usize> {
    /// `[block][vector]`: each nibble is the file's code `q` (value `q - 8`) XOR 8,
    /// that is the value itself in four-bit two's complement, which an engine with
    /// signed bytes reads with one shift (see `Engine::q4_0_codes`).
    pub qs: [[Lanes<R>; 4]; 2],
    pub d: [[f16; R]; 2],
}

/// Two Q4_1 blocks of `R` rows.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1x<const R: usize> {
    pub qs: [[Lanes<R>; 4]; 2],
    pub d: [[f16; R]; 2],
    pub m: [[f16; R]; 2],
}

/// Two Q5_0 blocks of `R` rows: low nibbles in `qs`, fifth bits in one plane per block.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0x<const R: usize> {
    pub qs: [[Lanes<R>; 4]; 2],
    pub qh: [Lanes<R>; 2],
    pub d: [[f16; R]; 2],
}

/// Two Q5_1 blocks of `R` rows.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1x<const R: usize> {
    pub qs: [[Lanes<R>; 4]; 2],
    pub qh: [Lanes<R>; 2],
    pub d: [[f16; R]; 2],
    pub m: [[f16; R]; 2],
}

/// Two Q8_0 blocks of `R` rows: signed codes.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0x<const R: usize> {
    pub qs: [[Lanes<R>; 8]; 2],
    pub d: [[f16; R]; 2],
}

/// One Q4_K super-block of `R` rows, 6-bit scales and mins unpacked.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_Kx<const R: usize> {
    /// Vector `v`: low nibbles are sub-block `2(v / 8)`, high nibbles `2(v / 8) + 1`.
    pub qs: [Lanes<R>; 32],
    pub sc: [[u8; R]; 8],
    pub m: [[u8; R]; 8],
    pub d: [f16; R],
    pub dmin: [f16; R],
}

/// One Q5_K super-block of `R` rows: Q4_K's layout plus fifth-bit planes, plane `p`
/// for code vectors `4p..4p + 4`.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_Kx<const R: usize> {
    pub qs: [Lanes<R>; 32],
    pub qh: [Lanes<R>; 8],
    pub sc: [[u8; R]; 8],
    pub m: [[u8; R]; 8],
    pub d: [f16; R],
    pub dmin: [f16; R],
}

/// One Q6_K super-block of `R` rows: the low four bits of each code in `ql`, its two
/// high bits in planes (plane `p` for code vectors `2p`, `2p + 1`), sixteen signed
/// scales, and `d` widened to f32 (which also keeps the block a whole number of
/// vectors). The codes are regrouped so that they are read in element order: byte
/// `j` of lane `r` of vector `v` (group `g = v / 4`, `i = v % 4`) holds element
/// `32g + 4i + j` in its low nibble (sub-block `2g`) and `32g + 16 + 4i + j` in its
/// high nibble (sub-block `2g + 1`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ6_Kx<const R: usize> {
    pub ql: [Lanes<R>; 32],
    pub qh: [Lanes<R>; 16],
    pub sc: [[i8; R]; 16],
    pub d: [f32; R],
}

/// One Q2_K super-block of `R` rows. The 2-bit codes are regrouped so that bit pair
/// `k` of byte `j` of lane `r` of vector `v` is element `64k + 4v + j`: one load gives
/// four code vectors (one per `k`) by shifts, each four consecutive elements. The
/// scales stay the file's bytes (4-bit scale low, 4-bit min high), split as they are
/// read, so the tile holds the file's 84 bytes per row: a Q2_K matrix takes no more
/// memory, and a token reads no more bytes, than the file's.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ2_Kx<const R: usize> {
    pub qs: [Lanes<R>; 16],
    pub scales: [[u8; R]; 16],
    pub d: [f16; R],
    pub dmin: [f16; R],
}

/// One Q3_K super-block of `R` rows: the low two bits of each code as Q2_K's tile
/// holds them, the third bit (set for codes 0..3, i.e. stored level 4..7) in planes:
/// the code of vector `v = 4g + i` at bit pair `k` has its third bit at bit
/// `4(k % 2) + i` of plane `2g + k / 2`, same byte. Scales `-32..31`, one byte each.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ3_Kx<const R: usize> {
    pub qs: [Lanes<R>; 16],
    pub qh: [Lanes<R>; 8],
    pub sc: [[i8; R]; 16],
    pub d: [f16; R],
}

/// Two IQ4_NL blocks of `R` rows: the file's nibbles (table indices) as they are.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockIQ4_NLx<const R: usize> {
    pub qs: [[Lanes<R>; 4]; 2],
    pub d: [[f16; R]; 2],
}

/// One IQ4_XS super-block of `R` rows: the file's nibbles (vectors `4s..4s + 4` are
/// sub-block `s`, low nibbles its first 16 elements) and its eight 6-bit scales
/// unpacked to signed bytes (`ls - 32`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockIQ4_XSx<const R: usize> {
    pub qs: [Lanes<R>; 32],
    pub sc: [[i8; R]; 8],
    pub d: [f16; R],
}

/// Eight F16 columns of `R` rows: element `e` of every row side by side.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockF16x<const R: usize> {
    pub w: [[f16; R]; 8],
}

macro_rules! pod_tiles {
    ($($t:ident = $bytes_per_row:expr),* $(,)?) => {$(
        // SAFETY: `repr(C)` of byte, i8, f16 and f32 arrays only, each a multiple of
        // its own alignment and laid out without padding (the sizes are asserted
        // below for every row count a path uses), so every bit pattern is valid and
        // the bytes hold no uninitialised padding.
        unsafe impl<const R: usize> Zeroable for $t<R> {}
        // SAFETY: as for `Zeroable` above.
        unsafe impl<const R: usize> Pod for $t<R> {}
        const _: () = {
            assert!(size_of::<$t<4>>() == 4 * $bytes_per_row);
            assert!(size_of::<$t<8>>() == 8 * $bytes_per_row);
            assert!(size_of::<$t<16>>() == 16 * $bytes_per_row);
        };
    )*};
}

pod_tiles!(
    BlockQ4_0x = 36,
    BlockQ4_1x = 40,
    BlockQ5_0x = 44,
    BlockQ5_1x = 48,
    BlockQ8_0x = 68,
    BlockQ4_Kx = 148,
    BlockQ5_Kx = 180,
    BlockQ6_Kx = 212,
    BlockQ2_Kx = 84,
    BlockQ3_Kx = 114,
    BlockIQ4_NLx = 36,
    BlockIQ4_XSx = 138,
    BlockF16x = 16,
);

impl<const R: usize> Layout<R> for BlockF16x<R> {
    const QK: usize = 1;
    type Block = f16;
    const DEPTH: usize = 8;
    fn put(&mut self, r: usize, b: &[f16]) {
        for (e, v) in b.iter().enumerate() {
            self.w[e][r] = *v;
        }
    }
}

/// A tile layout: how `R` rows of one file block type become tile blocks.
pub trait Layout<const R: usize>: Pod {
    /// The file's block.
    type Block: Pod;
    /// Elements per file block.
    const QK: usize;
    /// File blocks per tile block (2 for the 32-element formats, 1 for K-quants, 8
    /// for F16).
    const DEPTH: usize;
    /// Writes file blocks `b` (`DEPTH` of them, consecutive in the row) of row `r`
    /// into this tile block.
    fn put(&mut self, r: usize, b: &[Self::Block]);
}

/// The lanes of code vector `v` (bytes `4v..4v + 4` of `qs`) for row `r`.
fn put_codes<const R: usize>(vecs: &mut [Lanes<R>], r: usize, qs: &[u8]) {
    for (v, c) in vecs.iter_mut().zip(qs.chunks_exact(4)) {
        v[r].copy_from_slice(c);
    }
}

/// Sets bit `k` of byte `(r, j)` of `plane` when `bit` is.
fn put_bit<const R: usize>(plane: &mut Lanes<R>, r: usize, j: usize, k: usize, bit: bool) {
    plane[r][j] |= u8::from(bit) << k;
}

/// The fifth-bit plane of one 32-element block: code byte `(r, j)` of vector `v`
/// holds elements `4v + j` (low nibble) and `16 + 4v + j` (high).
fn put_q5_plane<const R: usize>(plane: &mut Lanes<R>, r: usize, qh: [u8; 4]) {
    let qh = u32::from_le_bytes(qh);
    for v in 0..4 {
        for j in 0..4 {
            let e = 4 * v + j;
            put_bit(plane, r, j, 2 * v, qh >> e & 1 != 0);
            put_bit(plane, r, j, 2 * v + 1, qh >> (e + 16) & 1 != 0);
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ4_0x<R> {
    const QK: usize = 32;
    type Block = BlockQ4_0;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockQ4_0]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, &blk.qs.map(|q| q ^ 0x88));
            self.d[k][r] = blk.d;
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ4_1x<R> {
    const QK: usize = 32;
    type Block = BlockQ4_1;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockQ4_1]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, &blk.qs);
            self.d[k][r] = blk.d;
            self.m[k][r] = blk.m;
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ5_0x<R> {
    const QK: usize = 32;
    type Block = BlockQ5_0;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockQ5_0]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, &blk.qs);
            put_q5_plane(&mut self.qh[k], r, blk.qh);
            self.d[k][r] = blk.d;
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ5_1x<R> {
    const QK: usize = 32;
    type Block = BlockQ5_1;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockQ5_1]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, &blk.qs);
            put_q5_plane(&mut self.qh[k], r, blk.qh);
            self.d[k][r] = blk.d;
            self.m[k][r] = blk.m;
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ8_0x<R> {
    const QK: usize = 32;
    type Block = BlockQ8_0;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockQ8_0]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, bytemuck::cast_slice(&blk.qs));
            self.d[k][r] = blk.d;
        }
    }
}

/// Q4_K/Q5_K's 6-bit scales and mins, one byte each.
fn put_scales_mins<const R: usize>(
    sc: &mut [[u8; R]; 8],
    m: &mut [[u8; R]; 8],
    r: usize,
    packed: &[u8; 12],
) {
    for s in 0..8 {
        let (a, b) = get_scale_min_k4(s, packed);
        sc[s][r] = a;
        m[s][r] = b;
    }
}

impl<const R: usize> Layout<R> for BlockQ4_Kx<R> {
    const QK: usize = 256;
    type Block = BlockQ4_K;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockQ4_K]) {
        let blk = &b[0];
        put_codes(&mut self.qs, r, &blk.qs);
        put_scales_mins(&mut self.sc, &mut self.m, r, &blk.scales);
        self.d[r] = blk.d;
        self.dmin[r] = blk.dmin;
    }
}

impl<const R: usize> Layout<R> for BlockQ5_Kx<R> {
    const QK: usize = 256;
    type Block = BlockQ5_K;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockQ5_K]) {
        let blk = &b[0];
        put_codes(&mut self.qs, r, &blk.qs);
        // Element e's fifth bit is bit e / 32 of qh[e % 32]. Code byte (r, j) of
        // vector v is qs byte i = 4v + j: chunk c = i / 32 holds elements 64c + i % 32
        // (low nibble) and 64c + 32 + i % 32 (high).
        for v in 0..32 {
            for j in 0..4 {
                let i = 4 * v + j;
                let (c, l) = (i / 32, i % 32);
                let (p, k) = (v / 4, 2 * (v % 4));
                put_bit(&mut self.qh[p], r, j, k, blk.qh[l] >> (2 * c) & 1 != 0);
                put_bit(
                    &mut self.qh[p],
                    r,
                    j,
                    k + 1,
                    blk.qh[l] >> (2 * c + 1) & 1 != 0,
                );
            }
        }
        put_scales_mins(&mut self.sc, &mut self.m, r, &blk.scales);
        self.d[r] = blk.d;
        self.dmin[r] = blk.dmin;
    }
}

impl<const R: usize> Layout<R> for BlockQ6_Kx<R> {
    const QK: usize = 256;
    type Block = BlockQ6_K;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockQ6_K]) {
        let blk = &b[0];
        // ggml's layout: element 128n + 32k + l (l < 32) has its low four bits in the
        // low (k < 2) or high (k >= 2) nibble of ql[64n + 32(k % 2) + l], its high two
        // bits at bits 2k..2k + 2 of qh[32n + l]. Group g (elements 32g..32g + 32) is
        // n = g / 4, k = g % 4: one run of 32 ql bytes and 32 qh bytes, fixed shifts.
        for g in 0..8 {
            let (n, k) = (g / 4, g % 4);
            let ql: &[u8; 32] = blk.ql[64 * n + 32 * (k % 2)..][..32].try_into().unwrap();
            let qh: &[u8; 32] = blk.qh[32 * n..][..32].try_into().unwrap();
            let nibble = if k < 2 { 0 } else { 4 };
            for i in 0..4 {
                let v = 4 * g + i;
                let (p, c) = (v / 2, 2 * (v % 2));
                for j in 0..4 {
                    let (l, h) = (4 * i + j, 16 + 4 * i + j);
                    let (lo, hi) = (ql[l] >> nibble & 0x0f, ql[h] >> nibble & 0x0f);
                    let (lo_high, hi_high) = (qh[l] >> (2 * k) & 3, qh[h] >> (2 * k) & 3);
                    self.ql[v][r][j] = lo | hi << 4;
                    self.qh[p][r][j] |= lo_high << (2 * c) | hi_high << (2 * (c + 1));
                }
            }
        }
        for s in 0..16 {
            self.sc[s][r] = blk.scales[s];
        }
        self.d[r] = blk.d.to_f32();
    }
}

/// The 2-bit codes of a Q2_K/Q3_K super-block in the tiles' order (see
/// [`BlockQ2_Kx`]); `code(e)` gives element `e`'s.
fn put_2bit<const R: usize>(qs: &mut [Lanes<R>; 16], r: usize, code: impl Fn(usize) -> u8) {
    for (v, lanes) in qs.iter_mut().enumerate() {
        for (j, byte) in lanes[r].iter_mut().enumerate() {
            *byte = (0..4).fold(0, |b, k| b | code(64 * k + 4 * v + j) << (2 * k));
        }
    }
}

impl<const R: usize> Layout<R> for BlockQ2_Kx<R> {
    const QK: usize = 256;
    type Block = BlockQ2_K;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockQ2_K]) {
        let blk = &b[0];
        put_2bit(&mut self.qs, r, |e| two_bit_code(&blk.qs, e));
        for s in 0..16 {
            self.scales[s][r] = blk.scales[s];
        }
        self.d[r] = blk.d;
        self.dmin[r] = blk.dmin;
    }
}

impl<const R: usize> Layout<R> for BlockQ3_Kx<R> {
    const QK: usize = 256;
    type Block = BlockQ3_K;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockQ3_K]) {
        let blk = &b[0];
        put_2bit(&mut self.qs, r, |e| two_bit_code(&blk.qs, e));
        for v in 0..16 {
            let (g, i) = (v / 4, v % 4);
            for k in 0..4 {
                for j in 0..4 {
                    let e = 64 * k + 4 * v + j;
                    let high = blk.hmask[e % 32] >> (e / 32) & 1 != 0;
                    put_bit(&mut self.qh[2 * g + k / 2], r, j, 4 * (k % 2) + i, high);
                }
            }
        }
        for s in 0..16 {
            self.sc[s][r] = q3_k_scale(&blk.scales, s);
        }
        self.d[r] = blk.d;
    }
}

impl<const R: usize> Layout<R> for BlockIQ4_NLx<R> {
    const QK: usize = 32;
    type Block = BlockIQ4_NL;
    const DEPTH: usize = 2;
    fn put(&mut self, r: usize, b: &[BlockIQ4_NL]) {
        for (k, blk) in b.iter().enumerate() {
            put_codes(&mut self.qs[k], r, &blk.qs);
            self.d[k][r] = blk.d;
        }
    }
}

impl<const R: usize> Layout<R> for BlockIQ4_XSx<R> {
    const QK: usize = 256;
    type Block = BlockIQ4_XS;
    const DEPTH: usize = 1;
    fn put(&mut self, r: usize, b: &[BlockIQ4_XS]) {
        let blk = &b[0];
        put_codes(&mut self.qs, r, &blk.qs);
        for s in 0..8 {
            self.sc[s][r] = iq4_xs_scale(blk, s) as i8;
        }
        self.d[r] = blk.d;
    }
}

/// Bytes of one tile (all blocks of `R` rows) of a row of `blocks` file blocks.
pub fn tile_bytes<L: Layout<R>, const R: usize>(blocks: usize) -> usize {
    blocks.div_ceil(L::DEPTH) * size_of::<L>()
}

/// Packs `rows` (at most `R`) rows of `blocks` file blocks each, back to back in `w`,
/// into one tile `out` of [`tile_bytes`]. Rows past `rows`, and blocks past a row's
/// end, are zero (scale 0). Plain code: it runs once per weight, at load.
pub fn pack<L: Layout<R>, const R: usize>(blocks: usize, w: &[u8], rows: usize, out: &mut [u8]) {
    let rb = blocks * size_of::<L::Block>();
    assert!(rows <= R, "{rows} rows in a tile of {R}");
    assert!(w.len() >= rows * rb, "weights shorter than {rows} rows");
    assert_eq!(out.len(), tile_bytes::<L, R>(blocks), "tile length");
    out.fill(0);
    crate::quant::with_blocks_mut(out, |tiles: &mut [L]| {
        for r in 0..rows {
            crate::quant::with_blocks(&w[r * rb..(r + 1) * rb], |row: &[L::Block]| {
                for (tb, b) in tiles.iter_mut().zip(row.chunks(L::DEPTH)) {
                    tb.put(r, b);
                }
            });
        }
    });
}
