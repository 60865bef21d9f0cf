//! `phiq serve` end to end: the real binary on 127.0.0.1 (port 0), the dev
//! checkpoint converted to F32, spoken to over raw HTTP/1.1 so that every byte the
//! server sends (status, headers, SSE framing) is what is checked.

mod common;
#[path = "support/oracle.rs"]
mod oracle;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The dev checkpoint as an F32 GGUF, made once per test binary.
fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = oracle::gguf_from(&oracle::checkpoint(), "f32", &dir.path().join("dev.gguf"));
        (dir, p)
    });
    p
}

/// The dev checkpoint with a ChatML template, as an F32 GGUF.
fn chatml_model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, p) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
        let ckpt = oracle::checkpoint_with_template(dir.path(), template, false);
        let p = oracle::gguf_from(&ckpt, "f32", &dir.path().join("chatml.gguf"));
        (dir, p)
    });
    p
}

struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `phiq serve --port 0 ARGS` and returns once it listens.
    fn start(model: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_phiq"))
            .args(["serve", "-m"])
            .arg(model)
            .args(["--port", "0", "-t", "1"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let addr = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Server { child, addr, log }
    }

    fn ready(model: &Path, args: &[&str]) -> Server {
        let s = Server::start(model, args);
        let start = Instant::now();
        while s.get("/health").status != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not ready: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], "")
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.send("POST", path, &[], &body.to_string())
    }

    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut c = self.connect(method, path, headers, body);
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).unwrap();
        Resp::parse(&raw)
    }

    /// Sends a request and returns the open connection, to be read by the caller.
    fn connect(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> TcpStream {
        let mut c = TcpStream::connect(&self.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).unwrap();
        c.write_all(body.as_bytes()).unwrap();
        c
    }

    fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn wait(mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn parse(raw: &[u8]) -> Resp {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked");
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of an SSE body, in order.
    fn events(&self) -> Vec<String> {
        assert!(
            self.body.ends_with("\n\n"),
            "SSE events end with a blank line: {:?}",
            self.body
        );
        self.body
            .split("\n\n")
            .filter(|e| !e.is_empty() && !e.starts_with(':'))
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                    .to_string()
            })
            .collect()
    }

    /// Checks the error shape and status, and that the message mentions `what`.
    fn error(&self, status: u16, kind: &str, what: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        let e = &self.json()["error"];
        assert_eq!(e["code"], status, "{}", self.body);
        assert_eq!(e["type"], kind, "{}", self.body);
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(what), "{msg:?} should mention {what:?}");
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The text of a non-streamed completion, and its finish reason.
fn complete(s: &Server, body: Value) -> (String, String) {
    let r = s.post("/v1/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let c = &v["choices"][0];
    (
        c["text"].as_str().unwrap().into(),
        c["finish_reason"].as_str().unwrap().into(),
    )
}

/// The concatenated text deltas of a streamed chat or completion, and its finish reason.
fn streamed(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (mut text, mut finish) = (String::new(), String::new());
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        text.push_str(
            c["text"]
                .as_str()
                .or(c["delta"]["content"].as_str())
                .unwrap_or(""),
        );
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.into();
        }
    }
    (text, finish)
}

#[test]
fn health_is_503_while_loading_and_a_failed_load_exits_nonzero_naming_the_file() {
    // A FIFO blocks the model thread in open() until a writer comes: the listener
    // is already up, and /health says the model is loading.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let s = Server::start(&fifo, &["--no-mmap"]);
    let r = s.get("/health");
    r.error(503, "unavailable_error", "Loading model");
    s.post("/v1/completions", &json!({"prompt": "x"}))
        .error(503, "unavailable_error", "Loading");
    // Open and close the FIFO: the model file is empty, the load fails.
    drop(std::fs::File::options().write(true).open(&fifo).unwrap());
    let log = s.log.clone();
    let status = s.wait();
    assert!(!status.success());
    let log = log.lock().unwrap();
    assert!(log.contains("model.gguf") && log.contains("empty"), "{log}");
}

