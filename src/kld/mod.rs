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

pub use file::{BaseFile, BaseWriter, scored_rows};
pub use stats::{KldReport, KldStats, Summary};

use std::path::PathBuf;

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
}

/// ggml's `nearest_int` as llama-perplexity uses it (no range assert).
#[inline]
fn nearest_int(x: f32) -> i32 {
    let biased = (x + 12_582_912.0f32).to_bits();
    (biased & 0x007f_ffff) as i32 - 0x0040_0000
}
