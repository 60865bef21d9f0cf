//! The conversion: plan every output tensor (name, shape, type, where its rows come
//! from), then stream them into the GGUF one at a time, groups of rows read, merged
//! and quantized in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use phiq::gguf::{GgufFile, GgufWriter, MetaValue, TensorSpec};
use phiq::quant::{self, GgmlType, QuantError};
use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, SourceTensor};
use crate::config::Phi2Config;
use crate::error::{ConvertError, Result};
use crate::importance::Importance;
use crate::lora::{Lora, TensorMerge};
use crate::names::{Role, TensorId};
use crate::policy::FileType;
use crate::vocab::Vocab;

/// Elements converted per step: bounds memory (two buffers of this many f32 at most)
/// while leaving enough rows to share among threads.
const CHUNK_ELEMENTS: usize = 1 << 23;

/// Rows one thread reads, merges and quantizes in a row, while they are in its cache
/// (160 KB of f32 for Phi-2's 2560 columns, 640 KB for fc2's 10240): in three passes
/// over the whole chunk, each pass would bring the chunk back from memory. The LoRA
/// merge serves all of them from each block of its factors.
const GROUP_ROWS: usize = 16;

/// Where the weights come from.
pub enum Input {
    HuggingFace(Checkpoint),
    /// An F32/F16/BF16 GGUF to requantize, like llama-quantize.
    Gguf(GgufFile),
}

impl Input {
    /// A Hugging Face folder, or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Input> {
        if path.is_dir() {
            Ok(Input::HuggingFace(Checkpoint::open(path)?))
        } else if path.exists() {
            Ok(Input::Gguf(GgufFile::open(path)?))
        } else {
            Err(ConvertError::Input {
                path: path.to_path_buf(),
                why: "no such file or folder".into(),
            })
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Input::HuggingFace(c) => &c.dir,
            Input::Gguf(g) => g.path(),
        }
    }

    /// Bytes of the input weights.
    pub fn size(&self) -> u64 {
        match self {
            Input::HuggingFace(c) => c.weight_bytes(),
            Input::Gguf(g) => g.file_len(),
        }
    }
}

/// One tensor of the output.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub id: TensorId,
    pub name: String,
    /// ggml order: `shape[0]` is the row length.
    pub shape: Vec<u64>,
    pub ty: GgmlType,
    /// The input tensor, and the first of its elements this one starts at (a fused
    /// QKV is split by rows).
    pub source: String,
    pub first_element: usize,
}

impl PlannedTensor {
    pub fn row_len(&self) -> usize {
        self.shape[0] as usize
    }

