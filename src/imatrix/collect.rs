//! Collecting an importance matrix from the forward pass's taps.

use std::collections::BTreeMap;

use super::{Entry, Format, Imatrix};
use crate::model::{Model, Product, Tap};

/// Accumulates Σ x² per input column and the token count for every weight matrix,
/// fed by [`Session::eval_observed`](crate::model::Session::eval_observed). Products
/// sharing one input (q, k, v and ffn_up) are accumulated once and stored under each
/// of their names, as llama-imatrix's per-matrix sums of the same rows would be.
pub struct Collector {
    /// Per tap: the tensors reading it, Σ x² in f32 (llama-imatrix's order: row by
    /// row, column by column), tokens.
    taps: BTreeMap<TapKey, Stat>,
    names: BTreeMap<TapKey, (Vec<String>, usize)>,
    with_output: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TapKey {
    Layer(usize, u8),
    Output,
}

fn key(tap: Tap) -> Option<TapKey> {
    match tap {
        Tap::Input { layer, product } => Some(TapKey::Layer(
            layer,
            match product {
                Product::QkvUp => 0,
                Product::AttnOutput => 1,
                Product::FfnDown => 2,
            },
        )),
        Tap::OutputInput => Some(TapKey::Output),
        Tap::Hidden(_) => None,
    }
}

struct Stat {
    sums: Vec<f32>,
    tokens: u64,
}

impl Collector {
    /// A collector for `model`'s matrices; the output projection only when
    /// `with_output` (llama-imatrix's `--process-output`; its default leaves it out).
    pub fn new(model: &Model, with_output: bool) -> Collector {
        let (d, ff) = (model.hp.n_embd, model.hp.n_ff);
        let mut names = BTreeMap::new();
        for layer in 0..model.hp.n_layer {
            for (product, cols) in [
                (Product::QkvUp, d),
                (Product::AttnOutput, d),
                (Product::FfnDown, ff),
            ] {
                let tap = Tap::Input { layer, product };
                names.insert(key(tap).unwrap(), (model.tensors_reading(tap), cols));
            }
        }
        if with_output {
            let tap = Tap::OutputInput;
            names.insert(TapKey::Output, (model.tensors_reading(tap), d));
        }
        Collector {
            taps: BTreeMap::new(),
            names,
            with_output,
        }
    }

    /// Adds the rows `x` (`[t][columns]`) seen at `tap`; other taps are ignored.
    pub fn observe(&mut self, tap: Tap, x: &[f32]) {
        let Some(key) = key(tap).filter(|k| *k != TapKey::Output || self.with_output) else {
            return;
        };
        let columns = self.names[&key].1;
        let s = self.taps.entry(key).or_insert_with(|| Stat {
            sums: vec![0.0; columns],
            tokens: 0,
        });
        for row in x.chunks_exact(columns) {
            for (a, &v) in s.sums.iter_mut().zip(row) {
                *a += v * v;
            }
            s.tokens += 1;
        }
    }

    /// The matrix so far, in llama-imatrix's GGUF form.
    pub fn finish(&self, datasets: Vec<String>, chunk_count: u32, chunk_size: u32) -> Imatrix {
        let mut entries = BTreeMap::new();
        for (key, stat) in &self.taps {
            for name in &self.names[key].0 {
                entries.insert(
                    name.clone(),
                    Entry {
                        sums: stat.sums.clone(),
                        counts: vec![stat.tokens as f32],
                    },
                );
            }
        }
        Imatrix {
            format: Format::Gguf,
            entries,
            datasets,
            chunk_count,
            chunk_size,
        }
    }
}
