//! `phiq perplexity`: how well the model predicts a text, llama.cpp-style in chunks.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use phiq::model::Logits;
use serde_json::json;

use super::common::ModelArgs;

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score.
    #[arg(short, long, value_name = "FILE")]
    file: PathBuf,
    /// Print {"ppl", "mean_nll", "tokens", "chunks"} as JSON.
    #[arg(long)]
    json: bool,
}

/// Scores every next-token prediction inside each chunk of `--ctx` tokens, with no
/// BOS prepended (as the Hugging Face reference computes it); a text shorter than
/// the context is one chunk.
pub fn run(args: &PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let ids = tok.encode(&text)?;
    if ids.len() < 2 {
        bail!(
            "{}: {} token(s): perplexity needs at least 2",
            args.file.display(),
            ids.len()
        );
    }
    let n_ctx = args.model.n_ctx(model)?.max(2);
    let n_vocab = model.hp.n_vocab;
    let (mut nll, mut count, mut chunks) = (0f64, 0usize, 0usize);
    for chunk in ids.chunks(n_ctx).filter(|c| c.len() >= 2) {
        let mut s = model.session(chunk.len(), args.model.kv_type)?;
        let mut logits = Vec::with_capacity(chunk.len() * n_vocab);
        for part in chunk.chunks(args.model.batch) {
            logits.extend(s.eval(part, Logits::All)?);
        }
        for t in 0..chunk.len() - 1 {
            nll += token_nll(&logits[t * n_vocab..(t + 1) * n_vocab], chunk[t + 1]);
            count += 1;
        }
        chunks += 1;
        if !args.json {
            eprint!("[{chunks}]{:.4} ", (nll / count as f64).exp());
        }
    }
    let mean = nll / count as f64;
    if args.json {
        println!(
            "{}",
            json!({ "ppl": mean.exp(), "mean_nll": mean, "tokens": ids.len(), "chunks": chunks })
        );
    } else {
        eprintln!();
        println!(
            "perplexity {:.4} (mean NLL {mean:.6}) over {count} predictions of {} tokens in {chunks} chunk(s)",
            mean.exp(),
            ids.len()
        );
    }
    Ok(())
}

/// -log softmax(logits)[target], in f64.
pub(super) fn token_nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    lse - logits[target as usize] as f64
}
