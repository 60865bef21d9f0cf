//! Whether a run fits the memory it has, decided from the file's header before any
//! weight is loaded: the same estimate `phiq run` prints ([`memory_estimate`]).
//!
//! An unset context shrinks to the largest whole number of steps that fits (said on
//! stderr by the caller, with the numbers); a context the user set that does not fit,
//! or weights that alone do not fit, stop the run before loading, with the flags that
//! would fit. An OOM kill in the middle of a conversation is the failure this avoids.

use std::path::Path;

use super::{Hparams, KvType, MemoryEstimate, ModelError, Result};
use crate::gguf::{GgufFile, Load};
use crate::kernels::matmul::packed_len;
use crate::kernels::{self, Kernels};
use crate::quant::GgmlType;

/// Bytes a `rows` x `cols` weight of `ty` holds in memory once loaded with kernels
/// `k`: a matrix the path repacks takes its tiles (each SIMD path's layouts keep the
/// same bytes per row, see `kernels::tile::layout`, so this holds on every board),
/// 64-byte aligned; the embedding table and vectors stay in the mapped file.
pub fn resident_bytes(k: &Kernels, ty: GgmlType, rows: usize, cols: usize, matrix: bool) -> u64 {
    let raw = ty.row_bytes(cols as u64).unwrap_or(0) * rows as u64;
    match packed_len(k, ty, rows, cols) {
        Some(p) if matrix => (p as u64).next_multiple_of(64),
        _ => raw,
    }
}

/// Whether the model repacks tensor `name` (every matrix but the embedding table).
pub fn is_packed_matrix(name: &str, n_dims: usize) -> bool {
    n_dims == 2 && name != "token_embd.weight"
}

/// What a mapped model file takes in memory once loaded with kernels `k` (the file,
/// its matrices' pages replaced by their repacked copies); a file read into memory
/// (`--no-mmap`) is not repacked and takes its length.
pub fn resident_weights(f: &GgufFile, k: &Kernels) -> u64 {
    let len = f.file_len();
    if f.load_mode() != Load::Map {
        return len;
    }
    f.tensors
        .iter()
        .filter(|t| is_packed_matrix(&t.name, t.shape.len()))
        .fold(len, |n, t| {
            let packed = resident_bytes(k, t.ty, t.n_rows() as usize, t.row_len() as usize, true);
            (n - t.n_bytes.min(n)).saturating_add(packed)
        })
}

/// What the process holds besides weights, cache and activations: the binary, the
/// tokenizer's tables, the file's header pages, thread stacks and the allocator's
/// slack (`phiq run` of the 4 MB dev model peaks at 35 MB of RSS).
pub const PROCESS_BYTES: u64 = 32_000_000;

/// Memory a run of a model with hyperparameters `hp` and `weights` bytes of tensors
/// needs with `n_ctx` positions and prompt batches of `batch` tokens.
pub fn memory_estimate(
    hp: &Hparams,
    weights: u64,
    n_ctx: usize,
    kv: KvType,
    batch: usize,
) -> MemoryEstimate {
    let kv_row = kv.row_bytes(hp.kv_dim()).unwrap_or(hp.kv_dim() * 4) as u64;
    let t = batch.min(n_ctx) as u64;
    // Per batch: activations of every width the graph has, plus the f32 keys and
    // values attention reads for one layer, plus one row of logits.
    let widths = (4 * hp.n_embd + 2 * hp.kv_dim() + 2 * hp.n_ff) as u64;
    let activations = 4 * (t * widths + 2 * n_ctx as u64 * hp.kv_dim() as u64 + hp.n_vocab as u64);
    let scratch = activations + PROCESS_BYTES;
    MemoryEstimate {
        weights,
        kv_cache: 2 * hp.n_layer as u64 * n_ctx as u64 * kv_row,
        scratch,
    }
}

/// What [`plan`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    pub n_ctx: usize,
    /// The trained context it was shrunk from, when it was.
    pub shrunk_from: Option<usize>,
    pub need: MemoryEstimate,
}

/// The header facts [`plan`] needs, read without loading weights.
pub struct Header {
    pub hp: Hparams,
    pub weights: u64,
}

impl Header {
    /// Maps `path` for its header alone (no page of weights is touched).
    pub fn read(path: impl AsRef<Path>) -> Result<Header> {
        let f = GgufFile::open(path)?;
        Ok(Header {
            hp: Hparams::from_gguf(&f)?,
            weights: resident_weights(&f, kernels::kernels()?),
        })
    }

    /// The same facts of a loaded model (a file read rather than mapped, `--no-mmap`,
    /// is known only once read: its fit is decided before the KV cache is allocated).
    pub fn of(model: &super::Model) -> Header {
        Header {
            hp: model.hp.clone(),
            weights: resident_weights(model.file(), model.kernels()),
        }
    }
}

/// The step an unset context shrinks by: 256 positions for Phi-2's 2048.
fn step(n_ctx_train: usize) -> usize {
    (n_ctx_train / 8).clamp(16, 256)
}

