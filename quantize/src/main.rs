//! `phiq-quantize`: a Hugging Face Phi-2 folder (or an F32/F16/BF16 GGUF) to one GGUF
//! file in llama.cpp's `phi2` layout.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

use phiq::model::KvType;
use phiq::model::fit::resident_weights;
use phiq::quant::GgmlType;
use phiq_quantize::budget::{BudgetError, allocate};
use phiq_quantize::convert::{PlannedTensor, TensorReport};
use phiq_quantize::lora::{AdapterSpec, AdapterSummary, Lora};
use phiq_quantize::measure::{self, MeasureProgress};
use phiq_quantize::mix::Mix;
use phiq_quantize::quality::{self, QualityRow, Scoring};
use phiq_quantize::target::{Override, Target, alignment, apply_overrides, hparams, run_overhead};
use phiq_quantize::{
    FILE_TYPES, FileType, Importance, ImportanceSummary, Input, Plan, Progress, Report, convert,
};

#[derive(Parser)]
#[command(
    group = clap::ArgGroup::new("mode").required(true).multiple(false)
        .args(["file_type", "target_size", "target_bpw", "fit_ram", "report"]),
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
          group = "mode")]
    file_type: Option<FileType>,
    /// Instead of a type: the largest file to write (like 1.35G or 1350M); each matrix
    /// gets the type that minimises the total error within it (see "Budgets" below).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, group = "mode")]
    target_size: Option<u64>,
    /// Instead of a type: bits per weight over all tensors (like 3.8).
    #[arg(long, value_name = "BITS", value_parser = parse_bpw, group = "mode")]
    target_bpw: Option<f64>,
    /// Instead of a type: the RAM of the device that runs `phiq run` (like 2G); the
    /// weights get what --reserve, the KV cache at --ctx and the run's scratch leave.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, group = "mode")]
    fit_ram: Option<u64>,
    /// With --fit-ram: memory the OS and other programs keep [default: 400M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    reserve: Option<u64>,
    /// With --fit-ram: how the run's KV cache stores keys and values (f32, f16, q8_0),
    /// as `phiq run --kv-type` [default: f16].
    #[arg(long, value_name = "TYPE", value_parser = parse_kv)]
    kv_type: Option<KvType>,
    /// Tensors whose name matches the regular expression PATTERN get TYPE (a ggml type:
    /// q8_0, q6_k, q5_k, q4_k, iq4_xs, q3_k, f16 ...), as llama-quantize's flag; the
    /// first that matches wins. With a budget, the rest is chosen around them.
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE", value_parser = Override::parse)]
    tensor_type: Vec<Override>,
    /// Which type to ship: quantize to each of TYPES (comma-separated), score each
    /// against the F16 model on --text with llama-perplexity's KL statistics, and print
    /// one table (size, bits per weight, PPL, KLD, same top token, memory at --report-ctx).
    #[arg(long, value_name = "TYPES", value_delimiter = ',', value_parser = parse_file_type,
          requires = "text", group = "mode")]
    report: Vec<FileType>,
    /// The text --report scores on (a few thousand tokens like what the model will see).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// With --report: tokens per scored chunk (llama-perplexity's -c; default 512).
    /// With --fit-ram: the context `phiq run` must fit (default: the model's, 2048).
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,
    /// Score at most N chunks of --text.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// The context --report estimates memory for (a Pi running `phiq run` at it).
    #[arg(long, value_name = "N", default_value_t = 2048)]
    report_ctx: usize,
    /// Print the --report table, or a budget's chosen mix, as JSON on stdout.
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
         gets Q6_K, as in llama.cpp. --imatrix is optional for every type, as in \
         llama-quantize; with one, iq4_nl/iq4_xs keep their type on the first ffn_down and \
         q4_0/q5_0 take q4_1/q5_1 there.\n\n\
         Budgets (--target-size, --target-bpw, --fit-ram, instead of --type): every weight \
         matrix is quantized, on 256 of its rows, to each of q2_k, q3_k, iq4_xs, iq4_nl, q4_k, \
         q5_k, q6_k and q8_0, and its error measured (weighted by --imatrix's input \
         statistics when given); then the one type per matrix with the least total error \
         within the budget is chosen exactly (a knapsack solved by dynamic programming) and \
         written. The chosen mix, its size and (--fit-ram) the memory `phiq run` will need \
         are printed. --tensor-type fixes any tensor's type first. Example, a 2 GB Pi:\n  \
         phiq-quantize phi-2/ -o phi2-2gb.gguf --fit-ram 2G --ctx 2048 --kv-type q8_0 \
         --imatrix phi2.imatrix.gguf",
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

fn parse_size(s: &str) -> Result<u64, String> {
    phiq::model::fit::parse_size(s)
}

fn parse_bpw(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if (1.0..=32.0).contains(&b) => Ok(b),
        _ => Err(format!("{s:?}: bits per weight between 1 and 32, like 3.8")),
    }
}

