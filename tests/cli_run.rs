//! `phiq run`, `tokenize`, `perplexity` and `chat` as a user runs them, against the
//! transformers reference, plus the inputs that must fail cleanly.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/oracle.rs"]
mod oracle;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use cli::{fails_with, ok_json, phiq};
use phiq::gguf::{GgufFile, GgufWriter, MetaValue, TensorSpec};

/// The reference checkpoint as an F16 GGUF, made once for all tests of this file.
fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = oracle::gguf_from(
            &oracle::checkpoint(),
            "f16",
            &dir.path().join("dev-f16.gguf"),
        );
        (dir, path)
    });
    path
}

fn m() -> &'static str {
    model().to_str().unwrap()
}

#[test]
fn run_greedy_json_equals_transformers() {
    let reference = oracle::reference();
    for p in reference["generation"]["prompts"].as_array().unwrap() {
        let prompt = p["prompt"].as_str().unwrap();
        let n = p["n_new"].as_u64().unwrap().to_string();
        let out = ok_json(&[
            "run",
            "-m",
            m(),
            "-p",
            prompt,
            "-n",
            &n,
            "--temp",
            "0",
            "--json",
        ]);
        assert_eq!(out["prompt_tokens"], p["prompt_ids"]);
        assert_eq!(out["tokens"], p["new_ids"]);
        assert_eq!(out["text"], p["new_text"]);
        for k in ["load_ms", "prompt_tok_s", "gen_tok_s"] {
            assert!(out["timings"][k].as_f64().unwrap() >= 0.0, "{k}");
        }
    }
}

#[test]
fn run_streams_text_and_reports_timings() {
    let reference = oracle::reference();
    let p = &reference["generation"]["prompts"][0];
    let o = phiq(&[
        "run",
        "-m",
        m(),
        "-p",
        p["prompt"].as_str().unwrap(),
        "-n",
        "24",
        "--temp",
        "0",
    ]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        p["new_text"].as_str().unwrap().trim_end()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("tok/s") && stderr.contains("load"),
        "{stderr}"
    );
}

