//! Choosing the next token from logits: greedy at temperature 0, otherwise
//! repetition penalty, temperature, top-k, top-p and min-p, in llama.cpp's order,
//! from a seeded generator so that `--seed` reproduces a run.

/// Sampling settings, with llama.cpp's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1.0: all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0.0: none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recent tokens (1.0: off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted once from the logit of every recent token (OpenAI's; 0.0: off).
    pub presence_penalty: f32,
    /// Subtracted from a recent token's logit per occurrence (OpenAI's; 0.0: off).
    pub frequency_penalty: f32,
    /// Added to a token's logit before sampling (OpenAI's `logit_bias`);
    /// `-inf` bans the token.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0x5eed,
        }
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: u64,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Sampler {
        let rng = cfg.seed ^ 0x9e37_79b9_7f4a_7c15;
        Sampler { cfg, rng }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Picks a token from `logits` given the `history` of tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        self.penalize(&mut logits, history);
        for &(id, bias) in &self.cfg.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        if self.cfg.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l / self.cfg.temperature))
            .collect();
        if cands.is_empty() {
            return argmax(&logits);
        }
        top_k(&mut cands, self.cfg.top_k);
        let probs = softmax(&cands);
        let keep = self.kept(&probs);
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.uniform() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            if r < *p {
                return cands[i].0;
            }
            r -= p;
        }
        cands[keep - 1].0
    }

    fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        let c = &self.cfg;
        let off =
            c.repeat_penalty == 1.0 && c.presence_penalty == 0.0 && c.frequency_penalty == 0.0;
        if off || c.repeat_last_n == 0 {
            return;
        }
        let recent = &history[history.len().saturating_sub(c.repeat_last_n)..];
        let mut counts = std::collections::HashMap::new();
        for &t in recent {
            *counts.entry(t).or_insert(0u32) += 1;
        }
        for (t, n) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                let p = c.repeat_penalty;
                *l = if *l > 0.0 { *l / p } else { *l * p };
                *l -= c.presence_penalty + c.frequency_penalty * n as f32;
            }
        }
    }

    /// How many of the sorted candidates survive top-p and min-p (at least one).
    fn kept(&self, probs: &[f32]) -> usize {
        let mut keep = probs.len();
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.cfg.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.cfg.min_p > 0.0 {
            let floor = probs[0] * self.cfg.min_p;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count());
        }
        keep.max(1)
    }

    /// Uniform in [0, 1) from SplitMix64.
    fn uniform(&mut self) -> f32 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The index of the largest logit; the lowest index wins ties, as torch's argmax.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Sorts `cands` most likely first (ties by id) and keeps the first `k` (0: all).
/// The order is total, so selecting the top `k` (linear) and sorting only them
/// gives the full sort's first `k`.
fn top_k(cands: &mut Vec<(u32, f32)>, k: usize) {
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < cands.len() {
        cands.select_nth_unstable_by(k - 1, order);
        cands.truncate(k);
    }
    cands.sort_unstable_by(order);
}

fn softmax(cands: &[(u32, f32)]) -> Vec<f32> {
    let max = cands[0].1;
    let exps: Vec<f32> = cands.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            ..SamplerConfig::default()
        }
    }

    #[test]
    fn temperature_zero_is_argmax_with_first_index_on_ties() {
        let mut s = Sampler::new(cfg(0.0));
        assert_eq!(s.sample(&[0.0, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplerConfig {
                seed,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                temperature: 1.5,
                ..SamplerConfig::default()
            });
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_selection_equals_a_full_sort() {
        let mut rng = crate::testing::Rng(7);
        for k in [0, 1, 2, 40, 999, 1000, 5000] {
            // Few distinct values: many ties, which the ids must break.
            let cands: Vec<(u32, f32)> = (0..1000)
                .map(|i| (i, rng.below(17) as f32 * 0.5 - 4.0))
                .collect();
            let mut want = cands.clone();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if k > 0 {
                want.truncate(k);
            }
            let mut got = cands.clone();
            top_k(&mut got, k);
            assert_eq!(got, want, "k {k}");
        }
    }

    #[test]
    fn logit_bias_bans_and_favours_tokens() {
        let logits = [3.0, 2.0, 1.0, 0.0];
        let greedy = |bias: Vec<(u32, f32)>| {
            let cfg = SamplerConfig {
                temperature: 0.0,
                logit_bias: bias,
                ..SamplerConfig::default()
            };
            Sampler::new(cfg).sample(&logits, &[])
        };
        assert_eq!(greedy(vec![]), 0);
        assert_eq!(greedy(vec![(0, f32::NEG_INFINITY)]), 1);
        assert_eq!(greedy(vec![(3, 3.5)]), 3);
        // An id past the logits is ignored (the server refuses it before).
        assert_eq!(greedy(vec![(9, 100.0)]), 0);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(SamplerConfig {
            top_k: 1,
            ..cfg(1.0)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.1, 0.5, 2.0, 1.9], &[]), 2);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Probabilities about 0.64, 0.24, 0.09, 0.03.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(SamplerConfig {
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            ..cfg(1.0)
        });
        assert!((0..50).all(|_| s.sample(&logits, &[]) == 0));
        let mut s = Sampler::new(SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.3,
            ..cfg(1.0)
        });
        let picked: std::collections::HashSet<u32> =
            (0..200).map(|_| s.sample(&logits, &[])).collect();
        assert_eq!(picked, [0, 1].into_iter().collect());
    }

    #[test]
    fn repetition_penalty_demotes_recent_tokens() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..cfg(0.0)
        });
        assert_eq!(s.sample(&[1.0, 1.5, -1.0], &[1]), 0);
        assert_eq!(s.sample(&[1.0, 1.5, -1.0], &[]), 1);
    }

    #[test]
    fn non_finite_logits_never_win_and_never_panic() {
        let mut s = Sampler::new(cfg(1.0));
        assert_eq!(s.sample(&[f32::NAN, 1.0, f32::NEG_INFINITY], &[]), 1);
        let mut s = Sampler::new(cfg(1.0));
        let _ = s.sample(&[f32::NAN, f32::NAN], &[]);
    }
}

/// The longest prefix of `text` that cannot be the beginning of a stop text.
pub fn stop_safe_prefix<S: AsRef<str>>(text: &str, stops: &[S]) -> usize {
    let mut safe = text.len();
    for st in stops {
        let st = st.as_ref();
        for k in (1..st.len()).rev() {
            if text.ends_with(&st[..k.min(st.len())]) && st.is_char_boundary(k) {
                safe = safe.min(text.len() - k);
                break;
            }
        }
    }
    while !text.is_char_boundary(safe) {
        safe -= 1;
    }
    safe
}

#[cfg(test)]
mod stop_tests {
    use super::stop_safe_prefix as safe_prefix;

    #[test]
    fn safe_prefix_holds_back_partial_stop_texts() {
        assert_eq!(safe_prefix("hello\nIns", &["\nInstruct:"]), 5);
        assert_eq!(safe_prefix("hello", &["\nInstruct:"]), 5);
        assert_eq!(safe_prefix("hello\n", &["\nInstruct:"]), 5);
        assert_eq!(safe_prefix::<&str>("héllo", &[]), "héllo".len());
    }
}
