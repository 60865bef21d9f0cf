//! `phiq serve`: the OpenAI-compatible server (`phiq::server`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use phiq::gguf::Load;
use phiq::model::KvType;
use phiq::server::{self, Config};

#[derive(Args)]
pub struct ServeArgs {
    /// The GGUF model file.
    #[arg(short, long, value_name = "MODEL.gguf")]
    model: PathBuf,
    /// Address to listen on. Anything but loopback is reachable from the network:
    /// set an API key then.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Slots: conversations served at once (also `-np`). They share one KV pool of
    /// --ctx positions (a slot costs well under 1 MB beyond the positions it uses).
    #[arg(long = "parallel", value_name = "N", default_value_t = 4)]
    parallel: usize,
    /// KV positions shared by all slots (default: the model's trained context, 2048 for
    /// Phi-2, or what fits the available memory).
    #[arg(short = 'c', long = "ctx", value_name = "N")]
    ctx: Option<usize>,
    /// How the KV cache stores keys and values: f32, f16 or q8_0 (half of f16's memory).
    #[arg(long, value_name = "TYPE", default_value = "f16", value_parser = parse_kv)]
    kv_type: KvType,
    /// Threads (default: the physical cores).
    #[arg(short, long, value_name = "N")]
    threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` on every route but /health and the page.
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// Read the API key from the first line of a file (keeps it out of `ps`).
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Allow browser pages from this origin (repeatable; `*` for any). None: no CORS headers.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// Requests that may wait for a free slot; more are answered 503 at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_queue: usize,
    /// Largest request body in bytes (413 above).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_body: usize,
    /// Tokens an answer may have when the request sets no max_tokens.
    #[arg(
        short = 'n',
        long = "n-predict",
        value_name = "N",
        default_value_t = 512
    )]
    n_predict: usize,
    /// Seconds a request may wait for a slot, and a non-streamed one may take in
    /// all; past it the answer is 503 and its slot freed (llama-server's default).
    #[arg(long, value_name = "S", default_value_t = 600)]
    timeout: u64,
    /// Read the whole file into memory instead of mapping it.
    #[arg(long)]
    no_mmap: bool,
    /// Memory the server may use (e.g. 1.6G), when less than what the system has
    /// available: an unset --ctx shrinks to fit it, or the server stops before loading.
    #[arg(long, value_name = "SIZE", value_parser = crate::cli::common::parse_size)]
    mem_limit: Option<u64>,
}

fn parse_kv(s: &str) -> Result<KvType, String> {
    KvType::from_name(s).ok_or_else(|| format!("{s:?}: expected f32, f16 or q8_0"))
}

pub fn run(args: &ServeArgs) -> Result<()> {
    if args.parallel == 0 {
        bail!("-np must be at least 1");
    }
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => super::common::default_threads(),
    };
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let api_key = match &args.api_key_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--api-key-file {}", f.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                bail!("--api-key-file {}: the first line is empty", f.display());
            }
            Some(key)
        }
        None => args.api_key.clone(),
    };
    if !args.host.is_loopback() && api_key.is_none() {
        eprintln!(
            "phiq serve: warning: listening on {} without --api-key: anyone on the network can use this server",
            args.host
        );
    }
    let config = Config {
        model: args.model.clone(),
        load: if args.no_mmap { Load::Read } else { Load::Map },
        addr: SocketAddr::new(args.host, args.port),
        slots: args.parallel,
        ctx: args.ctx,
        kv_type: args.kv_type,
        api_key,
        cors_origins: args.cors_origin.clone(),
        max_queue: args.max_queue,
        max_body: args.max_body,
        default_max_tokens: args.n_predict,
        mem_limit: args.mem_limit,
        timeout: std::time::Duration::from_secs(args.timeout),
    };
    server::serve(config, |addr| {
        eprintln!("phiq serve: listening on http://{addr} (loading the model)");
    })?;
    eprintln!("phiq serve: stopped");
    Ok(())
}