#[test]
fn endpoints_answer_in_openai_and_llama_server_shapes() {
    let s = Server::ready(model(), &["-np", "2"]);
    assert_eq!(s.get("/health").json(), json!({"status": "ok"}));
    let models = s.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "dev.gguf");

    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 5);
    assert_eq!(v["timings"]["predicted_n"], 5);

    let chat = json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
                      "max_tokens": 4, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let r = s.post("/v1/chat/completions", &chat);
    let events = r.events();
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": null})
    );
    let last = &chunks[chunks.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    // Without include_usage: no usage chunk; the same greedy text as not streamed.
    let mut plain = chat.clone();
    plain["stream_options"] = Value::Null;
    let (text, _) = streamed(&s.post("/v1/chat/completions", &plain));
    plain["stream"] = json!(false);
    let whole = s.post("/v1/chat/completions", &plain).json();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");

    let t = s
        .post("/tokenize", &json!({"content": "Hello world"}))
        .json();
    assert_eq!(t["tokens"], json!([15496, 995]));
    let d = s
        .post("/detokenize", &json!({"tokens": [15496, 995]}))
        .json();
    assert_eq!(d["content"], "Hello world");
    let m = s.get("/metrics");
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    for name in [
        "phiq:requests_total",
        "phiq:prompt_tokens_total",
        "phiq:tokens_predicted_total",
        "phiq:requests_processing",
        "phiq:requests_deferred",
    ] {
        assert!(
            m.body.contains(&format!("\n{name} ")),
            "{name} in {}",
            m.body
        );
    }
    assert!(m.body.contains("\nphiq:requests_total 4\n"), "{}", m.body);
    let page = s.get("/");
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
            && page.body.contains("/v1/chat/completions")
    );
    s.get("/v1/nothing")
        .error(404, "not_found_error", "/v1/nothing");
}

