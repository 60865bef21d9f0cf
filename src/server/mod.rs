//! `phiq serve`: an OpenAI-compatible HTTP server (the routes and shapes of
//! llama.cpp's `llama-server`).
//!
//! Two sides, one channel between them:
//! - `http`: axum on a single-threaded tokio runtime. It binds before the model
//!   loads (`/health` answers 503 until it has), checks and tokenizes requests,
//!   and streams what the model thread sends back. Nothing there computes.
//! - `engine`: the model thread (the kernels use rayon's pool; an async worker
//!   must never block on a forward pass), running requests in `-np` slots.
//!
//! `api` holds the request fields and response shapes; [`crate::chat`] the prompt formats.

mod api;
mod engine;
mod http;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};

use crate::chat::ChatFormat;
use crate::gguf::Load;
use crate::model::KvType;
use crate::tokenizer::Tokenizer;

pub use api::ApiError;

/// What `phiq serve` was asked for.
#[derive(Clone, Debug)]
pub struct Config {
    pub model: PathBuf,
    pub load: Load,
    pub addr: SocketAddr,
    /// Slots: requests served at once.
    pub slots: usize,
    /// KV positions shared by all slots (`None`: the model's trained context).
    pub ctx: Option<usize>,
    pub kv_type: KvType,
    pub api_key: Option<String>,
    /// Origins allowed to call from a browser (`*`: any); none: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Requests that may wait for a slot; more get 503 at once.
    pub max_queue: usize,
    /// Largest request body in bytes (413 above).
    pub max_body: usize,
    /// Answer length when a request gives none.
    pub default_max_tokens: usize,
    /// Memory the server may use, when less than what the system has available.
    pub mem_limit: Option<u64>,
    /// Longest wait for a slot, and longest non-streamed request (503 past it).
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Load(String),
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What the HTTP side needs once the model is loaded.
pub(crate) struct Ready {
    pub tokenizer: Arc<Tokenizer>,
    /// How chat messages become a prompt.
    pub chat: ChatFormat,
    /// Positions one conversation may hold: the whole KV pool.
    pub slot_ctx: usize,
    pub model_id: String,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub(crate) struct Metrics {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub predicted_tokens: AtomicU64,
    pub predicted_micros: AtomicU64,
    pub queued: AtomicUsize,
    pub busy: AtomicUsize,
}

pub(crate) struct Shared {
    pub config: Config,
    pub ready: OnceLock<Ready>,
    pub metrics: Metrics,
}

/// Serves until SIGTERM or SIGINT: stops accepting, finishes the requests under
/// way, and returns. `on_listen` is told the bound address (port 0 picks one).
pub fn serve(config: Config, on_listen: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let listener = std::net::TcpListener::bind(config.addr).map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;
    listener.set_nonblocking(true)?;
    on_listen(listener.local_addr()?);
    let shared = Arc::new(Shared {
        config,
        ready: OnceLock::new(),
        metrics: Metrics::default(),
    });
    let (jobs, rx) = std::sync::mpsc::channel();
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<String>();
    let engine = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("phiq-model".into())
            .spawn(move || {
                if let Err(e) = load_and_run(&shared, rx) {
                    let _ = fail_tx.send(e);
                }
            })?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(http::run(listener, Arc::clone(&shared), jobs, fail_rx));
    // The job sender is gone with the router: the model thread finishes what it
    // has and returns.
    let _ = engine.join();
    served
}

/// The model thread: load, publish [`Ready`], run.
fn load_and_run(
    shared: &Arc<Shared>,
    jobs: std::sync::mpsc::Receiver<engine::Job>,
) -> Result<(), String> {
    let c = &shared.config;
    let path = c.model.display();
    let mapped = c.load == Load::Map;
    let early = if mapped {
        let h = crate::model::fit::Header::read(&c.model).map_err(|e| format!("{path}: {e}"))?;
        Some(fitting_ctx(c, &h).map_err(|e| format!("{path}: not loaded: {e}"))?)
    } else {
        None
    };
    let model =
        crate::model::Model::load_with(&c.model, c.load).map_err(|e| format!("{path}: {e}"))?;
    let ctx = match early {
        Some(n) => n,
        None => fitting_ctx(c, &crate::model::fit::Header::of(&model))
            .map_err(|e| format!("{path}: {e}"))?,
    };
    let tok =
        Tokenizer::from_gguf(model.file()).map_err(|e| format!("{path}: the tokenizer: {e}"))?;
    if ctx < 16 {
        return Err(format!("--ctx {ctx} is too small: at least 16 positions"));
    }
    let pool = model
        .kv_pool(ctx, c.kv_type, engine::PAGE)
        .map_err(|e| format!("{path}: {e}"))?;
    let need = model.memory_estimate(ctx, c.kv_type, 64);
    let mb = |b: u64| b.div_ceil(1_000_000);
    let slot_bytes = (4 * model.hp.n_vocab + 8 * model.hp.n_rot) as u64;
    eprintln!(
        "phiq serve: memory: weights {} MB, KV pool {} MB ({} positions of {} in pages of {}, shared by {} slot(s), each up to all of them), slots {} MB, scratch {} MB",
        mb(need.weights),
        mb(pool.bytes() as u64),
        pool.tokens(),
        format!("{:?}", c.kv_type).to_lowercase(),
        engine::PAGE,
        c.slots,
        mb(slot_bytes * c.slots as u64),
        mb(need.scratch)
    );
    let chat = ChatFormat::from_gguf(model.file(), &tok).map_err(|e| format!("{path}: {e}"))?;
    eprintln!("phiq serve: chat messages in {}", chat.describe());
    let tok = Arc::new(tok);
    let _ = shared.ready.set(Ready {
        tokenizer: Arc::clone(&tok),
        chat,
        slot_ctx: pool.tokens(),
        model_id: model_id(&c.model),
    });
    eprintln!(
        "phiq serve: model loaded ({} kernels); ready",
        model.kernels().isa.name()
    );
    engine::run(&model, &tok, shared, &pool, jobs);
    Ok(())
}

/// The KV pool's positions, decided from the file's header before loading (see
/// [`crate::model::fit`]): `--ctx`, else the model's trained context, or, when that
/// would not fit the memory available, the most whole steps that do, said on stderr
/// with the numbers. An error names the flags that would fit.
fn fitting_ctx(c: &Config, header: &crate::model::fit::Header) -> crate::model::Result<usize> {
    use crate::model::fit;
    let avail = match (crate::model::available_memory(), c.mem_limit) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    };
    let f = fit::plan(header, c.ctx, c.kv_type, 64, avail)?;
    if let Some(full) = f.shrunk_from {
        let need = fit::memory_estimate(&header.hp, header.weights, full, c.kv_type, 64);
        eprintln!(
            "phiq serve: warning: a {full}-position KV pool needs about {} MB, {} MB are available: using --ctx {} \
             (set --ctx to choose; --kv-type q8_0 holds twice the positions)",
            need.total() / 1_000_000,
            avail.unwrap_or(0) / 1_000_000,
            f.n_ctx
        );
    }
    Ok(f.n_ctx)
}

/// The name `/v1/models` gives the model: its file name.
fn model_id(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "phiq".into())
}
