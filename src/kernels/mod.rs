//! Compute kernels, chosen once at start-up into one table of function pointers.
//!
//! The model calls [`Kernels`] and never names an instruction set: `scalar` is the
//! portable reference every other path must equal; SIMD paths (`x86/`, `arm/`) fill
//! the same table when the CPU has the features, detected at run time. A path can
//! be forced with `PHIQ_KERNEL=scalar|avx2|avx512|neon|dotprod|i8mm`.
//!
//! Weights meet activations as ggml pairs them: the activations of a row are first
//! quantized to the weight type's [`act_type`] (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for
//! Q4_1/Q5_1, Q8_K for K-quants), then each weight row is dotted with them. F16 and F32
//! weights take f32 activations unchanged, which keeps F32/F16 models exact.

#[cfg(target_arch = "aarch64")]
pub mod arm;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) mod f32_rows;
pub mod matmul;
pub mod scalar;
#[cfg(test)]
pub(crate) mod testing;
pub mod tile;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use std::sync::OnceLock;

use crate::quant::GgmlType;

/// An instruction-set path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
    Dotprod,
    I8mm,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Dotprod => "dotprod",
            Isa::I8mm => "i8mm",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        [
            Isa::Scalar,
            Isa::Avx2,
            Isa::Avx512,
            Isa::Neon,
            Isa::Dotprod,
            Isa::I8mm,
        ]
        .into_iter()
        .find(|i| i.name().eq_ignore_ascii_case(name))
    }
}

/// Σ w·a over one row of `n` elements. `w` holds the weight row in its own type,
/// `a` the activations in [`act_type`] of that type.
pub type VecDotFn = fn(n: usize, w: &[u8], a: &[u8]) -> f32;

/// Quantizes one row of activations into the bytes of an activation type.
pub type QuantizeActFn = fn(x: &[f32], out: &mut [u8]);

/// A path's kernels for weights repacked at load into tiles of `rows` rows (see
/// [`tile`]): one tile times a group of tokens at a time.
#[derive(Clone, Copy)]
pub struct TileKernel {
    /// Rows per tile.
    pub rows: usize,
    /// Tokens per full group (see [`tile::token_groups`]).
    pub max_tokens: usize,
    /// Rows must be a multiple of this many elements (F16 tiles take 8 columns).
    pub cols_multiple: usize,
    /// Bytes of one tile of rows of `cols` elements.
    pub tile_bytes: fn(cols: usize) -> usize,
    /// Packs `rows` (at most [`TileKernel::rows`]) rows of `cols` elements, back to
    /// back in their file type, into one tile of `tile_bytes(cols)` bytes.
    pub pack: fn(cols: usize, w: &[u8], rows: usize, out: &mut [u8]),
    /// Words [`TileKernel::prepare`] writes for a group of `n` tokens.
    pub group_words: fn(cols: usize, n: usize) -> usize,
    /// Lays out a group of tokens' activation rows (each in the weights'
    /// [`act_type`]) for [`TileKernel::gemv`] (one token) or [`TileKernel::gemm`].
    pub prepare: fn(cols: usize, rows: &[&[u8]], out: &mut [u32]),
    /// One tile times one prepared token: `out[r]`, `r < rows`.
    pub gemv: fn(cols: usize, tile: &[u8], group: &[u32], out: &mut [f32]),
    /// One tile times a prepared group of `n` tokens: `out[t * rows + r]`.
    pub gemm: fn(cols: usize, tile: &[u8], group: &[u32], n: usize, out: &mut [f32]),
    /// One token's product runs in FP16 arithmetic (F16 weights on cores with
    /// FEAT_FP16): activations rounded to f16, short sums in f16, so results are
    /// within [`F16_ARITH_ERROR`] of the f32 dot rather than f32 rounding.
    pub f16_arith: bool,
}

/// What FP16 arithmetic may cost a dot `Σ w·x` of F16 weights ([`TileKernel::f16_arith`]):
/// at most this fraction of `Σ|w·x|`, plus `2^-24 · max|x| · Σ|w|` for the
/// activations that underflow f16 once scaled to the token's largest one. (Fused
/// multiply-adds round once per product; a sum runs 8 products per lane in f16
/// before joining an f32 total, so about 10 roundings of 2^-11 bound it.)
pub const F16_ARITH_ERROR: f64 = 1.0 / 128.0;

/// What a path computes a weight type with: one record per type in the table.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// One row (in the file's layout) times one activation row: the reference
    /// semantics, used where weights are not repacked (and for attention's rows).
    pub vec_dot: VecDotFn,
    /// The packed-tile kernels, for the types the path repacks.
    pub tiles: Option<TileKernel>,
}

