//! Synthetic Phi-2 checkpoints in Hugging Face layout: random weights, the real Phi-2
//! tokenizer, any shape. Tiny ones for tests, full-size ones (the cost of the real
//! model) for benchmarks. Not a user-facing tool: `cargo run -p phiq-quantize
//! --example synth_phi2 -- --help` drives it from the shell.
//!
//! Every weight is a bfloat16 value inside F16's normal range, so the same checkpoint
//! saved as F32, F16 or BF16 holds exactly the same numbers.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
    fn torch(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        }
    }
    fn size(self) -> usize {
        if self == Dtype::F32 { 4 } else { 2 }
    }
    fn encode(self, x: f32, out: &mut Vec<u8>) {
        match self {
            Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
        }
    }
}

/// Tensor names and config keys: today's transformers, or the pre-2024 phi-msft ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Hf,
    Msft,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
    pub partial_rotary_factor: f64,
    pub rope_theta: f64,
    pub dtype: Dtype,
    pub shards: usize,
    pub layout: Layout,
    pub seed: u64,
}

impl Spec {
    /// Small but Phi-2 shaped: head_dim 32 (rotary 16), rows a multiple of 256 so
    /// that every K-quant applies.
    pub fn tiny() -> Spec {
        Spec {
            vocab: 51200,
            hidden: 256,
            intermediate: 512,
            layers: 2,
            heads: 8,
            kv_heads: 8,
            context: 512,
            partial_rotary_factor: 0.5,
            rope_theta: 10000.0,
            dtype: Dtype::F16,
            shards: 1,
            layout: Layout::Hf,
            seed: 1,
        }
    }

    /// The real Phi-2's shapes: 2.78 B parameters.
    pub fn full() -> Spec {
        Spec {
            vocab: 51200,
            hidden: 2560,
            intermediate: 10240,
            layers: 32,
            heads: 32,
            kv_heads: 32,
            context: 2048,
            partial_rotary_factor: 0.4,
            ..Spec::tiny()
        }
    }

    fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// One logical tensor: name, PyTorch shape, how to draw its values.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    /// Seeds of the parts concatenated by rows (one part, or q/k/v of a fused Wqkv).
    parts: Vec<(u64, usize)>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Weight,
    Bias,
    NormWeight,
}