fn parse_kv(s: &str) -> Result<KvType, String> {
    KvType::from_name(s).ok_or_else(|| format!("{s:?}: one of f32, f16, q8_0"))
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
    // Checked here: clap does not enforce `requires` on a member of an argument group.
    if args.fit_ram.is_none() && (args.reserve.is_some() || args.kv_type.is_some()) {
        bail!("--reserve and --kv-type size a --fit-ram budget: give --fit-ram too");
    }
    let input = Input::open(&args.input)?;
    if !args.report.is_empty() {
        return quality_report(&args, &input);
    }
    let Some(out) = &args.output else {
        bail!("--output is required: the GGUF file to write");
    };
    if let Some(ft) = args.file_type {
        let report = quantize(&args, &input, ft, &args.tensor_type, out)?;
        print_summary(&input, ft.name, &report);
        return Ok(());
    }
    let target = match (args.target_size, args.target_bpw, args.fit_ram) {
        (Some(size), _, _) => Target::Size(size),
        (_, Some(bpw), _) => Target::Bpw(bpw),
        (_, _, Some(ram)) => Target::FitRam {
            ram,
            reserve: args.reserve.unwrap_or(400_000_000),
            n_ctx: args.ctx.unwrap_or(0),
            kv: args.kv_type.unwrap_or(KvType::F16),
            batch: RUN_BATCH,
        },
        _ => unreachable!("clap requires one mode"),
    };
    budgeted(&args, &input, target, out)
}

/// The prompt batch of `phiq run` (its `--batch` default), whose scratch --fit-ram
/// leaves room for.
const RUN_BATCH: usize = 512;

/// A plan with its adapters and importance matrix, ready to write.
struct Prepared {
    plan: Plan,
    importance: Importance,
    lora: Lora,
    adapters: Vec<AdapterSummary>,
    fixed: Vec<bool>,
}

fn prepare(
    args: &Args,
    input: &Input,
    ft: FileType,
    overrides: &[Override],
    out: &Path,
) -> Result<Prepared> {
    if out.canonicalize().ok() == args.input.canonicalize().ok() && out.exists() {
        bail!("the output {} would overwrite the input", out.display());
    }
    let mut plan = Plan::new(input, ft, args.name.as_deref(), args.imatrix.is_some())?;
    let fixed = apply_overrides(&mut plan, overrides).map_err(anyhow::Error::msg)?;
    let importance = match &args.imatrix {
        Some(path) => {
            let (i, s) = Importance::open(path, &plan)?;
            plan.metadata.extend(i.metadata().iter().cloned());
            report_imatrix(&s);
            i
        }
        None => Importance::none(),
    };
    let (lora, adapters) = Lora::open(&adapter_specs(args)?, &plan)?;
    for a in &adapters {
        for w in &a.warnings {
            eprintln!("phiq-quantize: warning: {}: {w}", a.dir.display());
        }
    }
    Ok(Prepared {
        plan,
        importance,
        lora,
        adapters,
        fixed,
    })
}

/// One conversion: plan, importance matrix, adapters, then the file.
fn quantize(
    args: &Args,
    input: &Input,
    ft: FileType,
    overrides: &[Override],
    out: &Path,
) -> Result<Report> {
    let p = prepare(args, input, ft, overrides, out)?;
    write(args, input, &p, out)
}

