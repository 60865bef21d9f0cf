//! `phiq imatrix`: an importance matrix from a calibration text, as `llama-imatrix`
//! computes it, for `phiq-quantize --imatrix` (or `llama-quantize --imatrix`).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use phiq::imatrix::{self, Collector};
use phiq::model::{Logits, Tap};
use serde_json::json;

use super::common::{ModelArgs, whole_chunks};
use super::perplexity::token_nll;

#[derive(Args)]
pub struct ImatrixArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The calibration text (a few hundred kB of text like what the model will see).
    #[arg(short, long, value_name = "FILE")]
    file: PathBuf,
    /// Where to write the matrix.
    #[arg(short, long, value_name = "FILE", default_value = "imatrix.gguf")]
    output: PathBuf,
    /// gguf (llama.cpp's current format) or dat (its legacy one); default: by the
    /// output's extension (.dat is dat, anything else gguf).
    #[arg(long, value_name = "FORMAT")]
    output_format: Option<OutputFormat>,
    /// Use at most N chunks of --ctx tokens (default: every whole chunk of the text).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// Also collect the output projection's input (llama-imatrix's --process-output;
    /// left out by default, as there).
    #[arg(long)]
    process_output: bool,
    /// Print {"output", "entries", "chunks", "chunk_size", "ppl"} as JSON at the end.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Gguf,
    Dat,
}

pub fn run(args: &ImatrixArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    if args.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    let format = args.output_format.unwrap_or(
        if args
            .output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dat"))
        {
            OutputFormat::Dat
        } else {
            OutputFormat::Gguf
        },
    );
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let n_ctx = args.model.chunk_ctx(model, 2, "an importance matrix")?;
    let ids = tok.encode(&text)?;
    let name = args.file.display().to_string();
    let n_chunks = whole_chunks(&name, ids.len(), n_ctx, args.chunks)?;
    let mut collector = Collector::new(model, args.process_output);
    let bar = progress(n_chunks, args.json);
    let n_vocab = model.hp.n_vocab;
    let (mut nll, mut count) = (0f64, 0usize);
    let mut s = model.session(n_ctx, args.model.kv_type)?;
    for (c, chunk) in ids.chunks_exact(n_ctx).take(n_chunks).enumerate() {
        s.truncate(0);
        let mut logits = Vec::with_capacity(n_ctx * n_vocab);
        for part in chunk.chunks(args.model.batch) {
            logits.extend(s.eval_observed(part, Logits::All, &mut |tap: Tap, x| {
                collector.observe(tap, x)
            })?);
        }
        // llama-imatrix's estimate: the second half of each chunk's predictions.
        for t in n_ctx / 2..n_ctx - 1 {
            nll += token_nll(&logits[t * n_vocab..(t + 1) * n_vocab], chunk[t + 1]);
            count += 1;
        }
        let ppl = (nll / count.max(1) as f64).exp();
        match &bar {
            Some(b) => {
                b.set_message(format!("PPL {ppl:.4}"));
                b.inc(1);
            }
            None if !args.json => eprintln!("[{}/{n_chunks}] PPL {ppl:.4}", c + 1),
            None => {}
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let dataset = args.file.display().to_string();
    let m = collector.finish(vec![dataset], n_chunks as u32, n_ctx as u32);
    match format {
        OutputFormat::Gguf => imatrix::write_gguf(&m, &args.output)?,
        OutputFormat::Dat => imatrix::write_dat(&m, &args.output)?,
    }
    let ppl = (nll / count.max(1) as f64).exp();
    if args.json {
        println!(
            "{}",
            json!({
                "output": args.output.display().to_string(),
                "entries": m.entries.len(),
                "chunks": n_chunks,
                "chunk_size": n_ctx,
                "ppl": ppl,
            })
        );
    } else {
        println!(
            "wrote {}: {} matrices from {n_chunks} chunk(s) of {n_ctx} tokens of {} (PPL {ppl:.4})",
            args.output.display(),
            m.entries.len(),
            args.file.display()
        );
    }
    Ok(())
}

/// A bar on a terminal; `None` (a line per chunk instead) when stderr is not one.
fn progress(n: usize, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(n as u64);
    b.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} chunks {msg} (eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    Some(b)
}