/// `y += a·x` over f32 rows of equal length (attention's weighted sum of values). SIMD
/// paths fuse the multiply-add, so results equal the scalar reference within one
/// rounding per element, not bit for bit.
pub type AxpyFn = fn(a: f32, x: &[f32], y: &mut [f32]);

/// `y += Σ_k a[k]·x_k`, where `x_k` is the `y.len()` elements of `x` from `k·stride`
/// (a LoRA merge: a row of `W` gains `B[i][k]·A[k]` for each of the `r` rows of
/// `A`). SIMD paths round once per product (a fused multiply-add, in `k` order), the
/// scalar reference twice, so results agree within two roundings per product.
/// Panics if `x` is shorter than the rows.
pub type AxpyRowsFn = fn(a: &[f32], x: &[f32], stride: usize, y: &mut [f32]);

/// The bounds of [`AxpyRowsFn`]: `rows` rows of `n` at `stride` inside `len`
/// elements (a release-mode panic; the merge passes whole factors).
#[inline]
pub(crate) fn check_axpy_rows(rows: usize, len: usize, stride: usize, n: usize) {
    assert!(
        rows == 0
            || (rows - 1)
                .checked_mul(stride)
                .and_then(|e| e.checked_add(n))
                .is_some_and(|e| e <= len),
        "{rows} rows of {n} f32 at stride {stride} do not fit {len}"
    );
}

/// Attention of one head over an F16 cache, read as stored (a path's record where
/// it has one; elsewhere the model widens the cache to f32 rows). Rows are the
/// head's `2·head_dim` bytes at multiples of `stride` in the slice given.
#[derive(Clone, Copy)]
pub struct AttnF16 {
    /// The head sizes these kernels take.
    pub head_dims: &'static [usize],
    /// `scores[p] = q · k_p` for `scores.len()` key rows.
    pub scores: fn(q: &[f32], keys: &[u8], stride: usize, scores: &mut [f32]),
    /// `out = Σ_p w[p] · v_p` for `w.len()` value rows.
    pub values: fn(w: &[f32], values: &[u8], stride: usize, out: &mut [f32]),
    /// Sums run in FP16 arithmetic, within [`F16_ARITH_ERROR`] of the f32 sums.
    pub f16_arith: bool,
}

/// Checks that `rows` rows of `n` f16 elements, `stride` bytes apart, lie inside
/// `data` (a release-mode panic: the model passes whole cache rows).
#[inline]
pub(crate) fn check_rows(n: usize, data: &[u8], stride: usize, rows: usize) {
    assert!(
        rows == 0 || (rows - 1) * stride + 2 * n <= data.len(),
        "{rows} rows of {n} f16 at stride {stride} do not fit {} bytes",
        data.len()
    );
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("PHIQ_KERNEL={0:?} is not a kernel path (scalar, avx2, avx512, neon, dotprod, i8mm)")]
    UnknownPath(String),
    #[error("PHIQ_KERNEL={0}: this CPU lacks the instructions it needs")]
    Unsupported(&'static str),
    #[error("phiq does not compute with {0} weights{hint}", hint = unsupported_hint(*.0))]
    NoKernel(GgmlType),
}

/// The kernel table. One per process, see [`kernels`].
#[derive(Clone)]
pub struct Kernels {
    pub isa: Isa,
    types: fn(GgmlType) -> Option<TypeKernels>,
    quantize_act: fn(GgmlType) -> Option<QuantizeActFn>,
    /// Tiles disabled (tests, benchmarks): every product goes row by row.
    rows_only: bool,
    pub axpy: AxpyFn,
    pub axpy_rows: AxpyRowsFn,
    /// Attention over an F16 cache as stored, on paths that have it.
    pub attn_f16: Option<AttnF16>,
}

impl Kernels {
    /// The record of `ty` weights, or an error for types phiq cannot compute with.
    pub fn kernel(&self, ty: GgmlType) -> Result<TypeKernels, KernelError> {
        let mut k = (self.types)(ty).ok_or(KernelError::NoKernel(ty))?;
        if self.rows_only {
            k.tiles = None;
        }
        Ok(k)
    }

    /// The dot product of `ty` weights with their activations.
    pub fn vec_dot(&self, ty: GgmlType) -> Result<VecDotFn, KernelError> {
        Ok(self.kernel(ty)?.vec_dot)
    }

    /// The packed-tile kernels of `ty` weights in rows of `cols`, if this path
    /// repacks them.
    pub fn tiles(&self, ty: GgmlType, cols: usize) -> Option<TileKernel> {
        self.kernel(ty)
            .ok()?
            .tiles
            .filter(|t| cols.is_multiple_of(t.cols_multiple))
    }

    /// This table without its tile kernels: matmul then loops the row dot for every
    /// token (for benchmarks and tests).
    pub fn without_tiles(&self) -> Kernels {
        Kernels {
            rows_only: true,
            ..self.clone()
        }
    }

