//! Running the `phiq` binary from integration tests: its output, its JSON, its
//! clean failures. (Apart from `common`, which phiq-quantize's tests share too and
//! which cannot name this package's binary.)
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

pub fn phiq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phiq"))
        .args(args)
        .output()
        .unwrap()
}

/// The JSON a successful run prints on stdout.
pub fn ok_json(args: &[&str]) -> Value {
    let o = phiq(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Fails cleanly: exit 1 (2 for a bad flag, as clap does; never a panic's 101 or a
/// signal) and a message with `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    let o = phiq(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "{args:?}: {:?} {stderr}",
        o.status
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in {stderr}"
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
