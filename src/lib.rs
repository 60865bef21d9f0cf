//! phiq: Microsoft's Phi-2, quantized, on small CPUs.
//!
//! - [`gguf`]: the GGUF container, read over a memory map and written by streaming.
//! - [`quant`]: ggml's block formats and their reference (scalar) quantizers.

pub mod chat;
pub mod gguf;
pub mod imatrix;
pub mod kernels;
pub mod kld;
pub mod model;
pub mod quant;
pub mod sample;
pub mod server;
#[cfg(test)]
pub(crate) mod testing;
pub mod tokenizer;
