//! `phiq-quantize --lora`: PEFT adapters merged at conversion, against transformers +
//! PEFT's own `merge_and_unload` (fixtures recorded once by tests/py/record_lora.py)
//! and against an independent numpy merge (tests/py/lora_ref.py) in both layouts.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/support/oracle.rs"]
mod oracle;
#[path = "../../tests/support/synth_checkpoint.rs"]
mod synth_checkpoint;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{run_py, workspace_root};
use phiq::gguf::GgufFile;
use phiq::model::{KvType, Logits, Model};
use phiq::quant;
use serde_json::{Value, json};
use synth_checkpoint::{Layout, Spec};

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/lora").join(name)
}

/// The real binary: INPUT -o OUT --type TY, then `extra`.
fn quantize(input: &Path, out: &Path, ty: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phiq-quantize"))
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(["--type", ty, "--quiet"])
        .args(extra.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

fn quantize_ok(input: &Path, out: &Path, ty: &str, extra: &[&dyn AsRef<std::ffi::OsStr>]) {
    let o = quantize(input, out, ty, extra);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every tensor of `a` and `b` dequantized, side by side.
fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let g = GgufFile::open(path).unwrap();
    g.tensors
        .iter()
        .map(|t| {
            let n = t.shape.iter().product::<u64>() as usize;
            let mut x = vec![0f32; n];
            let rows = t.n_rows() as usize;
            let (rl, rb) = (n / rows, g.tensor_data(t).len() / rows);
            for (r, row) in x.chunks_exact_mut(rl).enumerate() {
                quant::dequantize_row(t.ty, &g.tensor_data(t)[r * rb..(r + 1) * rb], row).unwrap();
            }
            (t.name.clone(), x)
        })
        .collect()
}

/// The logits phiq computes for the dev sequence with the F32 file `gguf`.
fn logits(gguf: &Path, ids: &[u32]) -> Vec<f32> {
    let model = Model::load(gguf).unwrap();
    let mut s = model.session(ids.len(), KvType::F32).unwrap();
    s.eval(ids, Logits::All).unwrap()
}

/// Transformers + PEFT's `merge_and_unload` (each adapter alone, and hub_b over hub_a)
/// and phiq's merge give the same logits, to the tolerance of the oracle tests
/// (transformers itself varies by about 5e-6; 1e-4 as for unmerged weights).
#[test]
fn merged_logits_equal_transformers_and_peft() {
    let dir = tempfile::tempdir().unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let ids: Vec<u32> = reference["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let n = 51200;
    let base = dir.path().join("base.gguf");
    quantize_ok(&oracle::checkpoint(), &base, "f32", &[]);
    let base_logits = logits(&base, &ids);
    for (adapters, want, rows) in [
        (vec!["hub_a"], "logits_a_last.npy", 1),
        (vec!["hub_b"], "logits_b_last.npy", 1),
        (vec!["hub_a", "hub_b"], "logits_ab.npy", ids.len()),
    ] {
        let out = dir.path().join(format!("{}.gguf", adapters.join("+")));
        let mut args: Vec<PathBuf> = Vec::new();
        for a in &adapters {
            args.push("--lora".into());
            args.push(fixture(a));
        }
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        quantize_ok(&oracle::checkpoint(), &out, "f32", &args);
        let got = logits(&out, &ids);
        let (shape, want) = oracle::npy_f32(&fixture(want));
        assert_eq!(shape, [rows, n]);
        let got = &got[(ids.len() - rows) * n..];
        let diff = common::max_abs_diff(got, &want);
        assert!(diff < 1e-4, "{adapters:?}: max |logit difference| {diff}");
        // The adapter changed the model: the test cannot pass with the merge ignored.
        let moved = common::max_abs_diff(&base_logits[(ids.len() - rows) * n..], &want);
        assert!(
            moved > 1e-2,
            "{adapters:?} barely changes the logits ({moved})"
        );
    }
}

/// An adapter made by tests/py/lora_ref.py with `spec` over `base`.
fn make_adapter(base: &Path, out: &Path, spec: Value) -> PathBuf {
    run_py("lora_ref.py", &[&"make", &base, &out, &spec.to_string()]);
    out.to_path_buf()
}

fn tiny(dir: &Path, layout: Layout) -> PathBuf {
    let mut spec = Spec::tiny();
    spec.layout = layout;
    spec.layers = 2;
    let ck = dir.join(format!("base-{layout:?}"));
    synth_checkpoint::write(&ck, &spec, &oracle::checkpoint()).unwrap();
    ck
}

/// What a case is called, its base, its adapters with their scales.
type Case<'a> = (&'a str, &'a PathBuf, Vec<(&'a PathBuf, &'a str)>);

/// Both layouts, adapters of either layout over either base (a fused Wqkv adapter
/// over split q/k/v, and the reverse), rank-stabilised or not, lora bias, a saved
/// module, the embedding, stacked adapters with their own scales: phiq's merge
/// equals numpy's merge of the same safetensors, converted. Merging happens before
/// quantizing: a quantized type with --lora is the merged F32 file requantized, to
/// the byte.
#[test]
fn merges_equal_an_independent_numpy_merge() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let hub = tiny(d, Layout::Hf);
    let msft = tiny(d, Layout::Msft);
    let hub_mods = json!([
        "q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2", "lm_head"
    ]);
    let msft_mods = json!(["Wqkv", "out_proj", "fc1", "fc2", "lm_head"]);
    let a_hub = make_adapter(
        &hub,
        &d.join("a_hub"),
        json!({"layout": "hub", "modules": hub_mods,
        "r": 4, "alpha": 8, "bias": true, "seed": 1}),
    );
    let b_hub = make_adapter(
        &hub,
        &d.join("b_hub"),
        json!({"layout": "hub",
        "modules": ["q_proj", "fc2", "embed_tokens"], "r": 3, "alpha": 5, "rslora": true,
        "seed": 2, "save": ["dense"]}),
    );
    let a_msft = make_adapter(
        &msft,
        &d.join("a_msft"),
        json!({"layout": "msft",
        "modules": msft_mods, "r": 2, "alpha": 2, "rslora": true, "bias": true, "seed": 3}),
    );
    let cases: Vec<Case> = vec![
        ("hub", &hub, vec![(&a_hub, "1")]),
        (
            "hub stacked, scaled",
            &hub,
            vec![(&a_hub, "0.5"), (&b_hub, "2")],
        ),
        ("msft", &msft, vec![(&a_msft, "1")]),
        ("msft adapter over a hub base", &hub, vec![(&a_msft, "1.5")]),
        ("hub adapter over an msft base", &msft, vec![(&a_hub, "1")]),
    ];
    for (i, (what, base, adapters)) in cases.into_iter().enumerate() {
        let merged_ck = d.join(format!("merged{i}"));
        let specs: Vec<String> = adapters
            .iter()
            .map(|(p, s)| format!("{}:{s}", p.display()))
            .collect();
        let mut py: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"merge", base, &merged_ck];
        py.extend(specs.iter().map(|s| s as &dyn AsRef<std::ffi::OsStr>));
        run_py("lora_ref.py", &py);
        let want = d.join(format!("want{i}.gguf"));
        quantize_ok(&merged_ck, &want, "f32", &[]);
        let mut args: Vec<String> = Vec::new();
        for (p, s) in &adapters {
            args.extend([
                "--lora".into(),
                p.display().to_string(),
                "--lora-scale".into(),
                s.to_string(),
            ]);
        }
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        let got = d.join(format!("got{i}.gguf"));
        quantize_ok(base, &got, "f32", &args);
        let plain = d.join(format!("plain{i}.gguf"));
        quantize_ok(base, &plain, "f32", &[]);
        let (got_t, want_t, plain_t) = (tensors(&got), tensors(&want), tensors(&plain));
        assert_eq!(got_t.len(), want_t.len(), "{what}");
        let mut changed = 0;
        for ((name, g), ((wname, w), (_, p))) in got_t.iter().zip(want_t.iter().zip(&plain_t)) {
            assert_eq!(name, wname, "{what}");
            // Summation order differs (numpy's matmul against row-wise axpys).
            let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
            let diff = common::max_abs_diff(g, w);
            assert!(
                diff <= 2e-6 * scale,
                "{what}: {name} differs by {diff} (max |w| {scale})"
            );
            changed += usize::from(common::max_abs_diff(p, w) > 1e-3);
        }
        assert!(changed >= 10, "{what}: only {changed} tensors changed");
        // Quantized: --lora to Q4_K_M equals the merged F32 file requantized.
        let (q_lora, q_req) = (d.join(format!("q{i}.gguf")), d.join(format!("r{i}.gguf")));
        quantize_ok(base, &q_lora, "q4_k_m", &args);
        quantize_ok(&got, &q_req, "q4_k_m", &[]);
        // By name: a GGUF input is written in llama-quantize's loader order,
        // a checkpoint input in its own.
        let bytes = |p: &Path| {
            let g = GgufFile::open(p).unwrap();
            g.tensors
                .iter()
                .map(|t| (t.name.clone(), g.tensor_data(t).to_vec()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(
            bytes(&q_lora) == bytes(&q_req),
            "{what}: quantized merge differs"
        );
    }
}

/// A copy of fixture adapter `name` in `dir`, with `edit` applied to its config.
fn adapter_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let out = dir.join(format!("{name}-{}", dir.read_dir().unwrap().count()));
    std::fs::create_dir_all(&out).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture(name).join(f), out.join(f)).unwrap();
    }
    let p = out.join("adapter_config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&p, cfg.to_string()).unwrap();
    out
}

/// Rewrites the adapter's safetensors: `edit` gets every tensor as (name, shape, f32s).
fn edit_tensors(adapter: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let path = adapter.join("adapter_model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let x = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (n, v.shape().to_vec(), x.collect())
        })
        .collect();
    edit(&mut all);
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = all
        .into_iter()
        .map(|(n, s, x)| (n, s, x.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (n.clone(), v)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Every adapter phiq cannot merge exactly fails before any output exists, naming the
/// adapter's file and the tensor or key.
#[test]
fn bad_adapters_give_named_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("adapters");
    std::fs::create_dir_all(&d).unwrap();
    let q0 = "base_model.model.model.layers.0.self_attn.q_proj";
    let mut cases: Vec<(PathBuf, String)> = Vec::new();
    let a = adapter_copy(&d, "hub_a", |c| c["use_dora"] = json!(true));
    cases.push((a, "use_dora".into()));
    let a = adapter_copy(&d, "hub_a", |c| c["peft_type"] = json!("PREFIX_TUNING"));
    cases.push((a, "LoRA adapters only".into()));
    let a = adapter_copy(&d, "hub_a", |c| {
        c["target_modules"] = json!(["q_proj", "gate_proj"])
    });
    cases.push((a, "\"gate_proj\" is not a module of Phi-2".into()));
    let a = adapter_copy(&d, "hub_a", |c| c["r"] = json!(8));
    cases.push((
        a,
        "rank 4, but adapter_config.json gives this module rank 8".into(),
    ));
    let a = adapter_copy(&d, "hub_a", |_| {});
    edit_tensors(&a, |t| {
        let x = t
            .iter_mut()
            .find(|x| x.0 == format!("{q0}.lora_B.weight"))
            .unwrap();
        (x.1, x.2) = (vec![31, 4], vec![0.1; 124]);
    });
    cases.push((a, format!("{q0}.lora_B.weight")));
    let a = adapter_copy(&d, "hub_a", |_| {});
    edit_tensors(&a, |t| {
        for x in t.iter_mut() {
            x.0 = x.0.replace("self_attn.dense", "self_attn.o_proj");
        }
    });
    cases.push((a, "self_attn.o_proj".into()));
    let a = adapter_copy(&d, "hub_a", |c| {
        c["modules_to_save"] = json!(["embed_tokens"])
    });
    edit_tensors(&a, |t| {
        t.push((
            "base_model.model.model.embed_tokens.weight".into(),
            vec![51201, 32],
            vec![0.0; 51201 * 32],
        ));
    });
    cases.push((a, "model.embed_tokens.weight".into()));
    let a = adapter_copy(&d, "hub_a", |_| {});
    edit_tensors(&a, |t| t.retain(|x| x.0 != format!("{q0}.lora_B.weight")));
    cases.push((a, "needs both".into()));
    let a = adapter_copy(&d, "hub_a", |_| {});
    edit_tensors(&a, |t| {
        for x in t.iter_mut().filter(|x| x.0.contains("layers.1.")) {
            x.0 = x.0.replace("layers.1.", "layers.7.");
        }
    });
    cases.push((a, "the base has no blk.7".into()));
    let a = adapter_copy(&d, "hub_a", |_| {});
    std::fs::remove_file(a.join("adapter_model.safetensors")).unwrap();
    cases.push((a, "no adapter_model.safetensors".into()));
    for (adapter, needle) in cases {
        let out = dir.path().join("out.gguf");
        let o = quantize(&oracle::checkpoint(), &out, "q4_0", &[&"--lora", &adapter]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{needle}: succeeded");
        assert!(err.contains(&needle), "{needle}: {err}");
        assert!(
            err.contains(&*adapter.to_string_lossy()),
            "names the adapter: {err}"
        );
        assert!(!out.exists(), "{needle}: wrote an output");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Scales that do not pair with the adapters.
    let out = dir.path().join("out.gguf");
    let o = quantize(
        &oracle::checkpoint(),
        &out,
        "q4_0",
        &[
            &"--lora",
            &fixture("hub_a"),
            &"--lora",
            &fixture("hub_b"),
            &"--lora-scale",
            &"1",
            &"--lora-scale",
            &"2",
            &"--lora-scale",
            &"3",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3 --lora-scale values for 2"));
}
