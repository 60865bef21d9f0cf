//! phiq-quantize end to end: synthetic and reference checkpoints in, GGUF out, checked
//! against gguf-py (llama.cpp's own library) and against each other.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/synth_checkpoint.rs"]
mod synth_checkpoint;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{read_f32, run_py, workspace_root};
use phiq::gguf::{GgufFile, MetaValue};
use phiq::quant::{self, GgmlType};
use serde_json::Value;
use synth_checkpoint::{Dtype, Layout, Spec};

fn oracle_checkpoint() -> PathBuf {
    workspace_root().join("tests/fixtures/oracle/dev/checkpoint")
}

fn synth(dir: &Path, spec: &Spec) -> PathBuf {
    synth_checkpoint::write(dir, spec, &oracle_checkpoint()).unwrap();
    dir.to_path_buf()
}

/// Runs the real binary, as a user would.
fn quantize(input: &Path, out: &Path, ty: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
        .arg(input)
        .args([
            "-o".as_ref(),
            out.as_os_str(),
            "--type".as_ref(),
            ty.as_ref(),
            "--quiet".as_ref(),
        ])
        .output()
        .unwrap()
}

fn quantize_ok(input: &Path, out: &Path, ty: &str) -> GgufFile {
    let o = quantize(input, out, ty);
    assert!(
        o.status.success(),
        "{ty}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    GgufFile::open(out).unwrap()
}

fn tensor_bytes(g: &GgufFile) -> Vec<(String, GgmlType, Vec<u64>, Vec<u8>)> {
    g.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.ty,
                t.shape.clone(),
                g.tensor_data(t).to_vec(),
            )
        })
        .collect()
}

#[test]
fn every_type_agrees_with_gguf_py() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synth(&dir.path().join("ck"), &Spec::tiny());
    let types = [
        "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q6_k", "q5_k_m", "q5_k_s",
        "q4_k_m", "q4_k_s", "iq4_nl", "iq4_xs", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
    ];
    // gguf-py's numpy quantizers take most of this test's time, one Python process
    // per type: run them on every core (a failed check panics its thread, and the
    // scope passes the panic on).
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(&ty) =
                    types.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    check_type_against_gguf_py(dir.path(), &ck, ty);
                }
            });
        }
    });
}

fn check_type_against_gguf_py(dir: &Path, ck: &Path, ty: &str) {
    let out = dir.join(format!("{ty}.gguf"));
    let g = quantize_ok(ck, &out, ty);
    let deq_dir = tempfile::tempdir().unwrap();
    let report: Value =
        serde_json::from_str(&run_py("check_quantized.py", &[&ck, &out, &deq_dir.path()])).unwrap();
    let report = report.as_array().unwrap();
    assert_eq!(report.len(), g.tensors.len());
    let mut k_quants = 0;
    for entry in report {
        let name = entry["name"].as_str().unwrap();
        if let Some(equal) = entry.get("equal") {
            assert_eq!(
                equal, true,
                "{ty}: {name} ({}) differs from gguf-py's quantization",
                entry["type"]
            );
            continue;
        }
        // K-quants: gguf-py cannot quantize them, so compare the dequantized values.
        k_quants += 1;
        let (info, data) = g.tensor(name).unwrap();
        let mut ours = vec![0f32; info.n_elements() as usize];
        let row = info.row_len() as usize;
        let row_bytes = info.ty.row_bytes(row as u64).unwrap() as usize;
        for (x, q) in ours.chunks_mut(row).zip(data.chunks(row_bytes)) {
            quant::dequantize_row(info.ty, q, x).unwrap();
        }
        let theirs = read_f32(Path::new(entry["dequantized"].as_str().unwrap()));
        assert!(
            ours.iter()
                .map(|v| v.to_bits())
                .eq(theirs.iter().map(|v| v.to_bits())),
            "{ty}: {name} dequantizes differently in gguf-py"
        );
    }
    // Every quantized type but q8_0 has types gguf-py cannot quantize (K-quants, IQ4):
    // at least output.weight is Q6_K.
    let expect_k = !["f32", "f16", "bf16", "q8_0"].contains(&ty);
    assert_eq!(k_quants > 0, expect_k, "{ty}: K-quant tensors present");
}

