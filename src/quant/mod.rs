//! ggml's block formats: plain `#[repr(C)]` block structs, byte-identical to
//! `ggml-common.h`, and one scalar reference quantizer/dequantizer per type.
//!
//! The reference functions are the specification every SIMD kernel must equal.
//! Quantizers follow ggml's `quantize_row_*_ref` to the byte; dequantizers are exact.
//!
//! Non-finite input: ggml gives no defined result for NaN or infinity (its casts of NaN
//! to integers are undefined behaviour in C), so no file could agree with it. phiq
//! refuses instead: [`quantize_row`] returns [`QuantError::NonFinite`] naming the first
//! offending element, for every target type, F16 and BF16 included, and also when a
//! finite f32 overflows F16's range. Dequantization never fails on values: a NaN scale
//! stored in a file dequantizes to NaN, as in ggml.

pub mod float;
pub mod iq4;
pub mod k_quants;
pub mod q4;
pub mod q5;
pub mod q8;
mod types;

pub use float::*;
pub use iq4::*;
pub use k_quants::*;
pub use q4::*;
pub use q5::*;
pub use q8::*;
pub use types::GgmlType;

use bytemuck::Pod;

/// Elements per block of the 32-element ("legacy") formats.
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K/Q5_K.
pub const K_SCALE_SIZE: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error("phiq cannot quantize to {0}")]
    QuantizeUnsupported(GgmlType),
    #[error("phiq cannot dequantize {0}")]
    DequantizeUnsupported(GgmlType),
    #[error("a row of {n} elements is not a whole number of {ty} blocks of {block}")]
    NotWholeBlocks {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty} row of {n} elements needs {need} bytes, buffer has {got}")]
    WrongByteLength {
        ty: GgmlType,
        n: usize,
        need: usize,
        got: usize,
    },
    #[error("non-finite value {value} at element {index}")]
    NonFinite { index: usize, value: f32 },
    #[error("value {value} at element {index} overflows F16")]
    F16Overflow { index: usize, value: f32 },
    #[error("{got} importance weights for a row of {n} elements")]
    WeightsLength { n: usize, got: usize },
}

/// Whether [`quantize_row`] supports `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q8_1
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | Q8_K
            | IQ4_NL
            | IQ4_XS
    )
}

/// Whether [`dequantize_row`] supports `ty`. Q8_1 and Q8_K are activation formats
/// whose dequantization ggml does not define either.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16
            | BF16
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_NL
            | IQ4_XS
    )
}

fn check_len(ty: GgmlType, n: usize, bytes: usize) -> Result<(), QuantError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(QuantError::NotWholeBlocks { ty, n, block });
    }
    let need = n / block * ty.type_size();
    if need != bytes {
        return Err(QuantError::WrongByteLength {
            ty,
            n,
            need,
            got: bytes,
        });
    }
    Ok(())
}

