//! What `run`, `chat`, `perplexity` and `bench` share: loading a model with its
//! tokenizer, thread setup, and the generation loop.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use phiq::gguf::Load;
use phiq::model::{KvType, Logits, Model, Session};
use phiq::sample::{Sampler, SamplerConfig};
use phiq::tokenizer::{StreamDecoder, Tokenizer};

/// Options every model-running command takes.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// The GGUF model file.
    #[arg(short, long, value_name = "MODEL.gguf")]
    pub model: PathBuf,
    /// Threads (default: the physical cores).
    #[arg(short, long, value_name = "N")]
    pub threads: Option<usize>,
    /// Context size in tokens (default: the model's, 2048 for Phi-2).
    #[arg(short = 'c', long = "ctx", value_name = "N")]
    pub ctx: Option<usize>,
    /// How the KV cache stores keys and values: f32, f16 or q8_0 (half of f16's memory).
    #[arg(long, value_name = "TYPE", default_value = "f16", value_parser = parse_kv)]
    pub kv_type: KvType,
    /// Prompt tokens evaluated per batch.
    #[arg(short = 'b', long = "batch", value_name = "N", default_value_t = 512)]
    pub batch: usize,
    /// Lock the weights in RAM so they are never paged out.
    #[arg(long)]
    pub mlock: bool,
    /// Read the whole file into memory instead of mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Memory this run may use (e.g. 1.6G), when less than what the system has
    /// available: run and chat shrink an unset --ctx to fit it, or stop before loading.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub mem_limit: Option<u64>,
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    phiq::model::fit::parse_size(s)
}

/// The memory a run may use: what the system has available, capped by `limit`.
pub(crate) fn memory_budget(limit: Option<u64>) -> Option<u64> {
    match (phiq::model::available_memory(), limit) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    }
}

fn parse_kv(s: &str) -> Result<KvType, String> {
    KvType::from_name(s).ok_or_else(|| format!("{s:?}: expected f32, f16 or q8_0"))
}

/// Sampling flags, in llama.cpp's names.
#[derive(Args, Clone, Debug)]
pub struct SampleArgs {
    /// Temperature; 0 picks the most likely token (greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed: the same seed, prompt and settings give the same text.
    #[arg(long, default_value_t = 0x5eed)]
    pub seed: u64,
}

impl SampleArgs {
    pub fn sampler(&self) -> Result<Sampler> {
        if self.temp.is_nan()
            || self.temp < 0.0
            || !(0.0..=1.0).contains(&self.top_p)
            || !(0.0..=1.0).contains(&self.min_p)
        {
            bail!("--temp must be >= 0, --top-p and --min-p between 0 and 1");
        }
        if self.repeat_penalty.is_nan() || self.repeat_penalty <= 0.0 {
            bail!("--repeat-penalty must be > 0");
        }
        Ok(Sampler::new(SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        }))
    }
}

pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

