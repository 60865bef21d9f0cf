//! What a budgeted file must fit (`--target-size`, `--target-bpw`, `--fit-ram`), the
//! bytes that leaves its tensors, and `--tensor-type PATTERN=TYPE` overrides.

use phiq::gguf::{TensorSpec, file_size};
use phiq::kernels::Kernels;
use phiq::model::fit::{is_packed_matrix, memory_estimate, resident_bytes};
use phiq::model::{Hparams, KvType, MemoryEstimate};
use phiq::quant::GgmlType;
use regex_lite::Regex;

use crate::budget::BudgetError;
use crate::convert::{Plan, PlannedTensor};

/// The limit a budgeted file is quantized to.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The whole file, in bytes.
    Size(u64),
    /// Bits per weight over all the tensors (as the summary prints them).
    Bpw(f64),
    /// `phiq run` at `n_ctx` positions with a `kv` cache, in `ram` bytes of which
    /// `reserve` stay with the OS.
    FitRam {
        ram: u64,
        reserve: u64,
        n_ctx: usize,
        kv: KvType,
        batch: usize,
    },
}

impl Target {
    /// Whether options are sized as in memory once loaded (else as in the file).
    pub fn in_memory(&self) -> bool {
        matches!(self, Target::FitRam { .. })
    }

    /// What tensor `t` takes of the budget as type `ty`: its bytes in the file
    /// (aligned), or for `--fit-ram` what it holds in memory once loaded.
    pub fn size_of(&self, k: &Kernels, alignment: u64, t: &PlannedTensor, ty: GgmlType) -> u64 {
        let (rows, cols) = (t.n_rows(), t.row_len());
        if self.in_memory() {
            let matrix = is_packed_matrix(&t.name, t.shape.len());
            let b = resident_bytes(k, ty, rows, cols, matrix);
            if matrix {
                b
            } else {
                b.next_multiple_of(alignment)
            }
        } else {
            (ty.row_bytes(cols as u64).unwrap_or(0) * rows as u64).next_multiple_of(alignment)
        }
    }

    /// The bytes the tensors may take: the target less the file's header (and, for
    /// `--fit-ram`, less the reserve, the KV cache and the scratch of a run).
    pub fn budget(&self, plan: &Plan) -> Result<u64, BudgetError> {
        let header = header_bytes(plan)?;
        let params: u64 = plan.tensors.iter().map(PlannedTensor::n_elements).sum();
        let short = |what: String| BudgetError::Invalid(what);
        match *self {
            Target::Size(size) => size.checked_sub(header).ok_or_else(|| {
                short(format!(
                    "--target-size {size} is smaller than the file's header alone ({header} bytes)"
                ))
            }),
            Target::Bpw(bpw) => Ok((bpw * params as f64 / 8.0).floor() as u64),
            Target::FitRam {
                ram,
                reserve,
                n_ctx,
                kv,
                batch,
            } => {
                let run = run_overhead(plan, n_ctx, kv, batch)?;
                let fixed = reserve + run.kv_cache + run.scratch + header;
                ram.checked_sub(fixed).ok_or_else(|| {
                    let kv_hint = if kv == KvType::Q8_0 { "" } else { ", or use --kv-type q8_0" };
                    short(format!(
                        "--fit-ram {} MB leaves nothing for the weights: the reserve ({} MB), the KV \
                         cache at --ctx {n_ctx} ({} MB) and scratch ({} MB) take it all; lower \
                         --ctx or --reserve{kv_hint}",
                        ram / 1_000_000,
                        reserve / 1_000_000,
                        run.kv_cache.div_ceil(1_000_000),
                        run.scratch.div_ceil(1_000_000)
                    ))
                })
            }
        }
    }
}

/// Bytes of the file that are not tensor data (its header, to the first tensor).
fn header_bytes(plan: &Plan) -> Result<u64, BudgetError> {
    let specs: Vec<TensorSpec> = plan
        .tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, t.ty, &t.shape))
        .collect();
    let alignment = alignment(plan);
    let data: u64 = plan
        .tensors
        .iter()
        .map(|t| {
            (t.ty.row_bytes(t.row_len() as u64).unwrap_or(0) * t.n_rows() as u64)
                .next_multiple_of(alignment)
        })
        .sum();
    let total =
        file_size(&plan.metadata, specs).map_err(|e| BudgetError::Invalid(e.to_string()))?;
    Ok(total.saturating_sub(data))
}

/// The plan's tensor alignment (`general.alignment`, else GGUF's 32).
pub fn alignment(plan: &Plan) -> u64 {
    plan.metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(32)
}

/// A run's KV cache and scratch (its weights left at 0), as `phiq run` estimates
/// them from the file this plan writes.
pub fn run_overhead(
    plan: &Plan,
    n_ctx: usize,
    kv: KvType,
    batch: usize,
) -> Result<MemoryEstimate, BudgetError> {
    Ok(memory_estimate(&hparams(plan)?, 0, n_ctx, kv, batch))
}

