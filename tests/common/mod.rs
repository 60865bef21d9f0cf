//! Shared helpers for integration tests: a deterministic RNG and the gguf-py reference.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// SplitMix64: tiny, deterministic, good enough to generate test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
    /// Approximately standard normal (sum of uniforms), cheap and deterministic.
    pub fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.f32()).sum::<f32>() - 6.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The largest |a - b| over two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Varied English-like text of about 400 words (a calibration or evaluation text
/// for the dev model), the same on every run.
pub fn calibration_text() -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "runs",
        "on",
        "a",
        "small",
        "board",
        "with",
        "two",
        "cores",
        "and",
        "answers",
        "questions",
        "about",
        "lights,",
        "doors",
        "weather.",
        "It",
        "quantizes",
        "weights",
        "to",
        "four",
        "bits",
        "while",
        "keeping",
        "quality",
        "high;",
        "numbers",
        "like",
        "3.14",
        "or",
        "2048",
        "appear",
        "too.",
        "\n",
    ];
    let mut rng = Rng::new(11);
    (0..400)
        .map(|_| WORDS[rng.below(WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The workspace root: this file is shared by the crates' test suites, so look for the
/// folder that holds `tests/py`.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|d| d.join("tests/py").is_dir())
        .unwrap_or(&manifest)
        .to_path_buf()
}

/// The Python interpreter that has gguf-py. `scripts/test.sh` sets `PHIQ_PYTHON`;
/// a bare `cargo test` falls back to `.venv/bin/python`. Missing either is a failure,
/// never a skip: these tests are the independent check.
pub fn python() -> PathBuf {
    let p = std::env::var_os("PHIQ_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with gguf-py at {}: run scripts/test.sh (it creates .venv) or set PHIQ_PYTHON",
        p.display()
    );
    p
}

/// Runs `tests/py/<script>` with `args`; panics with its stderr if it fails.
pub fn run_py(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let path = workspace_root().join("tests/py").join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("failed to start Python");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

pub fn write_f32(path: &Path, x: &[f32]) {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
