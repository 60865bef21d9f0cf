//! Quantizing to a budget instead of a type (`--target-size`, `--target-bpw`,
//! `--fit-ram`): each weight matrix's error is measured for every candidate type,
//! then the per-matrix types that minimise the total error within the budget are
//! chosen.
//!
//! **Error.** For a matrix `W` whose inputs `x` have mean squares `E[x_j²]` (the
//! importance matrix's column values), quantizing to `Ŵ` perturbs its output by
//! `E‖(W - Ŵ)x‖² ≈ Σ_j E[x_j²]·Σ_i (w_ij - ŵ_ij)²`: the importance-weighted squared
//! error, in units of output energy per token, comparable across matrices. Without a
//! matrix every `E[x_j²]` is taken as 1 (the inputs are layer-normed or of that
//! order). The embedding's rows are outputs one token at a time: its error is the
//! mean over rows. The error is measured on at most [`SAMPLE_ROWS`] evenly spaced
//! rows of each matrix (quantized as the file will be, under the same weights) and
//! scaled to all of them: about one full quantization's work for all candidates.
//!
//! **Allocation.** Errors of different matrices add, so the choice is a
//! multiple-choice knapsack: one type per matrix, total bytes within the budget,
//! least total error. It is small (a few hundred matrices, eight types), so it is
//! solved exactly by dynamic programming over sizes in units of [`Units::unit`]
//! (each size rounded up, so the file never exceeds the budget), rather than by a
//! Lagrangian (which reaches only the convex hull of each matrix's options and leaves
//! budget unused) or a greedy marginal-gain pass (optimal only up to the last
//! upgrade). An exact optimum also makes two properties hold by construction: a
//! larger budget never gives a larger error, and the mix is never worse than a
//! uniform type that fits the same budget (those are candidates too).

use phiq::quant::GgmlType;

/// Types the allocation chooses among, cheapest first.
pub const CANDIDATES: [GgmlType; 8] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_XS,
    GgmlType::IQ4_NL,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_0,
];

/// Rows of each matrix its error is measured on.
pub const SAMPLE_ROWS: usize = 256;

/// One way to store a tensor: its type, bytes in the file (padded) and error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub ty: GgmlType,
    pub bytes: u64,
    pub error: f64,
}

/// A tensor's options (one, for tensors whose type is fixed).
#[derive(Clone, Debug)]
pub struct Item {
    pub name: String,
    pub options: Vec<Choice>,
}

/// The chosen option of every item.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    pub choice: Vec<Choice>,
    pub bytes: u64,
    pub error: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    #[error(
        "a budget of {budget} bytes cannot hold this model: its smallest mix takes {least} bytes \
         (every matrix not fixed by --tensor-type at its smallest type); raise the budget"
    )]
    Impossible { budget: u64, least: u64 },
    #[error("{0}")]
    Invalid(String),
}

/// The size unit of the allocation: the items' largest total over 2¹⁶, at least 4 KiB
/// (so at most 65536 steps; for Phi-2 about 44 KB, and rounding costs at most a unit
/// per matrix). It depends on the items only, not the budget, so that budgets compare.
struct Units {
    unit: u64,
}

impl Units {
    fn of(items: &[Item]) -> Units {
        let most: u64 = items
            .iter()
            .map(|i| i.options.iter().map(|c| c.bytes).max().unwrap_or(0))
            .sum();
        Units {
            unit: (most >> 16).max(4096),
        }
    }
    fn cost(&self, bytes: u64) -> usize {
        bytes.div_ceil(self.unit) as usize
    }
}