/// The hyperparameters `phiq run` will read from the plan's metadata.
pub fn hparams(plan: &Plan) -> Result<Hparams, BudgetError> {
    let get = |k: &str| {
        plan.metadata
            .iter()
            .find(|(key, _)| key == &format!("phi2.{k}"))
            .and_then(|(_, v)| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| BudgetError::Invalid(format!("the plan has no phi2.{k}")))
    };
    let n_embd = get("embedding_length")?;
    let n_head = get("attention.head_count")?.max(1);
    let n_vocab = plan
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .map_or(0, PlannedTensor::n_rows);
    Ok(Hparams {
        n_vocab,
        n_ctx_train: get("context_length")?,
        n_embd,
        n_ff: get("feed_forward_length")?,
        n_layer: get("block_count")?,
        n_head,
        n_head_kv: get("attention.head_count_kv").unwrap_or(n_head).max(1),
        head_dim: n_embd / n_head,
        n_rot: get("rope.dimension_count")?,
        eps: 1e-5,
        rope_base: 1e4,
    })
}

/// The types `--tensor-type` may set: every type phiq-quantize writes.
pub const OVERRIDE_TYPES: [GgmlType; 15] = {
    use GgmlType::*;
    [
        F32, F16, BF16, Q8_0, Q6_K, Q5_K, Q5_1, Q5_0, Q4_K, Q4_1, Q4_0, IQ4_NL, IQ4_XS, Q3_K, Q2_K,
    ]
};

/// One `--tensor-type PATTERN=TYPE`: tensors whose name the regular expression
/// matches (anywhere in it, as llama-quantize's `std::regex_search`) take `ty`.
#[derive(Clone, Debug)]
pub struct Override {
    pub pattern: Regex,
    pub ty: GgmlType,
    pub text: String,
}

impl Override {
    /// Parses `PATTERN=TYPE` (TYPE a ggml type name: q8_0, q4_k, iq4_xs, f16 ...).
    pub fn parse(s: &str) -> Result<Override, String> {
        let (pat, ty) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("{s:?}: expected PATTERN=TYPE, like attn_v=q8_0"))?;
        let ty = GgmlType::from_name(ty)
            .filter(|t| OVERRIDE_TYPES.contains(t))
            .ok_or_else(|| {
                let names: Vec<String> = OVERRIDE_TYPES
                    .iter()
                    .map(|t| t.name().to_lowercase())
                    .collect();
                format!(
                    "{s:?}: {ty:?} is not a type to write; one of {}",
                    names.join(", ")
                )
            })?;
        let pattern = Regex::new(pat)
            .map_err(|e| format!("{s:?}: {pat:?} is not a regular expression: {e}"))?;
        Ok(Override {
            pattern,
            ty,
            text: s.to_string(),
        })
    }
}

/// Applies `overrides` to the plan's matrices (the first that matches a name wins, as
/// in llama-quantize); returns which tensors they fixed. A type whose blocks do not
/// divide a tensor's rows, or a pattern that matches no matrix, is an error.
pub fn apply_overrides(plan: &mut Plan, overrides: &[Override]) -> Result<Vec<bool>, String> {
    let mut fixed = vec![false; plan.tensors.len()];
    let mut used = vec![false; overrides.len()];
    for (t, fixed) in plan.tensors.iter_mut().zip(&mut fixed) {
        if t.shape.len() != 2 {
            continue;
        }
        let Some((i, o)) = overrides
            .iter()
            .enumerate()
            .find(|(_, o)| o.pattern.is_match(&t.name))
        else {
            continue;
        };
        if !(t.row_len() as u64).is_multiple_of(o.ty.block_size() as u64) {
            return Err(format!(
                "--tensor-type {}: tensor {:?} has rows of {}, not a whole number of {}'s blocks of {}",
                o.text,
                t.name,
                t.row_len(),
                o.ty,
                o.ty.block_size()
            ));
        }
        t.ty = o.ty;
        *fixed = true;
        used[i] = true;
    }
    if let Some(o) = overrides.iter().zip(&used).find(|(_, u)| !**u) {
        return Err(format!(
            "--tensor-type {} matches no weight matrix (names look like blk.0.attn_qkv.weight, \
             blk.31.ffn_down.weight, token_embd.weight, output.weight)",
            o.0.text
        ));
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_like_llama_quantize() {
        let o = Override::parse("attn_qkv=q8_0").unwrap();
        assert_eq!(o.ty, GgmlType::Q8_0);
        assert!(o.pattern.is_match("blk.3.attn_qkv.weight"));
        let o = Override::parse(r"blk\.[0-3]\.ffn_down=Q5_K").unwrap();
        assert!(o.pattern.is_match("blk.2.ffn_down.weight"));
        assert!(!o.pattern.is_match("blk.12.ffn_down.weight"));
        for bad in ["attn_v", "attn_v=q9_9", "attn_v=iq2_xxs", "(=q8_0"] {
            assert!(Override::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Override::parse("attn_v=iq2_xxs")
                .unwrap_err()
                .contains("not a type to write")
        );
    }
}
