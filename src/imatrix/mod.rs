//! Importance matrices: for every weight matrix, the sum over calibration tokens of
//! each input column's squared activation, and the number of tokens, as llama.cpp's
//! `llama-imatrix` collects them; and the per-column weights `llama-quantize` derives
//! from them (see [`Imatrix::weights`]).
//!
//! Files are read and written in both of llama.cpp's formats ([`file`]): the GGUF one
//! (`<tensor>.in_sum2`, `<tensor>.counts`, `imatrix.*` metadata) and the legacy `.dat`.

mod collect;
mod file;

pub use collect::Collector;
pub use file::{is_gguf, read, write_dat, write_gguf};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One weight matrix's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// GGUF format: Σ x² per input column (one row of `columns` per expert; Phi-2
    /// has one). Legacy format: the stored values, `(Σ x² / count) · ncall`.
    pub sums: Vec<f32>,
    /// GGUF format: tokens seen, one per expert. Legacy format: `[ncall]`.
    pub counts: Vec<f32>,
}

/// Which of llama.cpp's two formats the numbers are in (they are scaled differently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gguf,
    /// `.dat`, as `llama-imatrix --output-format dat` writes it.
    Dat,
}

/// An importance matrix: entries by weight tensor name (`blk.0.attn_qkv.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct Imatrix {
    pub format: Format,
    pub entries: BTreeMap<String, Entry>,
    /// The calibration files it was computed from.
    pub datasets: Vec<String>,
    /// Chunks of `chunk_size` tokens that went into it.
    pub chunk_count: u32,
    /// Tokens per chunk (0 in a legacy file, which does not record it).
    pub chunk_size: u32,
}

/// A file that is not an importance matrix phiq can use, with what is wrong where.
#[derive(Debug, thiserror::Error)]
pub enum ImatrixError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Gguf {
        path: PathBuf,
        error: Box<crate::gguf::GgufError>,
    },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{}: entry {entry:?}: {what}", path.display())]
    BadEntry {
        path: PathBuf,
        entry: String,
        what: String,
    },
}

impl Imatrix {
    /// The per-column importance `llama-quantize` uses for tensor `name`: GGUF sums
    /// divided by their count (1 for an expert that saw no token), legacy values
    /// divided by `ncall`. `None` when the matrix has no entry for `name`.
    pub fn weights(&self, name: &str) -> Option<Vec<f32>> {
        let e = self.entries.get(name)?;
        Some(match self.format {
            Format::Gguf => {
                let per = e.sums.len() / e.counts.len().max(1);
                e.sums
                    .chunks(per.max(1))
                    .zip(&e.counts)
                    .flat_map(|(s, &c)| {
                        let c = c.round();
                        s.iter().map(move |&v| if c > 0.0 { v / c } else { 1.0 })
                    })
                    .collect()
            }
            Format::Dat => {
                let ncall = e.counts.first().copied().unwrap_or(0.0);
                if ncall > 0.0 {
                    e.sums.iter().map(|&v| v / ncall).collect()
                } else {
                    e.sums.clone()
                }
            }
        })
    }
}
