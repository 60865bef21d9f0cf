//! GGUF parsing and validation over a byte slice (the memory map, or fuzzer input).
//!
//! Every count and length is checked against what is left of the file before anything
//! is allocated or read, and every tensor's data range against the file's length, with
//! the rules of llama.cpp's `gguf.cpp`. A parsed [`GgufHeader`] therefore only hands out
//! in-bounds tensor slices.

use std::collections::{HashMap, HashSet};

use super::error::{GgufError, Result};
use super::value::{MetaArray, MetaType, MetaValue};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, KEY_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::quant::GgmlType;

/// Deeper nesting than this is surely corrupt, and bounded recursion keeps a hostile
/// file from overflowing the stack.
pub(crate) const MAX_ARRAY_DEPTH: usize = 8;

/// At most this many metadata values in all: keys, and array elements at every depth.
/// A parsed value takes up to 32 times the bytes that encode it (a [`MetaValue`] per
/// byte of a `uint8` array), so the file's length alone would let a hostile file demand
/// many gigabytes. The largest vocabularies (262,144 tokens, with scores and token
/// types) need under a million values.
pub const MAX_METADATA_VALUES: u64 = 1 << 24;

/// At most this many tensors. llama.cpp's largest models have a few thousand.
pub const MAX_TENSORS: u64 = 1 << 20;

/// One tensor's description, with its data range already checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `shape[0]` is the row length (PyTorch's shape reversed).
    pub shape: Vec<u64>,
    /// Offset of the data from the start of the data section, as stored.
    pub offset: u64,
    /// Absolute offset of the data in the file.
    pub file_offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Length of one row (`shape[0]`).
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Number of rows: all dimensions but the first.
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }
}

/// Everything before the tensor data: version, metadata and tensor infos.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    key_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses and validates a whole GGUF file held in `buf`.
    pub fn parse(buf: &[u8]) -> Result<GgufHeader> {
        let mut c = Cursor {
            buf,
            pos: 0,
            values_left: MAX_METADATA_VALUES,
        };
        let magic = c.bytes(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic {
                found: magic.to_vec(),
            });
        }
        let version = c.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err(GgufError::VersionObsolete),
            v if v.swap_bytes() <= 3 => return Err(GgufError::BigEndian),
            v => return Err(GgufError::UnsupportedVersion(v)),
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata key count")?;
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, a key-value pair 8 + 4 + 1.
        c.check_count("metadata key", n_kv, 13, 16)?;
        c.check_count("tensor", n_tensors, 24, 8)?;
        if n_tensors > MAX_TENSORS {
            return Err(GgufError::LimitExceeded {
                what: "tensor count".to_string(),
                count: n_tensors,
                max: MAX_TENSORS,
                offset: 8,
            });
        }
        c.take_values(8, n_kv)?;

        let (metadata, key_index) = read_metadata(&mut c, n_kv)?;
        let alignment = alignment(&metadata, &key_index)?;
        let infos = read_tensor_infos(&mut c, n_tensors)?;
        let data_offset =
            align_up(c.pos as u64, alignment).ok_or_else(|| c.truncated("padding", u64::MAX))?;
        let tensors = place_tensors(infos, data_offset, alignment, buf.len() as u64)?;
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufHeader {
            version,
            alignment,
            metadata,
            tensors,
            data_offset,
            key_index,
            tensor_index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
    }

    /// A non-negative integer of any width.
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| wrong_type(key, "a non-negative integer", v))
    }

    pub fn get_float(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong_type(key, "a float", v))
    }

    pub fn get_array(&self, key: &str) -> Result<&MetaArray> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "an array", v))
    }

    /// `general.architecture`, which every model file carries.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(MetaValue::as_str)
    }
}

fn wrong_type(key: &str, expected: &'static str, v: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: v.meta_type(),
    }
}

