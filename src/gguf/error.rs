use std::path::PathBuf;

use super::value::MetaType;
use crate::quant::GgmlType;

/// Everything that can be wrong with a GGUF file or its use. Every variant names the
/// key, the tensor or the byte offset concerned, so that a user can find the fault.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    // These two show their cause in their own message and so do not also return it as
    // `source()`: a chain printer such as anyhow's `{:#}` would repeat it otherwise.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<GgufError>,
    },
    #[error("truncated: {what} at byte {offset} needs {need} bytes, the file has {have} left")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("not a GGUF file: starts with {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version 1 is obsolete (before August 2023); convert the model again")]
    VersionObsolete,
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("unsupported GGUF version {0} (phiq reads versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("{what} count {count} at byte {offset} cannot fit in the {have} bytes that follow")]
    CountTooLarge {
        what: String,
        count: u64,
        offset: u64,
        have: u64,
    },
    #[error("{what}: {count} at byte {offset} exceeds phiq's limit of {max}")]
    LimitExceeded {
        what: String,
        count: u64,
        max: u64,
        offset: u64,
    },
    #[error("{what} at byte {offset} is not valid UTF-8")]
    BadUtf8 { what: String, offset: u64 },
    #[error("metadata key {key:?} has unknown value type {type_id} at byte {offset}")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("metadata key {key:?}: bool value {value} at byte {offset} is neither 0 nor 1")]
    BadBool { key: String, value: u8, offset: u64 },
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: usize },
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    #[error("general.alignment: {0}")]
    BadAlignment(String),
    #[error("tensor #{index}: name of {len} bytes is too long (ggml's limit is 63)")]
    NameTooLong { index: u64, len: usize },
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    #[error("tensor {tensor:?}: {n_dims} dimensions (at most 4)")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor {tensor:?}: unknown ggml type id {type_id}")]
    UnknownTensorType { tensor: String, type_id: u32 },
    #[error("tensor {tensor:?}: bad shape {shape:?}: {why}")]
    BadShape {
        tensor: String,
        shape: Vec<u64>,
        why: &'static str,
    },
    #[error("tensor {tensor:?}: row length {ne0} is not a multiple of {ty}'s block size {block}")]
    NotWholeBlocks {
        tensor: String,
        ne0: u64,
        ty: GgmlType,
        block: usize,
    },
    #[error(
        "tensor {tensor:?}: data offset {offset}, expected {expected} (tensors must be packed in order, each padded to the alignment)"
    )]
    BadOffset {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    #[error(
        "tensor {tensor:?}: data bytes {start}..{end} lie beyond the end of the file ({len} bytes)"
    )]
    DataOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: MetaType,
    },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("array {key:?} holds a {found} where its element type is {expected}")]
    MixedArray {
        key: String,
        expected: MetaType,
        found: MetaType,
    },
    #[error("tensor {tensor:?}: {why}")]
    Write { tensor: String, why: String },
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
