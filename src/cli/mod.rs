//! Subcommands of `phiq`, in llama.cpp's vocabulary.

mod info;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "phiq",
    version,
    about = "Run Microsoft's Phi-2, quantized, on small CPUs",
    long_about = "Run Microsoft's Phi-2 (2.7B), quantized to ggml's block formats in a GGUF file, \
                  on small CPUs: Raspberry Pi 4/5, ARM gateways, plain x86.\n\n\
                  Make a GGUF from a Hugging Face checkpoint with `phiq-quantize`, or use one made by llama.cpp."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a GGUF file: architecture, hyperparameters, metadata, tensors, size.
    Info(info::InfoArgs),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info::run(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}