/// The context to run with: `requested`, or the trained context, or (unset, when
/// that does not fit `avail`) the most whole steps that do. `Err` when nothing fits,
/// naming the flags that would. `avail` `None` (unknown) accepts the request.
pub fn plan(
    h: &Header,
    requested: Option<usize>,
    kv: KvType,
    batch: usize,
    avail: Option<u64>,
) -> Result<Fit> {
    let full = requested.unwrap_or(h.hp.n_ctx_train);
    let need = |n: usize, kv: KvType| memory_estimate(&h.hp, h.weights, n, kv, batch);
    let fits = |n: usize, kv: KvType| avail.is_none_or(|a| need(n, kv).total() <= a);
    if fits(full, kv) {
        return Ok(Fit {
            n_ctx: full,
            shrunk_from: None,
            need: need(full, kv),
        });
    }
    let avail = avail.unwrap_or(u64::MAX);
    let step = step(h.hp.n_ctx_train);
    let largest = |kv: KvType| {
        let mut n = full / step * step;
        while n >= step && !fits(n, kv) {
            n -= step;
        }
        (n >= step).then_some(n)
    };
    if requested.is_none()
        && let Some(n) = largest(kv)
    {
        return Ok(Fit {
            n_ctx: n,
            shrunk_from: Some(full),
            need: need(n, kv),
        });
    }
    let mut options = Vec::new();
    if let Some(n) = largest(kv) {
        options.push(format!("--ctx {n}"));
    }
    if kv != KvType::Q8_0 {
        if fits(full, KvType::Q8_0) {
            options.push(format!("--kv-type q8_0 (with --ctx {full})"));
        } else if let Some(n) = largest(KvType::Q8_0) {
            options.push(format!("--kv-type q8_0 --ctx {n}"));
        }
    }
    let mb = |b: u64| b.div_ceil(1_000_000);
    let file_hint = format!(
        "a smaller file: `phiq-quantize SOURCE -o OUT --fit-ram {}M --ctx {full}`",
        mb(avail)
    );
    options.push(file_hint);
    let n = need(full, kv);
    Err(ModelError::DoesNotFit {
        need: mb(n.total()),
        weights: mb(n.weights),
        kv: mb(n.kv_cache),
        n_ctx: full,
        avail: mb(avail),
        options: options.join("; or "),
    })
}

/// Parses a size as people write them: `2G`, `1.35G`, `400M`, `512K`, `1000000`
/// (decimal units, as the memory `phiq run` reports; `GiB`/`MiB`/`KiB` binary).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 2G, 1.35G, 400M)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (use K, M, G, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = value * mult;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{s:?} is not a usable size"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            hp: Hparams {
                n_vocab: 51200,
                n_ctx_train: 2048,
                n_embd: 2560,
                n_ff: 10240,
                n_layer: 32,
                n_head: 32,
                n_head_kv: 32,
                head_dim: 80,
                n_rot: 32,
                eps: 1e-5,
                rope_base: 1e4,
            },
            weights: 1_350_000_000,
        }
    }

    #[test]
    fn sizes_parse_in_decimal_and_binary_units() {
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.35G"), Ok(1_350_000_000));
        assert_eq!(parse_size("400M"), Ok(400_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("12345"), Ok(12345));
        for bad in ["", "G", "2X", "-1G", "0", "1e30G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fitting_run_keeps_its_context() {
        let h = header();
        let fit = plan(&h, None, KvType::F16, 512, Some(4_000_000_000)).unwrap();
        assert_eq!((fit.n_ctx, fit.shrunk_from), (2048, None));
        let fit = plan(&h, Some(300), KvType::F16, 512, None).unwrap();
        assert_eq!(fit.n_ctx, 300);
    }

    #[test]
    fn an_unset_context_shrinks_to_whole_steps_that_fit() {
        let h = header();
        let avail = 1_600_000_000;
        let fit = plan(&h, None, KvType::F16, 512, Some(avail)).unwrap();
        assert_eq!(fit.shrunk_from, Some(2048));
        assert_eq!(fit.n_ctx % 256, 0);
        assert!(fit.need.total() <= avail);
        let more = memory_estimate(&h.hp, h.weights, fit.n_ctx + 256, KvType::F16, 512);
        assert!(more.total() > avail, "{} would fit too", fit.n_ctx + 256);
    }

    #[test]
    fn a_set_context_that_does_not_fit_names_what_would() {
        let h = header();
        let err = plan(&h, Some(2048), KvType::F16, 512, Some(1_600_000_000)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--ctx 2048") && msg.contains("--ctx ") && msg.contains("q8_0"),
            "{msg}"
        );
        // Weights alone too large: only a smaller file helps.
        let err = plan(&h, None, KvType::F16, 512, Some(1_000_000_000)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--fit-ram 1000M"), "{msg}");
        assert!(!msg.contains("or --ctx"), "{msg}");
    }
}
