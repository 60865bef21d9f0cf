//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`),
//! merged into the base weights as each tensor is converted: `W + scale · B·A` in
//! f32, row by row, so memory stays what one tensor's conversion needs (the
//! adapter's small `A` and `B` of that tensor beside it).
//!
//! Everything is checked when the adapters are opened, before any output exists:
//! the config (LoRA only, no DoRA, ranks and alphas), every tensor's name (a Phi-2
//! module in either layout: `q_proj k_proj v_proj dense fc1 fc2` or `Wqkv
//! out_proj`, `lm_head`, `embed_tokens`) and every shape against the base. Adapter
//! and base layouts may differ: a `Wqkv` adapter over split q/k/v weights (or the
//! reverse) changes the matching rows.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;

use memmap2::Mmap;

mod config;

use config::{Config, MODULES, is_phi2_module, names_module};

use crate::checkpoint::{SourceTensor, map_file, read_shard};
use crate::convert::{Plan, PlannedTensor};
use crate::error::{ConvertError, Result};
use crate::names::{Role, TensorId};

/// Where PEFT puts the base model's modules in an adapter's tensor names.
const PREFIX: &str = "base_model.model.";

/// One `--lora` flag: the adapter folder and its strength (1 = as trained).
#[derive(Clone, Debug)]
pub struct AdapterSpec {
    pub dir: PathBuf,
    pub scale: f32,
}

/// The adapters to merge, in order (each adds to what the previous ones made).
#[derive(Default)]
pub struct Lora {
    adapters: Vec<Adapter>,
}

/// What opening an adapter found, for the command's summary.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub dir: PathBuf,
    pub base_model: Option<String>,
    pub modules: usize,
    pub replaced: usize,
    pub ranks: Vec<usize>,
    pub warnings: Vec<String>,
}

struct Adapter {
    file: PathBuf,
    map: Mmap,
    tensors: BTreeMap<String, SourceTensor>,
    edits: Vec<Edit>,
}

/// One change to rows of a planned tensor (to elements of a 1-D one).
#[derive(Clone, Debug)]
struct Edit {
    target: TensorId,
    /// The planned tensor's rows (elements, for a bias) this edit covers.
    rows: Range<usize>,
    /// The module's row (element) that `rows.start` is.
    src_row0: usize,
    kind: EditKind,
}

#[derive(Clone, Debug)]
enum EditKind {
    /// `rows += scale · B·A` (`lora_A` is `[r, in]`, `lora_B` `[out, r]`); an
    /// embedding's `lora_embedding_A` is `[r, vocab]` and `_B` `[dim, r]`, so its
    /// row `v` gains `scale · Σ_k A[k, v] · B[:, k]`.
    LowRank {
        a: String,
        b: String,
        r: usize,
        scale: f32,
        embedding: bool,
    },
    /// `bias += scale · lora_B.bias`.
    Bias { b: String, scale: f32 },
    /// The rows replaced by the adapter's own copy (`modules_to_save`).
    Replace { tensor: String },
}

/// An edit with its factors read, for one tensor's conversion.
enum Loaded<'a> {
    LowRank {
        /// `[rows.len()][r]`, the scale folded in.
        coef: Vec<f32>,
        /// `[r][row_len]`.
        dir: Vec<f32>,
        r: usize,
    },
    Add(Vec<f32>),
    Replace(&'a Adapter, &'a SourceTensor),
}

/// The edits of one planned tensor, applied to each chunk of its rows.
pub struct TensorMerge<'a> {
    /// `y += Σ_k a[k]·x_k` of the kernel table: the merge's only arithmetic.
    /// (Detected only for a tensor with edits.)
    axpy_rows: Option<phiq::kernels::AxpyRowsFn>,
    row_len: usize,
    one_d: bool,
    edits: Vec<(Range<usize>, usize, Loaded<'a>)>,
}

