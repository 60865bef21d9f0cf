//! `phiq tokenize`: the token ids of a text, as the model sees it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use phiq::gguf::GgufFile;
use phiq::tokenizer::Tokenizer;

use super::run::read_prompt;

#[derive(Args)]
pub struct TokenizeArgs {
    /// The GGUF model file (only its tokenizer is read).
    #[arg(short, long, value_name = "MODEL.gguf")]
    model: PathBuf,
    #[arg(short, long, conflicts_with = "file", required_unless_present = "file")]
    prompt: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Print {"ids": [...]} instead of one `id<TAB>piece` line per token.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &TokenizeArgs) -> Result<()> {
    let text = read_prompt(&args.prompt, &args.file)?;
    let file = GgufFile::open(&args.model)?;
    let tok = Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: the tokenizer", args.model.display()))?;
    let ids = tok.encode(&text)?;
    if args.json {
        println!("{}", serde_json::json!({ "ids": ids }));
    } else {
        for id in ids {
            println!("{id}\t{}", tok.token_piece(id).escape_debug());
        }
    }
    Ok(())
}
