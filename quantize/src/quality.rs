//! `--report`: which type to ship. A base model's log-probabilities on a text, then
//! each quantized file's KL divergence from them (llama-perplexity's statistics,
//! [`phiq::kld`]), with its size and the memory a run at a given context would take.

use std::path::{Path, PathBuf};

use phiq::kld::{BaseFile, BaseWriter, KldReport, KldStats, Scored, for_each_scored};
use phiq::model::{KvType, MemoryEstimate, Model};
use phiq::tokenizer::Tokenizer;

use crate::error::{ConvertError, Result};

/// How the models are scored.
#[derive(Clone, Debug)]
pub struct Scoring {
    /// Tokens per chunk (llama-perplexity's `-c`; 512 for its published tables).
    pub n_ctx: usize,
    /// At most this many chunks of the text.
    pub chunks: Option<usize>,
    pub batch: usize,
}

/// One row of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QualityRow {
    pub file_type: String,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    /// Weights, F16 KV cache and scratch at `ctx` tokens, as `phiq run` estimates them.
    pub memory_at_ctx: u64,
    pub kld: KldReport,
}

fn model_err(path: &Path, why: impl std::fmt::Display) -> ConvertError {
    ConvertError::Input {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

fn load(path: &Path) -> Result<Model> {
    Model::load(path).map_err(|e| model_err(path, e))
}

/// Scores `base_model` on `text` and writes its log-probabilities to `out`.
pub fn write_base(base_model: &Path, text: &Path, out: &Path, s: &Scoring) -> Result<BaseFile> {
    let model = load(base_model)?;
    let tok = Tokenizer::from_gguf(model.file()).map_err(|e| model_err(base_model, e))?;
    let text_s = std::fs::read_to_string(text).map_err(|error| ConvertError::Io {
        path: text.to_path_buf(),
        error,
    })?;
    let ids = tok.encode(&text_s).map_err(|e| model_err(text, e))?;
    let n_ctx = s.n_ctx.min(model.hp.n_ctx_train);
    let whole = ids.len() / n_ctx;
    if whole == 0 {
        return Err(model_err(
            text,
            format!(
                "{} tokens, fewer than one chunk of {n_ctx}: give a longer text or a smaller --ctx",
                ids.len()
            ),
        ));
    }
    let n_chunk = s.chunks.map_or(whole, |c| c.min(whole));
    let kld = |e| model_err(out, e);
    let mut w = BaseWriter::create(out, n_ctx, model.hp.n_vocab, n_chunk, &ids).map_err(kld)?;
    let mut session = model
        .session(n_ctx, KvType::F16)
        .map_err(|e| model_err(base_model, e))?;
    for_each_scored(
        &mut session,
        &ids,
        n_ctx,
        n_chunk,
        s.batch,
        &mut |p: Scored| w.push(p.logits, p.next).map(|_| ()),
    )
    .map_err(kld)?;
    w.finish().map_err(kld)?;
    BaseFile::open(out).map_err(kld)
}

/// The KL statistics of `model` against `base`, and its memory estimate at `ctx`.
pub fn compare(
    model_path: &Path,
    base: &BaseFile,
    s: &Scoring,
    ctx: usize,
) -> Result<(KldReport, MemoryEstimate)> {
    let model = load(model_path)?;
    let mut session = model
        .session(base.n_ctx, KvType::F16)
        .map_err(|e| model_err(model_path, e))?;
    let mut stats = KldStats::default();
    for_each_scored(
        &mut session,
        &base.tokens,
        base.n_ctx,
        base.n_chunk,
        s.batch,
        &mut |p: Scored| {
            stats.push(p.logits, &base.row(p.chunk, p.row), p.next);
            Ok(())
        },
    )
    .map_err(|e| model_err(model_path, e))?;
    Ok((
        stats.report(),
        model.memory_estimate(ctx, KvType::F16, s.batch),
    ))
}

/// The table, one line per type.
pub fn table(rows: &[QualityRow], ctx: usize) -> String {
    let mut out = format!(
        "{:<8} {:>9} {:>6} {:>12} {:>10} {:>10} {:>9} {:>12}\n",
        "type",
        "size",
        "bpw",
        "PPL",
        "mean KLD",
        "99% KLD",
        "same top",
        format!("RSS@{ctx}")
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8} {:>9} {:>6.2} {:>12.4} {:>10.6} {:>10.6} {:>8.2}% {:>12}\n",
            r.file_type,
            mb(r.file_bytes),
            r.bits_per_weight,
            r.kld.ppl.value,
            r.kld.kld.value,
            r.kld.kld_99,
            100.0 * r.kld.same_top.value,
            mb(r.memory_at_ctx)
        ));
    }
    out
}

fn mb(b: u64) -> String {
    format!("{} MB", b / 1_000_000)
}
