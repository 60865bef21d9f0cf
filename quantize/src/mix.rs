//! What a budgeted file is made of: each kind of matrix's types, and the total error
//! against the uniform types' (the same measurements, every matrix at one type).

use std::collections::BTreeMap;
use std::fmt::Write;

use phiq::quant::GgmlType;
use serde::Serialize;

use crate::budget::{Allocation, CANDIDATES, Item};
use crate::convert::Plan;

#[derive(Clone, Debug, Serialize)]
pub struct Mix {
    /// Bytes the tensors could take, and took (as budgeted: aligned, or in memory).
    pub budget: u64,
    pub bytes: u64,
    /// The predicted total error (see `budget`).
    pub error: f64,
    /// Per kind of matrix (attn_qkv, ffn_down, ...): how many take each type.
    pub roles: BTreeMap<String, BTreeMap<String, usize>>,
    pub tensors: Vec<TensorChoice>,
    /// Every matrix at one candidate type, where that type fits them all.
    pub uniform: Vec<Uniform>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TensorChoice {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub bytes: u64,
    pub error: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Uniform {
    #[serde(rename = "type")]
    pub ty: String,
    pub bytes: u64,
    pub error: f64,
    pub fits: bool,
}

/// A matrix's kind: its name without the layer and `.weight`.
fn kind(name: &str) -> &str {
    let s = name.strip_suffix(".weight").unwrap_or(name);
    match s.strip_prefix("blk.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, k)| k),
        None => s,
    }
}

impl Mix {
    pub fn of(plan: &Plan, items: &[Item], a: &Allocation, budget: u64) -> Mix {
        let mut roles: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (t, c) in plan.tensors.iter().zip(&a.choice) {
            if t.shape.len() == 2 {
                *roles
                    .entry(kind(&t.name).to_string())
                    .or_default()
                    .entry(c.ty.name().to_string())
                    .or_default() += 1;
            }
        }
        let tensors = items
            .iter()
            .zip(&a.choice)
            .filter(|(i, _)| i.options.len() > 1)
            .map(|(i, c)| TensorChoice {
                name: i.name.clone(),
                ty: c.ty.name().to_string(),
                bytes: c.bytes,
                error: c.error,
            })
            .collect();
        let uniform = CANDIDATES
            .iter()
            .filter_map(|&ty| uniform(items, ty))
            .map(|(ty, bytes, error)| Uniform {
                ty: ty.name().to_string(),
                bytes,
                error,
                fits: bytes <= budget,
            })
            .collect();
        Mix {
            budget,
            bytes: a.bytes,
            error: a.error,
            roles,
            tensors,
            uniform,
        }
    }

    /// The mix as the command prints it.
    pub fn text(&self) -> String {
        let mut s = format!(
            "chosen mix: {} of a budget of {}, predicted error {:.4e}\n",
            mb(self.bytes),
            mb(self.budget),
            self.error
        );
        for (kind, types) in &self.roles {
            let types: Vec<String> = types.iter().map(|(t, n)| format!("{t} x{n}")).collect();
            let _ = writeln!(s, "  {kind:<12} {}", types.join(", "));
        }
        // The best uniform type that fits, against which the mix is chosen.
        if let Some(u) = self
            .uniform
            .iter()
            .filter(|u| u.fits)
            .min_by(|a, b| a.error.total_cmp(&b.error))
        {
            let _ = writeln!(
                s,
                "  every matrix {} instead: {}, error {:.4e} ({:.1}% more than the mix)",
                u.ty,
                mb(u.bytes),
                u.error,
                100.0 * (u.error / self.error.max(f64::MIN_POSITIVE) - 1.0)
            );
        } else {
            let _ = writeln!(s, "  no uniform type fits this budget");
        }
        s
    }
}

/// Every matrix with a choice at `ty` (the fixed ones as they are), if all can take it.
fn uniform(items: &[Item], ty: GgmlType) -> Option<(GgmlType, u64, f64)> {
    let mut bytes = 0;
    let mut error = 0.0;
    for i in items {
        let c = if i.options.len() == 1 {
            i.options[0]
        } else {
            *i.options.iter().find(|c| c.ty == ty)?
        };
        bytes += c.bytes;
        error += c.error;
    }
    Some((ty, bytes, error))
}

fn mb(b: u64) -> String {
    format!("{:.2} MB", b as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_drop_the_layer() {
        assert_eq!(super::kind("blk.12.ffn_down.weight"), "ffn_down");
        assert_eq!(super::kind("output.weight"), "output");
        assert_eq!(super::kind("token_embd.weight"), "token_embd");
    }
}
