//! Phi-2 (`PhiForCausalLM`) over a memory-mapped GGUF in llama.cpp's `phi2` layout.
//!
//! Weights stay in the map (no copy of quantized tensors); only norms and biases,
//! a few kilobytes a layer, are widened to f32 at load. Matrix products go through
//! the kernel table, so nothing here names an instruction set.

pub mod fit;
mod forward;
pub mod kv_cache;
pub mod ops;

pub use forward::{Logits, Product, Session, Tap};
pub use kv_cache::{KvCache, KvPool, KvType, PoolFull};

use std::path::Path;
use std::sync::Arc;

use crate::gguf::{GgufError, GgufFile, Load, TensorInfo};
use crate::kernels::matmul::{Weight, pack, packed_len};
use crate::kernels::{self, KernelError, Kernels};
use crate::quant::{self, GgmlType};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: general.architecture is {found:?}; phiq runs phi2 models only")]
    Architecture { path: String, found: String },
    #[error("{path}: {key} = {value} is not usable: {why}")]
    Hparam {
        path: String,
        key: String,
        value: u64,
        why: &'static str,
    },
    #[error("tensor {tensor:?}: shape {found:?}, expected {expected:?}")]
    Shape {
        tensor: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor {tensor:?}: {source}")]
    Kernel {
        tensor: String,
        #[source]
        source: KernelError,
    },
    #[error(
        "tensor {tensor:?}: type {ty} cannot be used here (norms and biases must be F32, F16 or BF16)"
    )]
    VectorType { tensor: String, ty: GgmlType },
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("the context holds {n_ctx} tokens; {needed} are needed")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error(transparent)]
    KvPool(#[from] PoolFull),
    #[error("KV cache type {0:?} needs rows that are a whole number of 32-element blocks")]
    KvType(KvType),
    #[error(transparent)]
    Kernels(#[from] KernelError),
    #[error(
        "this run needs about {need} MB (weights {weights} MB, KV cache {kv} MB at --ctx {n_ctx}, \
         and scratch) but {avail} MB are available; what fits: {options}"
    )]
    DoesNotFit {
        need: u64,
        weights: u64,
        kv: u64,
        n_ctx: usize,
        avail: u64,
        options: String,
    },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// `MemAvailable` from /proc/meminfo (Linux): what can be allocated without
/// swapping or an OOM kill; `None` elsewhere.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory a run needs, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    /// Activations, and what the process itself holds (see [`fit::PROCESS_BYTES`]).
    pub scratch: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

/// Hyperparameters, from the `phi2.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub eps: f32,
    pub rope_base: f32,
}

impl Hparams {
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Hparams> {
        let path = f.path().display().to_string();
        let arch = f.architecture().unwrap_or("");
        if arch != "phi2" {
            return Err(ModelError::Architecture {
                path,
                found: arch.to_string(),
            });
        }
        let get = |k: &str| -> Result<usize> { Ok(f.get_uint(&format!("phi2.{k}"))? as usize) };
        let n_embd = get("embedding_length")?;
        let n_head = get("attention.head_count")?;
        let n_head_kv = match f.get("phi2.attention.head_count_kv") {
            Some(_) => get("attention.head_count_kv")?,
            None => n_head,
        };
        let bad = |key: &str, value: usize, why| ModelError::Hparam {
            path: path.clone(),
            key: format!("phi2.{key}"),
            value: value as u64,
            why,
        };
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(bad(
                "attention.head_count",
                n_head,
                "must divide the embedding length",
            ));
        }
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(bad(
                "attention.head_count_kv",
                n_head_kv,
                "must divide the head count",
            ));
        }
        let head_dim = n_embd / n_head;
        let n_rot = get("rope.dimension_count")?;
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                "rope.dimension_count",
                n_rot,
                "must be even and at most the head size",
            ));
        }
        let eps = f.get_float("phi2.attention.layer_norm_epsilon")? as f32;
        let rope_base = match f.get("phi2.rope.freq_base") {
            Some(_) => f.get_float("phi2.rope.freq_base")? as f32,
            None => 10000.0,
        };
        let (info, _) = f.tensor("token_embd.weight")?;
        Ok(Hparams {
            n_vocab: info.n_rows() as usize,
            n_ctx_train: get("context_length")?,
            n_embd,
            n_ff: get("feed_forward_length")?,
            n_layer: get("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            eps,
            rope_base,
        })
    }
}

