//! Streaming GGUF writer.
//!
//! The header is written first with every tensor's offset computed in advance from
//! the declared shapes, so tensors can then be streamed out one at a time and never
//! need to be held together in memory. Output goes to a temporary file beside the
//! destination, renamed into place by [`GgufWriter::finish`]; a writer dropped before
//! that removes its temporary file, so no half-written model is ever left behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{GgufError, Result};
use super::reader::{MAX_ARRAY_DEPTH, align_up, tensor_bytes};
use super::value::{MetaArray, MetaType, MetaValue};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::quant::GgmlType;

/// A tensor to be written: name, type and ggml-order shape (`shape[0]` = row length).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<u64>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, ty: GgmlType, shape: &[u64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            ty,
            shape: shape.to_vec(),
        }
    }
}

struct Planned {
    spec: TensorSpec,
    n_bytes: u64,
}

pub struct GgufWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    final_path: PathBuf,
    alignment: u64,
    tensors: Vec<Planned>,
    /// Index of the tensor being written or next to be written.
    current: usize,
    /// Bytes of the current tensor written so far.
    written: u64,
}

impl GgufWriter {
    /// Validates the metadata and tensor list, then writes the header to a temporary
    /// file beside `path`.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, MetaValue)],
        tensors: Vec<TensorSpec>,
    ) -> Result<GgufWriter> {
        let final_path = path.as_ref().to_path_buf();
        let alignment = check_metadata(metadata)?;
        let tensors = plan(tensors)?;
        let header = encode_header(metadata, &tensors, alignment);

        let tmp_path = temp_path(&final_path);
        let file = File::create(&tmp_path).map_err(|error| GgufError::Io {
            path: tmp_path.clone(),
            error,
        })?;
        let mut w = GgufWriter {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp_path,
            final_path,
            alignment,
            tensors,
            current: 0,
            written: 0,
        };
        w.write_raw(&header)?;
        Ok(w)
    }

    /// Writes the whole of the next tensor, which must be `name`.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.write_tensor_chunk(name, data)?;
        self.end_tensor(name)
    }

    /// Appends `data` to the tensor `name`, which must be the next one in the declared
    /// order. A tensor may be written in as many chunks as convenient.
    pub fn write_tensor_chunk(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let t = self.expect_tensor(name)?;
        let room = t.n_bytes - self.written;
        if data.len() as u64 > room {
            return Err(write_error(
                name,
                format!(
                    "{} bytes more than its size {}",
                    data.len() as u64 - room,
                    t.n_bytes
                ),
            ));
        }
        self.written += data.len() as u64;
        self.write_raw(data)
    }

    /// Ends tensor `name`: checks its size and pads to the alignment.
    pub fn end_tensor(&mut self, name: &str) -> Result<()> {
        let n_bytes = self.expect_tensor(name)?.n_bytes;
        if self.written != n_bytes {
            return Err(write_error(
                name,
                format!("{} bytes written, its size is {n_bytes}", self.written),
            ));
        }
        let padded = align_up(n_bytes, self.alignment).unwrap_or(n_bytes);
        self.write_raw(&vec![0u8; (padded - n_bytes) as usize])?;
        self.current += 1;
        self.written = 0;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place once every tensor is written.
    pub fn finish(mut self) -> Result<PathBuf> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(write_error(&t.spec.name, "was never written".to_string()));
        }
        let out = self.out.take().expect("writer used after finish");
        let io_tmp = |error| GgufError::Io {
            path: self.tmp_path.clone(),
            error,
        };
        let file = out.into_inner().map_err(|e| io_tmp(e.into_error()))?;
        file.sync_all().map_err(io_tmp)?;
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(|error| GgufError::Io {
            path: self.final_path.clone(),
            error,
        })?;
        Ok(self.final_path.clone())
    }

    fn expect_tensor(&self, name: &str) -> Result<&Planned> {
        match self.tensors.get(self.current) {
            Some(t) if t.spec.name == name => Ok(t),
            Some(t) => Err(write_error(
                name,
                format!("written out of order, {:?} comes first", t.spec.name),
            )),
            None => Err(write_error(name, "was not declared".to_string())),
        }
    }

    fn write_raw(&mut self, data: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("writer used after finish");
        out.write_all(data).map_err(|error| GgufError::Io {
            path: self.tmp_path.clone(),
            error,
        })
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn write_error(tensor: &str, why: String) -> GgufError {
    GgufError::Write {
        tensor: tensor.to_string(),
        why,
    }
}

/// `.NAME.tmp-PID` beside the destination, so that the final rename stays on one
/// file system and is atomic.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out.gguf".to_string());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn check_metadata(metadata: &[(String, MetaValue)]) -> Result<u64> {
    let mut seen = std::collections::HashSet::new();
    for (key, value) in metadata {
        if !seen.insert(key.as_str()) {
            return Err(GgufError::DuplicateKey(key.clone()));
        }
        check_array_types(key, value, 0)?;
    }
    match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, MetaValue::U32(a))) if a.is_power_of_two() => Ok((*a).into()),
        Some((_, v)) => Err(GgufError::BadAlignment(format!(
            "{v} ({}) is not a power-of-two uint32",
            v.meta_type()
        ))),
    }
}