#[test]
fn bad_requests_get_their_status_and_the_server_goes_on() {
    let s = Server::ready(model(), &["--ctx", "64", "--max-body", "4096"]);
    let raw = |body: &str| s.send("POST", "/v1/completions", &[], body);
    raw("{not json").error(400, "invalid_request_error", "not valid JSON");
    raw(r#"{"prompt": "x", "n": 3}"#).error(400, "invalid_request_error", "`n`");
    raw(r#"{"prompt": "x", "temperature": -1}"#).error(
        400,
        "invalid_request_error",
        "`temperature`",
    );
    let long = "word ".repeat(100);
    let r = s.post("/v1/completions", &json!({"prompt": long}));
    let n = s.post("/tokenize", &json!({"content": long})).json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    r.error(400, "exceed_context_size_error", &format!("{n} tokens"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64")
    );
    raw(&format!(r#"{{"prompt": "{}"}}"#, "a".repeat(5000))).error(
        413,
        "invalid_request_error",
        "larger",
    );
    s.post("/detokenize", &json!({"tokens": [99999999]})).error(
        400,
        "invalid_request_error",
        "`tokens[0]`",
    );
    s.send("POST", "/v1/chat/completions", &[], r#"{"messages": "hi"}"#)
        .error(400, "invalid_request_error", "`messages`");
    let (text, finish) = complete(&s, json!({"prompt": "Still there?", "max_tokens": 3}));
    assert_eq!(finish, "length");
    assert!(!text.is_empty());
}

#[test]
fn api_key_and_cors() {
    let s = Server::ready(
        model(),
        &["--api-key", "sesame", "--cors-origin", "http://pi.local"],
    );
    let body = r#"{"prompt": "Hi", "max_tokens": 1}"#;
    s.send("POST", "/v1/completions", &[], body)
        .error(401, "authentication_error", "API key");
    s.send(
        "POST",
        "/v1/completions",
        &[("Authorization", "Bearer sesamf")],
        body,
    )
    .error(401, "authentication_error", "API key");
    s.send(
        "GET",
        "/v1/models",
        &[("Authorization", "Bearer sesame!")],
        "",
    )
    .error(401, "authentication_error", "API key");
    assert_eq!(
        s.send(
            "POST",
            "/v1/completions",
            &[("Authorization", "Bearer sesame")],
            body
        )
        .status,
        200
    );
    assert_eq!(s.get("/health").status, 200, "/health stays open");
    let from = |origin: &str| s.send("GET", "/health", &[("Origin", origin)], "");
    assert_eq!(
        from("http://pi.local").header("access-control-allow-origin"),
        Some("http://pi.local")
    );
    assert_eq!(
        from("http://evil.example").header("access-control-allow-origin"),
        None
    );
    let pre = s.send(
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", "http://pi.local"),
            ("Access-Control-Request-Method", "POST"),
        ],
        "",
    );
    assert_eq!(pre.status, 204);
    assert!(
        pre.header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let plain = Server::ready(model(), &[]);
    let r = plain.send("GET", "/health", &[("Origin", "http://pi.local")], "");
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "no CORS unless asked"
    );
}

#[test]
fn stop_strings_end_the_answer_and_are_never_shown_even_in_part() {
    let s = Server::ready(model(), &[]);
    let base = json!({"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0});
    let (full, _) = complete(&s, base.clone());
    // A stop string starting inside the answer, spanning tokens.
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "{full:?}");
    let at: usize = chars[..6].iter().map(|c| c.len_utf8()).sum();
    let stop: String = chars[6..12].iter().collect();
    let mut req = base.clone();
    req["stop"] = json!(["never appears \u{1}", stop]);
    let (text, finish) = complete(&s, req.clone());
    assert_eq!((text.as_str(), finish.as_str()), (&full[..at], "stop"));
    req["stream"] = json!(true);
    let (text, finish) = streamed(&s.post("/v1/completions", &req));
    assert_eq!((text.as_str(), finish.as_str()), (&full[..at], "stop"));
    // A stop string that only begins to match is shown once the answer ends.
    let mut req = base;
    req["stop"] = json!(format!("{}\u{1}", &full[full.len() - 1..]));
    let (text, finish) = complete(&s, req);
    assert_eq!((text.as_str(), finish.as_str()), (full.as_str(), "length"));
}

#[test]
fn a_follow_up_reuses_the_cached_prefix() {
    let s = Server::ready(model(), &[]);
    let first = s
        .post(
            "/v1/completions",
            &json!({"prompt": "One two three four five six", "max_tokens": 2, "temperature": 0}),
        )
        .json();
    let n = first["usage"]["prompt_tokens"].as_u64().unwrap();
    let second = s
        .post(
            "/v1/completions",
            &json!({"prompt": "One two three four five six seven", "max_tokens": 2}),
        )
        .json();
    assert_eq!(second["timings"]["cache_n"], n);
    assert_eq!(second["usage"]["prompt_tokens_details"]["cached_tokens"], n);
}

/// Greedy texts of requests served together (their tokens decoded in one batched
/// forward pass) equal the same requests served alone. Exact text equality: the
/// batched products give each token the logits it gets alone, to the bit on the x86
/// paths this runs on (`oracle_logits::decode_batch_equals_each_session_alone`
/// bounds every path). A malformed request and a client that leaves mid-answer
/// change nothing for the others.
#[test]
fn concurrent_requests_equal_each_served_alone() {
    const PROMPTS: [&str; 6] = [
        "The sun",
        "A short story about a robot:",
        "def fib(n):",
        "Instruct: name three colors\nOutput:",
        "1, 2, 3,",
        "Hello",
    ];
    let body = |i: usize, stream: bool| json!({"prompt": PROMPTS[i], "max_tokens": 12 + 3 * i, "temperature": 0, "stream": stream});
    let alone: Vec<String> = {
        let s = Server::ready(model(), &[]);
        (0..PROMPTS.len())
            .map(|i| complete(&s, body(i, false)).0)
            .collect()
    };
    let s = Arc::new(Server::ready(model(), &["-np", "3", "--max-queue", "16"]));
    let mut handles = Vec::new();
    for i in 0..PROMPTS.len() {
        let s = Arc::clone(&s);
        handles.push(std::thread::spawn(move || {
            let stream = i % 2 == 1;
            let r = s.post("/v1/completions", &body(i, stream));
            let text = if stream {
                streamed(&r).0
            } else {
                r.json()["choices"][0]["text"].as_str().unwrap().to_string()
            };
            (i, text)
        }));
    }
    let bad = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            s.send("POST", "/v1/completions", &[], "{\"prompt\": ")
                .status
        })
    };
    let leaver = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut c = s.connect(
                "POST",
                "/v1/completions",
                &[],
                &json!({"prompt": "Leave", "max_tokens": 200, "stream": true}).to_string(),
            );
            let mut first = [0u8; 64];
            let _ = c.read(&mut first);
        })
    };
    for h in handles {
        let (i, text) = h.join().unwrap();
        assert_eq!(text, alone[i], "prompt {i} {:?}", PROMPTS[i]);
    }
    assert_eq!(bad.join().unwrap(), 400);
    leaver.join().unwrap();
}

