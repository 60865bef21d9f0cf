//! Quantization quality as llama-perplexity measures it: a base model's next-token
//! log-probabilities stored once ([`file`], llama.cpp's `--kl-divergence-base` format),
//! then another model's predictions of the same tokens compared against them
//! ([`stats`]: perplexity ratio, KL divergence and its percentiles, Δp, same top token).
//!
//! Both score llama-perplexity's way: each chunk of `n_ctx` tokens is evaluated from an
//! empty cache and only the predictions of its second half count (positions
//! `n_ctx/2 .. n_ctx-2` predicting the token after each), so every scored token has
//! at least half a window of context.

mod file;
mod stats;

pub use file::{BaseFile, BaseRow, BaseWriter, scored_rows};
pub use stats::{KldReport, KldStats, Summary};

use std::path::PathBuf;

use crate::model::{Logits, Session};

/// A base file that cannot be read or does not match the model or text it is used with.
#[derive(Debug, thiserror::Error)]
pub enum KldError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// One scored position: row `row` of chunk `chunk` (position `n_ctx/2 + row`), its
/// logits and the token that follows it.
pub struct Scored<'a> {
    pub chunk: usize,
    pub row: usize,
    pub logits: &'a [f32],
    pub next: u32,
}

/// Evaluates the first `n_chunk` chunks of `n_ctx` of `tokens`, each from an empty
/// cache, in batches of `batch`, handing `each` every scored position.
pub fn for_each_scored(
    s: &mut Session,
    tokens: &[u32],
    n_ctx: usize,
    n_chunk: usize,
    batch: usize,
    each: &mut dyn FnMut(Scored) -> Result<(), KldError>,
) -> Result<(), KldError> {
    let n_vocab = s.model().hp.n_vocab;
    let first = n_ctx / 2;
    for (c, chunk) in tokens.chunks_exact(n_ctx).take(n_chunk).enumerate() {
        s.truncate(0);
        let mut logits = Vec::with_capacity(n_ctx * n_vocab);
        for part in chunk.chunks(batch.max(1)) {
            logits.extend(s.eval(part, Logits::All)?);
        }
        let scored = &logits[first * n_vocab..(n_ctx - 1) * n_vocab];
        for (r, logits) in scored.chunks_exact(n_vocab).enumerate() {
            each(Scored {
                chunk: c,
                row: r,
                logits,
                next: chunk[first + r + 1],
            })?;
        }
    }
    Ok(())
}

/// ggml's `nearest_int` as llama-perplexity uses it (no range assert).
#[inline]
fn nearest_int(x: f32) -> i32 {
    let biased = (x + 12_582_912.0f32).to_bits();
    (biased & 0x007f_ffff) as i32 - 0x0040_0000
}