impl ModelArgs {
    pub fn setup_threads(&self) -> Result<()> {
        let n = match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(n) => n,
            None => default_threads(),
        };
        // Only the first call in a process can size the pool; later ones are no-ops.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        Ok(())
    }

    pub fn load(&self) -> Result<Loaded> {
        self.setup_threads()?;
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let start = Instant::now();
        let load = if self.no_mmap { Load::Read } else { Load::Map };
        let model = Model::load_with(&self.model, load)?;
        if self.mlock
            && let Err(e) = model.lock()
        {
            eprintln!(
                "phiq: warning: --mlock failed ({e}); raise `ulimit -l` to lock {} MB",
                model.file().file_len() / 1_000_000
            );
        }
        let tokenizer = Tokenizer::from_gguf(model.file())
            .with_context(|| format!("{}: the tokenizer", self.model.display()))?;
        Ok(Loaded {
            model,
            tokenizer,
            load_time: start.elapsed(),
        })
    }

    /// The context to allocate: `--ctx`, else the model's trained length.
    pub fn n_ctx(&self, model: &Model) -> Result<usize> {
        let n = self.ctx.unwrap_or(model.hp.n_ctx_train);
        if n == 0 {
            bail!("--ctx must be at least 1");
        }
        Ok(n)
    }

    /// The chunk length of a chunked evaluation (llama.cpp's tools' 512 tokens, or the
    /// model's context if shorter, unless --ctx), at least `min` (what `mode` needs).
    pub fn chunk_ctx(&self, model: &Model, min: usize, mode: &str) -> Result<usize> {
        let n = self.ctx.unwrap_or(LLAMA_CHUNK.min(model.hp.n_ctx_train));
        if n < min {
            bail!("--ctx must be at least {min} for {mode}");
        }
        if n > model.hp.n_ctx_train {
            bail!(
                "--ctx {n} exceeds the model's context of {} tokens",
                model.hp.n_ctx_train
            );
        }
        Ok(n)
    }

    /// For run and chat: the context that fits the memory available (an unset --ctx
    /// shrunk, said with the numbers), decided from the file's header before any
    /// weight is loaded (an error naming what would fit when nothing does), then the
    /// model.
    pub fn load_fitting(&self) -> Result<(Loaded, usize)> {
        if self.ctx == Some(0) {
            bail!("--ctx must be at least 1");
        }
        if self.no_mmap {
            // Read, not mapped: the header comes with the whole file.
            let loaded = self.load()?;
            let header = phiq::model::fit::Header::of(&loaded.model);
            let n_ctx = self.plan_ctx(&header)?;
            return Ok((loaded, n_ctx));
        }
        let header = phiq::model::fit::Header::read(&self.model)
            .with_context(|| self.model.display().to_string())?;
        let n_ctx = self.plan_ctx(&header)?;
        Ok((self.load()?, n_ctx))
    }

    fn plan_ctx(&self, header: &phiq::model::fit::Header) -> Result<usize> {
        let avail = memory_budget(self.mem_limit);
        let fit = phiq::model::fit::plan(header, self.ctx, self.kv_type, self.batch, avail)
            .with_context(|| format!("{}: not run", self.model.display()))?;
        if let Some(full) = fit.shrunk_from {
            eprintln!(
                "phiq: the {full}-token context needs about {} MB, {} MB are available: using --ctx {} \
                 ({} MB; set --ctx to choose, --kv-type q8_0 holds twice the tokens)",
                phiq::model::fit::memory_estimate(
                    &header.hp,
                    header.weights,
                    full,
                    self.kv_type,
                    self.batch
                )
                .total()
                    / 1_000_000,
                avail.unwrap_or(0) / 1_000_000,
                fit.n_ctx,
                fit.need.total() / 1_000_000
            );
        }
        Ok(fit.n_ctx)
    }

    /// A session of `n_ctx` tokens, after saying what memory the run needs.
    pub fn session<'m>(&self, model: &'m Model, n_ctx: usize) -> Result<Session<'m>> {
        self.report_memory(model, n_ctx);
        Ok(model.session(n_ctx, self.kv_type)?)
    }

    fn report_memory(&self, model: &Model, n_ctx: usize) {
        let need = model.memory_estimate(n_ctx, self.kv_type, self.batch);
        let mb = |b: u64| b / 1_000_000;
        eprintln!(
            "phiq: memory: weights {} MB{}, KV cache {} MB ({} x {}), scratch {} MB",
            mb(need.weights),
            if self.no_mmap { "" } else { " (mapped)" },
            mb(need.kv_cache),
            n_ctx,
            format!("{:?}", self.kv_type).to_lowercase(),
            mb(need.scratch)
        );
        if let Some(avail) = memory_budget(self.mem_limit)
            && need.total() > avail
        {
            eprintln!(
                "phiq: warning: this needs about {} MB but {} MB are available: try a smaller --ctx, \
                 --kv-type q8_0 (half the KV cache), or a smaller quantization (q4_0, q4_k_m)",
                mb(need.total()),
                mb(avail)
            );
        }
    }
}

