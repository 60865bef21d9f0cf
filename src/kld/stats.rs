//! llama-perplexity's `--kl-divergence` statistics, accumulated row by row in its
//! precisions (f32 per-row values summed into f64) so that figures compare.

use serde::Serialize;

use super::file::BaseRow;

/// Running sums over scored positions, and every position's KLD and Δp for the
/// percentiles.
#[derive(Default)]
pub struct KldStats {
    sum_nll: f64,
    sum_nll2: f64,
    sum_nll_base: f64,
    sum_nll_base2: f64,
    sum_nll_nll_base: f64,
    sum_kld: f64,
    sum_kld2: f64,
    sum_p_diff: f64,
    sum_p_diff2: f64,
    sum_p_diff4: f64,
    same_top: usize,
    kld: Vec<f32>,
    p_diff: Vec<f32>,
}

/// A mean and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub value: f64,
    pub uncertainty: f64,
}

/// Everything llama-perplexity prints at the end of a `--kl-divergence` run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KldReport {
    pub count: usize,
    pub ppl: Summary,
    pub ppl_base: Summary,
    /// Correlation of the two models' per-token log-likelihoods.
    pub ln_ppl_correlation: f64,
    pub ln_ppl_ratio: Summary,
    pub ppl_ratio: Summary,
    pub ppl_diff: Summary,
    pub kld: Summary,
    pub kld_max: f64,
    pub kld_99_9: f64,
    pub kld_99: f64,
    pub kld_95: f64,
    pub kld_90: f64,
    pub kld_median: f64,
    pub kld_10: f64,
    pub kld_5: f64,
    pub kld_1: f64,
    pub kld_0_1: f64,
    pub kld_min: f64,
    /// Mean of p(token) - p_base(token).
    pub p_diff: Summary,
    pub p_diff_rms: Summary,
    pub p_diff_max: f64,
    pub p_diff_99: f64,
    pub p_diff_median: f64,
    pub p_diff_1: f64,
    pub p_diff_min: f64,
    /// Fraction of positions where both models' most likely token is the same.
    pub same_top: Summary,
}

impl KldStats {
    /// Adds one scored position: `logits` of the model under test, `base` the stored
    /// row of the same position, `next` the token that follows. Returns (KLD, Δp).
    pub fn push(&mut self, logits: &[f32], base: &BaseRow, next: u32) -> (f32, f32) {
        let next = next as usize;
        let (mut max, mut imax) = (logits[0], 0);
        for (i, &v) in logits.iter().enumerate().skip(1) {
            if v > max {
                max = v;
                imax = i;
            }
        }
        let sum_exp: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
        let log_sum_exp = sum_exp.ln() as f32;
        let log_p_base = |i: usize| base.scale * f32::from(base.levels[i]) + base.min_log_prob;
        let nll = max + log_sum_exp - logits[next];
        let nll_base = -log_p_base(next);
        self.sum_nll += f64::from(nll);
        self.sum_nll2 += f64::from(nll * nll);
        self.sum_nll_base += f64::from(nll_base);
        self.sum_nll_base2 += f64::from(nll_base * nll_base);
        self.sum_nll_nll_base += f64::from(nll * nll_base);
        let log_z = max + log_sum_exp;
        let (mut kld, mut imax_base, mut base_max) = (0f64, 0, 0f32);
        for (i, &v) in logits.iter().enumerate() {
            let lb = log_p_base(i);
            if i == 0 || lb > base_max {
                base_max = lb;
                imax_base = i;
            }
            // Below e^-16 llama-perplexity leaves a token out of the sum.
            if lb > -16.0 {
                kld += f64::from(lb.exp() * (lb - v + log_z));
            }
        }
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        self.same_top += usize::from(imax == imax_base);
        let p_diff = (-nll).exp() - (-nll_base).exp();
        let p_diff2 = f64::from(p_diff * p_diff);
        self.sum_p_diff += f64::from(p_diff);
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.kld.push(kld as f32);
        self.p_diff.push(p_diff);
        (kld as f32, p_diff)
    }

    pub fn count(&self) -> usize {
        self.kld.len()
    }

    /// Running figures after each chunk: (PPL, ln(PPL/PPL base), KLD, RMS Δp, same top).
    pub fn running(&self) -> (Summary, Summary, Summary, Summary, Summary) {
        let r = self.report();
        (r.ppl, r.ln_ppl_ratio, r.kld, r.p_diff_rms, r.same_top)
    }