impl Lora {
    /// No adapters.
    pub fn none() -> Lora {
        Lora::default()
    }

    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty()
    }

    /// Opens and checks every adapter against the planned output.
    pub fn open(specs: &[AdapterSpec], plan: &Plan) -> Result<(Lora, Vec<AdapterSummary>)> {
        let mut adapters = Vec::new();
        let mut summaries = Vec::new();
        for spec in specs {
            let (a, s) = Adapter::open(spec, plan)?;
            adapters.push(a);
            summaries.push(s);
        }
        Ok((Lora { adapters }, summaries))
    }

    /// Reads the factors of every edit of `t`.
    pub fn for_tensor(&self, t: &PlannedTensor) -> Result<TensorMerge<'_>> {
        let mut edits = Vec::new();
        for a in &self.adapters {
            for e in a.edits.iter().filter(|e| e.target == t.id) {
                edits.push((e.rows.clone(), e.src_row0, a.load(e, t.row_len())?));
            }
        }
        Ok(TensorMerge {
            axpy_rows: match edits.is_empty() {
                true => None,
                false => Some(phiq::kernels::kernels()?.axpy_rows),
            },
            row_len: t.row_len(),
            one_d: t.shape.len() == 1,
            edits,
        })
    }
}

/// Columns per pass: a block of `dir` (`r` x [`COLS`] floats, 32 KB at rank 16) stays
/// in L1 while it serves every row of the call (the converter's group of rows, which
/// one thread reads, merges and quantizes).
const COLS: usize = 512;

/// `x[i] += Σ_k coef[i][k] · dir[k]` for each row `i` of `x` (`row_len` long).
fn low_rank(
    axpy_rows: phiq::kernels::AxpyRowsFn,
    coef: &[f32],
    dir: &[f32],
    r: usize,
    row_len: usize,
    x: &mut [f32],
) {
    for c0 in (0..row_len).step_by(COLS) {
        let c1 = (c0 + COLS).min(row_len);
        for (row, c) in x.chunks_exact_mut(row_len).zip(coef.chunks_exact(r)) {
            axpy_rows(c, &dir[c0..], row_len, &mut row[c0..c1]);
        }
    }
}

impl TensorMerge<'_> {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Applies the edits to `x`, the planned tensor's rows from `row0` on.
    pub fn apply(&self, row0: usize, x: &mut [f32]) {
        for (rows, src_row0, edit) in &self.edits {
            if self.one_d {
                // A bias: one row, the ranges are elements.
                let at = rows.clone();
                match edit {
                    Loaded::Add(v) => x[at].iter_mut().zip(v).for_each(|(x, d)| *x += d),
                    Loaded::Replace(a, t) => a.read(t, *src_row0, &mut x[at]),
                    Loaded::LowRank { .. } => unreachable!("low-rank edits are of matrices"),
                }
                continue;
            }
            let n = x.len() / self.row_len;
            let lo = rows.start.max(row0);
            let hi = rows.end.min(row0 + n);
            if lo >= hi {
                continue;
            }
            let chunk = &mut x[(lo - row0) * self.row_len..(hi - row0) * self.row_len];
            match edit {
                Loaded::LowRank { coef, dir, r } => {
                    let axpy_rows = self.axpy_rows.expect("detected for a tensor with edits");
                    let first = lo - rows.start;
                    low_rank(axpy_rows, &coef[first * r..], dir, *r, self.row_len, chunk);
                }
                Loaded::Replace(a, t) => {
                    let first = (src_row0 + lo - rows.start) * self.row_len;
                    a.read(t, first, chunk);
                }
                Loaded::Add(_) => unreachable!("bias edits are of 1-D tensors"),
            }
        }
    }
}