pub(crate) fn align_up(x: u64, alignment: u64) -> Option<u64> {
    Some(x.checked_add(alignment - 1)? / alignment * alignment)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is left of [`MAX_METADATA_VALUES`].
    values_left: u64,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn truncated(&self, what: &str, need: u64) -> GgufError {
        GgufError::Truncated {
            what: what.to_string(),
            offset: self.pos as u64,
            need,
            have: self.remaining(),
        }
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let start = self.pos as u64;
        let len = self.u64(what)?;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::BadUtf8 {
            what: what.to_string(),
            offset: start,
        })
    }

    /// Refuses a count (stored at byte `at`) whose smallest encoding would not fit in the
    /// rest of the file, so that no allocation is ever sized by an unchecked count.
    fn check_count(&self, what: &str, count: u64, min_size: u64, at: u64) -> Result<()> {
        if count
            .checked_mul(min_size)
            .is_none_or(|n| n > self.remaining())
        {
            return Err(GgufError::CountTooLarge {
                what: what.to_string(),
                count,
                offset: at,
                have: self.remaining(),
            });
        }
        Ok(())
    }

    /// Spends `count` of the metadata value budget; `back` is how many bytes before the
    /// cursor the count was stored, for the error's offset.
    fn take_values(&mut self, back: usize, count: u64) -> Result<()> {
        match self.values_left.checked_sub(count) {
            Some(left) => {
                self.values_left = left;
                Ok(())
            }
            None => Err(GgufError::LimitExceeded {
                what: "metadata values in all (keys and array elements)".to_string(),
                count: (MAX_METADATA_VALUES - self.values_left).saturating_add(count),
                max: MAX_METADATA_VALUES,
                offset: (self.pos - back) as u64,
            }),
        }
    }

    fn value(&mut self, key: &str, ty: MetaType, depth: usize) -> Result<MetaValue> {
        use MetaValue as V;
        let what = "metadata value";
        Ok(match ty {
            MetaType::U8 => V::U8(self.array::<1>(what)?[0]),
            MetaType::I8 => V::I8(i8::from_le_bytes(self.array(what)?)),
            MetaType::U16 => V::U16(u16::from_le_bytes(self.array(what)?)),
            MetaType::I16 => V::I16(i16::from_le_bytes(self.array(what)?)),
            MetaType::U32 => V::U32(u32::from_le_bytes(self.array(what)?)),
            MetaType::I32 => V::I32(i32::from_le_bytes(self.array(what)?)),
            MetaType::F32 => V::F32(f32::from_le_bytes(self.array(what)?)),
            MetaType::U64 => V::U64(u64::from_le_bytes(self.array(what)?)),
            MetaType::I64 => V::I64(i64::from_le_bytes(self.array(what)?)),
            MetaType::F64 => V::F64(f64::from_le_bytes(self.array(what)?)),
            MetaType::Bool => {
                let offset = self.pos as u64;
                match self.array::<1>(what)?[0] {
                    0 => V::Bool(false),
                    1 => V::Bool(true),
                    value => {
                        return Err(GgufError::BadBool {
                            key: key.to_string(),
                            value,
                            offset,
                        });
                    }
                }
            }
            MetaType::String => V::String(self.string(what)?),
            MetaType::Array => V::Array(self.meta_array(key, depth)?),
        })
    }

    fn meta_array(&mut self, key: &str, depth: usize) -> Result<MetaArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let elem_type = self.value_type(key)?;
        let at = self.pos as u64;
        let count = self.u64("array length")?;
        self.check_count("array element", count, elem_type.min_size() as u64, at)?;
        self.take_values(8, count)?;
        let values = (0..count)
            .map(|_| self.value(key, elem_type, depth + 1))
            .collect::<Result<Vec<_>>>()?;
        Ok(MetaArray { elem_type, values })
    }

    fn value_type(&mut self, key: &str) -> Result<MetaType> {
        let offset = self.pos as u64;
        let type_id = self.u32("value type")?;
        MetaType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
            offset,
        })
    }
}

type Metadata = (Vec<(String, MetaValue)>, HashMap<String, usize>);

fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&format!("metadata key #{i}"))?;
        let ty = c.value_type(&key)?;
        let value = c.value(&key, ty, 0).map_err(|e| in_key(e, &key))?;
        if index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey(key));
        }
        metadata.push((key, value));
    }
    Ok((metadata, index))
}

/// Names the key in an error inside its value, where the cursor only knew "value".
fn in_key(e: GgufError, key: &str) -> GgufError {
    let of_key = |what: String| format!("{what} of key {key:?}");
    let at_key = |what: String| format!("key {key:?}: {what}");
    match e {
        GgufError::Truncated {
            what,
            offset,
            need,
            have,
        } => GgufError::Truncated {
            what: of_key(what),
            offset,
            need,
            have,
        },
        GgufError::CountTooLarge {
            what,
            count,
            offset,
            have,
        } => GgufError::CountTooLarge {
            what: at_key(what),
            count,
            offset,
            have,
        },
        GgufError::BadUtf8 { what, offset } => GgufError::BadUtf8 {
            what: of_key(what),
            offset,
        },
        GgufError::LimitExceeded {
            what,
            count,
            max,
            offset,
        } => GgufError::LimitExceeded {
            what: at_key(what),
            count,
            max,
            offset,
        },
        e => e,
    }
}

