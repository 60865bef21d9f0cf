//! A deliberately plain f64 Phi-2, written from the Hugging Face semantics in
//! tests/fixtures/oracle/README.md and reading the checkpoint's safetensors directly:
//! the independent reference for shapes the transformers oracle does not cover.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use phiq_quantize::checkpoint::Checkpoint;
use phiq_quantize::config::Phi2Config;

pub struct RefPhi2 {
    pub cfg: Phi2Config,
    w: HashMap<String, Vec<f64>>,
}

impl RefPhi2 {
    /// Loads a checkpoint in today's Hugging Face names.
    pub fn load(dir: &Path) -> RefPhi2 {
        let ck = Checkpoint::open(dir).unwrap();
        let w = ck
            .tensors
            .iter()
            .map(|(name, t)| {
                let mut x = vec![0f32; t.n_elements()];
                ck.read(t, 0, &mut x);
                (name.clone(), x.into_iter().map(f64::from).collect())
            })
            .collect();
        RefPhi2 {
            cfg: ck.config.clone(),
            w,
        }
    }

    fn t(&self, name: &str) -> &[f64] {
        self.w
            .get(name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// `y = W x + b` for a PyTorch [out, in] weight.
    fn linear(&self, base: &str, x: &[f64]) -> Vec<f64> {
        let (w, b) = (
            self.t(&format!("{base}.weight")),
            self.t(&format!("{base}.bias")),
        );
        let n_in = x.len();
        b.iter()
            .enumerate()
            .map(|(o, bias)| {
                bias + w[o * n_in..(o + 1) * n_in]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .collect()
    }

    fn layer_norm(&self, base: &str, x: &[f64]) -> Vec<f64> {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let (g, b) = (
            self.t(&format!("{base}.weight")),
            self.t(&format!("{base}.bias")),
        );
        let inv = 1.0 / (var + self.cfg.layer_norm_eps).sqrt();
        x.iter()
            .zip(g)
            .zip(b)
            .map(|((v, g), b)| (v - mean) * inv * g + b)
            .collect()
    }

    fn rope(&self, x: &mut [f64], pos: usize) {
        let hd = self.cfg.head_dim();
        let rot = self.cfg.rope_dims();
        let half = rot / 2;
        for head in x.chunks_exact_mut(hd) {
            for i in 0..half {
                let inv_freq = 1.0 / self.cfg.rope_theta.powf((2 * i) as f64 / rot as f64);
                let (s, c) = (pos as f64 * inv_freq).sin_cos();
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }

    /// Logits of every position of `ids` (one causal pass, no cache).
    pub fn logits(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        self.logits_observed(ids, &mut |_, _, _| {})
    }

    /// As [`RefPhi2::logits`], handing `input(layer, product, row)` each product's
    /// input row, token by token: `"qkv_up"` (the LayerNorm that q, k, v and fc1
    /// read), `"attn_output"` (what dense reads), `"ffn_down"` (gelu(fc1), what fc2 reads).
    pub fn logits_observed(
        &self,
        ids: &[u32],
        input: &mut dyn FnMut(usize, &str, &[f64]),
    ) -> Vec<Vec<f64>> {
        let c = &self.cfg;
        let (hd, nh, nkv) = (c.head_dim(), c.num_heads, c.num_kv_heads);
        let d = c.hidden_size;
        let emb = self.t("model.embed_tokens.weight");
        let mut h: Vec<Vec<f64>> = ids
            .iter()
            .map(|&i| emb[i as usize * d..(i as usize + 1) * d].to_vec())
            .collect();
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            let n: Vec<Vec<f64>> = h
                .iter()
                .map(|x| self.layer_norm(&format!("{p}.input_layernorm"), x))
                .collect();
            let mut q: Vec<Vec<f64>> = n
                .iter()
                .map(|x| self.linear(&format!("{p}.self_attn.q_proj"), x))
                .collect();
            let mut k: Vec<Vec<f64>> = n
                .iter()
                .map(|x| self.linear(&format!("{p}.self_attn.k_proj"), x))
                .collect();
            let v: Vec<Vec<f64>> = n
                .iter()
                .map(|x| self.linear(&format!("{p}.self_attn.v_proj"), x))
                .collect();
            for (pos, (q, k)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
                self.rope(q, pos);
                self.rope(k, pos);
            }
            for x in &n {
                input(l, "qkv_up", x);
            }
            for t in 0..ids.len() {
                let mut o = vec![0f64; nh * hd];
                for head in 0..nh {
                    let g = head / (nh / nkv);
                    let qh = &q[t][head * hd..(head + 1) * hd];
                    let scores: Vec<f64> = (0..=t)
                        .map(|s| {
                            qh.iter()
                                .zip(&k[s][g * hd..(g + 1) * hd])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (s, w) in e.iter().enumerate() {
                        for i in 0..hd {
                            o[head * hd + i] += w / z * v[s][g * hd + i];
                        }
                    }
                }
                input(l, "attn_output", &o);
                let attn = self.linear(&format!("{p}.self_attn.dense"), &o);
                let mut up = self.linear(&format!("{p}.mlp.fc1"), &n[t]);
                for u in up.iter_mut() {
                    let x = *u;
                    *u = 0.5
                        * x
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3)))
                                .tanh());
                }
                input(l, "ffn_down", &up);
                let mlp = self.linear(&format!("{p}.mlp.fc2"), &up);
                for i in 0..d {
                    h[t][i] += attn[i] + mlp[i];
                }
            }
        }
        h.iter()
            .map(|x| self.linear("lm_head", &self.layer_norm("model.final_layernorm", x)))
            .collect()
    }
}
