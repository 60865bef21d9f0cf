//! `phiq bench`: prompt and generation speed, llama-bench style, with the memory
//! bandwidth bound measured in the same run.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use phiq::kernels::Kernels;
use phiq::model::{Logits, Model};
use rayon::prelude::*;
use serde_json::json;

use super::common::ModelArgs;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens per prompt-processing test (pp); 0 skips it.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated per text-generation test (tg); 0 skips it.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// Also run the generation test with N sessions decoded together, one token of
    /// each per forward pass, as `phiq serve` batches its slots (llama-batched-bench's
    /// `-npl`): a comma-separated list; reported as aggregate tok/s and as a ratio to
    /// one stream measured in the same repetitions.
    #[arg(long = "parallel", value_delimiter = ',', value_name = "N,...")]
    parallel: Vec<usize>,
    /// Also measure read bandwidth (1 GiB, all threads) and report the generation bound.
    #[arg(long)]
    bandwidth: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The `--parallel` tests: every repetition runs one stream, then each count, so a
/// ratio's two figures share the host's state of the moment.
fn parallel(
    model: &Model,
    args: &BenchArgs,
    results: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let mut runs = vec![Vec::new(); args.parallel.len()];
    let mut ratios = vec![Vec::new(); args.parallel.len()];
    for _ in 0..args.reps {
        let one = tg_parallel(model, args, 1)?;
        for (i, &n) in args.parallel.iter().enumerate() {
            let r = if n == 1 {
                one
            } else {
                tg_parallel(model, args, n)?
            };
            runs[i].push(r);
            ratios[i].push(r / one);
        }
    }
    let mut rows = Vec::new();
    for (i, &n) in args.parallel.iter().enumerate() {
        let (mean, std) = stats(&runs[i]);
        let (ratio, ratio_std) = stats(&ratios[i]);
        if !args.json {
            println!(
                "tg{:<4} x{n:<3} {mean:9.2} ± {std:6.2} tok/s in all  {ratio:5.2} ± {ratio_std:4.2} x one stream",
                args.n_gen
            );
        }
        rows.push(
            json!({"streams": n, "tok_s": mean, "std": std, "runs": runs[i],
            "vs_one_stream": ratio, "vs_one_stream_std": ratio_std}),
        );
    }
    results.insert("parallel".into(), json!(rows));
    Ok(())
}

/// Mean and sample standard deviation.
fn stats(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Deterministic token ids from the ordinary vocabulary, as llama-bench uses random ones.
fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 33) % 50_000) as u32
        })
        .collect()
}

fn pp(model: &Model, args: &BenchArgs) -> Result<f64> {
    let toks = tokens(args.n_prompt, 1);
    let mut s = model.session(args.n_prompt, args.model.kv_type)?;
    let t = Instant::now();
    for chunk in toks.chunks(args.model.batch) {
        s.eval(chunk, Logits::Last)?;
    }
    Ok(args.n_prompt as f64 / t.elapsed().as_secs_f64())
}

fn tg(model: &Model, args: &BenchArgs) -> Result<f64> {
    let toks = tokens(args.n_gen, 2);
    let mut s = model.session(args.n_gen, args.model.kv_type)?;
    let t = Instant::now();
    for &tok in &toks {
        s.eval(&[tok], Logits::Last)?;
    }
    Ok(args.n_gen as f64 / t.elapsed().as_secs_f64())
}

/// Aggregate tok/s of `n` sessions generating `--n-gen` tokens each, all decoded
/// together in one forward pass per step.
fn tg_parallel(model: &Model, args: &BenchArgs, n: usize) -> Result<f64> {
    let toks = tokens(args.n_gen * n, 3);
    let mut sessions = (0..n)
        .map(|_| model.session(args.n_gen, args.model.kv_type))
        .collect::<Result<Vec<_>, _>>()?;
    let t = Instant::now();
    for step in toks.chunks_exact(n) {
        let mut refs: Vec<&mut _> = sessions.iter_mut().collect();
        model.decode_batch(&mut refs, step)?;
    }
    Ok((args.n_gen * n) as f64 / t.elapsed().as_secs_f64())
}