#[test]
fn q4_k_m_follows_llama_cpp_mix() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::tiny();
    spec.layers = 8;
    let ck = synth(&dir.path().join("ck"), &spec);
    let g = quantize_ok(&ck, &dir.path().join("m.gguf"), "q4_k_m");
    let ty = |n: &str| g.tensor(n).unwrap().0.ty;
    // use_more_bits for 8 layers: 0, 2, 5, 7 (i < 1, i >= 7, (i - 1) % 3 == 2).
    for l in 0..8 {
        let want = if [0, 3, 6, 7].contains(&l) {
            GgmlType::Q6_K
        } else {
            GgmlType::Q4_K
        };
        assert_eq!(ty(&format!("blk.{l}.attn_v.weight")), want, "attn_v {l}");
        assert_eq!(
            ty(&format!("blk.{l}.ffn_down.weight")),
            want,
            "ffn_down {l}"
        );
        assert_eq!(ty(&format!("blk.{l}.attn_q.weight")), GgmlType::Q4_K);
        assert_eq!(ty(&format!("blk.{l}.attn_norm.weight")), GgmlType::F32);
        assert_eq!(ty(&format!("blk.{l}.ffn_up.bias")), GgmlType::F32);
    }
    assert_eq!(ty("output.weight"), GgmlType::Q6_K);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K);
    assert_eq!(g.get_uint("general.file_type").unwrap(), 15);
}

/// F32, F16 and BF16 weights, one file or shards with a weight and its bias apart,
/// today's names or phi-msft's fused ones: the same numbers give the same file.
#[test]
fn dtypes_shards_and_layouts_give_identical_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = None;
    let variants = [
        (Dtype::F16, 1, Layout::Hf),
        (Dtype::F32, 1, Layout::Hf),
        (Dtype::BF16, 1, Layout::Hf),
        (Dtype::F16, 3, Layout::Hf),
        (Dtype::BF16, 4, Layout::Msft),
    ];
    for (i, (dtype, shards, layout)) in variants.into_iter().enumerate() {
        let mut spec = Spec::tiny();
        (spec.dtype, spec.shards, spec.layout) = (dtype, shards, layout);
        let ck = synth(&dir.path().join(format!("ck{i}")), &spec);
        if shards > 1 {
            assert!(ck.join("model.safetensors.index.json").exists());
        }
        let g = quantize_ok(&ck, &dir.path().join(format!("{i}.gguf")), "f32");
        let tensors = tensor_bytes(&g);
        assert_eq!(tensors.len(), 1 + 2 * 7 * spec.layers + 4);
        match &reference {
            None => reference = Some(tensors),
            Some(r) => assert!(r == &tensors, "{dtype:?} x{shards} {layout:?} differs"),
        }
    }
}

#[test]
fn requantizing_an_f16_gguf_equals_converting_directly() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synth(&dir.path().join("ck"), &Spec::tiny());
    let f16 = dir.path().join("f16.gguf");
    quantize_ok(&ck, &f16, "f16");
    let from_gguf = quantize_ok(&f16, &dir.path().join("a.gguf"), "q4_k_m");
    let direct = quantize_ok(&ck, &dir.path().join("b.gguf"), "q4_k_m");
    // The same tensors; a GGUF input's come in llama-quantize's order (by layer, then
    // name), a checkpoint's in convert_hf_to_gguf's.
    let (mut a, mut b) = (tensor_bytes(&from_gguf), tensor_bytes(&direct));
    let order = |t: &(String, GgmlType, Vec<u64>, Vec<u8>)| {
        let layer =
            t.0.strip_prefix("blk.")
                .and_then(|r| r.split('.').next()?.parse::<i64>().ok());
        (layer.unwrap_or(-1), t.0.clone())
    };
    assert_eq!(
        a.iter().map(order).collect::<Vec<_>>(),
        {
            let mut o: Vec<_> = a.iter().map(order).collect();
            o.sort();
            o
        },
        "a GGUF input's tensors in llama-quantize's order"
    );
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert!(a == b);
    assert_eq!(from_gguf.get_uint("general.file_type").unwrap(), 15);
    // Requantizing an already quantized file is refused, naming a tensor.
    let o = quantize(
        &dir.path().join("b.gguf"),
        &dir.path().join("c.gguf"),
        "q4_0",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already Q4_K"));
}

