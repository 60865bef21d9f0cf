//! `phiq-quantize`: a Hugging Face Phi-2 folder (or an F32/F16/BF16 GGUF) to one GGUF
//! file in llama.cpp's `phi2` layout.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use phiq::quant::GgmlType;
use phiq_quantize::convert::{PlannedTensor, TensorReport};
use phiq_quantize::lora::{AdapterSpec, Lora};
use phiq_quantize::quality::{self, QualityRow, Scoring};
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
    /// The GGUF file to write (written to a temporary file, renamed when complete);
    /// with --report, the folder for its files (default: the current one).
    #[arg(short, long, value_name = "OUT.gguf")]
    output: Option<PathBuf>,
    /// Target type (see the list below).
    #[arg(short = 't', long = "type", value_name = "TYPE", value_parser = parse_file_type,
          required_unless_present = "report", conflicts_with = "report")]
    file_type: Option<FileType>,
    /// Which type to ship: quantize to each of TYPES (comma-separated), score each
    /// against the F16 model on --text with llama-perplexity's KL statistics, and print
    /// one table (size, bits per weight, PPL, KLD, same top token, memory at --report-ctx).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_file_type,
          requires = "text")]
    report: Vec<FileType>,
    /// The text --report scores on (a few thousand tokens like what the model will see).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Tokens per scored chunk for --report (llama-perplexity's -c; its tables use 512).
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,
    /// Score at most N chunks of --text.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// The context --report estimates memory for (a Pi running `phiq run` at it).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    report_ctx: usize,
    /// Print the --report table as JSON.
    #[arg(long)]
    json: bool,
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
    let input = Input::open(&args.input)?;
    match args.file_type {
        Some(ft) => {
            let Some(out) = &args.output else {
                bail!("--output is required: the GGUF file to write");
            };
            let report = quantize(&args, &input, ft, out)?;
            print_summary(&input, ft, &report);
            Ok(())
        }
        None => quality_report(&args, &input),
    }
}

/// One conversion: plan, importance matrix, adapters, then the file.
fn quantize(args: &Args, input: &Input, ft: FileType, out: &Path) -> Result<Report> {
    if out.canonicalize().ok() == args.input.canonicalize().ok() && out.exists() {
        bail!("the output {} would overwrite the input", out.display());
    }
    let mut plan = Plan::new(input, ft, args.name.as_deref(), args.imatrix.is_some())?;
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
    let (lora, adapters) = Lora::open(&adapter_specs(args)?, &plan)?;
    for a in &adapters {
        for w in &a.warnings {
            eprintln!("phiq-quantize: warning: {}: {w}", a.dir.display());
        }
    }
    let bar = Bar::new(&plan, args.quiet);
    let report = convert(input, &plan, &lora, &importance, out, &bar)?;
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
    Ok(report)
}

/// `--report`: the base model's log-probabilities on --text, then each type's file
/// and its KL statistics against them, as one table.
fn quality_report(args: &Args, input: &Input) -> Result<()> {
    let text = args
        .text
        .as_ref()
        .expect("clap requires --text with --report");
    let dir = args.output.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = args
        .input
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let scoring = Scoring {
        n_ctx: args.ctx,
        chunks: args.chunks,
        batch: 512,
    };
    if args.ctx < 4 {
        bail!("--ctx must be at least 4");
    }
    // The base: the input itself when it is an unquantized GGUF, else its F16 conversion.
    let base_model = match input {
        Input::Gguf(_) => args.input.clone(),
        Input::HuggingFace(_) => {
            let f16 = dir.join(format!("{stem}-f16.gguf"));
            eprintln!("[base] converting to F16: {}", f16.display());
            quantize(
                args,
                input,
                FileType::by_name("f16").expect("f16 exists"),
                &f16,
            )?;
            f16
        }
    };
    let base_path = dir.join(format!("{stem}-base.kld"));
    eprintln!(
        "[base] scoring {} on {} ({} tokens per chunk)",
        base_model.display(),
        text.display(),
        args.ctx
    );
    let base = quality::write_base(&base_model, text, &base_path, &scoring)?;
    let mut rows = Vec::new();
    for (i, ft) in args.report.iter().enumerate() {
        let out = dir.join(format!("{stem}-{}.gguf", ft.name));
        eprintln!(
            "[{}/{}] {}: quantizing to {}",
            i + 1,
            args.report.len(),
            ft.name,
            out.display()
        );
        let report = quantize(args, input, *ft, &out)?;
        eprintln!("[{}/{}] {}: scoring", i + 1, args.report.len(), ft.name);
        let (kld, mem) = quality::compare(&out, &base, &scoring, args.report_ctx)?;
        let params: u64 = report.tensors.iter().map(|t| t.n_elements).sum();
        let bytes: u64 = report.tensors.iter().map(|t| t.bytes).sum();
        rows.push(QualityRow {
            file_type: ft.name.to_string(),
            file_bytes: std::fs::metadata(&out).map(|m| m.len()).unwrap_or(bytes),
            path: out,
            bits_per_weight: bytes as f64 * 8.0 / params.max(1) as f64,
            memory_at_ctx: mem.total(),
            kld,
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "base": base_model.display().to_string(),
                "text": text.display().to_string(),
                "n_ctx": base.n_ctx,
                "chunks": base.n_chunk,
                "memory_ctx": args.report_ctx,
                "types": rows,
            })
        );
    } else {
        println!(
            "against {} on {} ({} chunk(s) of {} tokens, second halves scored)",
            base_model.display(),
            text.display(),
            base.n_chunk,
            base.n_ctx
        );
        print!("{}", quality::table(&rows, args.report_ctx));
    }
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

fn print_summary(input: &Input, ft: FileType, report: &Report) {
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
    eprintln!("wrote {} ({})", report.output.display(), ft.name);
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