/// A weight matrix of the file, by index into its tensor table.
#[derive(Clone, Debug)]
struct MatrixRef {
    index: usize,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Where it lives in [`Model::packed`], if it was moved there.
    packed: Option<Placement>,
}

/// A matrix moved into the model's own buffer: repacked for the kernel path, or
/// copied as it is.
#[derive(Clone, Debug)]
enum Placement {
    Packed(std::ops::Range<usize>),
    Copied(std::ops::Range<usize>),
}

/// A linear layer: matrix plus bias.
struct Linear {
    w: MatrixRef,
    b: Vec<f32>,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

enum Qkv {
    Split {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// llama.cpp's Dec-2023 files: one matrix whose rows are q, then k, then v.
    Fused(Linear),
}

struct Layer {
    attn_norm: Norm,
    qkv: Qkv,
    attn_output: Linear,
    ffn_up: Linear,
    ffn_down: Linear,
}

pub struct Model {
    file: GgufFile,
    pub hp: Hparams,
    kernels: &'static Kernels,
    token_embd: MatrixRef,
    layers: Vec<Layer>,
    output_norm: Norm,
    output: Linear,
    /// Weights repacked for the kernel path's packed kernels (see [`Model::pack`]).
    packed: Option<memmap2::MmapMut>,
}

impl Model {
    /// Maps `path` and checks every tensor the graph needs: name, shape, type.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(path, Load::Map)
    }

