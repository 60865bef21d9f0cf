//! `phiq run`: continue a prompt.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use super::common::{self, ModelArgs, SampleArgs, Stop};

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short, long, conflicts_with = "file", required_unless_present = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Tokens to generate at most (stops earlier at <|endoftext|>).
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    #[command(flatten)]
    sample: SampleArgs,
    /// Print one JSON object (prompt tokens, tokens, text, timings) instead of streaming.
    #[arg(long)]
    json: bool,
}

pub fn read_prompt(prompt: &Option<String>, file: &Option<PathBuf>) -> Result<String> {
    match (prompt, file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the prompt from {}", f.display())),
        (None, None) => bail!("give a prompt with -p TEXT or -f FILE"),
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let text = read_prompt(&args.prompt, &args.file)?;
    let mut sampler = args.sample.sampler()?;
    let (loaded, n_ctx) = args.model.load_fitting()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let mut prompt = tok.encode(&text)?;
    if prompt.is_empty() {
        // Nothing to condition on: start from <|endoftext|>, as a document boundary.
        let start = tok
            .eos_id()
            .context("the model has no <|endoftext|> token to start from")?;
        eprintln!("phiq: empty prompt: generating from <|endoftext|>");
        prompt.push(start);
    }
    let mut session = args.model.session(model, n_ctx)?;
    if prompt.len() > session.n_ctx() {
        bail!(
            "the prompt has {} tokens but the context holds {}: shorten it or raise --ctx (the model was trained on {})",
            prompt.len(),
            session.n_ctx(),
            model.hp.n_ctx_train
        );
    }
    let t0 = Instant::now();
    let logits = common::prefill(&mut session, &prompt, args.model.batch)?;
    let prompt_time = t0.elapsed();

    let mut history = prompt.clone();
    let stdout = io::stdout();
    let mut sink: Box<dyn Write> = if args.json {
        Box::new(io::sink())
    } else {
        Box::new(stdout.lock())
    };
    let generated = common::generate(
        &mut session,
        tok,
        &mut sampler,
        logits,
        &mut history,
        args.n_predict,
        &[],
        &mut sink,
    )?;
    drop(sink);
    if generated.stop == Stop::ContextFull {
        eprintln!(
            "\nphiq: the context ({} tokens) is full; raise --ctx for longer output",
            session.n_ctx()
        );
    }
    let timings = json!({
        "load_ms": loaded.load_time.as_secs_f64() * 1e3,
        "prompt_tok_s": common::per_second(prompt.len(), prompt_time),
        "gen_tok_s": common::per_second(generated.tokens.len(), generated.elapsed),
    });
    if args.json {
        let out = json!({ "prompt_tokens": prompt, "tokens": generated.tokens, "text": generated.text, "timings": timings });
        println!("{out}");
    } else {
        println!();
        eprintln!(
            "phiq: load {:.0} ms, prompt {} tokens at {:.2} tok/s, generated {} tokens at {:.2} tok/s ({} threads, {} kernels)",
            timings["load_ms"].as_f64().unwrap_or(0.0),
            prompt.len(),
            timings["prompt_tok_s"].as_f64().unwrap_or(0.0),
            generated.tokens.len(),
            timings["gen_tok_s"].as_f64().unwrap_or(0.0),
            rayon::current_num_threads(),
            model.kernels().isa.name(),
        );
    }
    Ok(())
}
