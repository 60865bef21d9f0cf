//! `phiq imatrix` and `--imatrix`: the matrix against a numpy re-derivation from an
//! independent f64 model's activations, both of llama.cpp's file formats, what the
//! weights do to quantization, and the files that must be refused.

#[path = "support/cli.rs"]
mod cli;
mod common;
#[path = "support/oracle.rs"]
mod oracle;
#[path = "support/reference_f64.rs"]
mod reference_f64;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cli::{phiq, s};
use phiq::gguf::GgufFile;
use phiq::imatrix::{self, Format};
use phiq::quant::{self, GgmlType};
use phiq::tokenizer::Tokenizer;
use phiq_quantize::{FileType, Importance, Input, Plan, convert, convert::NoProgress};
use reference_f64::RefPhi2;

const CHUNK: usize = 64;
const CHUNKS: usize = 3;

/// The dev checkpoint as an F32 GGUF, a calibration text, and the matrices phiq
/// imatrix made from it in both formats (with an F32 KV cache, so that attention's
/// output compares with the f64 reference to f32 rounding), once for this file's tests.
struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    text: PathBuf,
    gguf: PathBuf,
    dat: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = oracle::gguf_from(&oracle::checkpoint(), "f32", &dir.path().join("dev.gguf"));
        let text = dir.path().join("calibration.txt");
        std::fs::write(&text, common::calibration_text()).unwrap();
        let (gguf, dat) = (dir.path().join("im.gguf"), dir.path().join("im.dat"));
        for out in [&gguf, &dat] {
            let o = phiq(&[
                "imatrix",
                "-m",
                s(&model),
                "-f",
                s(&text),
                "-o",
                s(out),
                "--ctx",
                "64",
                "--chunks",
                "3",
                "--kv-type",
                "f32",
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        Fixture {
            _dir: dir,
            model,
            text,
            gguf,
            dat,
        }
    })
}

/// The dumps of the f64 reference's product inputs for the chunks `phiq imatrix`
/// read (each chunk a fresh pass, as there), `<layer>.<kind>.f64`.
fn dump_reference_inputs(f: &Fixture, dir: &Path) {
    let g = GgufFile::open(&f.model).unwrap();
    let tok = Tokenizer::from_gguf(g.header()).unwrap();
    let ids = tok
        .encode(&std::fs::read_to_string(&f.text).unwrap())
        .unwrap();
    assert!(ids.len() >= CHUNK * CHUNKS, "{} tokens", ids.len());
    let reference = RefPhi2::load(&oracle::checkpoint());
    let mut dumps: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for chunk in ids.chunks_exact(CHUNK).take(CHUNKS) {
        reference.logits_observed(chunk, &mut |layer, kind, x| {
            let d = dumps.entry(format!("{layer}.{kind}")).or_default();
            d.extend(x.iter().flat_map(|v| v.to_le_bytes()));
        });
    }
    for (name, bytes) in dumps {
        std::fs::write(dir.join(format!("{name}.f64")), bytes).unwrap();
    }
}

#[test]
fn imatrix_equals_a_numpy_rederivation_from_reference_activations() {
    let f = fixture();
    let dumps = tempfile::tempdir().unwrap();
    dump_reference_inputs(f, dumps.path());
    let out = common::run_py(
        "imatrix_ref.py",
        &[
            &"check",
            &f.gguf,
            &f.dat,
            &dumps.path(),
            &CHUNK.to_string(),
            &f.text,
        ],
    );
    assert!(out.contains("12 entries over 192 tokens agree"), "{out}");
}

#[test]
fn both_formats_round_trip_and_give_the_same_weights() {
    let f = fixture();
    let g = imatrix::read(&f.gguf).unwrap();
    let d = imatrix::read(&f.dat).unwrap();
    assert_eq!((g.format, d.format), (Format::Gguf, Format::Dat));
    assert_eq!((g.chunk_count, g.chunk_size, d.chunk_count), (3, 64, 3));
    let dir = tempfile::tempdir().unwrap();
    let (g2, d2) = (dir.path().join("again.gguf"), dir.path().join("again.dat"));
    imatrix::write_gguf(&g, &g2).unwrap();
    imatrix::write_dat(&d, &d2).unwrap();
    assert_eq!(std::fs::read(&g2).unwrap(), std::fs::read(&f.gguf).unwrap());
    assert_eq!(std::fs::read(&d2).unwrap(), std::fs::read(&f.dat).unwrap());
    // From collected sums to .dat, as llama-imatrix --output-format dat.
    let d3 = dir.path().join("from-gguf.dat");
    imatrix::write_dat(&g, &d3).unwrap();
    assert_eq!(std::fs::read(&d3).unwrap(), std::fs::read(&f.dat).unwrap());
    assert_eq!(g.entries.len(), 12);
    for name in g.entries.keys() {
        let (a, b) = (g.weights(name).unwrap(), d.weights(name).unwrap());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * x.abs(), "{name}: {x} vs {y}");
        }
    }
}

/// Σ over the tensor's rows of Σ_j w_j (x_ij - x̂_ij)², x from the F32 file.
fn weighted_error(original: &GgufFile, quantized: &GgufFile, name: &str, w: &[f32]) -> f64 {
    let (info, data) = quantized.tensor(name).unwrap();
    let (_, x) = original.tensor(name).unwrap();
    let x: Vec<f32> = x
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let n = info.row_len() as usize;
    let rb = info.ty.row_bytes(n as u64).unwrap() as usize;
    let mut back = vec![0f32; n];
    let mut err = 0f64;
    for (r, xr) in x.chunks_exact(n).enumerate() {
        quant::dequantize_row(info.ty, &data[r * rb..(r + 1) * rb], &mut back).unwrap();
        for ((&a, &b), &wi) in xr.iter().zip(&back).zip(w) {
            err += f64::from(wi) * f64::from(a - b).powi(2);
        }
    }
    err
}

