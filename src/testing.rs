//! What every unit test module shares: one deterministic RNG and one set of input
//! generators (the edge cases: blocks spanning magnitudes, negative extremes, ties,
//! zeros), so that a kernel, a quantizer or a model op is tested on the same inputs.

/// SplitMix64: tiny, deterministic, no libm.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal: the sum of 12 uniforms, centred.
    pub fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.unit()).sum::<f32>() - 6.0
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Gaussian data whose 32-element blocks span five orders of magnitude.
pub fn varied(rng: &mut Rng, n: usize) -> Vec<f32> {
    const SCALES: [f32; 5] = [0.01, 0.1, 1.0, 10.0, 100.0];
    (0..n).map(|i| rng.normal() * SCALES[i / 32 % 5]).collect()
}

/// Data whose extreme in every 32-element block (and so every 256) is negative.
pub fn negative_extremes(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.normals(n);
    for (b, block) in x.chunks_exact_mut(32).enumerate() {
        block[(7 * b) % 32] = -9.0;
    }
    x
}

/// `cos(0.7 i)·scale`: smooth, both signs, no zeros to speak of.
pub fn cos_row(n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.7).cos() * scale).collect()
}

/// Data for `n` elements of each kind a kernel test runs: normal, varied, negative
/// extremes, with every fourth 32-element block zero in the last.
pub fn data_kinds(rng: &mut Rng, n: usize) -> Vec<(&'static str, Vec<f32>)> {
    let mut zeros = varied(rng, n);
    for (b, block) in zeros.chunks_mut(32).enumerate() {
        if b % 4 == 1 {
            block.fill(0.0);
        }
    }
    vec![
        ("normal", rng.normals(n)),
        ("varied", varied(rng, n)),
        ("negative extremes", negative_extremes(rng, n)),
        ("zero blocks", zeros),
    ]
}
