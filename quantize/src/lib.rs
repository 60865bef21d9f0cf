//! Hugging Face Phi-2 checkpoints (or F32/F16/BF16 GGUFs) to GGUF files in llama.cpp's
//! `phi2` layout, quantized with ggml's block formats.

pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod convert;
pub mod error;
pub mod importance;
pub mod lora;
pub mod measure;
pub mod mix;
pub mod names;
pub mod policy;
pub mod quality;
pub mod target;
pub mod vocab;

pub use convert::{Input, Plan, Progress, Report, convert};
pub use error::{ConvertError, Result};
pub use importance::{Importance, ImportanceSummary};
pub use policy::{FILE_TYPES, FileType};