/// Feeds `tokens` in batches of `batch` and returns the last token's logits.
pub fn prefill(s: &mut Session, tokens: &[u32], batch: usize) -> Result<Vec<f32>> {
    let mut logits = Vec::new();
    for chunk in tokens.chunks(batch.max(1)) {
        logits = s.eval(chunk, Logits::Last)?;
    }
    Ok(logits)
}

/// Set by Ctrl-C while an answer is being generated.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// llama-perplexity's and llama-imatrix's default chunk.
const LLAMA_CHUNK: usize = 512;

/// The chunks of `n_ctx` tokens to evaluate in `n_tokens` of `text`: every whole
/// one, at most `chunks`; an error when there is not one.
pub fn whole_chunks(
    text: &str,
    n_tokens: usize,
    n_ctx: usize,
    chunks: Option<usize>,
) -> Result<usize> {
    let whole = n_tokens / n_ctx;
    if whole == 0 {
        bail!(
            "{text}: {n_tokens} tokens, fewer than one chunk of --ctx {n_ctx}: give a longer text or a smaller --ctx"
        );
    }
    Ok(chunks.map_or(whole, |c| c.min(whole)))
}

pub struct Generated {
    pub tokens: Vec<u32>,
    pub text: String,
    pub elapsed: Duration,
    /// Why generation ended.
    pub stop: Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Eos,
    Limit,
    ContextFull,
    Interrupted,
    Matched,
}

/// Generates up to `n` tokens after `logits`, streaming text to `out` as it becomes
/// whole. Stops at end-of-text, the limit, a full context, Ctrl-C, or when the text
/// contains one of `stop_texts` (which is cut from the returned text).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    s: &mut Session,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    mut logits: Vec<f32>,
    history: &mut Vec<u32>,
    n: usize,
    stop_texts: &[&str],
    out: &mut dyn Write,
) -> Result<Generated> {
    let start = Instant::now();
    let mut dec = StreamDecoder::new(tok);
    let (mut tokens, mut text) = (Vec::new(), String::new());
    let mut printed = 0;
    let stop = loop {
        if tokens.len() >= n {
            break Stop::Limit;
        }
        if INTERRUPTED.swap(false, Ordering::SeqCst) {
            break Stop::Interrupted;
        }
        let next = sampler.sample(&logits, history);
        if Some(next) == tok.eos_id() {
            break Stop::Eos;
        }
        tokens.push(next);
        history.push(next);
        text.push_str(&dec.push(next));
        if let Some(cut) = stop_texts.iter().filter_map(|st| text.find(st)).min() {
            text.truncate(cut);
            emit(out, &text[printed.min(cut)..])?;
            break Stop::Matched;
        }
        // Hold back what could be the start of a stop text.
        let safe = phiq::sample::stop_safe_prefix(&text, stop_texts);
        if safe > printed {
            emit(out, &text[printed..safe])?;
            printed = safe;
        }
        if s.len() >= s.n_ctx() {
            break Stop::ContextFull;
        }
        logits = s.eval(&[next], Logits::Last)?;
    };
    if stop != Stop::Matched {
        text.push_str(&dec.flush());
        emit(out, &text[printed..])?;
    }
    Ok(Generated {
        tokens,
        text,
        elapsed: start.elapsed(),
        stop,
    })
}

fn emit(out: &mut dyn Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

pub fn per_second(n: usize, d: Duration) -> f64 {
    if d.as_secs_f64() > 0.0 {
        n as f64 / d.as_secs_f64()
    } else {
        0.0
    }
}

/// Threads when `-t` is not given: the physical cores, within what this process may
/// use (affinity, cgroup quota). Two hyper-threads of one core share its vector units
/// and its bandwidth, so the second only adds contention to these kernels.
pub fn default_threads() -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    num_cpus::get_physical().clamp(1, allowed)
}