fn seed_of(spec_seed: u64, key: &str) -> u64 {
    key.bytes().fold(spec_seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Collects the tensors of one checkpoint. Seeds come from the logical (HF) name, so
/// both layouts hold the same numbers.
struct Builder<'a> {
    spec: &'a Spec,
    out: Vec<Tensor>,
}

impl Builder<'_> {
    fn name(&self, hf: &str, msft: &str, suffix: &str) -> String {
        let stem = if self.spec.layout == Layout::Msft {
            msft
        } else {
            hf
        };
        format!("{stem}.{suffix}")
    }

    fn push(&mut self, name: String, shape: Vec<usize>, parts: &[(String, usize)], kind: Kind) {
        let parts = parts
            .iter()
            .map(|(k, rows)| (seed_of(self.spec.seed, k), *rows))
            .collect();
        self.out.push(Tensor {
            name,
            shape,
            parts,
            kind,
        });
    }

    /// A linear layer (`cols` > 0) or a LayerNorm (`cols` == 0): weight and bias.
    fn layer(&mut self, hf: &str, msft: &str, rows: usize, cols: usize) {
        let (shape, kind) = if cols == 0 {
            (vec![rows], Kind::NormWeight)
        } else {
            (vec![rows, cols], Kind::Weight)
        };
        let w = self.name(hf, msft, "weight");
        self.push(w, shape, &[(format!("{hf}.weight"), rows)], kind);
        let b = self.name(hf, msft, "bias");
        self.push(b, vec![rows], &[(format!("{hf}.bias"), rows)], Kind::Bias);
    }

    /// q, k, v: three tensors, or phi-msft's one fused `Wqkv` holding the same rows.
    fn qkv(&mut self, hf: &str, msft: &str, q_rows: usize, kv_rows: usize) {
        let parts = [("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)];
        if self.spec.layout == Layout::Hf {
            for (p, rows) in parts {
                self.layer(&format!("{hf}.{p}"), "", rows, self.spec.hidden);
            }
            return;
        }
        let rows = q_rows + 2 * kv_rows;
        for (suffix, shape, kind) in [
            ("weight", vec![rows, self.spec.hidden], Kind::Weight),
            ("bias", vec![rows], Kind::Bias),
        ] {
            let keys: Vec<(String, usize)> = parts
                .iter()
                .map(|(p, r)| (format!("{hf}.{p}.{suffix}"), *r))
                .collect();
            self.push(format!("{msft}.{suffix}"), shape, &keys, kind);
        }
    }
}

fn tensors(spec: &Spec) -> Vec<Tensor> {
    let (h, f, v) = (spec.hidden, spec.intermediate, spec.vocab);
    let q_rows = spec.heads * spec.head_dim();
    let kv_rows = spec.kv_heads * spec.head_dim();
    let mut b = Builder {
        spec,
        out: Vec::new(),
    };
    let emb = b.name("model.embed_tokens", "transformer.embd.wte", "weight");
    b.push(
        emb,
        vec![v, h],
        &[("model.embed_tokens.weight".into(), v)],
        Kind::Weight,
    );
    for l in 0..spec.layers {
        let (hf, ms) = (format!("model.layers.{l}"), format!("transformer.h.{l}"));
        b.layer(&format!("{hf}.input_layernorm"), &format!("{ms}.ln"), h, 0);
        b.qkv(
            &format!("{hf}.self_attn"),
            &format!("{ms}.mixer.Wqkv"),
            q_rows,
            kv_rows,
        );
        b.layer(
            &format!("{hf}.self_attn.dense"),
            &format!("{ms}.mixer.out_proj"),
            h,
            q_rows,
        );
        b.layer(&format!("{hf}.mlp.fc1"), &format!("{ms}.mlp.fc1"), f, h);
        b.layer(&format!("{hf}.mlp.fc2"), &format!("{ms}.mlp.fc2"), h, f);
    }
    b.layer("model.final_layernorm", "lm_head.ln", h, 0);
    b.layer("lm_head", "lm_head.linear", v, h);
    b.out
}

/// Values a trained Phi-2 roughly has: weights ~N(0, 0.02²), LayerNorm gains near 1.
/// Rounded to bfloat16 inside F16's normal range, so all three dtypes agree exactly.
fn value(rng: &mut u64, kind: Kind) -> f32 {
    let mut next = || {
        *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    let normal = (next() + next() + next() + next() - 2.0) * 1.732;
    let x = match kind {
        Kind::Weight => normal * 0.05,
        Kind::Bias => normal * 0.02,
        Kind::NormWeight => 1.0 + normal * 0.1,
    };
    let x = half::bf16::from_f32(x).to_f32();
    if x.abs() < 1e-4 { 0.0 } else { x }
}

fn encode_tensor(
    t: &Tensor,
    dtype: Dtype,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let cols = if t.shape.len() == 2 { t.shape[1] } else { 1 };
    let mut buf = Vec::with_capacity(1 << 20);
    for &(seed, rows) in &t.parts {
        let mut rng = seed;
        for _ in 0..rows * cols {
            dtype.encode(value(&mut rng, t.kind), &mut buf);
            if buf.len() >= 1 << 20 {
                sink(&buf)?;
                buf.clear();
            }
        }
    }
    sink(&buf)
}

/// Writes a checkpoint folder for `spec` into `dir`, copying the tokenizer files from
/// `tokenizer_dir`. Returns the weight files written.
pub fn write(dir: &Path, spec: &Spec, tokenizer_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    for f in [
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "added_tokens.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tokenizer_dir.join(f), dir.join(f))?;
    }
    std::fs::write(dir.join("config.json"), config_json(spec))?;
    let all = tensors(spec);
    let shards = spec.shards.max(1);
    let names: Vec<String> = if shards == 1 {
        vec!["model.safetensors".into()]
    } else {
        (1..=shards)
            .map(|i| format!("model-{i:05}-of-{shards:05}.safetensors"))
            .collect()
    };
    // Round-robin: a weight and its bias land in different shards.
    let mut weight_map = serde_json::Map::new();
    let mut paths = Vec::new();
    for (s, name) in names.iter().enumerate() {
        let mine: Vec<&Tensor> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % shards == s)
            .map(|(_, t)| t)
            .collect();
        for t in &mine {
            weight_map.insert(t.name.clone(), serde_json::Value::String(name.clone()));
        }
        let path = dir.join(name);
        write_safetensors(&path, &mine, spec.dtype)?;
        paths.push(path);
    }
    if shards > 1 {
        let index =
            serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    }
    Ok(paths)
}

fn write_safetensors(path: &Path, tensors: &[&Tensor], dtype: Dtype) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for t in tensors {
        let n: usize = t.shape.iter().product::<usize>() * dtype.size();
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": dtype.name(), "shape": t.shape, "data_offsets": [offset, offset + n] }),
        );
        offset += n;
    }
    let mut text = serde_json::to_string(&header)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut w = BufWriter::with_capacity(1 << 22, File::create(path)?);
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(text.as_bytes())?;
    for t in tensors {
        encode_tensor(t, dtype, &mut |b| w.write_all(b))?;
    }
    w.flush()
}

fn config_json(spec: &Spec) -> String {
    let json = match spec.layout {
        Layout::Hf => serde_json::json!({
            "architectures": ["PhiForCausalLM"],
            "model_type": "phi",
            "vocab_size": spec.vocab,
            "hidden_size": spec.hidden,
            "intermediate_size": spec.intermediate,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.kv_heads,
            "max_position_embeddings": spec.context,
            "layer_norm_eps": 1e-5,
            "partial_rotary_factor": spec.partial_rotary_factor,
            "rope_theta": spec.rope_theta,
            "hidden_act": "gelu_new",
            "qk_layernorm": false,
            "tie_word_embeddings": false,
            "bos_token_id": 50256,
            "eos_token_id": 50256,
            "torch_dtype": spec.dtype.torch(),
        }),
        Layout::Msft => serde_json::json!({
            "architectures": ["PhiForCausalLM"],
            "model_type": "phi-msft",
            "vocab_size": spec.vocab,
            "n_embd": spec.hidden,
            "n_inner": spec.intermediate,
            "n_layer": spec.layers,
            "n_head": spec.heads,
            "n_head_kv": spec.kv_heads,
            "n_positions": spec.context,
            "layer_norm_epsilon": 1e-5,
            "rotary_dim": (spec.head_dim() as f64 * spec.partial_rotary_factor) as usize,
            "torch_dtype": spec.dtype.torch(),
        }),
    };
    serde_json::to_string_pretty(&json).expect("json")
}