/// Arrays hold values of their element type only, nested no deeper than the reader
/// accepts: phiq never writes a file it would refuse to read.
fn check_array_types(key: &str, value: &MetaValue, depth: usize) -> Result<()> {
    if let MetaValue::Array(a) = value {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        for v in &a.values {
            if v.meta_type() != a.elem_type {
                return Err(GgufError::MixedArray {
                    key: key.to_string(),
                    expected: a.elem_type,
                    found: v.meta_type(),
                });
            }
            check_array_types(key, v, depth + 1)?;
        }
    }
    Ok(())
}

fn plan(tensors: Vec<TensorSpec>) -> Result<Vec<Planned>> {
    let mut names = std::collections::HashSet::new();
    tensors
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            if spec.name.len() > MAX_NAME_LEN {
                return Err(GgufError::NameTooLong {
                    index: index as u64,
                    len: spec.name.len(),
                });
            }
            if !names.insert(spec.name.clone()) {
                return Err(GgufError::DuplicateTensor(spec.name));
            }
            if spec.shape.len() > MAX_DIMS {
                return Err(GgufError::TooManyDims {
                    tensor: spec.name,
                    n_dims: spec.shape.len() as u32,
                });
            }
            let n_bytes = tensor_bytes(&spec.name, spec.ty, &spec.shape)?;
            Ok(Planned { spec, n_bytes })
        })
        .collect()
}

fn encode_header(metadata: &[(String, MetaValue)], tensors: &[Planned], alignment: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(GGUF_MAGIC);
    b.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    b.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut b, key);
        b.extend_from_slice(&(value.meta_type() as u32).to_le_bytes());
        put_value(&mut b, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut b, &t.spec.name);
        b.extend_from_slice(&(t.spec.shape.len() as u32).to_le_bytes());
        for d in &t.spec.shape {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&t.spec.ty.id().to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        // Sizes were bounded by int64 in `plan`, so this cannot overflow.
        offset = align_up(offset + t.n_bytes, alignment).unwrap_or(u64::MAX);
    }
    let padded = align_up(b.len() as u64, alignment).unwrap_or(u64::MAX) as usize;
    b.resize(padded, 0);
    b
}

/// The bytes a file of `metadata` and `tensors` takes at most (its header, then each
/// tensor padded to the alignment), without writing it: what a size budget checks.
pub fn file_size(metadata: &[(String, MetaValue)], tensors: Vec<TensorSpec>) -> Result<u64> {
    let alignment = check_metadata(metadata)?;
    let tensors = plan(tensors)?;
    let header = encode_header(metadata, &tensors, alignment).len() as u64;
    Ok(tensors.iter().fold(header, |n, t| {
        n.saturating_add(align_up(t.n_bytes, alignment).unwrap_or(u64::MAX))
    }))
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, value: &MetaValue) {
    use MetaValue as V;
    match value {
        V::U8(v) => b.push(*v),
        V::I8(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::U16(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::I16(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::U32(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::I32(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::F32(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::U64(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::I64(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::F64(v) => b.extend_from_slice(&v.to_le_bytes()),
        V::Bool(v) => b.push(u8::from(*v)),
        V::String(s) => put_str(b, s),
        V::Array(MetaArray { elem_type, values }) => {
            b.extend_from_slice(&(*elem_type as u32).to_le_bytes());
            b.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for v in values {
                put_value(b, v);
            }
        }
    }
}

impl MetaValue {
    /// Shorthand for an array of strings, the commonest array in model files.
    pub fn string_array<S: Into<String>>(items: impl IntoIterator<Item = S>) -> MetaValue {
        MetaValue::Array(MetaArray::new(
            MetaType::String,
            items
                .into_iter()
                .map(|s| MetaValue::String(s.into()))
                .collect(),
        ))
    }
}