/// A model whose GGUF carries a chat template gets its messages in it: the prompt
/// is the template's rendering (its token count says so), said at start.
#[test]
fn chat_messages_use_the_models_template() {
    let s = Server::ready(chatml_model(), &[]);
    assert!(s.log().contains("chat template"), "{}", s.log());
    let r = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    let n = s.post("/tokenize", &json!({"content": rendered})).json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(r.json()["usage"]["prompt_tokens"], n);
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!text.contains("<|im_end|>"), "{text:?}");
}

/// The slots share one KV pool of --ctx positions (pages of 32): one conversation
/// may use all of it (more than an even split would give it), and two answers
/// that together want more than it holds both complete: when they overlap, the one
/// that first finds no free page ends with `length` at the page boundary and the
/// other goes on to its max_tokens; when they do not, both run to max_tokens.
#[test]
fn slots_share_one_kv_pool() {
    let s = Arc::new(Server::ready(model(), &["-np", "2", "--ctx", "64"]));
    assert!(s.log().contains("KV pool"), "{}", s.log());
    let long = "one two three four five six seven eight nine ten ".repeat(4);
    let r = s.post("/v1/completions", &json!({"prompt": long, "max_tokens": 4}));
    assert_eq!(r.status, 200, "{}", r.body);
    let n = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(n > 32, "{n} prompt tokens: more than an even split's 32");
    let answers: Vec<_> = (0..2)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let body = json!({"prompt": "Go on", "max_tokens": 60, "temperature": 0});
                let v = s.post("/v1/completions", &body).json();
                assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
                let u = &v["usage"];
                (
                    u["prompt_tokens"].as_u64().unwrap(),
                    u["completion_tokens"].as_u64().unwrap(),
                )
            })
        })
        .collect();
    let mut got: Vec<(u64, u64)> = answers.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort_by_key(|&(_, n)| n);
    let prompt = got[0].0;
    // A cut answer's cache holds 32 positions: its prompt and all its tokens but
    // the last (chosen, sent, not stored).
    let cut = 33 - prompt;
    assert!(
        got == [(prompt, 60), (prompt, 60)] || got == [(prompt, cut), (prompt, 60)],
        "{got:?} (cut would be {cut}); {}",
        s.log()
    );
}

/// Starts an answer long enough to hold a slot (with --ctx 16384) for the rest of
/// a test, and returns once it streams; dropping the connection leaves.
fn hold_the_slot(s: &Server) -> TcpStream {
    let long = json!({"prompt": "Go on", "max_tokens": 16000, "stream": true}).to_string();
    let mut c = s.connect("POST", "/v1/completions", &[], &long);
    let mut buf = [0u8; 256];
    assert!(c.read(&mut buf).unwrap() > 0, "the stream has begun");
    c
}

