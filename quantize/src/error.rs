use std::path::PathBuf;

use phiq::gguf::GgufError;
use phiq::quant::QuantError;

/// What can go wrong converting a checkpoint. Every variant names the file, the tensor
/// or the key concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    // The cause is in the message, not also in `source()`, so that `{:#}` prints it once.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Json { path: PathBuf, why: String },
    #[error("{}: key {key:?}: {why}", path.display())]
    Config {
        path: PathBuf,
        key: String,
        why: String,
    },
    #[error("{}: not a valid safetensors file: {why}", path.display())]
    Safetensors { path: PathBuf, why: String },
    #[error("{}: {why}", path.display())]
    Input { path: PathBuf, why: String },
    #[error("tensor {tensor:?} in {}: {why}", file.display())]
    Tensor {
        tensor: String,
        file: PathBuf,
        why: String,
    },
    #[error("tensor {tensor:?}: non-finite weight {value} at row {row}, column {column}")]
    NonFinite {
        tensor: String,
        row: usize,
        column: usize,
        value: f32,
    },
    #[error("tensor {0:?} is missing from the checkpoint")]
    MissingTensor(String),
    #[error("tokenizer: {}: {why}", path.display())]
    Tokenizer { path: PathBuf, why: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Kernels(#[from] phiq::kernels::KernelError),
    #[error(transparent)]
    Imatrix(#[from] phiq::imatrix::ImatrixError),
    #[error("tensor {tensor:?}: {source}")]
    Quant {
        tensor: String,
        #[source]
        source: QuantError,
    },
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;
