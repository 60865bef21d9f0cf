//! F32, F16 and BF16 rows, plus the float-to-integer conversion every ggml quantizer
//! relies on.
//!
//! Rows are little-endian bytes, as in a GGUF file, so callers never care whether the
//! buffer happens to be aligned for `f16`.

use half::f16;

use super::QuantError;

/// C's `(int)v` for an `f32`, as x86-64 executes it (`cvttss2si`): truncation toward zero,
/// and `i32::MIN` ("integer indefinite") for NaN and values outside the `i32` range.
///
/// ggml's quantizers narrow floats with casts like `(int8_t)(x*id + 8.5f)`. C leaves the
/// result undefined when `x*id` is infinite or NaN, which happens when a block holds only
/// subnormal values (`id = 1/d` overflows). Rust's saturating `as` would then give 127
/// where llama-quantize on x86-64 and gguf-py (numpy casts the same way) give 0. Such a
/// block's scale rounds to zero in f16, so the codes carry no value either way; taking
/// the x86-64 result keeps phiq byte-identical to the files people actually have.
/// (An aarch64 build of ggml saturates to `i32` first and would store 0xff for `+inf`.)
#[inline]
pub(crate) fn c_float_to_int(v: f32) -> i32 {
    const TWO_31: f32 = 2_147_483_648.0;
    if (-TWO_31..TWO_31).contains(&v) {
        v as i32
    } else {
        i32::MIN
    }
}

/// `f32` to `bf16` bits exactly as ggml's `ggml_compute_fp32_to_bf16` (and gguf-py's BF16):
/// round to nearest even on the raw bits; subnormals are kept, not flushed; finite values
/// from 0x7f7f8000 up round to infinity, as in ggml; NaN keeps its top bits and is made quiet.
#[inline]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        // Rounding could carry a NaN's payload into the exponent and sign: truncate instead.
        return ((u >> 16) | 0x40) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000 (-inf).
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `bf16` bits to `f32`: bf16 is the top half of an f32, so this is exact.
#[inline]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

pub fn quantize_row_f32(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() * 4);
    for (v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Rounds to nearest even, as ggml's `GGML_FP32_TO_FP16` does. A finite value that would
/// become infinite (|v| >= 65520) is refused: silently storing an infinity would poison
/// every dot product it enters. Infinite and NaN input is converted as is; [`super::quantize_row`]
/// rejects it before getting here. On error `out` is partly written.
pub fn quantize_row_f16(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    assert_eq!(out.len(), x.len() * 2);
    for (index, (&value, o)) in x.iter().zip(out.chunks_exact_mut(2)).enumerate() {
        let h = f16::from_f32(value);
        if h.is_infinite() && value.is_finite() {
            return Err(QuantError::F16Overflow { index, value });
        }
        o.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

pub fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), x.len() * 2);
    for (&v, o) in x.iter().zip(out.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16_bits(v).to_le_bytes());
    }
}

