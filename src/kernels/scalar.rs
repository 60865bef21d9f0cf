//! The portable reference kernels: plain Rust, the specification every SIMD path must
//! equal (integer parts exactly, float results within the tolerance the tests state).

use bytemuck::Pod;
use half::f16;

use super::{QuantizeActFn, VecDotFn};
use crate::quant::k_quants::get_scale_min_k4;
use crate::quant::{
    self, BlockIQ4_NL, BlockIQ4_XS, BlockQ2_K, BlockQ3_K, BlockQ4_0, BlockQ4_1, BlockQ4_K,
    BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K, GgmlType,
    KVALUES_IQ4NL, QK_K, QK4_0, QK4_1, QK4_NL, QK5_0, QK5_1, QK8_0,
};

/// The scalar dot product for weights of type `ty`.
pub fn vec_dot(ty: GgmlType) -> Option<VecDotFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => vec_dot_f32,
        F16 => vec_dot_f16_f32,
        Q4_0 => vec_dot_q4_0_q8_0,
        Q4_1 => vec_dot_q4_1_q8_1,
        Q5_0 => vec_dot_q5_0_q8_0,
        Q5_1 => vec_dot_q5_1_q8_1,
        Q8_0 => vec_dot_q8_0_q8_0,
        Q2_K => vec_dot_q2_k_q8_k,
        Q3_K => vec_dot_q3_k_q8_k,
        Q4_K => vec_dot_q4_k_q8_k,
        Q5_K => vec_dot_q5_k_q8_k,
        Q6_K => vec_dot_q6_k_q8_k,
        IQ4_NL => vec_dot_iq4_nl_q8_0,
        IQ4_XS => vec_dot_iq4_xs_q8_k,
        _ => return None,
    })
}

/// The scalar activation quantizer for activation type `act`.
pub fn quantize_act(act: GgmlType) -> Option<QuantizeActFn> {
    use GgmlType::*;
    Some(match act {
        Q8_0 => |x, out| quant::with_blocks_mut(out, |b| quant::quantize_row_q8_0_ref(x, b)),
        Q8_1 => |x, out| quant::with_blocks_mut(out, |b| quant::quantize_row_q8_1_ref(x, b)),
        Q8_K => |x, out| quant::with_blocks_mut(out, |b| quant::quantize_row_q8_k_ref(x, b)),
        F32 => |x, out| out.copy_from_slice(bytemuck::cast_slice(x)),
        _ => return None,
    })
}

/// Reads `n` elements of `T` from `bytes`, copying only when misaligned.
fn elements<T: Pod>(bytes: &[u8], n: usize) -> std::borrow::Cow<'_, [T]> {
    let bytes = &bytes[..n * size_of::<T>()];
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(
            bytes
                .chunks_exact(size_of::<T>())
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        ),
    }
}

/// Eight running sums, as an 8-lane SIMD loop keeps them: the same rounding the
/// vector paths have, and room for the compiler to vectorise.
const LANES: usize = 8;