    /// The statistics so far (llama-perplexity prints them from 100 positions on).
    pub fn report(&self) -> KldReport {
        let n = self.count();
        let log_ppl = mean_and_uncertainty(self.sum_nll, self.sum_nll2, n);
        let log_ppl_base = mean_and_uncertainty(self.sum_nll_base, self.sum_nll_base2, n);
        let cov = covariance(self.sum_nll, self.sum_nll_base, self.sum_nll_nll_base, n);
        let ppl = log_ppl.0.exp();
        let ppl_base = log_ppl_base.0.exp();
        let ratio_ln = log_ppl.0 - log_ppl_base.0;
        let ratio_ln_unc =
            (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * cov).sqrt();
        let ppl_unc = ppl * log_ppl.1;
        let ppl_base_unc = ppl_base * log_ppl_base.1;
        let ppl_cov = ppl * ppl_base * cov;
        let kld = mean_and_uncertainty(self.sum_kld, self.sum_kld2, n);
        let p_diff = mean_and_uncertainty(self.sum_p_diff, self.sum_p_diff2, n);
        let mse = mean_and_uncertainty(self.sum_p_diff2, self.sum_p_diff4, n);
        let rms = mse.0.sqrt();
        let top = self.same_top as f64 / n.max(1) as f64;
        let mut k = self.kld.clone();
        k.sort_by(f32::total_cmp);
        let mut p = self.p_diff.clone();
        p.sort_by(f32::total_cmp);
        let pc = |v: &[f32], f: f32| f64::from(percentile(v, f));
        let s = |value, uncertainty| Summary { value, uncertainty };
        KldReport {
            count: n,
            ppl: s(ppl, ppl_unc),
            ppl_base: s(ppl_base, ppl_base_unc),
            ln_ppl_correlation: cov / (log_ppl.1 * log_ppl_base.1),
            ln_ppl_ratio: s(ratio_ln, ratio_ln_unc),
            ppl_ratio: s(ratio_ln.exp(), ratio_ln.exp() * ratio_ln_unc),
            ppl_diff: s(
                ppl - ppl_base,
                (ppl_unc * ppl_unc + ppl_base_unc * ppl_base_unc - 2.0 * ppl_cov).sqrt(),
            ),
            kld: s(kld.0, kld.1),
            kld_max: k.last().map_or(0.0, |&v| f64::from(v)),
            kld_99_9: pc(&k, 0.999),
            kld_99: pc(&k, 0.99),
            kld_95: pc(&k, 0.95),
            kld_90: pc(&k, 0.90),
            kld_median: median(&k),
            kld_10: pc(&k, 0.10),
            kld_5: pc(&k, 0.05),
            kld_1: pc(&k, 0.01),
            kld_0_1: pc(&k, 0.001),
            kld_min: k.first().map_or(0.0, |&v| f64::from(v)),
            p_diff: s(p_diff.0, p_diff.1),
            p_diff_rms: s(rms, 0.5 / rms * mse.1),
            p_diff_max: p.last().map_or(0.0, |&v| f64::from(v)),
            p_diff_99: pc(&p, 0.99),
            p_diff_median: median(&p),
            p_diff_1: pc(&p, 0.01),
            p_diff_min: p.first().map_or(0.0, |&v| f64::from(v)),
            same_top: s(top, (top * (1.0 - top) / (n as f64 - 1.0)).sqrt()),
        }
    }
}

/// llama-perplexity's mean and standard error (0 below 11 values).
fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (count as f64 - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

fn covariance(a: f64, b: f64, ab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let n = count as f64;
    (ab / n - (a / n) * (b / n)) / (n - 1.0)
}

/// llama-perplexity's linear interpolation between sorted values, in f32.
fn percentile(v: &[f32], fraction: f32) -> f32 {
    match v {
        [] => 0.0,
        _ if fraction <= 0.0 => v[0],
        _ if fraction >= 1.0 => v[v.len() - 1],
        _ => {
            let p = fraction * (v.len() - 1) as f32;
            let ip = p as usize;
            let p = p - ip as f32;
            (1.0 - p) * v[ip] + p * v[(ip + 1).min(v.len() - 1)]
        }
    }
}

fn median(v: &[f32]) -> f64 {
    match v.len() {
        0 => 0.0,
        n if n % 2 == 0 => f64::from(0.5 * (v[n / 2] + v[n / 2 - 1])),
        n => f64::from(v[n / 2]),
    }
}
