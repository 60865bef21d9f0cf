//! phiq-quantize to a budget (`--target-size`, `--target-bpw`, `--fit-ram`): the file
//! never exceeds it, a tighter one never lowers the error, an impossible one is a clear
//! error that writes nothing, and the mix beats the uniform type and llama.cpp's mixes
//! of the same size on the weighted error, measured here independently: every tensor
//! of the written file dequantized against the F16 input, not the tool's own estimate.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/synth_checkpoint.rs"]
mod synth_checkpoint;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::workspace_root;
use phiq::gguf::GgufFile;
use phiq::imatrix::{Entry, Format, Imatrix};
use phiq::model::KvType;
use phiq::model::fit::{Header, memory_estimate};
use phiq::quant::{self, GgmlType};
use serde_json::Value;
use synth_checkpoint::Spec;

/// The tiny Phi-2-shaped model as an F16 GGUF, and an importance matrix for it with
/// an entry for every matrix (the output's too, as `--process-output` makes).
struct Fixture {
    _dir: tempfile::TempDir,
    f16: PathBuf,
    imatrix: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        let oracle = workspace_root().join("tests/fixtures/oracle/dev/checkpoint");
        synth_checkpoint::write(&ck, &Spec::tiny(), &oracle).unwrap();
        let f16 = dir.path().join("tiny-f16.gguf");
        let o = phiq_quantize(&[
            ck.as_os_str(),
            "-o".as_ref(),
            f16.as_os_str(),
            "--type".as_ref(),
            "f16".as_ref(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let imatrix = dir.path().join("tiny.imatrix.gguf");
        write_imatrix(&GgufFile::open(&f16).unwrap(), &imatrix);
        Fixture {
            _dir: dir,
            f16,
            imatrix,
        }
    })
}

/// Column importances that vary over three orders of magnitude, as activations do.
fn write_imatrix(g: &GgufFile, path: &Path) {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut entries = BTreeMap::new();
    for t in g
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2 && t.name != "token_embd.weight")
    {
        let sums = (0..t.row_len())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                10f32.powf(3.0 * u - 1.5) * 64.0
            })
            .collect();
        entries.insert(
            t.name.clone(),
            Entry {
                sums,
                counts: vec![64.0],
            },
        );
    }
    let m = Imatrix {
        format: Format::Gguf,
        entries,
        datasets: vec!["synthetic".into()],
        chunk_count: 1,
        chunk_size: 64,
    };
    phiq::imatrix::write_gguf(&m, path).unwrap();
}

fn phiq_quantize<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap()
}

/// Runs phiq-quantize on the fixture with its matrix; returns the JSON it printed
/// (budget runs) or `Null`.
fn run_ok(out: &Path, args: &[&str]) -> Value {
    let f = fixture();
    let mut all: Vec<&std::ffi::OsStr> = vec![f.f16.as_os_str(), "-o".as_ref(), out.as_os_str()];
    all.extend(["--imatrix".as_ref(), f.imatrix.as_os_str()]);
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let o = phiq_quantize(&all);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// The weighted error of `path` against the F16 input, as the budget defines it:
/// Σ_ij E[x_j²]·(w_ij - ŵ_ij)² per matrix, the embedding's per row (its mean).
fn weighted_error(path: &Path) -> f64 {
    let f = fixture();
    let (base, q) = (
        GgufFile::open(&f.f16).unwrap(),
        GgufFile::open(path).unwrap(),
    );
    let m = phiq::imatrix::read(&f.imatrix).unwrap();
    let mut total = 0.0;
    for t in q.tensors.iter().filter(|t| t.shape.len() == 2) {
        let (bt, bdata) = base.tensor(&t.name).unwrap();
        let n = t.row_len() as usize;
        let w = m.weights(&t.name).unwrap_or_else(|| vec![1.0; n]);
        let (qrb, brb) = (
            t.n_bytes as usize / t.n_rows() as usize,
            bt.n_bytes as usize / bt.n_rows() as usize,
        );
        let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
        let mut e = 0.0;
        for r in 0..t.n_rows() as usize {
            quant::dequantize_row(bt.ty, &bdata[r * brb..(r + 1) * brb], &mut x).unwrap();
            quant::dequantize_row(t.ty, &q.tensor_data(t)[r * qrb..(r + 1) * qrb], &mut y).unwrap();
            e += x
                .iter()
                .zip(&y)
                .zip(&w)
                .map(|((a, b), w)| f64::from(*w) * f64::from(a - b).powi(2))
                .sum::<f64>();
        }
        total += if t.name == "token_embd.weight" {
            e / t.n_rows() as f64
        } else {
            e
        };
    }
    total
}

fn types(path: &Path) -> BTreeMap<String, GgmlType> {
    GgufFile::open(path)
        .unwrap()
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.ty))
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn the_mix_beats_the_uniform_type_and_llama_cpps_mixes_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // Every matrix Q3_K (the output too), then llama.cpp's Q3_K_M and Q2_K mixes.
    let others: [(&str, &[&str]); 3] = [
        (
            "uniform-q3_k",
            &["--type", "q3_k_s", "--tensor-type", "output=q3_k"],
        ),
        ("q3_k_m", &["--type", "q3_k_m"]),
        ("q2_k", &["--type", "q2_k"]),
    ];
    for (name, args) in others {
        let other = dir.path().join(format!("{name}.gguf"));
        run_ok(&other, args);
        let budget = size(&other).to_string();
        let mix = dir.path().join(format!("mix-{name}.gguf"));
        let v = run_ok(&mix, &["--target-size", &budget, "--json"]);
        assert!(
            size(&mix) <= size(&other),
            "{name}: {} > {budget}",
            size(&mix)
        );
        assert_eq!(v["file_bytes"].as_u64(), Some(size(&mix)));
        let (e_mix, e_other) = (weighted_error(&mix), weighted_error(&other));
        assert!(
            e_mix < e_other,
            "{name}: the mix's error {e_mix} is not below {e_other}"
        );
        // The tool's prediction (256 sampled rows a matrix) tracks the measured error.
        let predicted = v["error"].as_f64().unwrap();
        assert!(
            (predicted / e_mix - 1.0).abs() < 0.25,
            "{name}: predicted {predicted}, measured {e_mix}"
        );
    }
}

