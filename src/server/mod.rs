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
    let model =
        crate::model::Model::load_with(&c.model, c.load).map_err(|e| format!("{path}: {e}"))?;
    let tok =
        Tokenizer::from_gguf(model.file()).map_err(|e| format!("{path}: the tokenizer: {e}"))?;
    let ctx = match c.ctx {
        Some(n) => n,
        None => fitting_ctx(&model, c.kv_type, crate::model::available_memory()),
    };
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

/// The KV pool when `--ctx` is not given: the model's trained context, or, when
/// that would not fit the memory available, the most whole pages that do (at
/// least one), said on stderr with the numbers.
fn fitting_ctx(model: &crate::model::Model, kv: KvType, avail: Option<u64>) -> usize {
    let full = model.hp.n_ctx_train;
    let Some(avail) = avail else {
        return full;
    };
    let need = |n: usize| model.memory_estimate(n, kv, 64).total();
    if need(full) <= avail {
        return full;
    }
    let mut n = full / engine::PAGE * engine::PAGE;
    while n > engine::PAGE && need(n) > avail {
        n -= engine::PAGE;
    }
    eprintln!(
        "phiq serve: warning: a {full}-position KV pool needs about {} MB, {} MB are available: using --ctx {n} \
         (set --ctx to choose; --kv-type q8_0 holds twice the positions)",
        need(full) / 1_000_000,
        avail / 1_000_000
    );
    n
}

/// The name `/v1/models` gives the model: its file name.
fn model_id(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "phiq".into())
}
