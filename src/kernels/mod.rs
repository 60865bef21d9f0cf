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
pub mod matmul;
pub mod scalar;
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

/// Prepares a batch of `tokens` activation rows (back to back in `a`, each of `n`
/// elements in the weights' [`act_type`]) for [`GemmFn`]: a layout private to the path.
pub type GemmPrepFn = fn(n: usize, a: &[u8], tokens: usize) -> Vec<u32>;

/// `rows` weight rows (back to back in `w`) times a prepared batch of `tokens`
/// activation rows: `out[r * tokens + t]` ≈ `vec_dot(n, w_r, a_t)`, equal to it within
/// the path's tolerance (the same exact integer sums, scaled and added in another
/// order), not bit for bit.
pub type GemmFn =
    fn(n: usize, w: &[u8], rows: usize, prepared: &[u32], tokens: usize, out: &mut [f32]);

/// One weight row `w` dotted with four activation rows at once (each weight block is
/// read once per four tokens): `[vec_dot(n, w, a[0]), ..., vec_dot(n, w, a[3])]`,
/// bit for bit.
pub type VecDotX4Fn = fn(n: usize, w: &[u8], a: [&[u8]; 4]) -> [f32; 4];

/// A path's kernel for weights repacked at load time into tiles of `tile_rows` rows
/// (a layout private to the path). `gemm` has [`GemmFn`]'s contract with `w` the tiles
/// holding the rows; `prepare` lays out the activations for it.
#[derive(Clone, Copy)]
pub struct PackedKernel {
    pub tile_rows: usize,
    /// Bytes of one tile of rows of `cols` elements (a multiple of 64).
    pub tile_bytes: fn(cols: usize) -> usize,
    /// Packs `rows` (at most `tile_rows`) rows of `cols` elements, back to back in
    /// their file type, into one tile of `tile_bytes(cols)` bytes.
    pub pack: fn(cols: usize, w: &[u8], rows: usize, out: &mut [u8]),
    pub prepare: GemmPrepFn,
    pub gemm: GemmFn,
}

/// `y += a·x` over f32 rows of equal length (attention's weighted sum of values). SIMD
/// paths fuse the multiply-add, so results equal the scalar reference within one
/// rounding per element, not bit for bit.
pub type AxpyFn = fn(a: f32, x: &[f32], y: &mut [f32]);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("PHIQ_KERNEL={0:?} is not a kernel path (scalar, avx2, avx512, neon, dotprod, i8mm)")]
    UnknownPath(String),
    #[error("PHIQ_KERNEL={0}: this CPU lacks the instructions it needs")]
    Unsupported(&'static str),
    #[error("no kernel multiplies {0} weights")]
    NoKernel(GgmlType),
}

/// The kernel table. One per process, see [`kernels`].
#[derive(Clone)]
pub struct Kernels {
    pub isa: Isa,
    vec_dot: fn(GgmlType) -> Option<VecDotFn>,
    quantize_act: fn(GgmlType) -> Option<QuantizeActFn>,
    vec_dot_x4: fn(GgmlType) -> Option<VecDotX4Fn>,
    gemm: fn(GgmlType) -> Option<(GemmPrepFn, GemmFn)>,
    packed: fn(GgmlType) -> Option<PackedKernel>,
    pub axpy: AxpyFn,
}

/// No four-row kernels: callers loop [`Kernels::vec_dot`].
fn no_x4(_: GgmlType) -> Option<VecDotX4Fn> {
    None
}

/// No packed weights: matmul reads them from the file as they are.
fn no_packed(_: GgmlType) -> Option<PackedKernel> {
    None
}

/// No batch kernels: callers use the four-row or single-row kernels.
fn no_gemm(_: GgmlType) -> Option<(GemmPrepFn, GemmFn)> {
    None
}

impl Kernels {
    /// The dot product of `ty` weights with their activations, or an error for types
    /// phiq cannot compute with.
    pub fn vec_dot(&self, ty: GgmlType) -> Result<VecDotFn, KernelError> {
        (self.vec_dot)(ty).ok_or(KernelError::NoKernel(ty))
    }

    /// The four-row kernel of `ty` weights, if this path has one; without it, callers
    /// loop [`Kernels::vec_dot`] (the same results: the four-row kernels are bit-exact).
    pub fn vec_dot_x4(&self, ty: GgmlType) -> Option<VecDotX4Fn> {
        (self.vec_dot_x4)(ty)
    }

    /// The batch kernel of `ty` weights (its activation preparation and its product),
    /// if this path has one. Matmul uses it for every batch, a single token included.
    pub fn gemm(&self, ty: GgmlType) -> Option<(GemmPrepFn, GemmFn)> {
        (self.gemm)(ty)
    }

