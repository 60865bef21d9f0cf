//! `phiq-quantize`: a Hugging Face Phi-2 folder (or an F32/F16/BF16 GGUF) to one GGUF
//! file in llama.cpp's `phi2` layout.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phiq::quant::GgmlType;
use phiq_quantize::convert::{PlannedTensor, TensorReport};
use phiq_quantize::lora::{AdapterSpec, Lora};
use phiq_quantize::{
    FILE_TYPES, FileType, Importance, ImportanceSummary, Input, Plan, Progress, Report, convert,
};

#[derive(Parser)]
#[command(
    name = "phiq-quantize",
    version,
    about = "Convert a Hugging Face Phi-2 checkpoint to a quantized GGUF file",
    long_about = "Convert a Hugging Face Phi-2 checkpoint (config.json, model.safetensors or \
        shards with model.safetensors.index.json, tokenizer files; F32, F16 or BF16 weights; \
        today's names or the older phi-msft ones) into one GGUF file in llama.cpp's phi2 layout, \
        with the tokenizer embedded. The file runs in phiq and in llama.cpp.\n\n\
        INPUT may also be an F32, F16 or BF16 GGUF, which is requantized (like llama-quantize).",
    after_help = file_types_help()
)]
struct Args {
    /// Hugging Face checkpoint folder, or an F32/F16/BF16 GGUF file.
    input: PathBuf,
    /// The GGUF file to write (written to a temporary file, renamed when complete).
    #[arg(short, long, value_name = "OUT.gguf")]
    output: PathBuf,
    /// Target type (see the list below).
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = parse_file_type)]
    file_type: FileType,
    /// Threads for quantizing rows (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The model's name in the file (`general.name`; default: the input folder's name).
    #[arg(long)]
    name: Option<String>,
    /// A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)
    /// to merge into the weights before quantizing; repeat to stack adapters, in order.
    #[arg(long, value_name = "ADAPTER_DIR")]
    lora: Vec<PathBuf>,
    /// Strength of the adapters (1 = as trained): once for all of them, or once per
    /// --lora, in the same order.
    #[arg(long, value_name = "S")]
    lora_scale: Vec<f32>,
    /// An importance matrix (`phiq imatrix` or `llama-imatrix`, GGUF or legacy .dat)
    /// to quantize under: ggml's weighted quantizers, the same bytes as
    /// `llama-quantize --imatrix` from the same weights and matrix.
    #[arg(long, value_name = "FILE")]
    imatrix: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_file_type(s: &str) -> Result<FileType, String> {
    FileType::by_name(s).ok_or_else(|| {
        let names: Vec<&str> = FILE_TYPES.iter().map(|f| f.name).collect();
        format!("unknown type {s:?}; choose one of {}", names.join(", "))
    })
}

fn file_types_help() -> String {
    let mut s =
        String::from("Types (bits per weight for the bulk of the weights; sizes for Phi-2):\n");
    for f in FILE_TYPES {
        s.push_str(&format!("  {:<8} {}\n", f.name, f.help));
    }
    s.push_str(
        "\nNorms and biases stay F32. Except for f32/f16/bf16 and q8_0, the output projection \
         gets Q6_K, as in llama.cpp.",
    );
    s
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phiq-quantize: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("starting the thread pool")?;
    }
    if args.output.canonicalize().ok() == args.input.canonicalize().ok() && args.output.exists() {
        bail!(
            "the output {} would overwrite the input",
            args.output.display()
        );
    }
    let input = Input::open(&args.input)?;
    let mut plan = Plan::new(
        &input,
        args.file_type,
        args.name.as_deref(),
        args.imatrix.is_some(),
    )?;
    let (importance, imatrix) = match &args.imatrix {
        Some(path) => {
            let (i, s) = Importance::open(path, &plan)?;
            plan.metadata.extend(i.metadata().iter().cloned());
            (i, Some(s))
        }
        None => (Importance::none(), None),
    };
    if let Some(s) = &imatrix {
        report_imatrix(s);
    }
    let (lora, adapters) = Lora::open(&adapter_specs(&args)?, &plan)?;
    for a in &adapters {
        for w in &a.warnings {
            eprintln!("phiq-quantize: warning: {}: {w}", a.dir.display());
        }
    }
    let bar = Bar::new(&plan, args.quiet);
    let report = convert(&input, &plan, &lora, &importance, &args.output, &bar)?;
    bar.0.finish_and_clear();
    for a in &adapters {
        let ranks: Vec<String> = a.ranks.iter().map(usize::to_string).collect();
        eprintln!(
            "merged {} (base {}): {} modules of rank {}{}",
            a.dir.display(),
            a.base_model.as_deref().unwrap_or("not named"),
            a.modules,
            ranks.join("/"),
            if a.replaced > 0 {
                format!(", {} tensors replaced (modules_to_save)", a.replaced)
            } else {
                String::new()
            }
        );
    }
    print_summary(&input, &args, &report);
    Ok(())
}