/// The least-error choice of one option per item with total bytes at most `budget`.
pub fn allocate(items: &[Item], budget: u64) -> Result<Allocation, BudgetError> {
    if items.iter().any(|i| i.options.is_empty()) {
        return Err(BudgetError::Invalid(
            "a tensor has no type to choose".into(),
        ));
    }
    let least: u64 = items
        .iter()
        .map(|i| i.options.iter().map(|c| c.bytes).min().unwrap_or(0))
        .sum();
    if least > budget {
        return Err(BudgetError::Impossible { budget, least });
    }
    let units = Units::of(items);
    let cap = (budget / units.unit).min(1 << 17) as usize;
    // dp[c]: least error of the items so far within c units; pick[i][c]: the option.
    let mut dp = vec![0f64; cap + 1];
    let mut pick = vec![vec![u8::MAX; cap + 1]; items.len()];
    for (item, pick) in items.iter().zip(&mut pick) {
        let mut next = vec![f64::INFINITY; cap + 1];
        for (o, c) in item.options.iter().enumerate() {
            let cost = units.cost(c.bytes);
            for b in cost..=cap {
                let e = dp[b - cost] + c.error;
                if e < next[b] {
                    next[b] = e;
                    pick[b] = o as u8;
                }
            }
        }
        dp = next;
    }
    let mut best = if dp[cap].is_finite() {
        let mut choice = vec![items[0].options[0]; items.len()];
        let mut b = cap;
        for (i, item) in items.iter().enumerate().rev() {
            let c = item.options[usize::from(pick[i][b])];
            choice[i] = c;
            b -= units.cost(c.bytes);
        }
        Some(summed(choice))
    } else {
        None
    };
    // Uniform mixes that fit exactly (the rounding above may have excluded one).
    for k in 0..items.iter().map(|i| i.options.len()).max().unwrap_or(0) {
        let choice: Vec<Choice> = items
            .iter()
            .map(|i| i.options[k.min(i.options.len() - 1)])
            .collect();
        let a = summed(choice);
        if a.bytes <= budget && best.as_ref().is_none_or(|b| a.error < b.error) {
            best = Some(a);
        }
    }
    best.ok_or(BudgetError::Impossible { budget, least })
}

fn summed(choice: Vec<Choice>) -> Allocation {
    Allocation {
        bytes: choice.iter().map(|c| c.bytes).sum(),
        error: choice.iter().map(|c| c.error).sum(),
        choice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items like a model's matrices: sizes by type, errors falling with bits at
    /// rates that differ by matrix.
    fn items(n: usize) -> Vec<Item> {
        let mut s = 7u64;
        let mut rand = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..n)
            .map(|i| {
                let elems = [1 << 16, 1 << 18, 1 << 20][i % 3] as f64;
                let (scale, slope) = (0.1 + rand(), 1.5 + rand());
                Item {
                    name: format!("m{i}"),
                    options: CANDIDATES
                        .iter()
                        .map(|&ty| {
                            let bpw = ty.bits_per_weight();
                            Choice {
                                ty,
                                bytes: (elems * bpw / 8.0) as u64,
                                error: scale * elems * (-slope * bpw).exp2(),
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    #[test]
    fn budgets_are_never_exceeded_and_tighter_ones_never_lower_the_error() {
        let items = items(60);
        let least: u64 = items.iter().map(|i| i.options[0].bytes).sum();
        let most: u64 = items.iter().map(|i| i.options[7].bytes).sum();
        let mut last = f64::INFINITY;
        for k in 0..=40 {
            let budget = least + (most - least) * k / 40;
            let a = allocate(&items, budget).unwrap();
            assert!(a.bytes <= budget, "{} > {budget}", a.bytes);
            assert!(a.error <= last, "budget {budget}: {} after {last}", a.error);
            last = a.error;
        }
    }

    #[test]
    fn the_mix_beats_every_uniform_type_of_the_same_size() {
        let items = items(60);
        // (At the largest type's size there is nothing better to buy.)
        for (k, ty) in CANDIDATES
            .iter()
            .enumerate()
            .take(CANDIDATES.len() - 1)
            .skip(1)
        {
            let uniform = summed(items.iter().map(|i| i.options[k]).collect());
            let mix = allocate(&items, uniform.bytes).unwrap();
            assert!(mix.bytes <= uniform.bytes);
            assert!(
                mix.error < uniform.error,
                "{ty}: {} vs {}",
                mix.error,
                uniform.error
            );
        }
    }

    #[test]
    fn an_impossible_budget_is_a_clear_error() {
        let items = items(6);
        let least: u64 = items.iter().map(|i| i.options[0].bytes).sum();
        let err = allocate(&items, least - 1).unwrap_err();
        assert_eq!(
            err,
            BudgetError::Impossible {
                budget: least - 1,
                least
            }
        );
        assert!(err.to_string().contains("smallest mix"));
    }

    #[test]
    fn exact_optimum_on_a_small_case() {
        // Brute force over 3 items x 8 options.
        let items = items(3);
        let budget = items.iter().map(|i| i.options[3].bytes).sum::<u64>();
        let a = allocate(&items, budget).unwrap();
        let mut best = f64::INFINITY;
        for x in 0..8 {
            for y in 0..8 {
                for z in 0..8 {
                    let c = [
                        items[0].options[x],
                        items[1].options[y],
                        items[2].options[z],
                    ];
                    if c.iter().map(|c| c.bytes).sum::<u64>() <= budget {
                        best = best.min(c.iter().map(|c| c.error).sum());
                    }
                }
            }
        }
        // Within the rounding of one unit per item.
        assert!(
            a.error <= best * 1.0001 || a.error - best < 1e-9,
            "{} vs {best}",
            a.error
        );
    }
}