#[test]
fn phi2_metadata_and_tokenizer_as_llama_cpp_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let g = quantize_ok(&oracle_checkpoint(), &dir.path().join("o.gguf"), "f16");
    assert_eq!(g.architecture(), Some("phi2"));
    for (key, want) in [
        ("phi2.context_length", 256),
        ("phi2.embedding_length", 32),
        ("phi2.feed_forward_length", 128),
        ("phi2.block_count", 2),
        ("phi2.attention.head_count", 2),
        ("phi2.attention.head_count_kv", 2),
        ("phi2.rope.dimension_count", 8),
        ("general.file_type", 1),
        ("general.quantization_version", 2),
        ("tokenizer.ggml.bos_token_id", 50256),
        ("tokenizer.ggml.eos_token_id", 50256),
        ("tokenizer.ggml.unknown_token_id", 50256),
    ] {
        assert_eq!(g.get_uint(key).unwrap(), want, "{key}");
    }
    assert!(
        g.get("phi2.rope.freq_base").is_none(),
        "10000 is the default, not written"
    );
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(g.get_str("tokenizer.ggml.pre").unwrap(), "phi-2");
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!((tokens.len(), types.len()), (51200, 51200));
    let tok = |i: usize| tokens.values[i].as_str().unwrap().to_string();
    let ty = |i: usize| types.values[i].as_i64().unwrap();
    assert_eq!((tok(50256), ty(50256)), ("<|endoftext|>".to_string(), 3));
    assert_eq!((tok(50257), ty(50257)), (" ".repeat(31), 4));
    assert_eq!((tok(50286), ty(50286)), (" ".repeat(2), 4));
    assert_eq!((tok(50287), ty(50287)), ("\t".repeat(9), 4));
    assert_eq!((tok(50294), ty(50294)), ("\t".repeat(2), 4));
    assert_eq!((tok(50295), ty(50295)), ("[PAD50295]".to_string(), 5));
    assert_eq!((tok(262), ty(262)), ("Ġthe".to_string(), 1));
    let merges = g.get_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.len(), 50000);
    assert_eq!(merges.values[0], MetaValue::String("Ġ t".into()));
    // Shapes in ggml order; the HF checkpoint's F16 weights stay F16, norms and biases F32.
    let (emb, _) = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.shape.clone()),
        (GgmlType::F16, vec![32, 51200])
    );
    assert_eq!(g.tensor("output.bias").unwrap().0.ty, GgmlType::F32);
}

#[test]
fn tokenizer_from_vocab_json_and_merges_txt_is_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synth(&dir.path().join("ck"), &Spec::tiny());
    let a = quantize_ok(&ck, &dir.path().join("a.gguf"), "q8_0");
    std::fs::remove_file(ck.join("tokenizer.json")).unwrap();
    let b = quantize_ok(&ck, &dir.path().join("b.gguf"), "q8_0");
    let tok = |g: &GgufFile| {
        g.metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(tok(&a), tok(&b));
}

#[test]
fn transformers_5_config_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::tiny();
    spec.kv_heads = 2;
    let ck = synth(&dir.path().join("ck"), &spec);
    let path = ck.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();
    obj.remove("partial_rotary_factor");
    obj.remove("rope_theta");
    obj.remove("torch_dtype");
    obj.insert("dtype".into(), "float16".into());
    obj.insert(
        "rope_parameters".into(),
        serde_json::json!({"rope_type": "default", "rope_theta": 20000.0, "partial_rotary_factor": 0.25}),
    );
    std::fs::write(&path, cfg.to_string()).unwrap();
    let g = quantize_ok(&ck, &dir.path().join("t5.gguf"), "q4_0");
    assert_eq!(g.get_uint("phi2.rope.dimension_count").unwrap(), 8);
    assert_eq!(g.get_float("phi2.rope.freq_base").unwrap(), 20000.0);
    assert_eq!(g.get_uint("phi2.attention.head_count_kv").unwrap(), 2);
    assert_eq!(
        g.tensor("blk.0.attn_k.weight").unwrap().0.shape,
        vec![256, 64]
    );
}

fn expect_failure(input: &Path, out: &Path, needle: &str) {
    let o = quantize(input, out, "q4_0");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!out.exists(), "no output after a failure");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary file left behind");
}