/// STREAM-style read bandwidth in GB/s over 1 GiB, best of five: each thread streams
/// its own contiguous share through the kernel table's f32 dot (the path's widest
/// loads; a plain Rust sum compiled for baseline x86-64 measured 20% less than
/// llama.cpp's F16 generation actually reads, which would flatter every share).
fn read_bandwidth(k: &Kernels) -> Result<f64> {
    let dot = k.vec_dot(phiq::quant::GgmlType::F32)?;
    let data = vec![1f32; (1 << 30) / 4];
    let share = data.len().div_ceil(rayon::current_num_threads());
    let piece = 1 << 18;
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let sum: f32 = data
            .par_chunks(share)
            .map(|c| {
                c.chunks(piece)
                    .map(|p| {
                        let b: &[u8] = bytemuck::cast_slice(p);
                        dot(p.len(), b, b)
                    })
                    .sum::<f32>()
            })
            .sum();
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        best = best.max((1u64 << 30) as f64 / secs / 1e9);
    }
    Ok(best)
}

/// Bytes of weights one generated token reads: every matrix, but only one row of the
/// token embedding.
fn bytes_per_token(model: &Model) -> u64 {
    let f = model.file();
    f.tensors
        .iter()
        .map(|t| {
            if t.name == "token_embd.weight" {
                t.n_bytes / t.n_rows().max(1)
            } else {
                t.n_bytes
            }
        })
        .sum()
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("--repetitions must be at least 1");
    }
    let loaded = args.model.load()?;
    let model = &loaded.model;
    let ty = model
        .file()
        .get("general.file_type")
        .and_then(|v| v.as_u64());
    let mut results = serde_json::Map::new();
    // A warm-up pass maps the weights in so the first repetition is not a page-in test.
    if args.n_gen > 0 {
        let mut s = model.session(1, args.model.kv_type)?;
        s.eval(&[0], Logits::Last)?;
    }
    for (name, n, f) in [
        (
            "pp",
            args.n_prompt,
            pp as fn(&Model, &BenchArgs) -> Result<f64>,
        ),
        ("tg", args.n_gen, tg),
    ] {
        if n == 0 {
            continue;
        }
        let runs = (0..args.reps)
            .map(|_| f(model, args))
            .collect::<Result<Vec<_>>>()?;
        let (mean, std) = stats(&runs);
        if !args.json {
            println!("{name}{n:<6} {mean:9.2} ± {std:6.2} tok/s");
        }
        results.insert(format!("{name}_tok_s"), json!(mean));
        results.insert(format!("{name}_std"), json!(std));
        results.insert(format!("{name}_n"), json!(n));
        results.insert(format!("{name}_runs"), json!(runs));
    }
    if !args.parallel.is_empty() {
        if args.n_gen == 0 || args.parallel.contains(&0) {
            bail!("--parallel needs --n-gen > 0 and stream counts of at least 1");
        }
        parallel(model, args, &mut results)?;
    }
    let bpt = bytes_per_token(model);
    results.insert("weight_bytes_per_token".into(), json!(bpt));
    if args.bandwidth {
        let bw = read_bandwidth(model.kernels())?;
        let bound = bw * 1e9 / bpt as f64;
        results.insert("read_bandwidth_gb_s".into(), json!(bw));
        results.insert("tg_bound_tok_s".into(), json!(bound));
        if let Some(tg) = results.get("tg_tok_s").and_then(|v| v.as_f64()) {
            results.insert("tg_share_of_bound".into(), json!(tg / bound));
        }
        if !args.json {
            println!(
                "read bandwidth {bw:.1} GB/s: generation bound {bound:.2} tok/s ({:.2} GB of weights per token)",
                bpt as f64 / 1e9
            );
        }
    }
    results.insert(
        "model".into(),
        json!(args.model.model.display().to_string()),
    );
    results.insert("file_type".into(), json!(ty));
    results.insert("threads".into(), json!(rayon::current_num_threads()));
    results.insert("kernels".into(), json!(model.kernels().isa.name()));
    results.insert("repetitions".into(), json!(args.reps));
    if args.json {
        println!("{}", serde_json::Value::Object(results));
    } else {
        println!(
            "{} threads, {} kernels, {} repetitions",
            rayon::current_num_threads(),
            model.kernels().isa.name(),
            args.reps
        );
    }
    Ok(())
}