/// --timeout: a request that waits longer for a slot is a 503 (a stream's as an
/// error event), and so is a non-streamed one that is not done in time; the
/// server goes on, the slot is freed when the long answer's client leaves.
#[test]
fn requests_past_the_timeout_are_503_and_the_server_goes_on() {
    let s = Server::ready(
        model(),
        &[
            "-np",
            "1",
            "--timeout",
            "1",
            "--max-queue",
            "4",
            "--ctx",
            "16384",
        ],
    );
    let c = hold_the_slot(&s);
    let start = Instant::now();
    s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 1}))
        .error(503, "unavailable_error", "--timeout 1 s");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1, "stream": true}),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("no slot was free within --timeout 1 s"),
        "{}",
        r.body
    );
    drop(c);
    let (_, finish) = complete(&s, json!({"prompt": "x", "max_tokens": 1}));
    assert_eq!(finish, "length");
}

/// A full queue answers 503 at once; a client that disconnects frees its slot.
#[test]
fn a_full_queue_is_503_and_a_disconnect_frees_the_slot() {
    let s = Server::ready(model(), &["-np", "1", "--max-queue", "0", "--ctx", "16384"]);
    let c = hold_the_slot(&s);
    let start = Instant::now();
    s.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 1}))
        .error(503, "unavailable_error", "busy");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(c);
    let start = Instant::now();
    let (_, finish) = complete(&s, json!({"prompt": "x", "max_tokens": 1}));
    assert_eq!(finish, "length");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the slot was freed: {:?}",
        start.elapsed()
    );
}

#[test]
fn sigterm_finishes_the_answers_under_way_and_exits_0() {
    let s = Server::ready(model(), &[]);
    let mut c = s.connect(
        "POST",
        "/v1/completions",
        &[],
        &json!({"prompt": "Count:", "max_tokens": 40, "temperature": 0, "stream": true})
            .to_string(),
    );
    let mut first = [0u8; 16];
    assert!(c.read(&mut first).unwrap() > 0);
    s.terminate();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let mut all = first.to_vec();
    all.extend(rest);
    let r = Resp::parse(&all);
    let (_, finish) = streamed(&r);
    assert_eq!(finish, "length");
    let log = s.log.clone();
    let status = s.wait();
    assert!(status.success(), "{status:?}: {}", log.lock().unwrap());
}

/// The official `openai` Python client (pinned in tests/py/requirements.txt).
/// The chat page in Debian's chromium (headless, through Selenium): a typed message
/// gets an answer that appears in pieces as it streams, and the console stays
/// free of errors and warnings.
#[test]
fn the_chat_page_streams_an_answer_in_a_real_browser() {
    let s = Server::ready(model(), &[]);
    let out = common::run_py(
        "browser_chat.py",
        &[
            &format!("http://{}/", s.addr),
            &"Write a haiku about the sea.",
        ],
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["errors"], json!([]), "{v}");
    assert_eq!(v["console"], json!([]), "{v}");
    assert_eq!(v["user"], json!(["Write a haiku about the sea."]), "{v}");
    let answer = v["answer"][0].as_str().unwrap();
    assert!(!answer.is_empty(), "{v}");
    // Streamed: the bubble showed more than one non-empty text on the way.
    let mut seen: Vec<&str> = v["seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| !t.is_empty())
        .collect();
    seen.dedup();
    assert!(seen.len() >= 2, "the answer arrived in one piece: {v}");
    assert_eq!(seen.last().unwrap().trim(), answer.trim(), "{v}");
}

#[test]
fn the_openai_python_client_works_against_it() {
    let s = Server::ready(model(), &["--api-key", "k3y"]);
    let out = common::run_py(
        "openai_client.py",
        &[&format!("http://{}/v1", s.addr), &"k3y"],
    );
    assert_eq!(out.trim(), "ok");
}

/// A --ctx that the memory given cannot hold stops the server before the model is
/// loaded, exiting non-zero with the flags that would fit.
#[test]
fn a_context_that_does_not_fit_stops_before_loading() {
    let s = Server::start(model(), &["--ctx", "256", "--mem-limit", "1000"]);
    let log = s.log.clone();
    let status = s.wait();
    assert!(!status.success());
    let log = log.lock().unwrap();
    assert!(
        log.contains("not loaded") && log.contains("--fit-ram"),
        "{log}"
    );
}
