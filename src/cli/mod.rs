//! Subcommands of `phiq`, in llama.cpp's vocabulary.

mod bench;
mod chat;
mod common;
mod imatrix;
mod info;
mod perplexity;
mod run;
mod serve;
mod tokenize;

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
    /// Continue a prompt: stream the model's text to stdout.
    Run(run::RunArgs),
    /// Talk with the model interactively (Phi-2's Instruct/Output or Alice/Bob format).
    Chat(chat::ChatArgs),
    /// Perplexity of a text file, in chunks of the context size.
    Perplexity(perplexity::PerplexityArgs),
    /// Compute an importance matrix from a calibration text (llama-imatrix's files),
    /// for `phiq-quantize --imatrix`.
    Imatrix(imatrix::ImatrixArgs),
    /// Show the token ids of a text.
    Tokenize(tokenize::TokenizeArgs),
    /// Measure prompt and generation speed (llama-bench style).
    Bench(bench::BenchArgs),
    /// Serve the model over HTTP with OpenAI's API (and a chat page at /).
    Serve(serve::ServeArgs),
    /// Describe a GGUF file: architecture, hyperparameters, metadata, tensors, size.
    Info(info::InfoArgs),
}

pub fn run() -> anyhow::Result<ExitCode> {
    // llama-server spells the slot count `-np`; clap's short flags are one letter.
    let args = std::env::args().map(|a| if a == "-np" { "--parallel".into() } else { a });
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Run(args) => run::run(&args)?,
        Command::Chat(args) => chat::run(&args)?,
        Command::Perplexity(args) => perplexity::run(&args)?,
        Command::Imatrix(args) => imatrix::run(&args)?,
        Command::Tokenize(args) => tokenize::run(&args)?,
        Command::Bench(args) => bench::run(&args)?,
        Command::Info(args) => info::run(&args)?,
        Command::Serve(args) => serve::run(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}