fn alignment(metadata: &[(String, MetaValue)], index: &HashMap<String, usize>) -> Result<u64> {
    let Some(&i) = index.get(KEY_ALIGNMENT) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match metadata[i].1 {
        MetaValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetaValue::U32(a) => Err(GgufError::BadAlignment(format!(
            "{a} is not a power of two"
        ))),
        ref v => Err(GgufError::BadAlignment(format!(
            "type {}, expected uint32",
            v.meta_type()
        ))),
    }
}

/// A tensor info as stored, before its data range is placed.
struct RawTensorInfo {
    name: String,
    ty: GgmlType,
    shape: Vec<u64>,
    offset: u64,
    n_bytes: u64,
}

fn read_tensor_infos(c: &mut Cursor, n_tensors: u64) -> Result<Vec<RawTensorInfo>> {
    let mut names = HashSet::with_capacity(n_tensors as usize);
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for index in 0..n_tensors {
        let name = c.string(&format!("name of tensor #{index}"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(GgufError::NameTooLong {
                index,
                len: name.len(),
            });
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let what = format!("info of tensor {name:?}");
        let n_dims = c.u32(&what)?;
        if n_dims as usize > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                n_dims,
            });
        }
        let shape = (0..n_dims)
            .map(|_| c.u64(&what))
            .collect::<Result<Vec<_>>>()?;
        let type_id = c.u32(&what)?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            tensor: name.clone(),
            type_id,
        })?;
        let offset = c.u64(&what)?;
        let n_bytes = tensor_bytes(&name, ty, &shape)?;
        infos.push(RawTensorInfo {
            name,
            ty,
            shape,
            offset,
            n_bytes,
        });
    }
    Ok(infos)
}

/// Validates a shape as ggml does (each dimension an int64, the element count too,
/// whole blocks per row) and returns the tensor's size in bytes.
pub(crate) fn tensor_bytes(name: &str, ty: GgmlType, shape: &[u64]) -> Result<u64> {
    let bad = |why| GgufError::BadShape {
        tensor: name.to_string(),
        shape: shape.to_vec(),
        why,
    };
    if shape.iter().any(|&d| d > i64::MAX as u64) {
        return Err(bad("a dimension exceeds int64"));
    }
    let n = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad("the element count overflows int64"))?;
    let ne0 = shape.first().copied().unwrap_or(1);
    let block = ty.block_size();
    if ne0 % block as u64 != 0 {
        return Err(GgufError::NotWholeBlocks {
            tensor: name.to_string(),
            ne0,
            ty,
            block,
        });
    }
    (n / block as u64)
        .checked_mul(ty.type_size() as u64)
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or_else(|| bad("the byte size overflows int64"))
}

/// Checks that tensors are packed in order, each padded to the alignment (what
/// llama.cpp requires), and that every tensor's bytes lie inside the file.
fn place_tensors(
    infos: Vec<RawTensorInfo>,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>> {
    let mut expected = 0u64;
    infos
        .into_iter()
        .map(|t| {
            if t.offset != expected {
                return Err(GgufError::BadOffset {
                    tensor: t.name,
                    offset: t.offset,
                    expected,
                });
            }
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(_), Some(end)) if end <= file_len => {}
                _ => {
                    return Err(GgufError::DataOutOfBounds {
                        tensor: t.name,
                        start: start.unwrap_or(u64::MAX),
                        end: end.unwrap_or(u64::MAX),
                        len: file_len,
                    });
                }
            }
            // Cannot overflow: end <= file_len, and alignment is at most 2^31.
            expected = align_up(t.offset + t.n_bytes, alignment).unwrap_or(u64::MAX);
            Ok(TensorInfo {
                file_offset: data_offset + t.offset,
                name: t.name,
                ty: t.ty,
                shape: t.shape,
                offset: t.offset,
                n_bytes: t.n_bytes,
            })
        })
        .collect()
}