fn lanes_sum(acc: [f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `y += a·x`, one rounding for the product and one for the sum per element.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "axpy rows");
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y += Σ_k a[k]·x_k` ([`super::AxpyRowsFn`]): one [`axpy`] per row, in `k` order.
pub fn axpy_rows(a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    super::check_axpy_rows(a.len(), x.len(), stride, y.len());
    for (k, &ak) in a.iter().enumerate() {
        axpy(ak, &x[k * stride..][..y.len()], y);
    }
}

/// The reference of [`AttnF16::scores`](super::AttnF16): each key row widened
/// to f32 and dotted with `q` as [`vec_dot_f16_f32`] does.
pub fn attn_scores_f16(q: &[f32], keys: &[u8], stride: usize, scores: &mut [f32]) {
    let n = q.len();
    super::check_rows(n, keys, stride, scores.len());
    for (p, s) in scores.iter_mut().enumerate() {
        *s = vec_dot_f16_f32(
            n,
            &keys[p * stride..p * stride + 2 * n],
            bytemuck::cast_slice(q),
        );
    }
}

/// The reference of [`AttnF16::values`](super::AttnF16): `out = Σ w[p]·v_p`,
/// each value row widened to f32.
pub fn attn_values_f16(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]) {
    let n = out.len();
    super::check_rows(n, values, stride, w.len());
    out.fill(0.0);
    for (p, &w) in w.iter().enumerate() {
        let row = &values[p * stride..p * stride + 2 * n];
        for (o, v) in out.iter_mut().zip(row.chunks_exact(2)) {
            *o += w * half::f16::from_le_bytes([v[0], v[1]]).to_f32();
        }
    }
}

pub fn vec_dot_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (elements::<f32>(w, n), elements::<f32>(a, n));
    let mut acc = [0f32; LANES];
    let body = n / LANES * LANES;
    for (wc, ac) in w[..body]
        .chunks_exact(LANES)
        .zip(a[..body].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += wc[l] * ac[l];
        }
    }
    let tail: f32 = w[body..].iter().zip(&a[body..]).map(|(x, y)| x * y).sum();
    lanes_sum(acc) + tail
}

/// F16 weights widened exactly to f32, times f32 activations: F16 models stay exact.
pub fn vec_dot_f16_f32(n: usize, w: &[u8], a: &[u8]) -> f32 {
    let (w, a) = (elements::<f16>(w, n), elements::<f32>(a, n));
    let mut acc = [0f32; LANES];
    let body = n / LANES * LANES;
    for (wc, ac) in w[..body]
        .chunks_exact(LANES)
        .zip(a[..body].chunks_exact(LANES))
    {
        for l in 0..LANES {
            acc[l] += wc[l].to_f32() * ac[l];
        }
    }
    let tail: f32 = w[body..]
        .iter()
        .zip(&a[body..])
        .map(|(x, y)| x.to_f32() * y)
        .sum();
    lanes_sum(acc) + tail
}

// Quantized weights times quantized activations, after ggml's `ggml_vec_dot_*_generic`
// (ggml-cpu/quants.c): exact i32 sums per block, then f32 scaling in ggml's order, so
// these results are ggml's own up to its compiler's choices.

/// Runs `f` on the `n / qk` weight and activation blocks of a row: a cast when the bytes
/// are aligned (as the matmul's are), a copy otherwise.
fn with_row_blocks<W: Pod, A: Pod, R>(
    n: usize,
    qk: usize,
    w: &[u8],
    a: &[u8],
    f: impl FnOnce(&[W], &[A]) -> R,
) -> R {
    let nb = super::whole_blocks(n, qk);
    let (w, a) = (&w[..nb * size_of::<W>()], &a[..nb * size_of::<A>()]);
    quant::with_blocks(w, |wb| quant::with_blocks(a, |ab| f(wb, ab)))
}

/// ggml's accumulation for the 32-element formats: one f32 running sum of per-block
/// terms, in block order, starting from +0.0 (`Iterator::sum` would start from -0.0).
fn sum_block_terms<W: Pod, A: Pod>(
    n: usize,
    qk: usize,
    w: &[u8],
    a: &[u8],
    term: impl Fn(&W, &A) -> f32,
) -> f32 {
    with_row_blocks(n, qk, w, a, |wb: &[W], ab: &[A]| {
        wb.iter()
            .zip(ab)
            .fold(0.0f32, |sumf, (x, y)| sumf + term(x, y))
    })
}

/// Σ code·a over a 32-element block whose byte `j` codes elements `j` and `j + 16`;
/// `codes(j)` gives those two codes as the signed weights they stand for.
fn split_block_isum(a: &[i8; 32], codes: impl Fn(usize) -> (i32, i32)) -> i32 {
    let (lo, hi) = a.split_at(16);
    lo.iter()
        .zip(hi)
        .enumerate()
        .map(|(j, (&a0, &a1))| {
            let (c0, c1) = codes(j);
            c0 * i32::from(a0) + c1 * i32::from(a1)
        })
        .sum()
}

/// The low and high nibble of a byte.
#[inline]
fn nibbles(b: u8) -> (i32, i32) {
    (i32::from(b & 0x0f), i32::from(b >> 4))
}

/// The 5-bit codes of elements `j` and `j + 16` of a Q5 block: a nibble of `qs[j]` plus
/// bit `j` (resp. `j + 16`) of `qh` on top.
#[inline]
fn five_bit_codes(qh: u32, qs: &[u8; 16], j: usize) -> (i32, i32) {
    let (lo, hi) = nibbles(qs[j]);
    let top = |bit: usize| (((qh >> bit) & 1) << 4) as i32;
    (lo | top(j), hi | top(j + 16))
}

/// Σ w·a of a Q4_0 block in codes: weights are nibbles standing for -8..7.
pub(super) fn q4_0_isum(x: &BlockQ4_0, y: &BlockQ8_0) -> i32 {
    split_block_isum(&y.qs, |j| {
        let (lo, hi) = nibbles(x.qs[j]);
        (lo - 8, hi - 8)
    })
}

/// Σ q·a of a Q4_1 block: codes 0..15; the block minimum is applied through `y.s`.
pub(super) fn q4_1_isum(x: &BlockQ4_1, y: &BlockQ8_1) -> i32 {
    split_block_isum(&y.qs, |j| nibbles(x.qs[j]))
}

/// Σ w·a of a Q5_0 block in codes: 5-bit codes standing for -16..15.
pub(super) fn q5_0_isum(x: &BlockQ5_0, y: &BlockQ8_0) -> i32 {
    let qh = u32::from_le_bytes(x.qh);
    split_block_isum(&y.qs, |j| {
        let (c0, c1) = five_bit_codes(qh, &x.qs, j);
        (c0 - 16, c1 - 16)
    })
}

/// Σ q·a of a Q5_1 block: codes 0..31; the block minimum is applied through `y.s`.
pub(super) fn q5_1_isum(x: &BlockQ5_1, y: &BlockQ8_1) -> i32 {
    let qh = u32::from_le_bytes(x.qh);
    split_block_isum(&y.qs, |j| five_bit_codes(qh, &x.qs, j))
}

/// Σ w·a of an IQ4_NL block: each nibble stands for its [`KVALUES_IQ4NL`] value.
pub(super) fn iq4_nl_isum(x: &BlockIQ4_NL, y: &BlockQ8_0) -> i32 {
    split_block_isum(&y.qs, |j| {
        let (lo, hi) = nibbles(x.qs[j]);
        (iq4_value(lo), iq4_value(hi))
    })
}

#[inline]
fn iq4_value(code: i32) -> i32 {
    i32::from(KVALUES_IQ4NL[code as usize])
}

/// Σ w·a of two Q8_0 blocks in codes.
pub(super) fn q8_0_isum(x: &BlockQ8_0, y: &BlockQ8_0) -> i32 {
    x.qs.iter()
        .zip(&y.qs)
        .map(|(&w, &a)| i32::from(w) * i32::from(a))
        .sum()
}

/// Each f32 expression below groups its products as ggml's generic code does for that
/// type (`sumi·dx·dy` here, `(dx·dy)·sumi` for Q5_0, `sumi·(dx·dy)` for Q8_0): the
/// groupings round differently, and these functions are ggml's results to the bit.
pub fn vec_dot_q4_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK4_0, w, a, |x: &BlockQ4_0, y: &BlockQ8_0| {
        q4_0_isum(x, y) as f32 * x.d.to_f32() * y.d.to_f32()
    })
}

/// Q4_1 weights are `q·d + m`: the `m` part of the dot is `m·Σa`, which Q8_1 carries
/// precomputed as `s = d·Σq` (rounded to f16, so this term is as exact as `s`).
pub fn vec_dot_q4_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK4_1, w, a, |x: &BlockQ4_1, y: &BlockQ8_1| {
        (x.d.to_f32() * y.d.to_f32()) * q4_1_isum(x, y) as f32 + x.m.to_f32() * y.s.to_f32()
    })
}

pub fn vec_dot_q5_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK5_0, w, a, |x: &BlockQ5_0, y: &BlockQ8_0| {
        (x.d.to_f32() * y.d.to_f32()) * q5_0_isum(x, y) as f32
    })
}

/// As [`vec_dot_q4_1_q8_1`], with 5-bit codes.
pub fn vec_dot_q5_1_q8_1(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK5_1, w, a, |x: &BlockQ5_1, y: &BlockQ8_1| {
        (x.d.to_f32() * y.d.to_f32()) * q5_1_isum(x, y) as f32 + x.m.to_f32() * y.s.to_f32()
    })
}

/// ggml's grouping: `(dy·dx)·Σ`.
pub fn vec_dot_iq4_nl_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK4_NL, w, a, |x: &BlockIQ4_NL, y: &BlockQ8_0| {
        (y.d.to_f32() * x.d.to_f32()) * iq4_nl_isum(x, y) as f32
    })
}

pub fn vec_dot_q8_0_q8_0(n: usize, w: &[u8], a: &[u8]) -> f32 {
    sum_block_terms(n, QK8_0, w, a, |x: &BlockQ8_0, y: &BlockQ8_0| {
        q8_0_isum(x, y) as f32 * (x.d.to_f32() * y.d.to_f32())
    })
}

/// The integer parts of one K-quant super-block dot, split as ggml's generic code
/// splits them (SIMD paths may split differently but must reach the same totals):
/// `lanes[l]` = Σ scale·q·a over the elements whose index is `l` mod 8, `mins` = Σ over
/// sub-blocks of min·(Σ a of the sub-block), taken from Q8_K's `bsums`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SuperBlockSums {
    pub lanes: [i32; LANES],
    pub mins: i32,
}

/// A K-quant weight super-block, seen by the dot product.
pub(super) trait SuperBlock: Pod {
    /// The super-scale of the sub-block scales.
    fn d(&self) -> f32;
    /// The super-scale of the sub-block mins; `None` for formats without mins.
    fn dmin(&self) -> Option<f32>;
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums;
}

/// ggml's float accumulation for K-quants: eight lane sums of `d·lanes[l]` and, apart,
/// a running sum of the min corrections; the lanes are added to it in order at the end.
fn k_quant_dot<W: SuperBlock>(n: usize, w: &[u8], a: &[u8]) -> f32 {
    with_row_blocks(n, QK_K, w, a, |xs: &[W], ys: &[BlockQ8_K]| {
        let mut lanes = [0f32; LANES];
        let mut sumf = 0f32;
        for (x, y) in xs.iter().zip(ys) {
            let s = x.isums(y);
            let d = x.d() * y.d;
            for (acc, &v) in lanes.iter_mut().zip(&s.lanes) {
                *acc += d * v as f32;
            }
            if let Some(dmin) = x.dmin() {
                sumf -= dmin * y.d * s.mins as f32;
            }
        }
        lanes.iter().fold(sumf, |sumf, &l| sumf + l)
    })
}

/// Σ scale·w·a over a super-block of signed codes `w`, in sub-blocks of `sub_len`
/// elements, split into lanes by element index mod 8. A product is at most 128·32·128
/// in magnitude (Q6_K), a lane sums 32 of them: under 2²⁵, so i32 is exact.
fn lane_sums(
    w: &[i8; QK_K],
    a: &[i8; QK_K],
    sub_len: usize,
    scale: impl Fn(usize) -> i32,
) -> [i32; LANES] {
    let mut lanes = [0i32; LANES];
    let subs = w.chunks_exact(sub_len).zip(a.chunks_exact(sub_len));
    for (sub, (ws, acts)) in subs.enumerate() {
        let sc = scale(sub);
        for (i, (&wi, &ai)) in ws.iter().zip(acts).enumerate() {
            lanes[i % LANES] += sc * (i32::from(wi) * i32::from(ai));
        }
    }
    lanes
}

/// Σ min·(Σ a) over the eight 32-element sub-blocks of Q4_K/Q5_K, two `bsums` each.
fn mins_sum(scales: &[u8; quant::K_SCALE_SIZE], y: &BlockQ8_K) -> i32 {
    y.bsums
        .chunks_exact(2)
        .enumerate()
        .map(|(j, b)| {
            let (_, m) = get_scale_min_k4(j, scales);
            (i32::from(b[0]) + i32::from(b[1])) * i32::from(m)
        })
        .sum()
}

/// The 4-bit codes of a Q4_K/Q5_K super-block in element order: each 32 bytes of `qs`
/// hold 64 elements, low nibbles first.
fn low_nibble_codes(qs: &[u8; QK_K / 2]) -> [i8; QK_K] {
    let mut codes = [0i8; QK_K];
    for (out, q) in codes.chunks_exact_mut(64).zip(qs.chunks_exact(32)) {
        let (lo, hi) = out.split_at_mut(32);
        for ((&b, l), h) in q.iter().zip(lo).zip(hi) {
            *l = (b & 0x0f) as i8;
            *h = (b >> 4) as i8;
        }
    }
    codes
}

impl SuperBlock for BlockQ4_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        Some(self.dmin.to_f32())
    }
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let codes = low_nibble_codes(&self.qs);
        let scale = |sub| i32::from(get_scale_min_k4(sub, &self.scales).0);
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 32, scale),
            mins: mins_sum(&self.scales, y),
        }
    }
}

impl SuperBlock for BlockQ5_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        Some(self.dmin.to_f32())
    }
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let mut codes = low_nibble_codes(&self.qs);
        // Bit `sub` of qh[i] is the fifth bit of element 32·sub + i.
        for (sub, out) in codes.chunks_exact_mut(32).enumerate() {
            for (c, &h) in out.iter_mut().zip(&self.qh) {
                *c |= (((h >> sub) & 1) << 4) as i8;
            }
        }
        let scale = |sub| i32::from(get_scale_min_k4(sub, &self.scales).0);
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 32, scale),
            mins: mins_sum(&self.scales, y),
        }
    }
}

/// The signed codes (-32..31) of a Q6_K super-block in element order. Per 128
/// elements: 64 bytes of `ql` (low nibbles: elements 0-63, high: 64-127) and 32 of `qh`
/// whose bit pairs top up elements `i`, `i + 32`, `i + 64`, `i + 96`.
fn q6_k_codes(x: &BlockQ6_K) -> [i8; QK_K] {
    let mut codes = [0i8; QK_K];
    let halves = codes
        .chunks_exact_mut(128)
        .zip(x.ql.chunks_exact(64))
        .zip(x.qh.chunks_exact(32));
    for ((out, ql), qh) in halves {
        for (i, &h) in qh.iter().enumerate() {
            let low = [ql[i] & 0x0f, ql[i + 32] & 0x0f, ql[i] >> 4, ql[i + 32] >> 4];
            for (k, &l) in low.iter().enumerate() {
                let q = l | (((h >> (2 * k)) & 3) << 4);
                out[i + 32 * k] = q as i8 - 32;
            }
        }
    }
    codes
}

impl SuperBlock for BlockQ6_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        None
    }
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let codes = q6_k_codes(self);
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 16, |sub| i32::from(self.scales[sub])),
            mins: 0,
        }
    }
}

/// The 2-bit codes of a Q2_K/Q3_K super-block in element order.
fn two_bit_codes(qs: &[u8; QK_K / 4]) -> [i8; QK_K] {
    std::array::from_fn(|i| quant::k_quants::two_bit_code(qs, i) as i8)
}

impl SuperBlock for BlockQ2_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        Some(self.dmin.to_f32())
    }
    /// Codes 0..3 under 4-bit scales per 16; the mins meet Q8_K's per-16 `bsums`.
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let codes = two_bit_codes(&self.qs);
        let scale = |sub: usize| i32::from(self.scales[sub] & 0xF);
        let mins = y
            .bsums
            .iter()
            .zip(&self.scales)
            .map(|(&b, &sc)| i32::from(b) * i32::from(sc >> 4))
            .sum();
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 16, scale),
            mins,
        }
    }
}

impl SuperBlock for BlockQ3_K {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        None
    }
    /// Signed codes -4..3 under signed 6-bit scales per 16.
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let codes: [i8; QK_K] = std::array::from_fn(|i| quant::q3_k_code(self, i));
        let scale = |sub: usize| i32::from(quant::q3_k_scale(&self.scales, sub));
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 16, scale),
            mins: 0,
        }
    }
}

impl SuperBlock for BlockIQ4_XS {
    fn d(&self) -> f32 {
        self.d.to_f32()
    }
    fn dmin(&self) -> Option<f32> {
        None
    }
    /// Table values (|v| <= 127) under signed 6-bit scales per 32.
    fn isums(&self, y: &BlockQ8_K) -> SuperBlockSums {
        let mut codes = [0i8; QK_K];
        for (out, q) in codes.chunks_exact_mut(32).zip(self.qs.chunks_exact(16)) {
            let (lo, hi) = out.split_at_mut(16);
            for ((&b, l), h) in q.iter().zip(lo).zip(hi) {
                *l = KVALUES_IQ4NL[usize::from(b & 0x0f)];
                *h = KVALUES_IQ4NL[usize::from(b >> 4)];
            }
        }
        SuperBlockSums {
            lanes: lane_sums(&codes, &y.qs, 32, |sub| quant::iq4_xs_scale(self, sub)),
            mins: 0,
        }
    }
}

pub fn vec_dot_q2_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockQ2_K>(n, w, a)
}

pub fn vec_dot_q3_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockQ3_K>(n, w, a)
}

pub fn vec_dot_iq4_xs_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockIQ4_XS>(n, w, a)
}

pub fn vec_dot_q4_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockQ4_K>(n, w, a)
}

pub fn vec_dot_q5_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockQ5_K>(n, w, a)
}

pub fn vec_dot_q6_k_q8_k(n: usize, w: &[u8], a: &[u8]) -> f32 {
    k_quant_dot::<BlockQ6_K>(n, w, a)
}

#[cfg(test)]
mod tests;
