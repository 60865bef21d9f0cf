//! `--imatrix`: an importance matrix (llama.cpp's GGUF or legacy file) matched to the
//! planned tensors before any output is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phiq::gguf::MetaValue;
use phiq::imatrix::{self, Imatrix};
use phiq::quant::GgmlType;

use crate::convert::Plan;
use crate::error::{ConvertError, Result};
use crate::names::Role;

/// Per-column importance for the tensors that have it.
pub struct Importance {
    weights: HashMap<String, Vec<f32>>,
    metadata: Vec<(String, MetaValue)>,
}

/// What `--imatrix` did, for the command's summary.
pub struct ImportanceSummary {
    pub file: PathBuf,
    pub entries: usize,
    pub chunks: u32,
    pub datasets: Vec<String>,
    /// Quantized tensors that got their weights.
    pub weighted: usize,
    /// Quantized weight matrices (not the embeddings or the output, which
    /// llama-imatrix leaves out by default) the matrix has no entry for.
    pub missing: Vec<String>,
}

impl Importance {
    pub fn none() -> Importance {
        Importance {
            weights: HashMap::new(),
            metadata: Vec::new(),
        }
    }

    /// Reads `path` and takes, for every quantized tensor of `plan`, its entry (a
    /// fused QKV also takes a split q's, and the reverse, as all read the same input).
    /// An entry whose length is not the tensor's row length is an error, as in
    /// llama-quantize.
    pub fn open(path: &Path, plan: &Plan) -> Result<(Importance, ImportanceSummary)> {
        let m = imatrix::read(path)?;
        let mut weights = HashMap::new();
        let mut missing = Vec::new();
        for t in plan
            .tensors
            .iter()
            .filter(|t| weighted_type(t.ty) && t.shape.len() == 2)
        {
            let Some(w) = lookup(&m, &t.name) else {
                if !matches!(t.id.role, Role::TokenEmbd | Role::Output) {
                    missing.push(t.name.clone());
                }
                continue;
            };
            if w.len() != t.row_len() {
                return Err(ConvertError::Input {
                    path: path.to_path_buf(),
                    why: format!(
                        "the entry for tensor {:?} has {} columns, the tensor's rows have {}: \
                         an importance matrix of another model",
                        t.name,
                        w.len(),
                        t.row_len()
                    ),
                });
            }
            weights.insert(t.name.clone(), w);
        }
        let summary = ImportanceSummary {
            file: path.to_path_buf(),
            entries: m.entries.len(),
            chunks: m.chunk_count,
            datasets: m.datasets.clone(),
            weighted: weights.len(),
            missing,
        };
        Ok((
            Importance {
                weights,
                metadata: provenance(path, &m),
            },
            summary,
        ))
    }

    /// The importance of tensor `name`'s columns, if it has any.
    pub fn for_tensor(&self, name: &str) -> Option<&[f32]> {
        self.weights.get(name).map(Vec::as_slice)
    }

    /// The mean column importance of the matrices that read a layer-normed input
    /// (attn_qkv or attn_q, ffn_up), if the matrix has any: the weight the budget gives
    /// the columns of a matrix with no entry of its own that reads one too (the output).
    pub fn mean_for_normed_inputs(&self) -> Option<f32> {
        let (sum, n) = self
            .weights
            .iter()
            .filter(|(name, _)| {
                ["attn_qkv.weight", "attn_q.weight", "ffn_up.weight"]
                    .iter()
                    .any(|s| name.ends_with(s))
            })
            .flat_map(|(_, w)| w)
            .fold((0f64, 0usize), |(s, n), &w| (s + f64::from(w), n + 1));
        (n > 0).then(|| (sum / n as f64) as f32)
    }

    /// The keys llama-quantize adds to a file quantized with an importance matrix.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }
}

/// The types ggml quantizes differently under importance weights.
fn weighted_type(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
    )
}

fn lookup(m: &Imatrix, name: &str) -> Option<Vec<f32>> {
    m.weights(name).or_else(|| {
        let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
        let siblings: &[&str] = match rest {
            "attn_qkv.weight" => &["attn_q", "attn_k", "attn_v"],
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => &["attn_qkv"],
            _ => &[],
        };
        siblings
            .iter()
            .find_map(|s| m.weights(&format!("blk.{layer}.{s}.weight")))
    })
}

/// `quantize.imatrix.*`, as llama-quantize writes them (strings cut at 127 bytes).
fn provenance(path: &Path, m: &Imatrix) -> Vec<(String, MetaValue)> {
    let cut = |s: &str| {
        let mut end = s.len().min(127);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        MetaValue::String(s[..end].to_string())
    };
    let mut kv = vec![(
        "quantize.imatrix.file".to_string(),
        cut(&path.display().to_string()),
    )];
    if let Some(d) = m.datasets.first() {
        kv.push(("quantize.imatrix.dataset".into(), cut(d)));
    }
    kv.push((
        "quantize.imatrix.entries_count".into(),
        MetaValue::U32(m.entries.len() as u32),
    ));
    if m.chunk_count > 0 {
        kv.push((
            "quantize.imatrix.chunks_count".into(),
            MetaValue::U32(m.chunk_count),
        ));
    }
    kv
}
