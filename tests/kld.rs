//! `phiq perplexity --kl-divergence-base / --kl-divergence`: the base file against a
//! reimplementation of llama-perplexity's reader, the statistics against numpy from
//! the same logits, and the base files that must be refused.

#[path = "support/cli.rs"]
mod cli;
mod common;
#[path = "support/oracle.rs"]
mod oracle;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cli::{fails_with, ok_json, s};
use phiq::kld::BaseFile;
use phiq::model::{KvType, Logits, Model};

const CTX: usize = 64;

struct Fixture {
    dir: tempfile::TempDir,
    base_model: PathBuf,
    quantized: PathBuf,
    text: PathBuf,
    base: PathBuf,
}

/// The dev checkpoint as F32 (the base) and Q4_0, a text, and the base file phiq
/// wrote from the F32 model, once for this file.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ck = oracle::checkpoint();
        let base_model = oracle::gguf_from(&ck, "f32", &dir.path().join("f32.gguf"));
        let quantized = oracle::gguf_from(&ck, "q4_0", &dir.path().join("q4_0.gguf"));
        let text = dir.path().join("text.txt");
        std::fs::write(&text, common::calibration_text()).unwrap();
        let base = dir.path().join("base.bin");
        let j = ok_json(&[
            "perplexity",
            "-m",
            s(&base_model),
            "-f",
            s(&text),
            "--kl-divergence-base",
            s(&base),
            "--ctx",
            "64",
            "--json",
        ]);
        assert_eq!(j["scoring"], "half");
        assert!(base.exists());
        Fixture {
            dir,
            base_model,
            quantized,
            text,
            base,
        }
    })
}

/// The logits of `model` at the base file's scored positions, as phiq perplexity
/// computes them (each chunk from an empty F16 cache, the CLI's default), as f32 rows.
fn scored_logits(model: &Path, base: &BaseFile, out: &Path) {
    let m = Model::load(model).unwrap();
    let n_vocab = m.hp.n_vocab;
    let mut bytes = Vec::new();
    for chunk in base.tokens.chunks_exact(base.n_ctx) {
        let mut s = m.session(base.n_ctx, KvType::F16).unwrap();
        let logits = s.eval(chunk, Logits::All).unwrap();
        let rows = &logits[base.n_ctx / 2 * n_vocab..(base.n_ctx - 1) * n_vocab];
        bytes.extend(rows.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn statistics_and_base_file_equal_an_independent_numpy_computation() {
    let f = fixture();
    let report = ok_json(&[
        "perplexity",
        "-m",
        s(&f.quantized),
        "--kl-divergence-base",
        s(&f.base),
        "--kl-divergence",
        "--json",
    ]);
    let base = BaseFile::open(&f.base).unwrap();
    assert_eq!((base.n_ctx, base.n_vocab), (CTX, 51200));
    let dir = f.dir.path();
    let (lb, lq, rp) = (
        dir.join("lb.f32"),
        dir.join("lq.f32"),
        dir.join("report.json"),
    );
    scored_logits(&f.base_model, &base, &lb);
    scored_logits(&f.quantized, &base, &lq);
    std::fs::write(&rp, report.to_string()).unwrap();
    let out = common::run_py("kld_ref.py", &[&"check", &f.base, &lb, &lq, &rp]);
    assert!(out.contains("positions agree"), "{out}");
    // Q4_0 of random weights moves the distribution, but not to nothing.
    let kld = report["kld"]["value"].as_f64().unwrap();
    assert!(kld > 1e-4 && kld < 1.0, "{report}");
    assert_eq!(report["chunks"], base.n_chunk);
}

#[test]
fn the_base_model_against_its_own_base_has_no_divergence() {
    let f = fixture();
    let r = ok_json(&[
        "perplexity",
        "-m",
        s(&f.base_model),
        "--kl-divergence-base",
        s(&f.base),
        "--kl-divergence",
        "-f",
        s(&f.text),
        "--json",
    ]);
    // Only the 16-bit storage of the base's log-probabilities separates them.
    assert!(r["kld"]["value"].as_f64().unwrap() < 1e-6, "{r}");
    assert_eq!(r["same_top"]["value"].as_f64().unwrap(), 1.0, "{r}");
    let ratio = r["ppl_ratio"]["value"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 1e-4, "{r}");
}

#[test]
fn half_window_scoring_matches_the_base_runs_perplexity() {
    let f = fixture();
    let half = ok_json(&[
        "perplexity",
        "-m",
        s(&f.base_model),
        "-f",
        s(&f.text),
        "--scoring",
        "half",
        "--ctx",
        "64",
        "--json",
    ]);
    let r = ok_json(&[
        "perplexity",
        "-m",
        s(&f.base_model),
        "--kl-divergence-base",
        s(&f.base),
        "--kl-divergence",
        "--json",
    ]);
    let (a, b) = (
        half["ppl"].as_f64().unwrap(),
        r["ppl"]["value"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4 * a, "{a} vs {b}");
    assert_eq!(
        half["scored"].as_u64().unwrap() as usize,
        r["count"].as_u64().unwrap() as usize
    );
    // Every prediction of each chunk scores more positions than the second half.
    let all = ok_json(&[
        "perplexity",
        "-m",
        s(&f.base_model),
        "-f",
        s(&f.text),
        "--ctx",
        "64",
        "--json",
    ]);
    assert!(
        all["scored"].as_u64() > half["scored"].as_u64(),
        "{all} {half}"
    );
}

#[test]
fn bad_or_mismatched_base_files_are_refused_with_their_name() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&f.base).unwrap();
    let kl = |base: &Path| -> Vec<String> {
        [
            "perplexity",
            "-m",
            s(&f.quantized),
            "--kl-divergence-base",
            s(base),
            "--kl-divergence",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |base: &Path, extra: &[&str], needle: &str| {
        let mut a = kl(base);
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails_with(&a, needle);
    };
    // Truncated.
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    run(&cut, &[], "truncated");
    // Not a base file.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"GGUF and then some").unwrap();
    run(&junk, &[], "junk.bin: not a base log-probability file");
    // Another vocabulary (a consistent file of 100 tokens per row).
    let other = dir.path().join("vocab.bin");
    let mut h = b"_logits_".to_vec();
    for v in [4i32, 100, 1] {
        h.extend(v.to_le_bytes());
    }
    h.extend([1i32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()));
    h.extend(vec![0u8; 2 * (100 + 4)]);
    std::fs::write(&other, &h).unwrap();
    run(&other, &[], "vocabulary of 100 tokens");
    // A token outside the vocabulary.
    let mut bad = bytes.clone();
    bad[20..24].copy_from_slice(&60000i32.to_le_bytes());
    let tok = dir.path().join("token.bin");
    std::fs::write(&tok, &bad).unwrap();
    run(&tok, &[], "token 60000 at position 0");
    // Another text than the base was made from.
    let text = dir.path().join("other.txt");
    std::fs::write(&text, "A different text. ".repeat(100)).unwrap();
    run(&f.base, &["-f", s(&text)], "tokens differ");
    // Another chunk size.
    run(&f.base, &["--ctx", "32"], "chunks of 64 tokens");
    // Writing a base needs a text.
    fails_with(
        &[
            "perplexity",
            "-m",
            s(&f.base_model),
            "--kl-divergence-base",
            s(&dir.path().join("x.bin")),
        ],
        "--file is required",
    );
    assert!(!dir.path().join("x.bin").exists());
}