    /// Converts f32 activations into `act` (an [`act_type`]).
    pub fn quantize_act(&self, act: GgmlType) -> Result<QuantizeActFn, KernelError> {
        (self.quantize_act)(act).ok_or(KernelError::NoKernel(act))
    }

    /// The portable reference path: row dots only.
    pub fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            types: |ty| {
                Some(TypeKernels {
                    vec_dot: scalar::vec_dot(ty)?,
                    tiles: None,
                })
            },
            quantize_act: scalar::quantize_act,
            rows_only: false,
            axpy: scalar::axpy,
            axpy_rows: scalar::axpy_rows,
            attn_f16: None,
        }
    }

    /// A table of this architecture's SIMD path; only `x86`/`arm` build these, and
    /// only after detecting the CPU features the path needs.
    #[allow(dead_code)]
    pub(crate) fn simd(
        isa: Isa,
        types: fn(GgmlType) -> Option<TypeKernels>,
        quantize_act: fn(GgmlType) -> Option<QuantizeActFn>,
        (axpy, axpy_rows): (AxpyFn, AxpyRowsFn),
        attn_f16: Option<AttnF16>,
    ) -> Kernels {
        Kernels {
            isa,
            types,
            quantize_act,
            rows_only: false,
            axpy,
            axpy_rows,
            attn_f16,
        }
    }

    /// The paths this CPU can run, best last.
    pub fn available() -> Vec<Isa> {
        let mut paths = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        paths.extend(x86::available());
        #[cfg(target_arch = "aarch64")]
        paths.extend(arm::available());
        paths
    }

    /// The table for `isa`, if this CPU supports it.
    pub fn for_isa(isa: Isa) -> Result<Kernels, KernelError> {
        if isa == Isa::Scalar {
            return Ok(Kernels::scalar());
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86::table(isa) {
            return Ok(k);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(k) = arm::table(isa) {
            return Ok(k);
        }
        Err(KernelError::Unsupported(isa.name()))
    }

    /// The CPU features this process detected, for `phiq info --cpu`.
    pub fn cpu_features() -> Vec<(&'static str, bool)> {
        #[cfg(target_arch = "x86_64")]
        return x86::features();
        #[cfg(target_arch = "aarch64")]
        return arm::features();
        #[allow(unreachable_code)]
        Vec::new()
    }

    /// The best path for this CPU, or the one `PHIQ_KERNEL` forces.
    pub fn detect() -> Result<Kernels, KernelError> {
        Kernels::named(&std::env::var("PHIQ_KERNEL").unwrap_or_default())
    }

    /// The table `PHIQ_KERNEL=name` selects: the path of that name (an error if there
    /// is none, or this CPU cannot run it), or the best path for an empty name.
    pub fn named(name: &str) -> Result<Kernels, KernelError> {
        if name.is_empty() {
            let best = *Kernels::available().last().unwrap_or(&Isa::Scalar);
            return Kernels::for_isa(best);
        }
        let isa = Isa::from_name(name).ok_or_else(|| KernelError::UnknownPath(name.into()))?;
        Kernels::for_isa(isa)
    }
}

/// The number of `qk`-element blocks in a row of `n` elements. Every path's row dot
/// checks this the same way (a release-mode panic, never a read past the row): the
/// model only builds whole-block rows, so a failure is a bug, not bad input.
#[inline]
pub(crate) fn whole_blocks(n: usize, qk: usize) -> usize {
    assert!(
        n.is_multiple_of(qk),
        "row of {n} is not whole blocks of {qk}"
    );
    n / qk
}

/// The activation type ggml pairs with weights of type `ty`.
pub fn act_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => Q8_K,
        _ => F32,
    }
}

/// What to do instead, for a type phiq has no kernel for.
fn unsupported_hint(ty: GgmlType) -> &'static str {
    if ty.name().starts_with("IQ") {
        " (of ggml's IQ types phiq runs IQ4_NL and IQ4_XS: requantize the original \
         checkpoint with `phiq-quantize --type iq4_xs`, or `--type q3_k_m` for a smaller file)"
    } else {
        ""
    }
}

static KERNELS: OnceLock<Result<Kernels, KernelError>> = OnceLock::new();

/// The process's kernel table, detected on first use.
pub fn kernels() -> Result<&'static Kernels, KernelError> {
    KERNELS
        .get_or_init(Kernels::detect)
        .as_ref()
        .map_err(Clone::clone)
}

impl Clone for KernelError {
    fn clone(&self) -> Self {
        match self {
            KernelError::UnknownPath(s) => KernelError::UnknownPath(s.clone()),
            KernelError::Unsupported(s) => KernelError::Unsupported(s),
            KernelError::NoKernel(t) => KernelError::NoKernel(*t),
        }
    }
}

#[cfg(test)]
mod tests;