    /// As [`Model::load`], mapped or read into memory.
    pub fn load_with(path: impl AsRef<Path>, load: Load) -> Result<Model> {
        let file = GgufFile::open_with(path, load)?;
        let hp = Hparams::from_gguf(&file)?;
        let kernels = kernels::kernels()?;
        let l = Loader {
            f: &file,
            k: kernels,
        };
        let (d, ff, kv) = (hp.n_embd, hp.n_ff, hp.kv_dim());
        let token_embd = l.matrix("token_embd.weight", hp.n_vocab, d, false)?;
        let layers = (0..hp.n_layer)
            .map(|i| {
                let name = |t: &str| format!("blk.{i}.{t}");
                let qkv = if file.tensor(&name("attn_qkv.weight")).is_ok() {
                    Qkv::Fused(l.linear(&name("attn_qkv"), d + 2 * kv, d)?)
                } else {
                    Qkv::Split {
                        q: l.linear(&name("attn_q"), d, d)?,
                        k: l.linear(&name("attn_k"), kv, d)?,
                        v: l.linear(&name("attn_v"), kv, d)?,
                    }
                };
                Ok(Layer {
                    attn_norm: l.norm(&name("attn_norm"), d)?,
                    qkv,
                    attn_output: l.linear(&name("attn_output"), d, d)?,
                    ffn_up: l.linear(&name("ffn_up"), ff, d)?,
                    ffn_down: l.linear(&name("ffn_down"), d, ff)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_norm = l.norm("output_norm", d)?;
        let output = l.linear("output", hp.n_vocab, d)?;
        let mut model = Model {
            file,
            hp,
            kernels,
            token_embd,
            layers,
            output_norm,
            output,
            packed: None,
        };
        model.pack()?;
        Ok(model)
    }

    /// The weight tensors (GGUF names) that multiply the rows of `tap`: what an
    /// importance matrix accumulates them under.
    pub fn tensors_reading(&self, tap: Tap) -> Vec<String> {
        let name = |i: usize, t: &str| format!("blk.{i}.{t}.weight");
        match tap {
            Tap::Hidden(_) => Vec::new(),
            Tap::OutputInput => vec!["output.weight".to_string()],
            Tap::Input { layer, product } => match product {
                Product::QkvUp => match self.layers[layer].qkv {
                    Qkv::Fused(_) => vec![name(layer, "attn_qkv"), name(layer, "ffn_up")],
                    Qkv::Split { .. } => ["attn_q", "attn_k", "attn_v", "ffn_up"]
                        .map(|t| name(layer, t))
                        .to_vec(),
                },
                Product::AttnOutput => vec![name(layer, "attn_output")],
                Product::FfnDown => vec![name(layer, "ffn_down")],
            },
        }
    }

    /// The matrices the forward pass multiplies with.
    fn matrices_mut(&mut self) -> impl Iterator<Item = &mut MatrixRef> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                let qkv: Vec<&mut Linear> = match &mut l.qkv {
                    Qkv::Split { q, k, v } => vec![q, k, v],
                    Qkv::Fused(f) => vec![f],
                };
                qkv.into_iter()
                    .chain([&mut l.attn_output, &mut l.ffn_up, &mut l.ffn_down])
                    .map(|lin| &mut lin.w)
            })
            .chain(std::iter::once(&mut self.output.w))
    }

    /// Moves every matrix into one anonymous buffer (huge pages where the OS offers
    /// them), repacked when the kernel path has a packed kernel for its type, else
    /// copied as it is, then releases the mapped file's pages of those tensors, so the
    /// copy does not double the memory. Weights are streamed once per generated token:
    /// from 4 KiB pages of the page cache every page costs a TLB miss, and generation
    /// measured 13% slower. A file read into memory (`--no-mmap`, already anonymous
    /// memory) is left as it is: its bytes could not be released.
    fn pack(&mut self) -> Result<()> {
        let k = self.kernels;
        self.packed = None;
        for m in self.matrices_mut() {
            m.packed = None;
        }
        if self.file.load_mode() != Load::Map {
            return Ok(());
        }
        let mut total = 0usize;
        let mut plan = Vec::new();
        for (i, m) in self.matrices_mut().enumerate() {
            let place = match packed_len(k, m.ty, m.rows, m.cols) {
                Some(len) => Placement::Packed(total..total + len),
                None => {
                    let len = m.ty.row_bytes(m.cols as u64).unwrap_or(0) as usize * m.rows;
                    Placement::Copied(total..total + len)
                }
            };
            let (Placement::Packed(r) | Placement::Copied(r)) = &place;
            // 64-byte alignment keeps every tile and row start on a cache line.
            total = r.end.next_multiple_of(64);
            plan.push((i, place));
        }
        if total == 0 {
            return Ok(());
        }
        let mut buf = memmap2::MmapMut::map_anon(total).map_err(|error| GgufError::Io {
            path: self.file.path().to_path_buf(),
            error,
        })?;
        #[cfg(target_os = "linux")]
        let _ = buf.advise(memmap2::Advice::HugePage);
        let refs: Vec<MatrixRef> = self.matrices_mut().map(|m| m.clone()).collect();
        for (i, place) in &plan {
            let w = self.weight(&refs[*i]);
            match place {
                Placement::Packed(r) => {
                    pack(k, &w, &mut buf[r.clone()]);
                }
                Placement::Copied(r) => buf[r.clone()].copy_from_slice(w.data),
            }
            self.file.release(&self.file.tensors[refs[*i].index]);
        }
        for ((_, place), m) in plan.into_iter().zip(self.matrices_mut()) {
            m.packed = Some(place);
        }
        self.packed = Some(buf);
        Ok(())
    }

    /// Locks the weights in RAM (`--mlock`): the mapped file and the repacked copy.
    pub fn lock(&self) -> std::io::Result<()> {
        self.file.lock()?;
        if let Some(p) = &self.packed {
            p.lock()?;
        }
        Ok(())
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// Computes with `kernels` instead of the process's table: for comparing paths in
    /// one process. Fails when a weight type has no kernel on that path.
    pub fn use_kernels(&mut self, kernels: &'static Kernels) -> Result<()> {
        let mut types: Vec<GgmlType> = self.file.tensors.iter().map(|t| t.ty).collect();
        types.dedup();
        for ty in types.into_iter().filter(|t| !matches!(t, GgmlType::F32)) {
            if kernels.vec_dot(ty).is_err() && quant::can_dequantize(ty) && ty != self.token_embd.ty
            {
                return Err(ModelError::Kernels(KernelError::NoKernel(ty)));
            }
        }
        self.kernels = kernels;
        self.pack()
    }

    fn weight(&self, m: &MatrixRef) -> Weight<'_> {
        let info = &self.file.tensors[m.index];
        let file = self.file.tensor_data(info);
        let (data, packed) = match (&self.packed, &m.packed) {
            (Some(buf), Some(Placement::Packed(r))) => (file, Some(&buf[r.clone()])),
            (Some(buf), Some(Placement::Copied(r))) => (&buf[r.clone()], None),
            _ => (file, None),
        };
        Weight {
            ty: m.ty,
            data,
            rows: m.rows,
            cols: m.cols,
            packed,
        }
    }

    /// Bytes of weights a forward pass reads per token (the bandwidth bound's numerator).
    pub fn weight_bytes(&self) -> u64 {
        self.file.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// What a run with `n_ctx` positions and prompt batches of `batch` tokens needs.
    pub fn memory_estimate(&self, n_ctx: usize, kv: KvType, batch: usize) -> MemoryEstimate {
        fit::memory_estimate(
            &self.hp,
            fit::resident_weights(&self.file, self.kernels),
            n_ctx,
            kv,
            batch,
        )
    }

    /// A new session with its own KV cache of `n_ctx` positions.
    pub fn session(&self, n_ctx: usize, kv: KvType) -> Result<Session<'_>> {
        Session::new(self, n_ctx, kv)
    }

    /// A KV pool of `tokens` positions in pages of `page_len`, for sessions made
    /// with [`Model::session_in`].
    pub fn kv_pool(&self, tokens: usize, kv: KvType, page_len: usize) -> Result<Arc<KvPool>> {
        let hp = &self.hp;
        KvPool::new(kv, hp.n_layer, hp.kv_dim(), tokens, page_len).ok_or(ModelError::KvType(kv))
    }

    /// A new session of at most `n_ctx` positions whose cache grows in `pool`'s
    /// pages (shared with the pool's other sessions).
    pub fn session_in(&self, pool: &Arc<KvPool>, n_ctx: usize) -> Session<'_> {
        Session::in_pool(self, pool, n_ctx)
    }
}

struct Loader<'a> {
    f: &'a GgufFile,
    k: &'a Kernels,
}

