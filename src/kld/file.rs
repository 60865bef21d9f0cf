//! llama-perplexity's base log-probability file (`--kl-divergence-base`):
//!
//! ```text
//! "_logits_"  i32 n_ctx  i32 n_vocab  i32 n_chunk  i32 tokens[n_chunk · n_ctx]
//! per chunk, per scored position (n_ctx - 1 - n_ctx/2 of them), nv = 2·⌈n_vocab/2⌉ + 4 u16:
//!     f32 scale, f32 min_log_prob, then n_vocab u16 levels (padded to even):
//!     log p(i) ≈ scale · level(i) + min_log_prob, over the top 16 nats of the logits.
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{KldError, nearest_int};

const MAGIC: &[u8; 8] = b"_logits_";
const HEADER: usize = 8 + 3 * 4;

/// Positions scored per chunk of `n_ctx`: llama-perplexity's second half.
pub fn scored_rows(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// u16 per stored row.
fn row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Writes a base file row by row (to a temporary file renamed by [`BaseWriter::finish`]).
pub struct BaseWriter {
    out: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    n_vocab: usize,
    row: Vec<u16>,
    rows_left: usize,
}

impl BaseWriter {
    /// Starts `path` for `n_chunk` chunks of `n_ctx` of `tokens` (at least that many).
    pub fn create(
        path: &Path,
        n_ctx: usize,
        n_vocab: usize,
        n_chunk: usize,
        tokens: &[u32],
    ) -> Result<BaseWriter, KldError> {
        let tmp = path.with_extension("partial");
        let io = |error| KldError::Io {
            path: tmp.clone(),
            error,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut head = MAGIC.to_vec();
        for v in [n_ctx, n_vocab, n_chunk] {
            head.extend_from_slice(&(v as i32).to_le_bytes());
        }
        for &t in &tokens[..n_chunk * n_ctx] {
            head.extend_from_slice(&(t as i32).to_le_bytes());
        }
        out.write_all(&head).map_err(io)?;
        Ok(BaseWriter {
            out,
            tmp: tmp.clone(),
            path: path.to_path_buf(),
            n_vocab,
            row: vec![0; row_len(n_vocab)],
            rows_left: n_chunk * scored_rows(n_ctx),
        })
    }

    /// Stores one scored position's logits; returns the NLL of `next` (the token
    /// that follows), as llama-perplexity's perplexity run sums it.
    pub fn push(&mut self, logits: &[f32], next: u32) -> Result<f64, KldError> {
        assert_eq!(
            logits.len(),
            self.n_vocab,
            "a row of the model's vocabulary"
        );
        assert!(self.rows_left > 0, "more rows than the header promised");
        let nll = encode_row(logits, next as usize, &mut self.row);
        let bytes: Vec<u8> = self.row.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.out.write_all(&bytes).map_err(|error| KldError::Io {
            path: self.tmp.clone(),
            error,
        })?;
        self.rows_left -= 1;
        Ok(nll)
    }

    /// Flushes and renames the file into place once every row is written.
    pub fn finish(mut self) -> Result<PathBuf, KldError> {
        assert_eq!(self.rows_left, 0, "rows missing from the base file");
        let io = |path: &Path, error| KldError::Io {
            path: path.to_path_buf(),
            error,
        };
        self.out.flush().map_err(|e| io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io(&self.path, e))?;
        Ok(self.path.clone())
    }
}

impl Drop for BaseWriter {
    /// A run that stops early leaves no partial file behind.
    fn drop(&mut self) {
        if self.rows_left > 0 {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// llama-perplexity's `log_softmax` that stores a row: the log-probabilities of the
/// top 16 nats of logits as 16-bit levels under an f32 scale and offset.
fn encode_row(logits: &[f32], next: usize, row: &mut [u16]) -> f64 {
    let (mut max, mut min) = (logits[0], logits[0]);
    for &v in &logits[1..] {
        max = max.max(v);
        min = min.min(v);
    }
    min = min.max(max - 16.0);
    let sum_exp: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    row[..2].copy_from_slice(&split(scale));
    row[2..4].copy_from_slice(&split(min_log_prob));
    let levels = &mut row[4..];
    levels.fill(0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (l, &v) in levels.iter_mut().zip(logits) {
            // C stores the int in a uint16_t: the truncation is part of the format.
            *l = if v > min {
                nearest_int(inv * (v - min)) as u16
            } else {
                0
            };
        }
    }
    // In f32, as C computes it before returning a double.
    f64::from(max + log_sum_exp - logits[next])
}

fn split(v: f32) -> [u16; 2] {
    let b = v.to_le_bytes();
    [
        u16::from_le_bytes([b[0], b[1]]),
        u16::from_le_bytes([b[2], b[3]]),
    ]
}

/// A base file read whole and checked: its length matches its header exactly and
/// every token is inside its vocabulary.
pub struct BaseFile {
    pub path: PathBuf,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
    rows: Vec<u16>,
}

/// One stored row: `log p(i) = scale · levels[i] + min_log_prob`.
pub struct BaseRow<'a> {
    pub scale: f32,
    pub min_log_prob: f32,
    pub levels: &'a [u16],
}

impl BaseFile {
    pub fn open(path: &Path) -> Result<BaseFile, KldError> {
        let bytes = std::fs::read(path).map_err(|error| KldError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        let bad = |what: String| KldError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a base log-probability file (llama-perplexity's --kl-divergence-base \
                 files start with \"_logits_\")"
                    .into(),
            ));
        }
        let int = |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let (n_ctx, n_vocab, n_chunk) = (int(8), int(12), int(16));
        if n_ctx < 2 || n_vocab < 1 || n_chunk < 1 {
            return Err(bad(format!(
                "impossible header: n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk}"
            )));
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let n_tokens = n_ctx.checked_mul(n_chunk);
        let need = n_tokens.and_then(|t| {
            let rows = n_chunk.checked_mul(scored_rows(n_ctx))?;
            HEADER
                .checked_add(t.checked_mul(4)?)?
                .checked_add(rows.checked_mul(row_len(n_vocab))?.checked_mul(2)?)
        });
        match need {
            Some(need) if need == bytes.len() => {}
            Some(need) => {
                return Err(bad(format!(
                    "{} bytes, but {n_chunk} chunk(s) of {n_ctx} tokens over a vocabulary of \
                     {n_vocab} need {need}: {}",
                    bytes.len(),
                    if bytes.len() < need {
                        "truncated"
                    } else {
                        "trailing bytes"
                    }
                )));
            }
            None => return Err(bad("header sizes overflow".into())),
        }
        let n_tokens = n_ctx * n_chunk;
        let tokens: Vec<u32> = bytes[HEADER..HEADER + 4 * n_tokens]
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        if let Some(i) = tokens.iter().position(|&t| t as usize >= n_vocab) {
            return Err(bad(format!(
                "token {} at position {i} is outside the vocabulary of {n_vocab}",
                tokens[i] as i32
            )));
        }
        let rows = bytes[HEADER + 4 * n_tokens..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(BaseFile {
            path: path.to_path_buf(),
            n_ctx,
            n_vocab,
            n_chunk,
            tokens,
            rows,
        })
    }

    /// Stored row `r` of chunk `chunk` (scored position `n_ctx/2 + r`).
    pub fn row(&self, chunk: usize, r: usize) -> BaseRow<'_> {
        let nv = row_len(self.n_vocab);
        let at = (chunk * scored_rows(self.n_ctx) + r) * nv;
        let row = &self.rows[at..at + nv];
        let f = |i: usize| {
            f32::from_le_bytes([
                row[i].to_le_bytes()[0],
                row[i].to_le_bytes()[1],
                row[i + 1].to_le_bytes()[0],
                row[i + 1].to_le_bytes()[1],
            ])
        };
        BaseRow {
            scale: f(0),
            min_log_prob: f(2),
            levels: &row[4..4 + self.n_vocab],
        }
    }
}