fn report_imatrix(s: &ImportanceSummary) {
    eprintln!(
        "importance matrix {}: {} entries from {} chunk(s) of {}; {} tensors weighted",
        s.file.display(),
        s.entries,
        s.chunks,
        s.datasets.first().map_or("an unnamed text", String::as_str),
        s.weighted
    );
    if !s.missing.is_empty() {
        eprintln!(
            "phiq-quantize: warning: no importance for {} matri{} (quantized without): {}",
            s.missing.len(),
            if s.missing.len() == 1 { "x" } else { "ces" },
            s.missing.join(", ")
        );
    }
}

/// The --lora folders with their --lora-scale.
fn adapter_specs(args: &Args) -> Result<Vec<AdapterSpec>> {
    let scales = match args.lora_scale.len() {
        0 => vec![1.0; args.lora.len()],
        1 => vec![args.lora_scale[0]; args.lora.len()],
        n if n == args.lora.len() => args.lora_scale.clone(),
        n => bail!(
            "{n} --lora-scale values for {} --lora adapters: give one for all, or one per adapter",
            args.lora.len()
        ),
    };
    if args.lora.is_empty() && !args.lora_scale.is_empty() {
        bail!("--lora-scale without --lora");
    }
    if let Some(s) = scales.iter().find(|s| !s.is_finite()) {
        bail!("--lora-scale {s} is not a finite number");
    }
    Ok(args
        .lora
        .iter()
        .zip(scales)
        .map(|(dir, scale)| AdapterSpec {
            dir: dir.clone(),
            scale,
        })
        .collect())
}

/// The progress bar: elements converted, with the current tensor's name.
struct Bar(ProgressBar);

impl Bar {
    fn new(plan: &Plan, quiet: bool) -> Bar {
        let total: u64 = plan.tensors.iter().map(PlannedTensor::n_elements).sum();
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template"),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn tensor(&self, _index: usize, t: &PlannedTensor) {
        self.0.set_message(format!("{} -> {}", t.name, t.ty));
    }
    fn elements(&self, n: u64) {
        self.0.inc(n);
    }
}

fn print_summary(input: &Input, args: &Args, report: &Report) {
    let mut by_type: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    for t in &report.tensors {
        let e = by_type.entry(t.ty).or_default();
        e.0 += 1;
        e.1 += t.bytes;
    }
    let params: u64 = report.tensors.iter().map(|t| t.n_elements).sum();
    let bytes: u64 = report.tensors.iter().map(|t| t.bytes).sum();
    let out_size = std::fs::metadata(&report.output)
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "wrote {} ({})",
        report.output.display(),
        args.file_type.name
    );
    for (ty, (n, b)) in &by_type {
        eprintln!("  {:<6} {:>4} tensors {:>10}", ty.name(), n, gb(*b));
    }
    eprintln!(
        "  input {} -> output {}, {:.2} bits per weight over {} parameters, in {:.1} s",
        gb(input.size()),
        gb(out_size),
        bytes as f64 * 8.0 / params.max(1) as f64,
        params,
        report.elapsed.as_secs_f64()
    );
    if let Some(worst) = worst(&report.tensors) {
        eprintln!(
            "  largest relative RMSE: {:.5} ({}, {})",
            worst.rel_rmse, worst.name, worst.ty
        );
    }
}

fn worst(tensors: &[TensorReport]) -> Option<&TensorReport> {
    tensors
        .iter()
        .max_by(|a, b| a.rel_rmse.total_cmp(&b.rel_rmse))
}

fn gb(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.2} MB", bytes as f64 / 1e6)
    }
}