fn write(args: &Args, input: &Input, p: &Prepared, out: &Path) -> Result<Report> {
    let bar = Bar::new(&p.plan, args.quiet);
    let report = convert(input, &p.plan, &p.lora, &p.importance, out, &bar)?;
    bar.0.finish_and_clear();
    for a in &p.adapters {
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

/// `--target-size`, `--target-bpw`, `--fit-ram`: measure every matrix under every
/// candidate type, choose the mix, write it.
fn budgeted(args: &Args, input: &Input, mut target: Target, out: &Path) -> Result<()> {
    // Q4_K_M's plan gives the names, shapes and metadata, and makes the importance
    // matrix's entries taken for every matrix (all its types are weighted ones).
    let base = FileType::by_name("q4_k_m").expect("q4_k_m exists");
    let mut p = prepare(args, input, base, &args.tensor_type, out)?;
    // A mix is none of llama.cpp's named file types: without the key, llama.cpp
    // names it from its tensors (as "guessed"), and phiq does not read it.
    p.plan.metadata.retain(|(k, _)| k != "general.file_type");
    if let Target::FitRam { n_ctx, .. } = &mut target
        && *n_ctx == 0
    {
        *n_ctx = hparams(&p.plan).map_err(anyhow::Error::msg)?.n_ctx_train;
    }
    let budget = target.budget(&p.plan).map_err(anyhow::Error::msg)?;
    let k = phiq::kernels::kernels()?;
    let alignment = alignment(&p.plan);
    let size_of = |t: &PlannedTensor, ty: GgmlType| target.size_of(k, alignment, t, ty);
    let least = measure::smallest(&p.plan, &p.fixed, &size_of);
    if least > budget {
        bail!(
            "{}: {}",
            target_flag(&target),
            BudgetError::Impossible { budget, least }
        );
    }
    let bar = MeasureBar::new(args.quiet);
    let start = Instant::now();
    let items = measure::options(
        input,
        &p.plan,
        &p.lora,
        &p.importance,
        &p.fixed,
        &size_of,
        &bar,
    )?;
    bar.0.finish_and_clear();
    let allocation =
        allocate(&items, budget).map_err(|e| anyhow::anyhow!("{}: {e}", target_flag(&target)))?;
    for (t, c) in p.plan.tensors.iter_mut().zip(&allocation.choice) {
        t.ty = c.ty;
    }
    let mix = Mix::of(&p.plan, &items, &allocation, budget);
    eprintln!(
        "measured {} matrices under up to {} types each in {:.1} s",
        items.iter().filter(|i| i.options.len() > 1).count(),
        items.iter().map(|i| i.options.len()).max().unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
    eprint!("{}", mix.text());
    let report = write(args, input, &p, out)?;
    let file_bytes = std::fs::metadata(&report.output).map(|m| m.len())?;
    if let Target::Size(size) = target
        && file_bytes > size
    {
        std::fs::remove_file(&report.output).ok();
        bail!(
            "internal error: the file took {file_bytes} bytes of a --target-size of {size}; removed"
        );
    }
    print_summary(input, "budgeted mix", &report);
    let fit = match target {
        Target::FitRam {
            ram,
            reserve,
            n_ctx,
            kv,
            batch,
        } => {
            let run = run_overhead(&p.plan, n_ctx, kv, batch).map_err(anyhow::Error::msg)?;
            let weights = resident_weights(&phiq::gguf::GgufFile::open(&report.output)?, k);
            let need = weights + run.kv_cache + run.scratch;
            eprintln!(
                "  predicted fit: `phiq run --ctx {n_ctx} --kv-type {}` needs {} (weights {} + KV {} + scratch {}) of {} RAM less {} reserve = {}",
                kv_name(kv),
                gb(need),
                gb(weights),
                gb(run.kv_cache),
                gb(run.scratch),
                gb(ram),
                gb(reserve),
                gb(ram - reserve),
            );
            Some(serde_json::json!({
                "ram": ram, "reserve": reserve, "n_ctx": n_ctx, "kv_type": kv_name(kv),
                "weights": weights, "kv_cache": run.kv_cache, "scratch": run.scratch, "need": need,
            }))
        }
        _ => None,
    };
    if args.json {
        let mut v = serde_json::to_value(&mix)?;
        v["file_bytes"] = file_bytes.into();
        v["output"] = report.output.display().to_string().into();
        if let Some(f) = fit {
            v["fit"] = f;
        }
        println!("{v}");
    }
    Ok(())
}

fn kv_name(kv: KvType) -> String {
    format!("{kv:?}").to_lowercase()
}

fn target_flag(t: &Target) -> String {
    match t {
        Target::Size(s) => format!("--target-size {s}"),
        Target::Bpw(b) => format!("--target-bpw {b}"),
        Target::FitRam { ram, n_ctx, .. } => format!("--fit-ram {ram} --ctx {n_ctx}"),
    }
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
    let n_ctx = args.ctx.unwrap_or(512);
    let scoring = Scoring {
        n_ctx,
        chunks: args.chunks,
        batch: 512,
    };
    if n_ctx < 4 {
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
                &[],
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
        n_ctx
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
        let report = quantize(args, input, *ft, &args.tensor_type, &out)?;
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

/// The progress bar of the measurement: sampled elements quantized.
struct MeasureBar(ProgressBar);

impl MeasureBar {
    fn new(quiet: bool) -> MeasureBar {
        if quiet || !std::io::stderr().is_terminal() {
            return MeasureBar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "measuring {bar:30} {percent:>3}% {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template"),
        );
        MeasureBar(bar)
    }
}

impl MeasureProgress for MeasureBar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn tensor(&self, name: &str) {
        self.0.set_message(name.to_string());
    }
    fn elements(&self, n: u64) {
        self.0.inc(n);
    }
}

fn print_summary(input: &Input, what: &str, report: &Report) {
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
    eprintln!("wrote {} ({what})", report.output.display());
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
