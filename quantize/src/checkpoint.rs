//! A Hugging Face checkpoint folder: `config.json` and the weights in one
//! `model.safetensors` or in shards listed by `model.safetensors.index.json`, each
//! memory-mapped and read with the `safetensors` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::config::Phi2Config;
use crate::error::{ConvertError, Result};

/// Element types a checkpoint's weights may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
    BF16,
}

impl WeightDtype {
    pub fn size(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 | WeightDtype::BF16 => 2,
        }
    }

    /// Widens little-endian elements in `bytes` to f32; exact for all three types.
    /// F16 goes through `half`'s slice conversion, which uses F16C/NEON when the CPU
    /// has it: element by element in software it dominated conversion time.
    pub fn to_f32(self, bytes: &[u8], out: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        match self {
            WeightDtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(x) => out.copy_from_slice(x),
                Err(_) => out
                    .iter_mut()
                    .zip(bytes.chunks_exact(4))
                    .for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            },
            WeightDtype::F16 => match bytemuck::try_cast_slice::<u8, f16>(bytes) {
                Ok(x) => x.convert_to_f32_slice(out),
                Err(_) => out
                    .iter_mut()
                    .zip(bytes.chunks_exact(2))
                    .for_each(|(o, c)| *o = f16::from_le_bytes([c[0], c[1]]).to_f32()),
            },
            WeightDtype::BF16 => match bytemuck::try_cast_slice::<u8, bf16>(bytes) {
                Ok(x) => x.convert_to_f32_slice(out),
                Err(_) => out
                    .iter_mut()
                    .zip(bytes.chunks_exact(2))
                    .for_each(|(o, c)| *o = bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            },
        }
    }
}

/// Where one tensor's bytes are.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub shard: usize,
    pub dtype: WeightDtype,
    /// PyTorch order: `shape[0]` is the number of rows.
    pub shape: Vec<usize>,
    /// Absolute byte offset in the shard.
    pub start: usize,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements per row: the last dimension (1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: Phi2Config,
    shards: Vec<(PathBuf, Mmap)>,
    pub tensors: BTreeMap<String, SourceTensor>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let config = Phi2Config::from_file(&dir.join("config.json"))?;
        let shard_paths = shard_files(dir)?;
        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut tensors = BTreeMap::new();
        for path in shard_paths {
            let map = map_file(&path)?;
            for (name, t) in read_shard(&path, &map, shards.len())? {
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(ConvertError::Tensor {
                        tensor: name,
                        file: path,
                        why: "appears in more than one shard".into(),
                    });
                }
            }
            shards.push((path, map));
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            shards,
            tensors,
        })
    }

    pub fn shard_path(&self, t: &SourceTensor) -> &Path {
        &self.shards[t.shard].0
    }

    /// Total bytes of the weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.shards.iter().map(|(_, m)| m.len() as u64).sum()
    }

    /// Reads `out.len()` elements of `t` from element `first` on, widened to f32.
    /// The plan keeps every range inside the tensor (shapes are checked against the
    /// config, and safetensors checked the tensor against its file).
    pub fn read(&self, t: &SourceTensor, first: usize, out: &mut [f32]) {
        let size = t.dtype.size();
        let start = t.start + first * size;
        let bytes = &self.shards[t.shard].1[start..start + out.len() * size];
        t.dtype.to_f32(bytes, out);
    }
}

impl Checkpoint {
    /// Hints that `t` will be read soon, so that reading it from disk overlaps the
    /// work on the tensor before it. Only a hint: errors are ignored.
    pub fn prefetch(&self, t: &SourceTensor) {
        let len = t.n_elements() * t.dtype.size();
        let _ = self.shards[t.shard]
            .1
            .advise_range(memmap2::Advice::WillNeed, t.start, len);
    }
}

pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let io = |source| ConvertError::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: read-only private map of an input file; as with every mmap-based loader,
    // the file must not be truncated while we run.
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// The weight files: the index's shards, else `model.safetensors`, else every
/// `*.safetensors` in the folder.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return index_shards(&index);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ConvertError::Io {
        path: dir.to_path_buf(),
        error: source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ConvertError::Input {
            path: dir.to_path_buf(),
            why: "no model.safetensors, model.safetensors.index.json or *.safetensors \
                  (PyTorch .bin checkpoints are not supported: save with safetensors)"
                .into(),
        });
    }
    Ok(found)
}

fn index_shards(index: &Path) -> Result<Vec<PathBuf>> {
    let bad = |why: &str| ConvertError::Json {
        path: index.to_path_buf(),
        why: why.to_string(),
    };
    let text = std::fs::read_to_string(index).map_err(|source| ConvertError::Io {
        path: index.to_path_buf(),
        error: source,
    })?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"weight_map\" object"))?;
    let files: BTreeSet<&str> = map
        .values()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| bad("weight_map values must be file names"))
        })
        .collect::<Result<_>>()?;
    let dir = index.parent().unwrap_or(Path::new("."));
    files
        .into_iter()
        .map(|f| {
            if f.contains('/') || f.contains('\\') || f == ".." {
                return Err(bad(&format!("shard name {f:?} is not a plain file name")));
            }
            Ok(dir.join(f))
        })
        .collect()
}

pub(crate) fn read_shard(
    path: &Path,
    map: &[u8],
    shard: usize,
) -> Result<Vec<(String, SourceTensor)>> {
    let bad = |why: String| ConvertError::Safetensors {
        path: path.to_path_buf(),
        why,
    };
    // `deserialize` validates the header and every offset against the file's length.
    SafeTensors::deserialize(map).map_err(|e| bad(e.to_string()))?;
    let (header_len, meta) = SafeTensors::read_metadata(map).map_err(|e| bad(e.to_string()))?;
    let data_start = 8 + header_len;
    meta.tensors()
        .into_iter()
        .map(|(name, info)| {
            let dtype = match info.dtype {
                Dtype::F32 => WeightDtype::F32,
                Dtype::F16 => WeightDtype::F16,
                Dtype::BF16 => WeightDtype::BF16,
                other => {
                    return Err(ConvertError::Tensor {
                        tensor: name,
                        file: path.to_path_buf(),
                        why: format!("dtype {other:?} is not supported (F32, F16 or BF16)"),
                    });
                }
            };
            let t = SourceTensor {
                shard,
                dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
            };
            Ok((name, t))
        })
        .collect()
}