    pub fn n_rows(&self) -> usize {
        self.shape[1..].iter().product::<u64>() as usize
    }

    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The whole output: metadata and tensors in file order.
pub struct Plan {
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<PlannedTensor>,
    /// Rows of the query and of the key (= value) projection: where each sits in a
    /// fused QKV.
    pub qkv_rows: (usize, usize),
}

impl Plan {
    /// The output for `input` as file type `ft`, named `name` (or after the input),
    /// with llama-quantize's type choices for a quantization with an importance
    /// matrix when `imatrix`.
    pub fn new(input: &Input, ft: FileType, name: Option<&str>, imatrix: bool) -> Result<Plan> {
        match input {
            Input::HuggingFace(c) => plan_hf(c, ft, name, imatrix),
            Input::Gguf(g) => plan_gguf(g, ft, name, imatrix),
        }
    }
}

fn plan_hf(ck: &Checkpoint, ft: FileType, name: Option<&str>, imatrix: bool) -> Result<Plan> {
    let cfg = &ck.config;
    let sources = map_sources(ck)?;
    let shapes = ExpectedShapes::from_config(cfg);
    // Query heads per key/value head (llama.cpp's `n_gqa()`, some of its mixes' rules).
    let n_gqa = cfg.num_heads.checked_div(cfg.num_kv_heads).unwrap_or(0);
    let mut tensors = Vec::new();
    let mut used = Vec::new();
    let mut add = |id: TensorId, source: &str, first_row: usize, rows: usize, t: &SourceTensor| {
        // A 1-D slice (a fused bias) starts at its first row; a matrix at its first row's
        // first element.
        let (shape, first_element) = if t.shape.len() == 1 {
            (vec![rows as u64], first_row)
        } else {
            (
                vec![t.row_len() as u64, rows as u64],
                first_row * t.row_len(),
            )
        };
        let ty = ft.tensor_type(id, shape.len(), shape[0], cfg.num_layers, n_gqa, imatrix);
        tensors.push(PlannedTensor {
            id,
            name: id.to_string(),
            shape,
            ty,
            source: source.to_string(),
            first_element,
        });
    };
    for id in expected_ids(cfg.num_layers) {
        let want = shapes.of(id);
        if let Some(src) = sources.get(&id) {
            let t = &ck.tensors[src];
            check_shape(ck, src, t, &want)?;
            add(id, src, 0, want[0], t);
            used.push(src.clone());
            continue;
        }
        // q, k and v may come as one fused tensor (phi-msft `Wqkv`), split by rows.
        let fused = TensorId::new(Role::AttnQkv, id.layer, id.bias);
        let Some(src) = sources
            .get(&fused)
            .filter(|_| matches!(id.role, Role::AttnQ | Role::AttnK | Role::AttnV))
        else {
            return Err(ConvertError::MissingTensor(id.hf_name()));
        };
        let t = &ck.tensors[src];
        check_shape(ck, src, t, &shapes.of(fused))?;
        let first_row = match id.role {
            Role::AttnQ => 0,
            Role::AttnK => shapes.q_rows,
            _ => shapes.q_rows + shapes.kv_rows,
        };
        add(id, src, first_row, want[0], t);
        used.push(src.clone());
    }
    for (id, src) in &sources {
        if !used.contains(src) {
            let t = &ck.tensors[src];
            return Err(ConvertError::Tensor {
                tensor: src.clone(),
                file: ck.shard_path(t).to_path_buf(),
                why: format!("unexpected here ({id} is given twice, or split and fused at once)"),
            });
        }
    }
    let vocab = Vocab::load(&ck.dir, shapes.vocab)?;
    let default_name = ck.dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut metadata = hf_metadata(cfg, ft, name.map(str::to_string).or(default_name));
    metadata.extend(vocab.metadata());
    Ok(Plan {
        metadata,
        tensors,
        qkv_rows: (shapes.q_rows, shapes.kv_rows),
    })
}

/// Maps every tensor of the checkpoint to its role; anything not Phi-2 is an error.
fn map_sources(ck: &Checkpoint) -> Result<HashMap<TensorId, String>> {
    let mut sources = HashMap::new();
    for (name, t) in &ck.tensors {
        let bad = |why: String| ConvertError::Tensor {
            tensor: name.clone(),
            file: ck.shard_path(t).to_path_buf(),
            why,
        };
        let id = match TensorId::from_hf(name) {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(crate::names::NotPhi2) => {
                return Err(bad(
                    "not a Phi-2 tensor (expected Hugging Face names such as \
                     model.layers.N.self_attn.q_proj.weight, or phi-msft names such as \
                     transformer.h.N.mixer.Wqkv.weight)"
                        .into(),
                ));
            }
        };
        if id.layer.is_some_and(|l| l >= ck.config.num_layers) {
            return Err(bad(format!(
                "layer beyond num_hidden_layers = {}",
                ck.config.num_layers
            )));
        }
        sources.insert(id, name.clone());
    }
    Ok(sources)
}

/// Every tensor of a split-QKV `phi2` file, in llama.cpp's order.
pub fn expected_ids(n_layers: usize) -> Vec<TensorId> {
    let mut ids = vec![TensorId::new(Role::TokenEmbd, None, false)];
    for layer in 0..n_layers {
        for role in Role::PER_LAYER_SPLIT {
            for bias in [false, true] {
                ids.push(TensorId::new(role, Some(layer), bias));
            }
        }
    }
    for role in [Role::OutputNorm, Role::Output] {
        for bias in [false, true] {
            ids.push(TensorId::new(role, None, bias));
        }
    }
    ids
}

/// PyTorch shapes ([rows, row length]) the config implies.
struct ExpectedShapes {
    vocab: usize,
    hidden: usize,
    ffn: usize,
    q_rows: usize,
    kv_rows: usize,
}

impl ExpectedShapes {
    fn from_config(cfg: &Phi2Config) -> ExpectedShapes {
        ExpectedShapes {
            vocab: cfg.vocab_size,
            hidden: cfg.hidden_size,
            ffn: cfg.intermediate_size,
            q_rows: cfg.num_heads * cfg.head_dim(),
            kv_rows: cfg.num_kv_heads * cfg.head_dim(),
        }
    }