impl Loader<'_> {
    fn info(&self, name: &str) -> Result<(usize, &TensorInfo)> {
        let info = self.f.tensor(name)?.0;
        let index = self
            .f
            .tensors
            .iter()
            .position(|t| std::ptr::eq(t, info))
            .unwrap_or(0);
        Ok((index, info))
    }

    fn check_shape(info: &TensorInfo, expected: &[u64]) -> Result<()> {
        if info.shape != expected {
            return Err(ModelError::Shape {
                tensor: info.name.clone(),
                found: info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// A `rows` x `cols` matrix; `compute` says it goes through the matmul kernels
    /// (the embedding is only ever read a row at a time, by dequantization).
    fn matrix(&self, name: &str, rows: usize, cols: usize, compute: bool) -> Result<MatrixRef> {
        let (index, info) = self.info(name)?;
        Self::check_shape(info, &[cols as u64, rows as u64])?;
        let kernel_err = |source| ModelError::Kernel {
            tensor: name.to_string(),
            source,
        };
        if compute {
            self.k.vec_dot(info.ty).map_err(kernel_err)?;
        } else if !quant::can_dequantize(info.ty) {
            return Err(kernel_err(KernelError::NoKernel(info.ty)));
        }
        Ok(MatrixRef {
            index,
            ty: info.ty,
            rows,
            cols,
            packed: None,
        })
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let (_, info) = self.info(name)?;
        Self::check_shape(info, &[n as u64])?;
        if !matches!(info.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(ModelError::VectorType {
                tensor: name.to_string(),
                ty: info.ty,
            });
        }
        let mut out = vec![0f32; n];
        quant::dequantize_row(info.ty, self.f.tensor_data(info), &mut out).map_err(|_| {
            ModelError::VectorType {
                tensor: name.to_string(),
                ty: info.ty,
            }
        })?;
        Ok(out)
    }

    fn linear(&self, base: &str, rows: usize, cols: usize) -> Result<Linear> {
        Ok(Linear {
            w: self.matrix(&format!("{base}.weight"), rows, cols, true)?,
            b: self.vector(&format!("{base}.bias"), rows)?,
        })
    }

    fn norm(&self, base: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            w: self.vector(&format!("{base}.weight"), n)?,
            b: self.vector(&format!("{base}.bias"), n)?,
        })
    }
}
