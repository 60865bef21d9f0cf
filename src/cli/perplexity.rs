//! `phiq perplexity`: how well the model predicts a text, in chunks; and quantization
//! quality against a base model's stored log-probabilities, as llama-perplexity's
//! `--kl-divergence-base` / `--kl-divergence` (files interchangeable with it).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use phiq::kld::{BaseFile, BaseWriter, KldReport, KldStats, Scored, for_each_scored, scored_rows};
use phiq::model::{Logits, Model};
use serde_json::json;

use super::common::{ModelArgs, whole_chunks};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text to score (with --kl-divergence: optional, checked against the
    /// base file's tokens).
    #[arg(short, long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// all: every prediction inside each chunk (as Hugging Face computes it);
    /// half: llama-perplexity's, the second half of each chunk of --ctx (default
    /// 512 then), to compare with published llama.cpp figures.
    #[arg(long, value_enum, default_value = "all")]
    scoring: Scoring,
    /// Score at most N chunks.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// The base model's log-probabilities: written here from this model and --file,
    /// or, with --kl-divergence, read and compared against.
    #[arg(long, value_name = "FILE")]
    kl_divergence_base: Option<PathBuf>,
    /// Compare this model against --kl-divergence-base: PPL ratio, KL divergence,
    /// Δp, same top token (llama-perplexity's statistics).
    #[arg(long, requires = "kl_divergence_base")]
    kl_divergence: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scoring {
    All,
    Half,
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    if args.chunks == Some(0) {
        bail!("--chunks must be at least 1");
    }
    match (&args.kl_divergence_base, args.kl_divergence) {
        (Some(base), true) => kl_divergence(args, base),
        (Some(base), false) => write_base(args, base),
        (None, _) if args.scoring == Scoring::Half => half(args),
        (None, _) => all(args),
    }
}

fn text_ids(args: &PerplexityArgs, tok: &phiq::tokenizer::Tokenizer) -> Result<Vec<u32>> {
    let Some(file) = &args.file else {
        bail!("--file is required: the text to score");
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(tok.encode(&text)?)
}

/// The chunk length for llama-perplexity's scoring: --ctx, else 512 (or the model's
/// context if shorter).
fn llama_ctx(args: &PerplexityArgs, model: &Model) -> Result<usize> {
    args.model.chunk_ctx(model, 4, "half-window scoring")
}

/// Whole chunks of `n_ctx` in `n_tokens`, at most --chunks; at least one.
fn n_chunks(args: &PerplexityArgs, n_tokens: usize, n_ctx: usize) -> Result<usize> {
    let text = args
        .file
        .as_ref()
        .map_or("the text".into(), |f| f.display().to_string());
    whole_chunks(&text, n_tokens, n_ctx, args.chunks)
}

/// Every next-token prediction inside each chunk of `--ctx` tokens, with no BOS
/// prepended (as the Hugging Face reference computes it); a text shorter than the
/// context is one chunk.
fn all(args: &PerplexityArgs) -> Result<()> {
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let ids = text_ids(args, tok)?;
    if ids.len() < 2 {
        bail!(
            "the text has {} token(s): perplexity needs at least 2",
            ids.len()
        );
    }
    let n_ctx = args.model.n_ctx(model)?.max(2);
    let n_vocab = model.hp.n_vocab;
    let (mut nll, mut count, mut chunks) = (0f64, 0usize, 0usize);
    let max_chunks = args.chunks.unwrap_or(usize::MAX);
    for chunk in ids.chunks(n_ctx).filter(|c| c.len() >= 2).take(max_chunks) {
        let mut s = model.session(chunk.len(), args.model.kv_type)?;
        let mut logits = Vec::with_capacity(chunk.len() * n_vocab);
        for part in chunk.chunks(args.model.batch) {
            logits.extend(s.eval(part, Logits::All)?);
        }
        for t in 0..chunk.len() - 1 {
            nll += token_nll(&logits[t * n_vocab..(t + 1) * n_vocab], chunk[t + 1]);
            count += 1;
        }
        chunks += 1;
        if !args.json {
            eprint!("[{chunks}]{:.4} ", (nll / count as f64).exp());
        }
    }
    let mean = nll / count as f64;
    if args.json {
        println!(
            "{}",
            json!({ "scoring": "all", "ppl": mean.exp(), "mean_nll": mean, "tokens": ids.len(),
                    "scored": count, "chunks": chunks })
        );
    } else {
        eprintln!();
        println!(
            "perplexity {:.4} (mean NLL {mean:.6}) over {count} predictions of {} tokens in {chunks} chunk(s)",
            mean.exp(),
            ids.len()
        );
    }
    Ok(())
}

/// PPL with its uncertainty, from the sums of NLL and NLL² (llama-perplexity's).
fn ppl_with_uncertainty(nll: f64, nll2: f64, count: usize) -> (f64, f64) {
    let n = count as f64;
    let mean = nll / n;
    let var = nll2 / n - mean * mean;
    let unc = if var > 0.0 && count > 1 {
        (var / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean.exp(), mean.exp() * unc)
}

/// llama-perplexity's scoring, and its base file when `base` is given.
fn scored_run(args: &PerplexityArgs, mut base: Option<&std::path::Path>) -> Result<()> {
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let ids = text_ids(args, tok)?;
    let n_ctx = llama_ctx(args, model)?;
    let n_chunk = n_chunks(args, ids.len(), n_ctx)?;
    let n_vocab = model.hp.n_vocab;
    let mut writer = match base.take() {
        Some(p) => Some(BaseWriter::create(p, n_ctx, n_vocab, n_chunk, &ids)?),
        None => None,
    };
    let mut s = model.session(n_ctx, args.model.kv_type)?;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let rows = scored_rows(n_ctx);
    let json = args.json;
    let mut row = |p: Scored| {
        let v = match &mut writer {
            Some(w) => w.push(p.logits, p.next)?,
            None => token_nll(p.logits, p.next),
        };
        nll += v;
        nll2 += v * v;
        count += 1;
        if !json && p.row + 1 == rows {
            eprint!("[{}]{:.4},", p.chunk + 1, (nll / count as f64).exp());
        }
        Ok(())
    };
    for_each_scored(&mut s, &ids, n_ctx, n_chunk, args.model.batch, &mut row)?;
    if !args.json {
        eprintln!();
    }
    let written = writer.map(BaseWriter::finish).transpose()?;
    let (ppl, unc) = ppl_with_uncertainty(nll, nll2, count);
    if args.json {
        println!(
            "{}",
            json!({ "scoring": "half", "ppl": ppl, "ppl_uncertainty": unc, "mean_nll": nll / count as f64,
                    "tokens": ids.len(), "scored": count, "chunks": n_chunk, "n_ctx": n_ctx,
                    "kl_divergence_base": written.as_ref().map(|p| p.display().to_string()) })
        );
    } else {
        println!(
            "Final estimate: PPL = {ppl:.4} +/- {unc:.5} ({count} predictions in {n_chunk} chunk(s) of {n_ctx})"
        );
        if let Some(p) = written {
            println!("wrote the base log-probabilities to {}", p.display());
        }
    }
    Ok(())
}

fn half(args: &PerplexityArgs) -> Result<()> {
    scored_run(args, None)
}

fn write_base(args: &PerplexityArgs, base: &std::path::Path) -> Result<()> {
    scored_run(args, Some(base))
}

fn kl_divergence(args: &PerplexityArgs, base_path: &std::path::Path) -> Result<()> {
    let base = BaseFile::open(base_path)?;
    let loaded = args.model.load()?;
    let (model, tok) = (&loaded.model, &loaded.tokenizer);
    let name = base_path.display();
    if base.n_vocab != model.hp.n_vocab {
        bail!(
            "{name}: made with a vocabulary of {} tokens, {} has {}: another model family",
            base.n_vocab,
            args.model.model.display(),
            model.hp.n_vocab
        );
    }
    if let Some(c) = args.model.ctx.filter(|&c| c != base.n_ctx) {
        bail!(
            "{name}: computed with chunks of {} tokens; --ctx {c} cannot compare with it",
            base.n_ctx
        );
    }
    if base.n_ctx > model.hp.n_ctx_train {
        bail!(
            "{name}: chunks of {} tokens exceed the model's context of {}",
            base.n_ctx,
            model.hp.n_ctx_train
        );
    }
    if let Some(file) = &args.file {
        let ids = text_ids(args, tok)?;
        let n = base.tokens.len().min(ids.len());
        if let Some(i) = (0..n)
            .find(|&i| ids[i] != base.tokens[i])
            .or((ids.len() < base.tokens.len()).then_some(n))
        {
            bail!(
                "{name}: its tokens differ from {}'s at position {i}: the base was made from another text (or tokenizer)",
                file.display()
            );
        }
    }
    let n_chunk = args.chunks.map_or(base.n_chunk, |c| c.min(base.n_chunk));
    let mut s = model.session(base.n_ctx, args.model.kv_type)?;
    let mut stats = KldStats::default();
    if !args.json {
        eprintln!(
            "chunk    PPL              ln(PPL(Q)/PPL(base))    KL divergence         Δp RMS             same top p"
        );
    }
    let rows = scored_rows(base.n_ctx);
    let json = args.json;
    let mut row = |p: Scored| {
        stats.push(p.logits, &base.row(p.chunk, p.row), p.next);
        if !json && p.row + 1 == rows {
            print_running(p.chunk, &stats);
        }
        Ok(())
    };
    for_each_scored(
        &mut s,
        &base.tokens,
        base.n_ctx,
        n_chunk,
        args.model.batch,
        &mut row,
    )?;
    let r = stats.report();
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["chunks"] = json!(n_chunk);
        v["n_ctx"] = json!(base.n_ctx);
        v["base"] = json!(base_path.display().to_string());
        println!("{v}");
    } else {
        print_report(&r);
    }
    Ok(())
}

fn print_running(c: usize, stats: &KldStats) {
    let (ppl, ratio, kld, rms, top) = stats.running();
    eprintln!(
        "{:4}  {:9.4} ± {:7.4}  {:9.5} ± {:8.5}  {:9.5} ± {:8.5}  {:6.3} ± {:5.3} %  {:6.3} ± {:5.3} %",
        c + 1,
        ppl.value,
        ppl.uncertainty,
        ratio.value,
        ratio.uncertainty,
        kld.value,
        kld.uncertainty,
        100.0 * rms.value,
        100.0 * rms.uncertainty,
        100.0 * top.value,
        100.0 * top.uncertainty
    );
}

fn print_report(r: &KldReport) {
    let pm = |s: &phiq::kld::Summary| format!("{:10.6} ± {:10.6}", s.value, s.uncertainty);
    println!("====== Perplexity statistics ======");
    println!("Mean PPL(Q)                   : {}", pm(&r.ppl));
    println!("Mean PPL(base)                : {}", pm(&r.ppl_base));
    println!(
        "Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%",
        100.0 * r.ln_ppl_correlation
    );
    println!("Mean ln(PPL(Q)/PPL(base))     : {}", pm(&r.ln_ppl_ratio));
    println!("Mean PPL(Q)/PPL(base)         : {}", pm(&r.ppl_ratio));
    println!("Mean PPL(Q)-PPL(base)         : {}", pm(&r.ppl_diff));
    println!();
    println!("====== KL divergence statistics ======");
    println!("Mean    KLD: {}", pm(&r.kld));
    for (label, v) in [
        ("Maximum KLD", r.kld_max),
        ("99.9%   KLD", r.kld_99_9),
        ("99.0%   KLD", r.kld_99),
        ("95.0%   KLD", r.kld_95),
        ("90.0%   KLD", r.kld_90),
        ("Median  KLD", r.kld_median),
        ("10.0%   KLD", r.kld_10),
        (" 5.0%   KLD", r.kld_5),
        (" 1.0%   KLD", r.kld_1),
        (" 0.1%   KLD", r.kld_0_1),
        ("Minimum KLD", r.kld_min),
    ] {
        println!("{label}: {v:10.6}");
    }
    println!();
    println!("====== Token probability statistics ======");
    println!(
        "Mean    Δp: {:6.3} ± {:5.3} %",
        100.0 * r.p_diff.value,
        100.0 * r.p_diff.uncertainty
    );
    for (label, v) in [
        ("Maximum Δp", r.p_diff_max),
        ("99.0%   Δp", r.p_diff_99),
        ("Median  Δp", r.p_diff_median),
        (" 1.0%   Δp", r.p_diff_1),
        ("Minimum Δp", r.p_diff_min),
    ] {
        println!("{label}: {:6.3}%", 100.0 * v);
    }
    println!(
        "RMS Δp    : {:6.3} ± {:5.3} %",
        100.0 * r.p_diff_rms.value,
        100.0 * r.p_diff_rms.uncertainty
    );
    println!(
        "Same top p: {:6.3} ± {:5.3} %",
        100.0 * r.same_top.value,
        100.0 * r.same_top.uncertainty
    );
    println!("({} positions)", r.count);
}

/// -log softmax(logits)[target], in f64.
pub(super) fn token_nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&v| (v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    lse - logits[target as usize] as f64
}