    fn of(&self, id: TensorId) -> Vec<usize> {
        let out_in = match id.role {
            Role::TokenEmbd | Role::Output => (self.vocab, self.hidden),
            Role::AttnNorm | Role::OutputNorm => (self.hidden, 0),
            Role::AttnQ => (self.q_rows, self.hidden),
            Role::AttnK | Role::AttnV => (self.kv_rows, self.hidden),
            Role::AttnQkv => (self.q_rows + 2 * self.kv_rows, self.hidden),
            Role::AttnOutput => (self.hidden, self.q_rows),
            Role::FfnUp => (self.ffn, self.hidden),
            Role::FfnDown => (self.hidden, self.ffn),
        };
        if id.bias || out_in.1 == 0 {
            vec![out_in.0]
        } else {
            vec![out_in.0, out_in.1]
        }
    }
}

fn check_shape(ck: &Checkpoint, name: &str, t: &SourceTensor, want: &[usize]) -> Result<()> {
    if t.shape != want {
        return Err(ConvertError::Tensor {
            tensor: name.to_string(),
            file: ck.shard_path(t).to_path_buf(),
            why: format!("shape {:?}, but config.json implies {want:?}", t.shape),
        });
    }
    Ok(())
}

fn hf_metadata(cfg: &Phi2Config, ft: FileType, name: Option<String>) -> Vec<(String, MetaValue)> {
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let mut kv: Vec<(String, MetaValue)> = vec![(
        "general.architecture".into(),
        MetaValue::String("phi2".into()),
    )];
    if let Some(name) = name {
        kv.push(("general.name".into(), MetaValue::String(name)));
    }
    kv.extend([
        ("phi2.context_length".into(), u32v(cfg.context_length)),
        ("phi2.embedding_length".into(), u32v(cfg.hidden_size)),
        (
            "phi2.feed_forward_length".into(),
            u32v(cfg.intermediate_size),
        ),
        ("phi2.block_count".into(), u32v(cfg.num_layers)),
        ("phi2.attention.head_count".into(), u32v(cfg.num_heads)),
        (
            "phi2.attention.head_count_kv".into(),
            u32v(cfg.num_kv_heads),
        ),
        (
            "phi2.attention.layer_norm_epsilon".into(),
            MetaValue::F32(cfg.layer_norm_eps as f32),
        ),
        ("phi2.rope.dimension_count".into(), u32v(cfg.rope_dims())),
    ]);
    if cfg.rope_theta != 10000.0 {
        kv.push((
            "phi2.rope.freq_base".into(),
            MetaValue::F32(cfg.rope_theta as f32),
        ));
    }
    kv.push(("general.file_type".into(), MetaValue::U32(ft.file_type)));
    kv.push(("general.quantization_version".into(), MetaValue::U32(2)));
    kv
}

fn plan_gguf(g: &GgufFile, ft: FileType, name: Option<&str>, imatrix: bool) -> Result<Plan> {
    if g.architecture() != Some("phi2") {
        return Err(ConvertError::Input {
            path: g.path().to_path_buf(),
            why: format!(
                "general.architecture is {:?}; phiq-quantize converts phi2 models only",
                g.architecture().unwrap_or("missing")
            ),
        });
    }
    let n_layers = g.get_uint("phi2.block_count")? as usize;
    let heads = g.get_uint("phi2.attention.head_count")?.max(1) as usize;
    let kv_heads = g
        .get_uint("phi2.attention.head_count_kv")
        .map_or(heads, |v| v as usize);
    // llama.cpp's `n_gqa()`: 0 when there are no key/value heads.
    let n_gqa = heads.checked_div(kv_heads).unwrap_or(0);
    let tensors = g
        .tensors
        .iter()
        .map(|t| {
            let bad = |why: String| ConvertError::Tensor {
                tensor: t.name.clone(),
                file: g.path().to_path_buf(),
                why,
            };
            if !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                return Err(bad(format!(
                    "is already {}: requantizing loses precision, start from an F32, F16 or BF16 file",
                    t.ty
                )));
            }
            let id = TensorId::from_gguf(&t.name).ok_or_else(|| bad("not a phi2 tensor name".into()))?;
            let shape = if t.shape.len() > 2 {
                vec![t.row_len(), t.n_rows()]
            } else {
                t.shape.clone()
            };
            let ty = ft.tensor_type(id, shape.len(), shape[0], n_layers, n_gqa, imatrix);
            Ok(PlannedTensor { id, name: t.name.clone(), shape, ty, source: t.name.clone(), first_element: 0 })
        })
        .collect::<Result<Vec<_>>>()?;
    // llama-quantize writes tensors in its loader's order: by layer (others first),
    // then by name. Keeping it makes the two tools' files identical byte for byte.
    let mut tensors = tensors;
    tensors.sort_by(|a, b| {
        let layer = |t: &PlannedTensor| t.id.layer.map_or(-1, |l| l as i64);
        (layer(a), &a.name).cmp(&(layer(b), &b.name))
    });
    let mut metadata: Vec<(String, MetaValue)> = g
        .metadata
        .iter()
        .filter(|(k, _)| {
            k != "general.file_type"
                && k != "general.quantization_version"
                && k != "general.alignment"
        })
        .cloned()
        .collect();
    if let Some(name) = name {
        match metadata.iter_mut().find(|(k, _)| k == "general.name") {
            Some(kv) => kv.1 = MetaValue::String(name.to_string()),
            None => metadata.insert(
                1,
                ("general.name".into(), MetaValue::String(name.to_string())),
            ),
        }
    }
    // In llama-quantize's order: it sets the version, then the file type, each
    // moving to the end.
    metadata.push(("general.quantization_version".into(), MetaValue::U32(2)));
    metadata.push(("general.file_type".into(), MetaValue::U32(ft.file_type)));
    let n_embd = g.get_uint("phi2.embedding_length")? as usize;
    Ok(Plan {
        metadata,
        tensors,
        qkv_rows: (n_embd, n_embd / heads * kv_heads),
    })
}