fn quantize(ft: &str, imatrix: Option<&Path>, out: &Path) -> GgufFile {
    let input = Input::open(&oracle::checkpoint()).unwrap();
    let ft = FileType::by_name(ft).unwrap();
    let plan = Plan::new(&input, ft, Some("oracle"), imatrix.is_some()).unwrap();
    let importance = match imatrix {
        Some(p) => Importance::open(p, &plan).unwrap().0,
        None => Importance::none(),
    };
    let lora = phiq_quantize::lora::Lora::none();
    convert(&input, &plan, &lora, &importance, out, &NoProgress).unwrap();
    GgufFile::open(out).unwrap()
}

/// Every type ggml weights writes other bytes with the matrix, and a lower error
/// under the matrix's weights, in every tensor it weights and in total. Ignoring the
/// weights fails this.
#[test]
fn the_matrix_changes_the_bytes_and_lowers_the_weighted_error_of_every_type() {
    let f = fixture();
    let m = imatrix::read(&f.gguf).unwrap();
    let original = GgufFile::open(&f.model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The dev model's rows (32 and 128 wide) take the K-quant mixes' fallbacks
    // (Q5_0, Q5_1, Q8_0); Q4_K, Q5_K and Q6_K themselves are checked against ggml in
    // the library's unit tests and on the full-size model.
    for ft in ["q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q5_k_m"] {
        let plain = quantize(ft, None, &dir.path().join("plain.gguf"));
        let weighted = quantize(ft, Some(&f.gguf), &dir.path().join("weighted.gguf"));
        let (mut e0, mut e1, mut types) = (0f64, 0f64, Vec::new());
        for name in m.entries.keys() {
            let w = m.weights(name).unwrap();
            let ty = weighted.tensor(name).unwrap().0.ty;
            let same = plain.tensor(name).unwrap().1 == weighted.tensor(name).unwrap().1;
            if ty == GgmlType::Q8_0 {
                // ggml has no weighted Q8_0 (the dev model's 32-wide rows make some
                // K-quant choices Q8_0): the same bytes.
                assert!(same, "{ft}: {name} (Q8_0) changed");
                continue;
            }
            assert!(!same, "{ft}: {name} ({ty}) unchanged by the matrix");
            let (a, b) = (
                weighted_error(&original, &plain, name, &w),
                weighted_error(&original, &weighted, name, &w),
            );
            assert!(
                b < a,
                "{ft}: {name} ({ty}): weighted error {b} vs {a} without"
            );
            (e0, e1) = (e0 + a, e1 + b);
            types.push(ty);
        }
        assert!(e1 < 0.97 * e0, "{ft}: {e1} vs {e0}");
        assert!(types.len() >= 8, "{ft}: only {types:?} weighted");
    }
}

#[test]
fn files_that_are_not_a_usable_matrix_are_refused_with_their_name() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let err = |p: &Path| imatrix::read(p).unwrap_err().to_string();
    // A model file is a GGUF but not an importance matrix.
    assert!(
        err(&f.model).contains("not an importance matrix"),
        "{}",
        err(&f.model)
    );
    // A truncated legacy file names what was cut.
    let cut = dir.path().join("cut.dat");
    let bytes = std::fs::read(&f.dat).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&cut);
    assert!(
        e.contains("cut.dat") && (e.contains("truncated") || e.contains("impossible")),
        "{e}"
    );
    // A non-finite sum is refused, naming the entry.
    let mut m = imatrix::read(&f.gguf).unwrap();
    m.entries.get_mut("blk.1.ffn_down.weight").unwrap().sums[5] = f32::NAN;
    let nan = dir.path().join("nan.gguf");
    imatrix::write_gguf(&m, &nan).unwrap();
    let e = err(&nan);
    assert!(
        e.contains("blk.1.ffn_down.weight") && e.contains("NaN"),
        "{e}"
    );
    // An entry of another width (another model's matrix) stops quantization before
    // any output, naming the tensor.
    let mut m = imatrix::read(&f.gguf).unwrap();
    m.entries
        .get_mut("blk.0.ffn_up.weight")
        .unwrap()
        .sums
        .truncate(16);
    let narrow = dir.path().join("narrow.gguf");
    imatrix::write_gguf(&m, &narrow).unwrap();
    let input = Input::open(&oracle::checkpoint()).unwrap();
    let plan = Plan::new(&input, FileType::by_name("q4_0").unwrap(), None, true).unwrap();
    let e = Importance::open(&narrow, &plan).err().unwrap().to_string();
    assert!(
        e.contains("narrow.gguf") && e.contains("blk.0.ffn_up.weight") && e.contains("16 columns"),
        "{e}"
    );
    // phiq imatrix itself: a text shorter than one chunk, and --chunks 0.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let out = dir.path().join("x.gguf");
    for (args, needle) in [
        (vec!["-f", s(&short)], "fewer than one chunk"),
        (
            vec!["-f", s(&f.text), "--chunks", "0"],
            "--chunks must be at least 1",
        ),
        (
            vec!["-f", s(&f.text), "--ctx", "100000"],
            "exceeds the model's context",
        ),
    ] {
        let mut a = vec!["imatrix", "-m", s(&f.model), "-o", s(&out)];
        a.extend(args);
        let o = phiq(&a);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {stderr}");
        assert!(stderr.contains(needle), "{a:?}: {stderr}");
        assert!(!out.exists(), "{a:?} wrote {}", out.display());
    }
}