/// Rewrites one tensor of a single-file synthetic checkpoint in place.
fn poke_tensor(ck: &Path, name: &str, f: impl FnOnce(&mut [u8])) {
    let path = ck.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offs = &header[name]["data_offsets"];
    let (a, b) = (
        offs[0].as_u64().unwrap() as usize,
        offs[1].as_u64().unwrap() as usize,
    );
    f(&mut bytes[8 + n + a..8 + n + b]);
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn bad_inputs_give_named_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").join("x.gguf");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();

    let ck = synth(&dir.path().join("nan"), &Spec::tiny());
    // F16 NaN (0x7e00) in the middle of a weight matrix.
    poke_tensor(&ck, "model.layers.1.mlp.fc1.weight", |d| {
        d[1000..1002].copy_from_slice(&0x7e00u16.to_le_bytes())
    });
    expect_failure(
        &ck,
        &out,
        "model.layers.1.mlp.fc1.weight\": non-finite weight NaN at row 1, column 244",
    );

    let ck = synth(&dir.path().join("cfg"), &Spec::tiny());
    std::fs::write(
        ck.join("config.json"),
        r#"{"model_type":"phi","vocab_size":51200}"#,
    )
    .unwrap();
    expect_failure(&ck, &out, "\"hidden_size\"");

    let ck = synth(&dir.path().join("missing"), &Spec::tiny());
    std::fs::remove_file(ck.join("tokenizer.json")).unwrap();
    std::fs::remove_file(ck.join("vocab.json")).unwrap();
    expect_failure(&ck, &out, "no tokenizer.json");

    let ck = synth(&dir.path().join("shape"), &Spec::tiny());
    let cfg = std::fs::read_to_string(ck.join("config.json")).unwrap();
    std::fs::write(
        ck.join("config.json"),
        cfg.replace("\"intermediate_size\": 512", "\"intermediate_size\": 768"),
    )
    .unwrap();
    expect_failure(&ck, &out, "model.layers.0.mlp.fc1.weight");

    let ck = synth(&dir.path().join("trunc"), &Spec::tiny());
    let st = ck.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    expect_failure(&ck, &out, "model.safetensors: not a valid safetensors file");

    let ck = synth(&dir.path().join("layers"), &Spec::tiny());
    let cfg = std::fs::read_to_string(ck.join("config.json")).unwrap();
    std::fs::write(
        ck.join("config.json"),
        cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .unwrap();
    expect_failure(&ck, &out, "model.layers.1.");

    expect_failure(&dir.path().join("nowhere"), &out, "no such file or folder");
}

/// `--report`: one row per type, in order, each file written and scored against the
/// F16 conversion; more bits give less divergence.
#[test]
fn report_scores_each_type_against_the_f16_model() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, common::calibration_text()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
        .arg(oracle_checkpoint())
        .args([
            "--report",
            "q8_0,q4_0",
            "--ctx",
            "64",
            "--chunks",
            "2",
            "--json",
            "-q",
        ])
        .arg("--text")
        .arg(&text)
        .arg("-o")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = j["types"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["file_type"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["q8_0", "q4_0"]);
    for r in rows {
        let path = PathBuf::from(r["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            r["file_bytes"].as_u64().unwrap()
        );
        assert_eq!(r["kld"]["count"].as_u64(), Some(2 * 31));
    }
    let kld = |i: usize| rows[i]["kld"]["kld"]["value"].as_f64().unwrap();
    assert!(0.0 < kld(0) && kld(0) < kld(1), "{j}");
    let bpw = |i: usize| rows[i]["bits_per_weight"].as_f64().unwrap();
    assert!(bpw(0) > bpw(1), "{j}");
    assert!(dir.path().join("checkpoint-f16.gguf").exists());
    // A type and --report together, and --report without a text, are usage errors.
    for args in [
        vec!["--report", "q4_0", "--type", "q4_0", "--text", "t"],
        vec!["--report", "q4_0"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
            .arg(oracle_checkpoint())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn help_lists_every_type_with_bits_per_weight() {
    let o = Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for ty in [
        "f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "q6_k", "q5_k_m", "q4_k_m",
        "q5_k_s", "q4_k_s", "iq4_nl", "iq4_xs", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k",
    ] {
        assert!(help.contains(&format!("  {ty} ")), "--help lacks {ty}");
    }
    assert!(help.contains("bpw"));
}