/// Progress callbacks, so that the command can draw a bar and tests stay quiet.
pub trait Progress: Sync {
    fn tensor(&self, _index: usize, _t: &PlannedTensor) {}
    fn elements(&self, _n: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// What one tensor became.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub ty: GgmlType,
    pub n_elements: u64,
    pub bytes: u64,
    /// sqrt(Σ(x - x̂)² / Σx²): the quantization error relative to the weights' size.
    pub rel_rmse: f64,
}

pub struct Report {
    pub output: PathBuf,
    pub tensors: Vec<TensorReport>,
    pub elapsed: Duration,
}

/// Writes the plan's GGUF to `out`, streaming one tensor at a time, with `lora`'s
/// adapters merged into the weights they change and each tensor quantized under its
/// `importance` weights where it has them.
pub fn convert(
    input: &Input,
    plan: &Plan,
    lora: &Lora,
    importance: &Importance,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Report> {
    let start = Instant::now();
    let specs = plan
        .tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, t.ty, &t.shape))
        .collect();
    let mut writer = GgufWriter::create(out, &plan.metadata, specs)?;
    let mut reports = Vec::with_capacity(plan.tensors.len());
    for (i, t) in plan.tensors.iter().enumerate() {
        progress.tensor(i, t);
        // Ask the kernel to read the next tensor while this one is quantized.
        if let (Input::HuggingFace(ck), Some(next)) = (input, plan.tensors.get(i + 1)) {
            ck.prefetch(&ck.tensors[&next.source]);
        }
        let merge = lora.for_tensor(t)?;
        let qw = importance.for_tensor(&t.name);
        reports.push(convert_tensor(input, t, &merge, qw, &mut writer, progress)?);
    }
    let output = writer.finish()?;
    Ok(Report {
        output,
        tensors: reports,
        elapsed: start.elapsed(),
    })
}

