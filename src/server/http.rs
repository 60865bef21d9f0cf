//! Routes, authentication, CORS and streaming. Handlers check and tokenize a
//! request, hand it to the model thread and relay what comes back; they never
//! compute, so the runtime stays responsive while the model works.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{self, ApiError, Kind};
use super::engine::{Event, Finish, Job};
use super::{Ready, ServeError, Shared};

struct App {
    shared: Arc<Shared>,
    jobs: Mutex<Sender<Job>>,
    /// Generation requests accepted and not yet answered (running or queued).
    in_flight: AtomicUsize,
    next_id: AtomicU64,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.body())).into_response()
    }
}

/// Serves `listener` until SIGTERM/SIGINT (or the model failed to load: then that error).
pub async fn run(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    failed: tokio::sync::oneshot::Receiver<String>,
) -> Result<(), ServeError> {
    let max_body = shared.config.max_body;
    let app = Arc::new(App {
        shared,
        jobs: Mutex::new(jobs),
        in_flight: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/chat/completions", post(chat_completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let load_error = Arc::new(Mutex::new(None));
    let shutdown = {
        let load_error = Arc::clone(&load_error);
        async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => eprintln!("phiq serve: SIGTERM: finishing the requests under way"),
                _ = tokio::signal::ctrl_c() => eprintln!("phiq serve: interrupted: finishing the requests under way"),
                Ok(e) = failed => *load_error.lock().unwrap() = Some(e),
            }
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    drop(app);
    match load_error.lock().unwrap().take() {
        Some(e) => Err(ServeError::Load(e)),
        None => Ok(()),
    }
}

/// Authentication (everything but `/health` and the page behind `--api-key`) and
/// CORS (headers only for the `--cors-origin` origins; preflights answered here).
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let c = &app.shared.config;
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin
        .as_ref()
        .and_then(|o| o.to_str().ok())
        .filter(|o| c.cors_origins.iter().any(|a| a == "*" || a == o))
        .map(|o| HeaderValue::from_str(o).expect("an origin header is a header value"));
    if req.method() == Method::OPTIONS && allowed.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return with_cors(r, allowed);
    }
    let open = matches!(req.uri().path(), "/" | "/health" | "/v1/health");
    if let Some(key) = &c.api_key
        && !open
        && !bearer_matches(req.headers(), key)
    {
        let e = ApiError::new(
            401,
            "authentication_error",
            "invalid or missing API key (Authorization: Bearer KEY)",
        );
        return with_cors(e.into_response(), allowed);
    }
    // A stream's headers go out as soon as its request is queued; the model thread
    // times out its wait for a slot. Everything else (reading the body, a whole
    // non-streamed answer) must be done within --timeout; dropping the handler
    // cancels its request.
    let r = match tokio::time::timeout(c.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than --timeout {} s (waiting for a slot, or generating without streaming)",
            c.timeout.as_secs()
        ))
        .into_response(),
    };
    with_cors(r, allowed)
}

fn with_cors(mut r: Response, origin: Option<HeaderValue>) -> Response {
    if let Some(o) = origin {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    r
}

/// `Authorization: Bearer KEY`, compared in time independent of where it differs.
fn bearer_matches(h: &HeaderMap, key: &str) -> bool {
    let Some(got) = h.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else {
        return false;
    };
    let want = format!("Bearer {key}");
    let want = want.as_bytes();
    if got.len() != want.len() {
        return false;
    }
    got.iter().zip(want).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        404,
        "not_found_error",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

fn ready(app: &App) -> Result<&Ready, ApiError> {
    app.shared
        .ready
        .get()
        .ok_or_else(|| ApiError::unavailable("Loading model"))
}

async fn health(State(app): State<Arc<App>>) -> Result<axum::Json<Value>, ApiError> {
    ready(&app)?;
    Ok(axum::Json(json!({"status": "ok"})))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn models(State(app): State<Arc<App>>) -> Result<axum::Json<Value>, ApiError> {
    let r = ready(&app)?;
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{"id": r.model_id, "object": "model", "created": now(), "owned_by": "phiq",
                  "meta": {"n_ctx_slot": r.slot_ctx, "n_vocab": r.tokenizer.n_vocab()}}],
    })))
}

