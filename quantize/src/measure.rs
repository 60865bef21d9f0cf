//! The options of every planned tensor for [`crate::budget::allocate`]: each weight
//! matrix's size and error under every candidate type, the error measured on
//! [`SAMPLE_ROWS`] evenly spaced rows (read, merged with the adapters and quantized
//! exactly as the file will be) and scaled to the whole matrix.
//!
//! The error weights are the importance matrix's `E[x_j²]` (see `budget`). A matrix
//! the importance matrix has no entry for (the output projection, which llama-imatrix
//! skips by default) reads, like attn_qkv and ffn_up, a layer-normed input: it is
//! weighted by the mean of their entries, so that its error is in the same units as
//! theirs. The embedding table's rows are the residual stream itself: unweighted.

use rayon::prelude::*;

use phiq::quant::{self, GgmlType};

use crate::budget::{CANDIDATES, Choice, Item, SAMPLE_ROWS};
use crate::convert::{Input, Plan, PlannedTensor, read_rows};
use crate::error::{ConvertError, Result};
use crate::importance::Importance;
use crate::lora::Lora;
use crate::names::Role;

/// What a tensor takes of the budget when stored as a type: bytes in the file, or in
/// memory once loaded.
pub type SizeOf<'a> = dyn Fn(&PlannedTensor, GgmlType) -> u64 + Sync + 'a;

/// Progress of the measurement: `done` of `total` sampled elements × candidates.
pub trait MeasureProgress: Sync {
    fn start(&self, _total: u64) {}
    fn tensor(&self, _name: &str) {}
    fn elements(&self, _n: u64) {}
}

impl MeasureProgress for () {}

/// The candidate types a tensor may take: none for vectors (their type is fixed) and
/// for tensors `fixed` names, else every candidate whose blocks divide its rows.
pub fn candidates(t: &PlannedTensor) -> Vec<GgmlType> {
    if t.shape.len() != 2 {
        return Vec::new();
    }
    CANDIDATES
        .iter()
        .copied()
        .filter(|ty| (t.row_len() as u64).is_multiple_of(ty.block_size() as u64))
        .collect()
}

/// The bytes of the smallest mix: every tensor at its smallest option (known before
/// anything is measured, so that an impossible budget fails at once).
pub fn smallest(plan: &Plan, fixed: &[bool], size_of: &SizeOf) -> u64 {
    plan.tensors
        .iter()
        .zip(fixed)
        .map(|(t, &f)| {
            let c = if f { Vec::new() } else { candidates(t) };
            c.iter()
                .map(|&ty| size_of(t, ty))
                .min()
                .unwrap_or_else(|| size_of(t, t.ty))
        })
        .sum()
}

/// One [`Item`] per planned tensor, in the plan's order. A tensor in `fixed` (by
/// index), a vector, or a matrix no candidate fits keeps its planned type, with
/// error 0 (it is the same in every mix).
pub fn options(
    input: &Input,
    plan: &Plan,
    lora: &Lora,
    importance: &Importance,
    fixed: &[bool],
    size_of: &SizeOf,
    progress: &dyn MeasureProgress,
) -> Result<Vec<Item>> {
    let types: Vec<Vec<GgmlType>> = plan
        .tensors
        .iter()
        .zip(fixed)
        .map(|(t, &f)| if f { Vec::new() } else { candidates(t) })
        .collect();
    let total = plan
        .tensors
        .iter()
        .zip(&types)
        .map(|(t, c)| (sampled_rows(t).len() * t.row_len() * c.len()) as u64)
        .sum();
    progress.start(total);
    let proxy = importance.mean_for_normed_inputs();
    let mut items = Vec::with_capacity(plan.tensors.len());
    for (t, types) in plan.tensors.iter().zip(types) {
        let name = t.name.clone();
        if types.is_empty() {
            let options = vec![Choice {
                ty: t.ty,
                bytes: size_of(t, t.ty),
                error: 0.0,
            }];
            items.push(Item { name, options });
            continue;
        }
        progress.tensor(&t.name);
        let qw = importance.for_tensor(&t.name);
        let ew = match (qw, proxy) {
            (Some(w), _) => Weights::Columns(w),
            (None, Some(p)) if t.id.role != Role::TokenEmbd => Weights::Constant(p),
            _ => Weights::Constant(1.0),
        };
        let errors = measure(input, t, lora, qw, ew, &types, progress)?;
        let options = types
            .iter()
            .zip(errors)
            .map(|(&ty, error)| Choice {
                ty,
                bytes: size_of(t, ty),
                error,
            })
            .collect();
        items.push(Item { name, options });
    }
    Ok(items)
}

/// The error weight of each column.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Columns(&'a [f32]),
    Constant(f32),
}

impl Weights<'_> {
    fn error(self, x: &[f32], y: &[f32]) -> f64 {
        let d2 = |(a, b): (&f32, &f32)| f64::from(a - b) * f64::from(a - b);
        match self {
            Weights::Columns(w) => x
                .iter()
                .zip(y)
                .zip(w)
                .map(|(p, &w)| f64::from(w) * d2(p))
                .sum(),
            Weights::Constant(w) => f64::from(w) * x.iter().zip(y).map(d2).sum::<f64>(),
        }
    }
}

/// At most [`SAMPLE_ROWS`] evenly spaced rows.
fn sampled_rows(t: &PlannedTensor) -> Vec<usize> {
    let n = t.n_rows();
    let s = SAMPLE_ROWS.min(n);
    (0..s).map(|k| k * n / s).collect()
}

/// The error of tensor `t` under each of `types`: the weighted squared error of the
/// sampled rows, scaled to all rows (the embedding's: their mean, one row per token).
fn measure(
    input: &Input,
    t: &PlannedTensor,
    lora: &Lora,
    qw: Option<&[f32]>,
    ew: Weights,
    types: &[GgmlType],
    progress: &dyn MeasureProgress,
) -> Result<Vec<f64>> {
    let merge = lora.for_tensor(t)?;
    let rows = sampled_rows(t);
    let row_len = t.row_len();
    let sums = rows
        .par_iter()
        .map_init(
            || (vec![0f32; row_len], vec![0f32; row_len], Vec::new()),
            |(x, back, q), &r| {
                read_rows(input, t, r, x)?;
                merge.apply(r, x);
                let mut e = Vec::with_capacity(types.len());
                for &ty in types {
                    let fail = |source| ConvertError::Quant {
                        tensor: t.name.clone(),
                        source,
                    };
                    q.resize(ty.row_bytes(row_len as u64).unwrap_or(0) as usize, 0);
                    quant::quantize_row_weighted(ty, x, qw, q).map_err(fail)?;
                    quant::dequantize_row(ty, q, back).map_err(fail)?;
                    e.push(ew.error(x, back));
                }
                progress.elements((row_len * types.len()) as u64);
                Ok::<_, ConvertError>(e)
            },
        )
        .try_reduce(
            || vec![0f64; types.len()],
            |a, b| Ok(a.iter().zip(&b).map(|(a, b)| a + b).collect()),
        )?;
    let scale = if t.id.role == Role::TokenEmbd {
        1.0 / rows.len() as f64
    } else {
        t.n_rows() as f64 / rows.len() as f64
    };
    Ok(sums.into_iter().map(|e| e * scale).collect())
}