/// Where a module's rows are in the plan: `(planned tensor, its rows, module row)`.
fn placements(
    plan: &Plan,
    role: Role,
    layer: Option<usize>,
    bias: bool,
) -> Vec<(TensorId, Range<usize>, usize)> {
    let (q, kv) = plan.qkv_rows;
    let find = |role: Role| {
        plan.tensors
            .iter()
            .find(|t| t.id == TensorId::new(role, layer, bias))
    };
    let len = |t: &PlannedTensor| if bias { t.row_len() } else { t.n_rows() };
    let offset = |role: Role| match role {
        Role::AttnQ => 0,
        Role::AttnK => q,
        _ => q + kv,
    };
    if let Some(t) = find(role) {
        return vec![(t.id, 0..len(t), 0)];
    }
    match role {
        Role::AttnQkv => [Role::AttnQ, Role::AttnK, Role::AttnV]
            .into_iter()
            .filter_map(|r| find(r).map(|t| (t.id, 0..len(t), offset(r))))
            .collect(),
        Role::AttnQ | Role::AttnK | Role::AttnV => find(Role::AttnQkv)
            .map(|t| {
                let n = if role == Role::AttnQ { q } else { kv };
                vec![(t.id, offset(role)..offset(role) + n, 0)]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `[out, in]` of a module's weight in the base (PyTorch order).
fn module_shape(plan: &Plan, role: Role, layer: Option<usize>) -> Option<[usize; 2]> {
    let places = placements(plan, role, layer, false);
    let first = plan
        .tensors
        .iter()
        .find(|t| Some(&t.id) == places.first().map(|p| &p.0))?;
    let out = match role {
        Role::AttnQkv => plan.qkv_rows.0 + 2 * plan.qkv_rows.1,
        Role::AttnQ if first.id.role == Role::AttnQkv => plan.qkv_rows.0,
        Role::AttnK | Role::AttnV if first.id.role == Role::AttnQkv => plan.qkv_rows.1,
        _ => first.n_rows(),
    };
    Some([out, first.row_len()])
}

impl Adapter {
    fn open(spec: &AdapterSpec, plan: &Plan) -> Result<(Adapter, AdapterSummary)> {
        let config_path = spec.dir.join("adapter_config.json");
        let cfg = Config::read(&config_path)?;
        let file = spec.dir.join("adapter_model.safetensors");
        if !file.exists() {
            let why = if spec.dir.join("adapter_model.bin").exists() {
                "adapter_model.bin (PyTorch pickle) is not read: save the adapter with safetensors"
            } else {
                "no adapter_model.safetensors here"
            };
            return Err(ConvertError::Input {
                path: spec.dir.clone(),
                why: why.into(),
            });
        }
        if let Some(targets) = &cfg.targets
            && let Some(t) = targets.iter().find(|t| !is_phi2_module(t))
        {
            return Err(ConvertError::Config {
                path: config_path,
                key: "target_modules".into(),
                why: format!(
                    "{t:?} is not a module of Phi-2 (an adapter for another architecture?); \
                     Phi-2 has {}",
                    MODULES.join(", ")
                ),
            });
        }
        let map = map_file(&file)?;
        let tensors: BTreeMap<String, SourceTensor> =
            read_shard(&file, &map, 0)?.into_iter().collect();
        let bad = |tensor: &str, why: String| ConvertError::Tensor {
            tensor: tensor.to_string(),
            file: file.clone(),
            why,
        };
        // Group the LoRA factors by module; everything else must be a saved module.
        let mut modules: BTreeMap<&str, HashMap<&str, &str>> = BTreeMap::new();
        let mut replaced = Vec::new();
        const PARTS: [&str; 5] = [
            ".lora_A.weight",
            ".lora_B.weight",
            ".lora_B.bias",
            ".lora_embedding_A",
            ".lora_embedding_B",
        ];
        for name in tensors.keys() {
            let Some(rest) = name.strip_prefix(PREFIX) else {
                return Err(bad(
                    name,
                    format!("not a PEFT adapter tensor (names start with {PREFIX:?})"),
                ));
            };
            if name.contains("lora_magnitude_vector") {
                return Err(bad(
                    name,
                    "a DoRA magnitude: phiq merges plain LoRA only".into(),
                ));
            }
            if let Some((module, part)) = PARTS
                .iter()
                .find_map(|p| rest.strip_suffix(p).map(|m| (m, *p)))
            {
                modules.entry(module).or_default().insert(part, name);
            } else if rest.contains("lora_") {
                return Err(bad(
                    name,
                    "a LoRA tensor of a kind phiq does not know".into(),
                ));
            } else {
                replaced.push((name.as_str(), rest));
            }
        }
        let mut edits = Vec::new();
        let mut ranks = Vec::new();
        for (module, parts) in &modules {
            let first = parts.values().next().copied().unwrap_or(module);
            let id = match TensorId::from_hf(&format!("{module}.weight")) {
                Ok(Some(id)) if id.role != Role::AttnNorm && id.role != Role::OutputNorm => id,
                _ => {
                    return Err(bad(
                        first,
                        format!(
                            "{module:?} is not a module of Phi-2 (an adapter for another \
                             architecture?); Phi-2's LoRA targets are {}",
                            MODULES.join(", ")
                        ),
                    ));
                }
            };
            let leaf = module.rsplit('.').next().unwrap_or(module);
            if let Some(targets) = &cfg.targets
                && !targets.iter().any(|t| names_module(t, module))
            {
                return Err(bad(
                    first,
                    format!("its module {leaf:?} is not in target_modules {targets:?}"),
                ));
            }
            let Some([out, inp]) = module_shape(plan, id.role, id.layer) else {
                return Err(bad(
                    first,
                    format!("the base has no {} (fewer layers?)", id),
                ));
            };
            let embedding = id.role == Role::TokenEmbd;
            let (a_key, b_key) = if embedding {
                (".lora_embedding_A", ".lora_embedding_B")
            } else {
                (".lora_A.weight", ".lora_B.weight")
            };
            let (Some(&a), Some(&b)) = (parts.get(a_key), parts.get(b_key)) else {
                return Err(bad(
                    first,
                    format!("{module}: needs both {a_key} and {b_key}"),
                ));
            };
            let (ta, tb) = (&tensors[a], &tensors[b]);
            if ta.shape.len() != 2 || tb.shape.len() != 2 {
                return Err(bad(a, "LoRA factors are matrices".into()));
            }
            let r = ta.shape[0];
            // Linear: A [r, in], B [out, r]. Embedding: A [r, vocab], B [dim, r].
            let (want_a, want_b) = if embedding {
                ([r, out], [inp, r])
            } else {
                ([r, inp], [out, r])
            };
            if ta.shape != want_a {
                return Err(bad(
                    a,
                    format!(
                        "shape {:?}, but the base's {} needs {want_a:?}",
                        ta.shape, id
                    ),
                ));
            }
            if tb.shape != want_b {
                return Err(bad(
                    b,
                    format!(
                        "shape {:?}, but {} needs {want_b:?} (rank {r})",
                        tb.shape, a
                    ),
                ));
            }
            let (r_cfg, scaling) = cfg.scaling(module);
            if r != r_cfg {
                return Err(bad(
                    a,
                    format!("rank {r}, but adapter_config.json gives this module rank {r_cfg}"),
                ));
            }
            ranks.push(r);
            let scale = (scaling * f64::from(spec.scale)) as f32;
            for (target, rows, src_row0) in placements(plan, id.role, id.layer, false) {
                let kind = EditKind::LowRank {
                    a: a.to_string(),
                    b: b.to_string(),
                    r,
                    scale,
                    embedding,
                };
                edits.push(Edit {
                    target,
                    rows,
                    src_row0,
                    kind,
                });
            }
            if let Some(&bias) = parts.get(".lora_B.bias") {
                if tensors[bias].shape != [out] {
                    return Err(bad(
                        bias,
                        format!("shape {:?}, but {} needs [{out}]", tensors[bias].shape, id),
                    ));
                }
                for (target, rows, src_row0) in placements(plan, id.role, id.layer, true) {
                    let kind = EditKind::Bias {
                        b: bias.to_string(),
                        scale,
                    };
                    edits.push(Edit {
                        target,
                        rows,
                        src_row0,
                        kind,
                    });
                }
            }
        }
        for (name, rest) in &replaced {
            // PEFT saves a LoRA'd embedding's own weights as `.base_layer.weight` (its
            // save_embedding_layers, for resized vocabularies): they replace the base's.
            let base_layer = rest.contains(".base_layer.");
            let rest = &rest.replace(".base_layer.", ".");
            let id = match TensorId::from_hf(rest) {
                Ok(Some(id)) => id,
                _ => return Err(bad(name, "neither a LoRA factor nor a Phi-2 tensor".into())),
            };
            let module = rest.rsplit_once('.').map_or(rest.as_str(), |(m, _)| m);
            let leaf = module.rsplit('.').next().unwrap_or(module);
            if !base_layer && !cfg.modules_to_save.iter().any(|m| names_module(m, module)) {
                return Err(bad(
                    name,
                    format!("a whole tensor, but {leaf:?} is not in modules_to_save"),
                ));
            }
            let Some([out, inp]) = module_shape(plan, id.role, id.layer) else {
                return Err(bad(name, format!("the base has no {id}")));
            };
            let want = if id.bias { vec![out] } else { vec![out, inp] };
            let t = &tensors[*name];
            if t.shape != want {
                return Err(bad(
                    name,
                    format!(
                        "shape {:?}, but the base's {id} is {want:?} (a saved module of another \
                         vocabulary or size cannot replace it)",
                        t.shape
                    ),
                ));
            }
            for (target, rows, src_row0) in placements(plan, id.role, id.layer, id.bias) {
                let kind = EditKind::Replace {
                    tensor: name.to_string(),
                };
                edits.push(Edit {
                    target,
                    rows,
                    src_row0,
                    kind,
                });
            }
        }
        // A saved module replaces the base weights; the adapter's own edits of the same
        // tensor come after it.
        edits.sort_by_key(|e| !matches!(e.kind, EditKind::Replace { .. }));
        let summary = AdapterSummary {
            dir: spec.dir.clone(),
            base_model: cfg.base_model.clone(),
            modules: modules.len(),
            replaced: replaced.len(),
            ranks: {
                ranks.sort_unstable();
                ranks.dedup();
                ranks
            },
            warnings: cfg.warnings,
        };
        Ok((
            Adapter {
                file,
                map,
                tensors,
                edits,
            },
            summary,
        ))
    }

    /// Elements of `t` from element `first` on, widened to f32.
    fn read(&self, t: &SourceTensor, first: usize, out: &mut [f32]) {
        let size = t.dtype.size();
        let start = t.start + first * size;
        t.dtype
            .to_f32(&self.map[start..start + out.len() * size], out);
    }

    /// The whole of tensor `name`, as f32.
    fn all(&self, name: &str) -> (&SourceTensor, Vec<f32>) {
        let t = &self.tensors[name];
        let mut v = vec![0f32; t.n_elements()];
        self.read(t, 0, &mut v);
        (t, v)
    }

    fn load(&self, e: &Edit, row_len: usize) -> Result<Loaded<'_>> {
        let n = e.rows.len();
        let loaded = match &e.kind {
            EditKind::LowRank {
                a,
                b,
                r,
                scale,
                embedding,
            } => {
                let (r, scale) = (*r, *scale);
                let (_, a) = self.all(a);
                let (_, b) = self.all(b);
                let (coef, dir): (Vec<f32>, Vec<f32>) = if *embedding {
                    // coef[v][k] = A[k][v]; dir[k] = B[:, k].
                    let vocab = a.len() / r;
                    let coef = (0..n)
                        .flat_map(|i| (0..r).map(move |k| (i, k)))
                        .map(|(i, k)| scale * a[k * vocab + e.src_row0 + i])
                        .collect();
                    let dir = (0..r)
                        .flat_map(|k| (0..row_len).map(move |j| (k, j)))
                        .map(|(k, j)| b[j * r + k])
                        .collect();
                    (coef, dir)
                } else {
                    let coef = b[e.src_row0 * r..(e.src_row0 + n) * r]
                        .iter()
                        .map(|v| scale * v)
                        .collect();
                    (coef, a)
                };
                self.check_finite(&e.kind, &coef, &dir)?;
                Loaded::LowRank { coef, dir, r }
            }
            EditKind::Bias { b, scale } => {
                let (_, v) = self.all(b);
                Loaded::Add(
                    v[e.src_row0..e.src_row0 + n]
                        .iter()
                        .map(|x| scale * x)
                        .collect(),
                )
            }
            EditKind::Replace { tensor } => Loaded::Replace(self, &self.tensors[tensor]),
        };
        Ok(loaded)
    }

    fn check_finite(&self, kind: &EditKind, coef: &[f32], dir: &[f32]) -> Result<()> {
        if coef.iter().chain(dir).all(|v| v.is_finite()) {
            return Ok(());
        }
        let name = match kind {
            EditKind::LowRank { a, .. } => a.clone(),
            _ => String::new(),
        };
        Err(ConvertError::Tensor {
            tensor: name,
            file: self.file.clone(),
            why: "non-finite values in its LoRA factors (or the scale)".into(),
        })
    }
}