/// The body, or 413 past `--max-body` (axum's rejection, in our error shape).
fn body(b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                413,
                "invalid_request_error",
                "the request body is larger than the server accepts (--max-body)",
            )
        } else {
            ApiError::invalid(format!("reading the request body: {e}"))
        }
    })
}

async fn tokenize(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let r = ready(&app)?;
    let o = api::object(&body(b)?)?;
    let content = o
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("field `content`: expected a string"))?;
    let ids = r
        .tokenizer
        .encode(content)
        .map_err(|e| ApiError::invalid(format!("field `content`: {e}")))?;
    let pieces = o
        .get("with_pieces")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let tokens: Vec<Value> = if pieces {
        ids.iter()
            .map(|&id| json!({"id": id, "piece": r.tokenizer.decode(&[id])}))
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(axum::Json(json!({ "tokens": tokens })))
}

async fn detokenize(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let r = ready(&app)?;
    let o = api::object(&body(b)?)?;
    let list = o
        .get("tokens")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid("field `tokens`: expected a list of token ids"))?;
    let n_vocab = r.tokenizer.n_vocab() as u64;
    let ids = list
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(id) if id < n_vocab => Ok(id as u32),
            _ => Err(ApiError::invalid(format!(
                "field `tokens[{i}]`: {v} is not a token id (0 to {})",
                n_vocab - 1
            ))),
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(axum::Json(json!({ "content": r.tokenizer.decode(&ids) })))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let m = &app.shared.metrics;
    let predicted = m.predicted_tokens.load(Ordering::Relaxed);
    let secs = m.predicted_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let rate = if secs > 0.0 {
        predicted as f64 / secs
    } else {
        0.0
    };
    let lines = [
        (
            "requests_total",
            "counter",
            "Generation requests completed.",
            m.requests.load(Ordering::Relaxed) as f64,
        ),
        (
            "prompt_tokens_total",
            "counter",
            "Prompt tokens evaluated.",
            m.prompt_tokens.load(Ordering::Relaxed) as f64,
        ),
        (
            "tokens_predicted_total",
            "counter",
            "Tokens generated.",
            predicted as f64,
        ),
        (
            "predicted_tokens_seconds",
            "gauge",
            "Generated tokens per second of a request, on average.",
            rate,
        ),
        (
            "requests_processing",
            "gauge",
            "Slots busy.",
            m.busy.load(Ordering::Relaxed) as f64,
        ),
        (
            "requests_deferred",
            "gauge",
            "Requests waiting for a slot.",
            m.queued.load(Ordering::Relaxed) as f64,
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, v) in lines {
        text.push_str(&format!(
            "# HELP phiq:{name} {help}\n# TYPE phiq:{name} {kind}\nphiq:{name} {v}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn completions(State(app): State<Arc<App>>, b: Result<Bytes, BytesRejection>) -> Response {
    generate(app, Kind::Completion, b)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(
    State(app): State<Arc<App>>,
    b: Result<Bytes, BytesRejection>,
) -> Response {
    generate(app, Kind::Chat, b)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Counts a request in flight until dropped (answered, or the client went away).
struct InFlight(Arc<App>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn generate(
    app: Arc<App>,
    kind: Kind,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let r = ready(&app)?;
    let req = api::parse(kind, &api::object(&body(b)?)?, &r.chat)?;
    let prompt = r
        .tokenizer
        .encode(&req.prompt)
        .map_err(|e| ApiError::invalid(format!("the prompt: {e}")))?;
    if prompt.is_empty() {
        return Err(ApiError::invalid("the prompt is empty"));
    }
    let n_vocab = r.tokenizer.n_vocab();
    if let Some(&(id, _)) = req
        .sampler
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= n_vocab)
    {
        return Err(ApiError::invalid(format!(
            "field `logit_bias`: token id {id} is outside the vocabulary of {n_vocab}"
        )));
    }
    if prompt.len() >= r.slot_ctx {
        return Err(ApiError::new(
            400,
            "exceed_context_size_error",
            format!(
                "the prompt is {} tokens; the context holds {} (--ctx): shorten it",
                prompt.len(),
                r.slot_ctx
            ),
        ));
    }
    let c = &app.shared.config;
    let max_tokens = req
        .max_tokens
        .unwrap_or(c.default_max_tokens)
        .min(r.slot_ctx - prompt.len());
    if app.in_flight.fetch_add(1, Ordering::Relaxed) >= c.slots + c.max_queue {
        app.in_flight.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(format!(
            "the server is busy: {} slot(s) and {} queued request(s) are taken (--max-queue)",
            c.slots, c.max_queue
        )));
    }
    let in_flight = InFlight(Arc::clone(&app));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        prompt,
        max_tokens,
        sampler: req.sampler.clone(),
        stops: req.stops.clone(),
        events: tx,
        queued: std::time::Instant::now(),
    };
    app.shared.metrics.queued.fetch_add(1, Ordering::Relaxed);
    if app.jobs.lock().unwrap().send(job).is_err() {
        app.shared.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        app.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let reply = Reply {
        id,
        kind,
        model: r.model_id.clone(),
        created: now(),
    };
    if req.stream {
        Ok(stream(reply, rx, req.include_usage, in_flight))
    } else {
        whole(reply, rx).await
    }
}

/// What every chunk of one answer repeats.
struct Reply {
    id: String,
    kind: Kind,
    model: String,
    created: u64,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created,
               "model": self.model, "choices": choices})
    }

    /// A streamed choice: `text` (completions) or a `delta` (chat).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            Kind::Chat => {
                let delta = match (role, text) {
                    (true, _) => json!({"role": "assistant", "content": null}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        self.envelope(true, json!([choice]))
    }
}

/// A non-streamed answer: everything, then one JSON object.
async fn whole(reply: Reply, mut rx: UnboundedReceiver<Event>) -> Result<Response, ApiError> {
    let mut text = String::new();
    let finish = loop {
        match rx.recv().await {
            Some(Event::Text(t)) => text.push_str(&t),
            Some(Event::Done(f)) => break f,
            Some(Event::Error(e)) => return Err(e),
            None => return Err(ApiError::server("the model thread dropped the request")),
        }
    };
    let choice = match reply.kind {
        Kind::Completion => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.reason.name()})
        }
        Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": null, "finish_reason": finish.reason.name()}),
    };
    let mut v = reply.envelope(false, json!([choice]));
    v["usage"] = api::usage(&finish);
    v["timings"] = api::timings(&finish);
    Ok(axum::Json(v).into_response())
}