fn convert_tensor(
    input: &Input,
    t: &PlannedTensor,
    merge: &TensorMerge,
    qw: Option<&[f32]>,
    w: &mut GgufWriter,
    progress: &dyn Progress,
) -> Result<TensorReport> {
    let row_len = t.row_len();
    let row_bytes =
        t.ty.row_bytes(row_len as u64)
            .expect("policy keeps whole blocks") as usize;
    let chunk_rows = (CHUNK_ELEMENTS / row_len).max(1);
    let (mut err2, mut sum2) = (0f64, 0f64);
    let mut x = Vec::new();
    let mut q = Vec::new();
    for row0 in (0..t.n_rows()).step_by(chunk_rows) {
        let rows = chunk_rows.min(t.n_rows() - row0);
        x.resize(rows * row_len, 0.0);
        q.resize(rows * row_bytes, 0);
        let (e, s) = x
            .par_chunks_mut(GROUP_ROWS * row_len)
            .zip(q.par_chunks_mut(GROUP_ROWS * row_bytes))
            .enumerate()
            .map_init(
                || vec![0f32; row_len],
                |back, (g, (x, q))| {
                    let row0 = row0 + g * GROUP_ROWS;
                    read_rows(input, t, row0, x)?;
                    merge.apply(row0, x);
                    quantize_rows(t, row0, x, qw, q, back)
                },
            )
            .try_reduce(|| (0.0, 0.0), |a, b| Ok((a.0 + b.0, a.1 + b.1)))?;
        err2 += e;
        sum2 += s;
        w.write_tensor_chunk(&t.name, &q)?;
        progress.elements((rows * row_len) as u64);
    }
    w.end_tensor(&t.name)?;
    Ok(TensorReport {
        name: t.name.clone(),
        ty: t.ty,
        n_elements: t.n_elements(),
        bytes: (t.n_rows() * row_bytes) as u64,
        rel_rmse: if sum2 > 0.0 {
            (err2 / sum2).sqrt()
        } else {
            0.0
        },
    })
}

pub(crate) fn read_rows(
    input: &Input,
    t: &PlannedTensor,
    row0: usize,
    x: &mut [f32],
) -> Result<()> {
    let row_len = t.row_len();
    let first = t.first_element + row0 * row_len;
    match input {
        Input::HuggingFace(ck) => {
            let src = &ck.tensors[&t.source];
            for (r, row) in x.chunks_exact_mut(row_len).enumerate() {
                ck.read(src, first + r * row_len, row);
            }
            Ok(())
        }
        Input::Gguf(g) => {
            let (info, data) = g.tensor(&t.source)?;
            let src_row_bytes = info.ty.row_bytes(row_len as u64).unwrap_or(0) as usize;
            x.chunks_exact_mut(row_len)
                .enumerate()
                .try_for_each(|(r, row)| {
                    let at = (first / row_len + r) * src_row_bytes;
                    quant::dequantize_row(info.ty, &data[at..at + src_row_bytes], row)
                })
                .map_err(|source| ConvertError::Quant {
                    tensor: t.source.clone(),
                    source,
                })
        }
    }
}

/// `(Σ(x - y)², Σx²)` of one row: eight f32 lanes the compiler can vectorise (a row
/// is at most a few thousand elements), widened to f64 for the sums over a tensor.
fn squared_error_and_norm(x: &[f32], y: &[f32]) -> (f64, f64) {
    let (mut err, mut norm) = ([0f32; 8], [0f32; 8]);
    for (xc, yc) in x.chunks(8).zip(y.chunks(8)) {
        for (l, (a, b)) in xc.iter().zip(yc).enumerate() {
            err[l] += (a - b) * (a - b);
            norm[l] += a * a;
        }
    }
    let sum = |v: [f32; 8]| v.iter().map(|&e| f64::from(e)).sum::<f64>();
    (sum(err), sum(norm))
}

/// Quantizes the rows of `x` into `q` (under importance weights `qw`, one per column,
/// when given), `back` holding each row dequantized; returns Σ(x - x̂)² and Σx² for
/// the error report.
fn quantize_rows(
    t: &PlannedTensor,
    row0: usize,
    x: &[f32],
    qw: Option<&[f32]>,
    q: &mut [u8],
    back: &mut [f32],
) -> Result<(f64, f64)> {
    let row_len = t.row_len();
    let row_bytes = q.len() / (x.len() / row_len);
    let (mut err2, mut sum2) = (0f64, 0f64);
    for (r, (qrow, xrow)) in q
        .chunks_exact_mut(row_bytes)
        .zip(x.chunks_exact(row_len))
        .enumerate()
    {
        let fail = |source: QuantError| match source {
            QuantError::NonFinite { index, value } => ConvertError::NonFinite {
                tensor: t.source.clone(),
                row: t.first_element / row_len + row0 + r,
                column: index,
                value,
            },
            source => ConvertError::Quant {
                tensor: t.name.clone(),
                source,
            },
        };
        quant::quantize_row_weighted(t.ty, xrow, qw, qrow).map_err(fail)?;
        quant::dequantize_row(t.ty, qrow, back).map_err(fail)?;
        let (e, s) = squared_error_and_norm(xrow, back);
        err2 += e;
        sum2 += s;
    }
    Ok((err2, sum2))
}
