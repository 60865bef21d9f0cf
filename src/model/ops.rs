//! The f32 vector work of the Phi-2 graph, written to match Hugging Face's
//! `PhiForCausalLM` numerically (see tests/fixtures/oracle/README.md).

/// LayerNorm over one row: `(x - mean) / sqrt(var + eps) * g + b`, biased variance.
/// Mean and variance are accumulated in f64 so that long rows lose nothing.
pub fn layer_norm(x: &[f32], g: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
    let mean = mean as f32;
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(g).zip(b) {
        *o = (v - mean) * inv * g + b;
    }
}

/// GPT-2's `gelu_new`, the tanh approximation Phi-2 was trained with (not erf).
/// Parallel over chunks, with a branch-free `tanh` the compiler vectorizes: libm's
/// `tanhf` per element was a tenth of a prompt's time.
pub fn gelu_new(x: &mut [f32]) {
    use rayon::prelude::*;
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let chunk = |c: &mut [f32]| {
        for v in c {
            let u = *v;
            *v = 0.5 * u * (1.0 + tanh(SQRT_2_OVER_PI * (u + 0.044715 * u * u * u)));
        }
    };
    // One token's 10240 values take microseconds: less than waking the pool.
    if x.len() <= 16 * 1024 {
        chunk(x);
    } else {
        x.par_chunks_mut(4096).for_each(chunk);
    }
}

/// `tanh(y) = sign(y) · (1 - 2 / (e^{2|y|} + 1))`: absolute error below 3e-7 over all
/// of f32 (tested against f64), which is what GELU needs (it multiplies by `y`).
#[inline]
fn tanh(y: f32) -> f32 {
    let e = exp(2.0 * y.abs());
    let t = 1.0 - 2.0 / (e + 1.0);
    t.copysign(y)
}

/// `e^x` for x ≥ 0 (clamped at 88, where tanh is 1 to the last bit): Cody-Waite
/// reduction by ln 2 and a degree-6 polynomial, about 2 ulp, no branches or calls.
#[inline]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.min(88.0);
    // x ≥ 0: truncation is the floor, and unlike `floor` it vectorizes without SSE4.1.
    let n = ((x * LOG2E + 0.5) as i32) as f32;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor terms to r^6 on |r| <= ln2/2: truncation below 2e-8 relative.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// In-place softmax in f32 (as HF computes attention probabilities).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rotary tables for partial RoPE: `cos`/`sin` of `pos · inv_freq[i]` for the first
/// `n_rot / 2` frequencies, computed in f32 as HF does.
pub struct Rope {
    n_rot: usize,
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(n_rot: usize, base: f32) -> Rope {
        let inv_freq = (0..n_rot / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / n_rot as f32))
            .collect();
        Rope { n_rot, inv_freq }
    }

    /// Rotates the first `n_rot` dims of every `head_dim`-long head in `x` (one token
    /// at position `pos`), pairing dim `i` with `i + n_rot/2` (GPT-NeoX's half split).
    pub fn apply(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        let half = self.n_rot / 2;
        if half == 0 {
            return;
        }
        let (cos, sin): (Vec<f32>, Vec<f32>) = self
            .inv_freq
            .iter()
            .map(|f| {
                let a = pos as f32 * f;
                (a.cos(), a.sin())
            })
            .unzip();
        for head in x.chunks_exact_mut(head_dim) {
            let (lo, hi) = head[..self.n_rot].split_at_mut(half);
            for i in 0..half {
                let (a, b) = (lo[i], hi[i]);
                lo[i] = a * cos[i] - b * sin[i];
                hi[i] = b * cos[i] + a * sin[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_of_constant_row_is_bias() {
        let x = [3.0f32; 8];
        let mut out = [0f32; 8];
        layer_norm(&x, &[2.0; 8], &[0.5; 8], 1e-5, &mut out);
        assert!(out.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }

    #[test]
    fn gelu_new_known_values() {
        let mut x = [0.0f32, 1.0, -1.0, 3.0];
        gelu_new(&mut x);
        // Values of GPT-2's gelu_new (tanh form).
        let want = [0.0f32, 0.841_192, -0.158_808, 2.996_363_7];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn fast_tanh_matches_f64_everywhere() {
        let mut worst = 0f64;
        let mut y = -100f32;
        while y < 100.0 {
            let got = f64::from(tanh(y));
            worst = worst.max((got - f64::from(y).tanh()).abs());
            y += 1.0 / 1024.0 + y.abs() * 1e-4;
        }
        for y in [
            0.0f32,
            -0.0,
            1e-30,
            -1e-30,
            88.0,
            89.0,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
        ] {
            worst = worst.max((f64::from(tanh(y)) - f64::from(y).tanh()).abs());
        }
        assert!(worst < 3e-7, "worst absolute error {worst}");
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn gelu_new_matches_f64_reference() {
        let mut x: Vec<f32> = (-20_000..20_000).map(|i| i as f32 * 1e-3).collect();
        let want: Vec<f64> = x
            .iter()
            .map(|&u| {
                let u = f64::from(u);
                0.5 * u
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (u + 0.044715 * u.powi(3))).tanh())
            })
            .collect();
        gelu_new(&mut x);
        for (a, b) in x.iter().zip(want) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_values() {
        let mut x = [1000.0f32, 1001.0, 999.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2] && x[3] == 0.0);
    }

    #[test]
    fn rope_pairs_halves_and_leaves_the_rest() {
        let rope = Rope::new(4, 10000.0);
        let mut x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope.apply(&mut x, 6, 1);
        // dim 0 pairs with dim 2 at angle 1; dim 1 with dim 3 at angle 0.01.
        let (c0, s0) = (1f32.cos(), 1f32.sin());
        let (c1, s1) = (0.01f32.cos(), 0.01f32.sin());
        let want = [
            1.0 * c0 - 3.0 * s0,
            2.0 * c1 - 4.0 * s1,
            3.0 * c0 + 1.0 * s0,
            4.0 * c1 + 2.0 * s1,
            5.0,
            6.0,
        ];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        let mut y = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope.apply(&mut y, 6, 0);
        assert_eq!(y, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