/// Returns the first non-finite element, which no format can represent faithfully.
pub fn check_finite(x: &[f32]) -> Result<(), QuantError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(QuantError::NonFinite {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// Quantizes one row `x` of type-`ty` elements into `out` with ggml's reference algorithm.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    quantize_row_weighted(ty, x, None, out)
}

/// Quantizes one row as `llama-quantize` does: with importance weights `qw` (one per
/// element: an importance matrix's column means), ggml's weighted `quantize_row_*_impl`
/// for the types that have one; without, the reference algorithm. Q8_0, floats and the
/// activation types ignore the weights, as in ggml.
pub fn quantize_row_weighted(
    ty: GgmlType,
    x: &[f32],
    qw: Option<&[f32]>,
    out: &mut [u8],
) -> Result<(), QuantError> {
    use GgmlType::*;
    check_len(ty, x.len(), out.len())?;
    check_finite(x)?;
    if let Some(w) = qw.filter(|w| w.len() != x.len()) {
        return Err(QuantError::WeightsLength {
            n: x.len(),
            got: w.len(),
        });
    }
    match (ty, qw) {
        (F32, _) => quantize_row_f32(x, out),
        (F16, _) => quantize_row_f16(x, out)?,
        (BF16, _) => quantize_row_bf16(x, out),
        (Q4_0, None) => with_blocks_mut(out, |b| quantize_row_q4_0_ref(x, b)),
        (Q4_0, Some(w)) => with_blocks_mut(out, |b| quantize_row_q4_0_weighted(x, w, b)),
        (Q4_1, None) => with_blocks_mut(out, |b| quantize_row_q4_1_ref(x, b)),
        (Q4_1, Some(w)) => with_blocks_mut(out, |b| quantize_row_q4_1_weighted(x, w, b)),
        (Q5_0, None) => with_blocks_mut(out, |b| quantize_row_q5_0_ref(x, b)),
        (Q5_0, Some(w)) => with_blocks_mut(out, |b| quantize_row_q5_0_weighted(x, w, b)),
        (Q5_1, None) => with_blocks_mut(out, |b| quantize_row_q5_1_ref(x, b)),
        (Q5_1, Some(w)) => with_blocks_mut(out, |b| quantize_row_q5_1_weighted(x, w, b)),
        (Q8_0, _) => with_blocks_mut(out, |b| quantize_row_q8_0_ref(x, b)),
        (Q8_1, _) => with_blocks_mut(out, |b| quantize_row_q8_1_ref(x, b)),
        (Q2_K, None) => with_blocks_mut(out, |b| quantize_row_q2_k_ref(x, b)),
        (Q2_K, Some(w)) => with_blocks_mut(out, |b| quantize_row_q2_k_weighted(x, w, b)),
        (Q3_K, None) => with_blocks_mut(out, |b| quantize_row_q3_k_ref(x, b)),
        (Q3_K, Some(w)) => with_blocks_mut(out, |b| quantize_row_q3_k_weighted(x, w, b)),
        (Q4_K, None) => with_blocks_mut(out, |b| quantize_row_q4_k_ref(x, b)),
        (Q4_K, Some(w)) => with_blocks_mut(out, |b| quantize_row_q4_k_weighted(x, w, b)),
        (Q5_K, None) => with_blocks_mut(out, |b| quantize_row_q5_k_ref(x, b)),
        (Q5_K, Some(w)) => with_blocks_mut(out, |b| quantize_row_q5_k_weighted(x, w, b)),
        (Q6_K, None) => with_blocks_mut(out, |b| quantize_row_q6_k_ref(x, b)),
        (Q6_K, Some(w)) => with_blocks_mut(out, |b| quantize_row_q6_k_weighted(x, w, b)),
        (Q8_K, _) => with_blocks_mut(out, |b| quantize_row_q8_k_ref(x, b)),
        (IQ4_NL, None) => with_blocks_mut(out, |b| quantize_row_iq4_nl(x, b)),
        (IQ4_NL, Some(w)) => with_blocks_mut(out, |b| quantize_row_iq4_nl_weighted(x, w, b)),
        (IQ4_XS, None) => with_blocks_mut(out, |b| quantize_row_iq4_xs(x, b)),
        (IQ4_XS, Some(w)) => with_blocks_mut(out, |b| quantize_row_iq4_xs_weighted(x, w, b)),
        _ => return Err(QuantError::QuantizeUnsupported(ty)),
    }
    Ok(())
}

/// Dequantizes one row of `ty` blocks in `data` into `out`, exactly as ggml does.
pub fn dequantize_row(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    check_len(ty, out.len(), data.len())?;
    match ty {
        F32 => dequantize_row_f32(data, out),
        F16 => dequantize_row_f16(data, out),
        BF16 => dequantize_row_bf16(data, out),
        Q4_0 => with_blocks(data, |b| dequantize_row_q4_0(b, out)),
        Q4_1 => with_blocks(data, |b| dequantize_row_q4_1(b, out)),
        Q5_0 => with_blocks(data, |b| dequantize_row_q5_0(b, out)),
        Q5_1 => with_blocks(data, |b| dequantize_row_q5_1(b, out)),
        Q8_0 => with_blocks(data, |b| dequantize_row_q8_0(b, out)),
        Q2_K => with_blocks(data, |b| dequantize_row_q2_k(b, out)),
        Q3_K => with_blocks(data, |b| dequantize_row_q3_k(b, out)),
        Q4_K => with_blocks(data, |b| dequantize_row_q4_k(b, out)),
        Q5_K => with_blocks(data, |b| dequantize_row_q5_k(b, out)),
        Q6_K => with_blocks(data, |b| dequantize_row_q6_k(b, out)),
        IQ4_NL => with_blocks(data, |b| dequantize_row_iq4_nl(b, out)),
        IQ4_XS => with_blocks(data, |b| dequantize_row_iq4_xs(b, out)),
        _ => return Err(QuantError::DequantizeUnsupported(ty)),
    }
    Ok(())
}

/// Views `data` as blocks, copying only when the bytes are not aligned for `B`
/// (a mapped GGUF tensor is; an arbitrary `Vec<u8>` may not be).
pub fn with_blocks<B: Pod, R>(data: &[u8], f: impl FnOnce(&[B]) -> R) -> R {
    match bytemuck::try_cast_slice::<u8, B>(data) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let blocks: Vec<B> = data
                .chunks_exact(size_of::<B>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            f(&blocks)
        }
    }
}

/// Mutable twin of [`with_blocks`]: writes through a copy when `out` is misaligned.
pub fn with_blocks_mut<B: Pod, R>(out: &mut [u8], f: impl FnOnce(&mut [B]) -> R) -> R {
    match bytemuck::try_cast_slice_mut::<u8, B>(out) {
        Ok(blocks) => f(blocks),
        Err(_) => {
            let mut blocks = vec![B::zeroed(); out.len() / size_of::<B>()];
            let r = f(&mut blocks);
            out.copy_from_slice(bytemuck::cast_slice(&blocks));
            r
        }
    }
}

/// ggml's `nearest_int` inside its intended range: round half to even.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_work() {
        let x = [0.0f32; 33];
        let mut out = [0u8; 18];
        assert!(matches!(
            quantize_row(GgmlType::Q4_0, &x, &mut out),
            Err(QuantError::NotWholeBlocks { .. })
        ));
        let x = [0.0f32; 32];
        let mut out = [0u8; 17];
        assert!(matches!(
            quantize_row(GgmlType::Q4_0, &x, &mut out),
            Err(QuantError::WrongByteLength { .. })
        ));
    }

    #[test]
    fn non_finite_input_is_refused_for_every_type() {
        for ty in GgmlType::all().filter(|t| can_quantize(*t)) {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut x = vec![0.5f32; ty.block_size().max(32) * 2];
                let n = x.len() / ty.block_size() * ty.block_size();
                x.truncate(n);
                x[n - 3] = bad;
                let mut out = vec![0u8; n / ty.block_size() * ty.type_size()];
                let err = quantize_row(ty, &x, &mut out).unwrap_err();
                assert!(
                    matches!(err, QuantError::NonFinite { index, .. } if index == n - 3),
                    "{ty}: {err:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod weighted_tests;