/// Where a stream is: the role chunk first (chat), text, the finish chunk, the
/// usage chunk if asked, `[DONE]`.
enum Phase {
    Start,
    Text,
    Usage(Finish),
    Done,
    Closed,
}

fn stream(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    include_usage: bool,
    in_flight: InFlight,
) -> Response {
    let state = (reply, rx, Phase::Start, in_flight);
    let events =
        futures_util::stream::unfold(state, move |(reply, mut rx, phase, in_flight)| async move {
            let data = |v: Value| Sse::default().data(v.to_string());
            let (event, next) = match phase {
                Phase::Start if reply.kind == Kind::Chat => {
                    (data(reply.chunk(None, true, None)), Phase::Text)
                }
                Phase::Start | Phase::Text => match rx.recv().await {
                    Some(Event::Text(t)) => (data(reply.chunk(Some(&t), false, None)), Phase::Text),
                    Some(Event::Done(f)) => {
                        let c = reply.chunk(None, false, Some(f.reason.name()));
                        let mut c = c;
                        c["timings"] = api::timings(&f);
                        (
                            data(c),
                            if include_usage {
                                Phase::Usage(f)
                            } else {
                                Phase::Done
                            },
                        )
                    }
                    Some(Event::Error(e)) => (data(e.body()), Phase::Closed),
                    None => (
                        data(ApiError::server("the model thread dropped the request").body()),
                        Phase::Closed,
                    ),
                },
                Phase::Usage(f) => {
                    let mut v = reply.envelope(true, json!([]));
                    v["usage"] = api::usage(&f);
                    (data(v), Phase::Done)
                }
                Phase::Done => (Sse::default().data("[DONE]"), Phase::Closed),
                Phase::Closed => return None,
            };
            Some((Ok::<_, Infallible>(event), (reply, rx, next, in_flight)))
        });
    axum::response::sse::Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}