    /// This table without its batch and four-row kernels: matmul then loops the
    /// single-row dot for every token (for benchmarks and tests).
    pub fn without_batch_kernels(&self) -> Kernels {
        Kernels {
            vec_dot_x4: no_x4,
            gemm: no_gemm,
            packed: no_packed,
            ..self.clone()
        }
    }

    /// The packed-weight kernel of `ty` weights, if this path repacks them at load.
    pub fn packed(&self, ty: GgmlType) -> Option<PackedKernel> {
        (self.packed)(ty)
    }

    /// This table without its batch kernels: matmul then uses the four-row kernels
    /// (for benchmarks and tests).
    pub fn without_gemm(&self) -> Kernels {
        Kernels {
            gemm: no_gemm,
            packed: no_packed,
            ..self.clone()
        }
    }

    /// Converts f32 activations into `act` (an [`act_type`]).
    pub fn quantize_act(&self, act: GgmlType) -> Result<QuantizeActFn, KernelError> {
        (self.quantize_act)(act).ok_or(KernelError::NoKernel(act))
    }

    /// The portable reference path.
    pub fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            vec_dot: scalar::vec_dot,
            quantize_act: scalar::quantize_act,
            vec_dot_x4: no_x4,
            gemm: no_gemm,
            packed: no_packed,
            axpy: scalar::axpy,
        }
    }

    /// A table of this architecture's SIMD path; only `x86`/`arm` build these, and
    /// only after detecting the CPU features the path needs.
    #[allow(dead_code)]
    pub(crate) fn simd(
        isa: Isa,
        vec_dot: fn(GgmlType) -> Option<VecDotFn>,
        quantize_act: fn(GgmlType) -> Option<QuantizeActFn>,
    ) -> Kernels {
        Kernels {
            isa,
            vec_dot,
            quantize_act,
            vec_dot_x4: no_x4,
            gemm: no_gemm,
            packed: no_packed,
            axpy: scalar::axpy,
        }
    }

    /// Adds an f32 `y += a·x` to a SIMD table.
    #[allow(dead_code)]
    pub(crate) fn with_axpy(self, axpy: AxpyFn) -> Kernels {
        Kernels { axpy, ..self }
    }

    /// Adds packed-weight kernels to a SIMD table.
    #[allow(dead_code)]
    pub(crate) fn with_packed(self, packed: fn(GgmlType) -> Option<PackedKernel>) -> Kernels {
        Kernels { packed, ..self }
    }

    /// Adds four-row kernels to a SIMD table.
    #[allow(dead_code)]
    pub(crate) fn with_vec_dot_x4(self, vec_dot_x4: fn(GgmlType) -> Option<VecDotX4Fn>) -> Kernels {
        Kernels { vec_dot_x4, ..self }
    }

    /// Adds batch kernels to a SIMD table.
    #[allow(dead_code)]
    pub(crate) fn with_gemm(self, gemm: fn(GgmlType) -> Option<(GemmPrepFn, GemmFn)>) -> Kernels {
        Kernels { gemm, ..self }
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

/// The activation type ggml pairs with weights of type `ty`.
pub fn act_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Q8_K,
        _ => F32,
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
mod axpy_tests {
    use super::*;

    /// Every path this CPU runs against the scalar `y += a·x`: lengths around every
    /// vector width (and an attention row of 80), zeros, signs, large magnitudes.
    /// A fused multiply-add rounds once where the reference rounds twice, so each
    /// element may differ by an ulp of the terms' size.
    #[test]
    fn axpy_matches_scalar_on_every_path() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        };
        for isa in Kernels::available() {
            let k = Kernels::for_isa(isa).unwrap();
            for n in (0..=100).chain([160, 2560]) {
                for scale in [0.0f32, 1.0, 1e-30, 1e18] {
                    let x: Vec<f32> = (0..n).map(|_| next() * scale).collect();
                    let y0: Vec<f32> = (0..n).map(|_| next() * scale).collect();
                    let a = next() * 3.0;
                    let (mut got, mut want) = (y0.clone(), y0.clone());
                    (k.axpy)(a, &x, &mut got);
                    scalar::axpy(a, &x, &mut want);
                    for i in 0..n {
                        let tol = 2.0 * f32::EPSILON * ((a * x[i]).abs() + y0[i].abs());
                        assert!(
                            (got[i] - want[i]).abs() <= tol,
                            "{}: n {n} scale {scale} element {i}: {} vs {}",
                            isa.name(),
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}