pub fn dequantize_row_f32(x: &[u8], out: &mut [f32]) {
    assert_eq!(x.len(), out.len() * 4);
    for (b, o) in x.chunks_exact(4).zip(out.iter_mut()) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

pub fn dequantize_row_f16(x: &[u8], out: &mut [f32]) {
    assert_eq!(x.len(), out.len() * 2);
    // Aligned rows (every buffer phiq allocates) take half's slice conversion, which
    // uses F16C / NEON when the CPU has them: the KV cache is read through here on
    // every step. The conversion is exact either way.
    #[cfg(target_endian = "little")]
    if let Ok(h) = bytemuck::try_cast_slice::<u8, f16>(x) {
        use half::slice::HalfFloatSliceExt;
        h.convert_to_f32_slice(out);
        return;
    }
    for (b, o) in x.chunks_exact(2).zip(out.iter_mut()) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

pub fn dequantize_row_bf16(x: &[u8], out: &mut [f32]) {
    assert_eq!(x.len(), out.len() * 2);
    for (b, o) in x.chunks_exact(2).zip(out.iter_mut()) {
        *o = bf16_bits_to_f32(u16::from_le_bytes([b[0], b[1]]));
    }
}

/// Shared by the unit tests of every block format.
#[cfg(test)]
pub(crate) mod test_support {
    /// ggml's test-quantize-fns data: `0.1 + 2*cos(i + offset)`.
    pub fn cos_data(n: usize, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
            .collect()
    }

    /// ggml's test-quantize-fns "total quantization error": sqrt(sum of squares) / n.
    /// Note the division by n, not sqrt(n): it is ggml's metric, kept for its thresholds.
    pub fn ggml_error(a: &[f32], b: &[f32]) -> f32 {
        let sum: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        (sum.sqrt() / a.len() as f64) as f32
    }

    /// Plain root-mean-square error.
    pub fn rmse(a: &[f32], b: &[f32]) -> f32 {
        let sum: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        (sum / a.len() as f64).sqrt() as f32
    }

    /// ggml's MAX_QUANTIZATION_TOTAL_ERROR, on 4096 values as ggml uses.
    pub const GGML_MAX_ERROR: f32 = 0.002;
    pub const GGML_TEST_SIZE: usize = 32 * 128;
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    fn f16_bytes(x: &[f32]) -> Result<Vec<u8>, QuantError> {
        let mut out = vec![0u8; x.len() * 2];
        quantize_row_f16(x, &mut out).map(|_| out)
    }

    fn round_trip(q: fn(&[f32], &mut [u8]), dq: fn(&[u8], &mut [f32]), x: &[f32]) -> Vec<f32> {
        let mut bytes = vec![0u8; x.len() * 2];
        q(x, &mut bytes);
        let mut y = vec![0f32; x.len()];
        dq(&bytes, &mut y);
        y
    }

    #[test]
    fn f32_row_is_little_endian_bytes() {
        let x = [1.0f32, -0.0, f32::MIN_POSITIVE / 2.0, f32::MAX];
        let mut bytes = [0u8; 16];
        quantize_row_f32(&x, &mut bytes);
        assert_eq!(&bytes[..4], &[0x00, 0x00, 0x80, 0x3f]);
        let mut y = [0f32; 4];
        dequantize_row_f32(&bytes, &mut y);
        assert_eq!(x.map(f32::to_bits), y.map(f32::to_bits));
    }

    #[test]
    fn f16_round_trip_error_is_within_ggml_bounds() {
        let x = cos_data(GGML_TEST_SIZE, 0.0);
        let bytes = f16_bytes(&x).unwrap();
        let mut y = vec![0f32; x.len()];
        dequantize_row_f16(&bytes, &mut y);
        assert!(ggml_error(&x, &y) < GGML_MAX_ERROR);
        // Half an f16 ulp at 2.1 is 2^-10: the RMSE is far below that.
        assert!(rmse(&x, &y) < 6e-4, "{}", rmse(&x, &y));
    }

    #[test]
    fn f16_rounds_ties_to_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even (1.0) wins.
        // 1 + 3*2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: even (1 + 2^-9) wins.
        let x = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)];
        let b = f16_bytes(&x).unwrap();
        assert_eq!(b, [0x00, 0x3c, 0x02, 0x3c]);
    }

    #[test]
    fn f16_max_and_overflow() {
        // 65519.996 rounds down to the largest f16; 65520 is the tie that goes to infinity.
        let ok = [65504.0f32, -65504.0, 65519.996];
        assert_eq!(
            f16_bytes(&ok).unwrap(),
            [0xff, 0x7b, 0xff, 0xfb, 0xff, 0x7b]
        );
        for (x, index) in [(vec![1.0, 65520.0], 1), (vec![-3.0e38, 0.0], 0)] {
            let value = x[index];
            assert_eq!(f16_bytes(&x), Err(QuantError::F16Overflow { index, value }));
        }
    }

    #[test]
    fn f16_keeps_subnormals_and_signed_zero() {
        let tiny = 2f32.powi(-24); // smallest f16 subnormal
        let x = [tiny, -tiny, tiny / 2.0, tiny * 0.75, -0.0, 1e-40];
        let b = f16_bytes(&x).unwrap();
        // tiny/2 is a tie with 0 and rounds to even (0); 0.75 tiny rounds up; 1e-40 to +0.
        assert_eq!(b, [1, 0, 1, 0x80, 0, 0, 1, 0, 0, 0x80, 0, 0]);
        let mut y = [0f32; 6];
        dequantize_row_f16(&b, &mut y);
        assert_eq!(
            y.map(f32::to_bits),
            [tiny, -tiny, 0.0, tiny, -0.0, 0.0].map(f32::to_bits)
        );
    }

    #[test]
    fn bf16_matches_ggml_rounding() {
        let cases: [(u32, u16); 10] = [
            (0x3f80_0000, 0x3f80), // 1.0
            (0x3f80_8000, 0x3f80), // tie, even stays
            (0x3f81_8000, 0x3f82), // tie, odd rounds up
            (0x3f80_8001, 0x3f81), // above the tie
            (0x0000_0001, 0x0000), // smallest subnormal rounds to +0
            (0x0000_8001, 0x0001), // subnormal kept, not flushed
            (0x8040_0000, 0x8040), // negative subnormal
            (0x7f7f_ffff, 0x7f80), // f32::MAX rounds to +inf, as in ggml
            (0x7f7f_7fff, 0x7f7f), // largest value that stays finite
            (0x7f80_0001, 0x7fc0), // signalling NaN becomes quiet
        ];
        for (bits, want) in cases {
            assert_eq!(f32_to_bf16_bits(f32::from_bits(bits)), want, "{bits:#010x}");
        }
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xffff_ffff)), 0xffff);
    }

    #[test]
    fn bf16_agrees_with_half_crate_on_every_pattern_class() {
        // A third implementation as a cross-check, over a dense sweep of bit patterns.
        for k in 0..(1u64 << 20) {
            let bits = (k as u32)
                .wrapping_mul(0x9e37_79b9)
                .rotate_left(k as u32 % 32);
            let v = f32::from_bits(bits);
            let want = half::bf16::from_f32(v).to_bits();
            assert_eq!(f32_to_bf16_bits(v), want, "{bits:#010x}");
        }
    }

    #[test]
    fn bf16_round_trip_error_is_within_ggml_bounds() {
        let x = cos_data(GGML_TEST_SIZE, 0.5);
        let y = round_trip(quantize_row_bf16, dequantize_row_bf16, &x);
        assert!(ggml_error(&x, &y) < GGML_MAX_ERROR);
        assert!(rmse(&x, &y) < 5e-3, "{}", rmse(&x, &y));
    }

    #[test]
    fn bf16_dequantize_is_exact_for_every_pattern() {
        for h in 0..=u16::MAX {
            let y = bf16_bits_to_f32(h);
            assert_eq!(y.to_bits() >> 16, h as u32);
            assert_eq!(y.to_bits() & 0xffff, 0);
        }
    }

    #[test]
    fn c_float_to_int_matches_x86() {
        assert_eq!(c_float_to_int(8.99), 8);
        assert_eq!(c_float_to_int(-0.99), 0);
        assert_eq!(c_float_to_int(-2_147_483_648.0), i32::MIN);
        assert_eq!(c_float_to_int(2_147_483_520.0), 2_147_483_520);
        for v in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            2_147_483_648.0,
            -3e9,
        ] {
            assert_eq!(c_float_to_int(v), i32::MIN, "{v}");
        }
        // Narrowing wraps, as C's conversion to int8_t does: 300 -> 44.
        assert_eq!(c_float_to_int(300.5) as i8, 44);
    }
}