#[test]
fn seed_makes_sampling_reproducible() {
    let run = |seed: &str| {
        ok_json(&[
            "run",
            "-m",
            m(),
            "-p",
            "Once",
            "-n",
            "12",
            "--temp",
            "1.5",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
            "--seed",
            seed,
            "--json",
        ])["tokens"]
            .clone()
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

#[test]
fn tokenize_matches_transformers() {
    let reference = oracle::reference();
    for case in reference["tokenizer"]["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        if text.is_empty() {
            continue;
        }
        let out = ok_json(&["tokenize", "-m", m(), "-p", text, "--json"]);
        assert_eq!(out["ids"], case["ids"], "{text:?}");
    }
    let o = phiq(&["tokenize", "-m", m(), "-p", "Hello  world"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "15496\tHello\n50286\t  \n6894\tworld\n"
    );
}

#[test]
fn perplexity_matches_transformers() {
    let reference = oracle::reference();
    let ppl = &reference["perplexity"];
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, ppl["text"].as_str().unwrap()).unwrap();
    let out = ok_json(&[
        "perplexity",
        "-m",
        m(),
        "-f",
        text.to_str().unwrap(),
        "--json",
    ]);
    let (got, want) = (out["ppl"].as_f64().unwrap(), ppl["ppl"].as_f64().unwrap());
    assert!(((got - want) / want).abs() < 1e-4, "ppl {got} vs {want}");
    assert_eq!(out["tokens"], ppl["n_tokens"]);
    assert_eq!(out["chunks"], 1);
    // Chunks of 8 tokens: more chunks, each scored on its own.
    let out = ok_json(&[
        "perplexity",
        "-m",
        m(),
        "-f",
        text.to_str().unwrap(),
        "--ctx",
        "8",
        "--json",
    ]);
    assert_eq!(out["chunks"], 5);
}

#[test]
fn edge_cases_give_sensible_results() {
    // -n 0: nothing generated, still a clean run.
    let out = ok_json(&["run", "-m", m(), "-p", "Hello", "-n", "0", "--json"]);
    assert_eq!(out["tokens"], serde_json::json!([]));
    // Empty prompt: generation starts from <|endoftext|>.
    let out = ok_json(&[
        "run",
        "-m",
        m(),
        "-p",
        "",
        "-n",
        "3",
        "--temp",
        "0",
        "--json",
    ]);
    assert_eq!(out["prompt_tokens"], serde_json::json!([50256]));
    // Generation stops when the context is full: 2 prompt tokens + 4 fed back fill 6
    // positions, and the logits of the last one still give a 5th token.
    let out = ok_json(&[
        "run",
        "-m",
        m(),
        "-p",
        "Hello world",
        "-n",
        "50",
        "--ctx",
        "6",
        "--temp",
        "0",
        "--json",
    ]);
    assert_eq!(out["tokens"].as_array().unwrap().len(), 5);
    fails_with(
        &[
            "run",
            "-m",
            m(),
            "-p",
            "one two three four five six seven",
            "--ctx",
            "4",
        ],
        "the prompt has 7 tokens but the context holds 4",
    );
    fails_with(
        &["run", "-m", m(), "-p", "x", "--kv-type", "q4"],
        "expected f32, f16 or q8_0",
    );
    fails_with(
        &["run", "-m", "/nonexistent.gguf", "-p", "x"],
        "/nonexistent.gguf",
    );
    // A Q8_0 cache (the dev model's 32-wide rows are one block each).
    let out = ok_json(&[
        "run",
        "-m",
        m(),
        "-p",
        "Hello",
        "-n",
        "2",
        "--kv-type",
        "q8_0",
        "--json",
    ]);
    assert_eq!(out["tokens"].as_array().unwrap().len(), 2);
}

/// Copies the model's GGUF with metadata changed by `edit`.
fn rewrite(edit: impl Fn(&mut Vec<(String, MetaValue)>), out: &Path) {
    let f = GgufFile::open(model()).unwrap();
    let mut meta = f.metadata.clone();
    edit(&mut meta);
    let specs: Vec<TensorSpec> = f
        .tensors
        .iter()
        .map(|t| TensorSpec::new(&t.name, t.ty, &t.shape))
        .collect();
    let mut w = GgufWriter::create(out, &meta, specs).unwrap();
    for t in &f.tensors {
        w.write_tensor(&t.name, f.tensor_data(t)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn bad_model_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &["run", "-m", truncated.to_str().unwrap(), "-p", "x"],
        "beyond the end of the file",
    );

    let llama = dir.path().join("llama.gguf");
    rewrite(
        |m| {
            for kv in m.iter_mut().filter(|kv| kv.0 == "general.architecture") {
                kv.1 = MetaValue::String("llama".into());
            }
        },
        &llama,
    );
    fails_with(
        &["run", "-m", llama.to_str().unwrap(), "-p", "x"],
        "phiq runs phi2 models only",
    );

    let no_tok = dir.path().join("no-tokenizer.gguf");
    rewrite(|m| m.retain(|kv| !kv.0.starts_with("tokenizer.")), &no_tok);
    fails_with(
        &["run", "-m", no_tok.to_str().unwrap(), "-p", "x"],
        "tokenizer.ggml",
    );
    fails_with(
        &["tokenize", "-m", no_tok.to_str().unwrap(), "-p", "x"],
        "tokenizer.ggml",
    );

    let no_hparam = dir.path().join("no-hparam.gguf");
    rewrite(|m| m.retain(|kv| kv.0 != "phi2.block_count"), &no_hparam);
    fails_with(
        &["run", "-m", no_hparam.to_str().unwrap(), "-p", "x"],
        "phi2.block_count",
    );
}

fn chat(input: &str, extra: &[&str]) -> (String, String) {
    chat_with(m(), input, extra)
}

fn chat_with(model: &str, input: &str, extra: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_phiq"))
        .args(["chat", "-m", model, "--temp", "0"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn chat_answers_resets_and_exits() {
    let (out, err) = chat(
        "Write a haiku about the sea.\n/reset\nHi\n/exit\nnever read\n",
        &["-n", "24"],
    );
    // The first answer is the reference continuation of the same Instruct prompt.
    let reference = oracle::reference();
    let want = reference["generation"]["prompts"][0]["new_text"]
        .as_str()
        .unwrap();
    assert!(out.starts_with(want.trim_end()), "{out:?}");
    assert!(err.contains("conversation forgotten"), "{err}");
    assert_eq!(out.lines().count(), 2, "{out:?}");
}

#[test]
fn chat_drops_old_turns_when_the_context_fills() {
    let long = "tell me about the sea and the sky and the land ".repeat(3);
    let input = format!("{long}\n{long}\n{long}\n{long}\n");
    let (out, err) = chat(&input, &["-n", "8", "--ctx", "96", "--style", "chat"]);
    assert!(err.contains("dropped the"), "{err}");
    assert_eq!(out.lines().count(), 4, "{out:?}");
}

/// A model with a chat template chats in it (two turns, the second reusing the
/// first's cache); `--style instruct` still picks Phi-2's format, and
/// `--style template` without a template is a clear error.
#[test]
fn chat_uses_the_models_template() {
    let dir = tempfile::tempdir().unwrap();
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
    let ckpt = oracle::checkpoint_with_template(dir.path(), template, true);
    let gguf = oracle::gguf_from(&ckpt, "q8_0", &dir.path().join("chatml.gguf"));
    let g = gguf.to_str().unwrap();
    let (out, err) = chat_with(g, "Hi\nAnd then?\n", &["-n", "6"]);
    assert!(err.contains("the model's chat template"), "{err}");
    assert_eq!(out.lines().count(), 2, "{out:?}");
    let (_, err) = chat_with(g, "Hi\n", &["-n", "2", "--style", "instruct"]);
    assert!(err.contains("Instruct"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_phiq"))
        .args(["chat", "-m", m(), "--style", "template"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no tokenizer.chat_template"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `phiq bench --parallel`: one figure per stream count, each with its ratio to one
/// stream from the same repetitions (1.0 for one stream itself); counts of 0 and a
/// run without generation are refused.
#[test]
fn bench_reports_parallel_streams() {
    let m = model().to_str().unwrap();
    let v = ok_json(&[
        "bench",
        "-m",
        m,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "--parallel",
        "1,3",
        "--json",
    ]);
    let rows = v["parallel"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[0]["streams"], 1);
    assert_eq!(rows[0]["vs_one_stream"].as_f64(), Some(1.0), "{v}");
    assert_eq!(rows[1]["streams"], 3);
    for r in rows {
        assert!(r["tok_s"].as_f64().unwrap() > 0.0, "{v}");
        assert_eq!(r["runs"].as_array().unwrap().len(), 2, "{v}");
    }
    assert!(v["pp_tok_s"].as_f64().unwrap() > 0.0 && v["tg_tok_s"].as_f64().unwrap() > 0.0);
    fails_with(&["bench", "-m", m, "--parallel", "0,2"], "--parallel");
    fails_with(
        &["bench", "-m", m, "-n", "0", "--parallel", "2"],
        "--parallel",
    );
}

/// With less memory than the trained context needs, an unset --ctx shrinks to what
/// fits (said with the numbers), a set one stops before loading with what would fit,
/// and chat does the same; the numbers are the estimate `phiq run` prints.
#[test]
fn runs_fit_the_memory_they_have() {
    use phiq::model::KvType;
    use phiq::model::fit::{Header, memory_estimate};
    let h = Header::read(model()).unwrap();
    let need = |n| memory_estimate(&h.hp, h.weights, n, KvType::F16, 512).total();
    assert_eq!(h.hp.n_ctx_train, 256);
    // Room for 160 positions, not 192.
    let limit = (need(160) + need(192)) / 2;
    let limit = limit.to_string();
    let o = phiq(&[
        "run",
        "-m",
        m(),
        "-p",
        "Hello",
        "-n",
        "4",
        "--temp",
        "0",
        "--mem-limit",
        &limit,
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("using --ctx 160") && stderr.contains("(160 x f16)"),
        "{stderr}"
    );
    // Set: refused before loading, with the context that fits and the q8_0 cache.
    fails_with(
        &[
            "run",
            "-m",
            m(),
            "-p",
            "Hello",
            "--ctx",
            "256",
            "--mem-limit",
            &limit,
        ],
        "what fits: --ctx 160; or --kv-type q8_0",
    );
    // Below the weights themselves: only a smaller file helps.
    let tiny = (h.weights / 2).to_string();
    fails_with(
        &["run", "-m", m(), "-p", "Hello", "--mem-limit", &tiny],
        "--fit-ram",
    );
    let (_, stderr) = chat_with(m(), "hi\n", &["--mem-limit", &limit]);
    assert!(stderr.contains("using --ctx 160"), "{stderr}");
    fails_with(
        &["run", "-m", m(), "-p", "x", "--mem-limit", "2X"],
        "unknown unit",
    );
}
