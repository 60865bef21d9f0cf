//! `phiq-quantize`: Hugging Face Phi-2 checkpoints to GGUF (issue 2 of 5 lands it).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("phiq-quantize: not available in this build yet");
    ExitCode::FAILURE
}