#[test]
fn budgets_are_never_exceeded_and_tighter_ones_never_lower_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut last: Option<(f64, f64, f64)> = None;
    for bpw in ["3.0", "3.5", "4.2", "5.5"] {
        let out = dir.path().join(format!("bpw-{bpw}.gguf"));
        let v = run_ok(&out, &["--target-bpw", bpw, "--json"]);
        let g = GgufFile::open(&out).unwrap();
        let (bytes, params) = g
            .tensors
            .iter()
            .fold((0, 0), |(b, p), t| (b + t.n_bytes, p + t.n_elements()));
        let got = bytes as f64 * 8.0 / params as f64;
        assert!(
            got <= bpw.parse::<f64>().unwrap(),
            "{bpw}: {got} bits per weight"
        );
        let (predicted, measured) = (v["error"].as_f64().unwrap(), weighted_error(&out));
        if let Some((b, p, m)) = last {
            assert!(
                predicted <= p,
                "{bpw} bpw predicts {predicted}, {b} bpw {p}"
            );
            assert!(measured <= m, "{bpw} bpw measures {measured}, {b} bpw {m}");
        }
        last = Some((got, predicted, measured));
    }
}

#[test]
fn impossible_budgets_are_clear_errors_that_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture();
    let out = dir.path().join("never.gguf");
    for (args, says) in [
        (["--target-size", "5M"], "smallest mix"),
        (["--target-bpw", "1.5"], "smallest mix"),
        (["--fit-ram", "50M"], "leaves nothing for the weights"),
    ] {
        let o = phiq_quantize(&[
            f.f16.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            args[0].as_ref(),
            args[1].as_ref(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(says) && err.contains(args[0]),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} wrote a file");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} left a file"
        );
    }
    let o = phiq_quantize(&[
        f.f16.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--target-bpw".as_ref(),
        "4".as_ref(),
        "--tensor-type".as_ref(),
        "attn_x=q8_0".as_ref(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("attn_x=q8_0") && err.contains("matches no"),
        "{err}"
    );
}

#[test]
fn a_fit_ram_file_fits_what_phiq_run_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fit.gguf");
    let (ram, reserve, ctx) = (60_000_000u64, 5_000_000u64, 512usize);
    let v = run_ok(
        &out,
        &[
            "--fit-ram",
            "60M",
            "--reserve",
            "5M",
            "--ctx",
            "512",
            "--kv-type",
            "q8_0",
            "--json",
        ],
    );
    // phiq run's own estimate of the file, from its header, as run/chat/serve decide.
    let h = Header::read(&out).unwrap();
    let need = memory_estimate(&h.hp, h.weights, ctx, KvType::Q8_0, 512).total();
    assert!(
        need <= ram - reserve,
        "phiq run needs {need} of {}",
        ram - reserve
    );
    assert_eq!(v["fit"]["need"].as_u64(), Some(need), "{v}");
    // The budget is used: another matrix one type up would not fit.
    assert!(
        need > (ram - reserve) * 8 / 10,
        "{need} leaves much of {} unused",
        ram - reserve
    );
}

#[test]
fn tensor_type_overrides_are_kept_in_a_budget_and_with_a_type() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gguf");
    let v = run_ok(
        &out,
        &[
            "--target-bpw",
            "3.6",
            "--tensor-type",
            "ffn_down=q8_0",
            "--tensor-type",
            r"blk\.0\.=q6_k",
            "--json",
        ],
    );
    let t = types(&out);
    assert_eq!(
        t["blk.0.ffn_down.weight"],
        GgmlType::Q8_0,
        "the first pattern that matches wins"
    );
    assert_eq!(t["blk.1.ffn_down.weight"], GgmlType::Q8_0);
    assert_eq!(t["blk.0.attn_output.weight"], GgmlType::Q6_K);
    assert_ne!(t["blk.1.attn_output.weight"], GgmlType::Q6_K);
    assert_eq!(
        t["blk.0.attn_norm.weight"],
        GgmlType::F32,
        "vectors are not overridden"
    );
    assert!(v["roles"]["ffn_down"]["Q8_0"].as_u64() == Some(2), "{v}");
    let out = dir.path().join("t.gguf");
    run_ok(
        &out,
        &["--type", "q4_k_m", "--tensor-type", "attn_output=iq4_xs"],
    );
    let t = types(&out);
    assert_eq!(t["blk.1.attn_output.weight"], GgmlType::IQ4_XS);
    assert_eq!(t["blk.1.ffn_up.weight"], GgmlType::Q4_K);
}

#[test]
fn fit_ram_flags_without_fit_ram_are_refused() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.gguf");
    for flag in [["--reserve", "1G"], ["--kv-type", "q8_0"]] {
        let o = phiq_quantize(&[
            f.f16.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--type".as_ref(),
            "q8_0".as_ref(),
            flag[0].as_ref(),
            flag[1].as_ref(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{flag:?} was accepted without --fit-ram"
        );
        assert!(err.contains("--fit-ram"), "{flag:?}: {err}");
        assert!(!out.exists());
    }
}
