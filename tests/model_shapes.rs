//! Shapes the transformers oracle does not cover (Phi-2's real head size 80 with 32
//! rotary dims, grouped-query attention, BF16 and sharded inputs, phi-msft fused QKV)
//! against a plain f64 reference of the same checkpoints.

#[path = "support/oracle.rs"]
mod oracle;
#[path = "support/reference_f64.rs"]
mod reference_f64;
#[path = "support/synth_checkpoint.rs"]
mod synth_checkpoint;

use phiq::model::{KvType, Logits, Model};
use reference_f64::RefPhi2;
use synth_checkpoint::{Dtype, Layout, Spec};

/// A small checkpoint with Phi-2's head geometry.
fn spec() -> Spec {
    Spec {
        hidden: 320,
        intermediate: 640,
        layers: 2,
        heads: 4,
        kv_heads: 4,
        partial_rotary_factor: 0.4,
        ..Spec::tiny()
    }
}

const IDS: [u32; 7] = [50256, 464, 3290, 50285, 318, 257, 51000];

/// Converts `spec` to an F32 GGUF and compares every logit with the f64 reference
/// (computed from an HF-layout twin when the checkpoint itself is phi-msft).
fn check(name: &str, spec: &Spec) {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    synth_checkpoint::write(&ck, spec, &oracle::checkpoint()).unwrap();
    let reference_dir = if spec.layout == Layout::Hf {
        ck.clone()
    } else {
        let twin = dir.path().join("twin");
        let hf = Spec {
            layout: Layout::Hf,
            shards: 1,
            ..spec.clone()
        };
        synth_checkpoint::write(&twin, &hf, &oracle::checkpoint()).unwrap();
        twin
    };
    let want = RefPhi2::load(&reference_dir).logits(&IDS);
    let gguf = oracle::gguf_from(&ck, "f32", &dir.path().join("m.gguf"));
    let model = Model::load(&gguf).unwrap();
    assert_eq!(model.hp.head_dim, spec.hidden / spec.heads);
    let mut s = model.session(64, KvType::F32).unwrap();
    let got = s.eval(&IDS, Logits::All).unwrap();
    let n = model.hp.n_vocab;
    let mut worst = 0f64;
    for (t, row) in want.iter().enumerate() {
        for (a, b) in got[t * n..(t + 1) * n].iter().zip(row) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    eprintln!("{name}: max |phiq f32 - f64 reference| = {worst:.2e}");
    assert!(worst < 1e-4, "{name}: max |diff| {worst}");
}

#[test]
fn head_dim_80_with_32_rotary_dims() {
    check("hd80", &spec());
}

#[test]
fn grouped_query_attention() {
    check(
        "gqa",
        &Spec {
            kv_heads: 2,
            ..spec()
        },
    );
}

#[test]
fn bf16_sharded_input() {
    check(
        "bf16x3",
        &Spec {
            dtype: Dtype::BF16,
            shards: 3,
            ..spec()
        },
    );
}

#[test]
fn phi_msft_fused_qkv_input() {
    check(
        "msft",
        &Spec {
            layout: Layout::Msft,
            kv_heads: 2,
            ..spec()
        },
    );
}

/// A fused `attn_qkv` GGUF (llama.cpp's Dec-2023 layout) computes what the split one does.
#[test]
fn fused_qkv_gguf_equals_split() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    synth_checkpoint::write(&ck, &spec(), &oracle::checkpoint()).unwrap();
    let split = oracle::gguf_from(&ck, "f16", &dir.path().join("split.gguf"));
    let fused = dir.path().join("fused.gguf");
    fuse_qkv(&split, &fused);
    let a = Model::load(&split).unwrap();
    let b = Model::load(&fused).unwrap();
    assert!(b.file().tensor("blk.0.attn_qkv.weight").is_ok());
    let la = a
        .session(64, KvType::F16)
        .unwrap()
        .eval(&IDS, Logits::All)
        .unwrap();
    let lb = b
        .session(64, KvType::F16)
        .unwrap()
        .eval(&IDS, Logits::All)
        .unwrap();
    assert_eq!(la, lb);
}

/// Rewrites a split-QKV GGUF with q, k, v concatenated by rows into `attn_qkv`.
fn fuse_qkv(src: &std::path::Path, dst: &std::path::Path) {
    use phiq::gguf::{GgufFile, GgufWriter, TensorSpec};
    let f = GgufFile::open(src).unwrap();
    let mut specs = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for t in &f.tensors {
        let fused = ["attn_q.", "attn_k.", "attn_v."]
            .iter()
            .any(|p| t.name.contains(p));
        if !fused {
            specs.push(TensorSpec::new(&t.name, t.ty, &t.shape));
            data.push(f.tensor_data(t).to_vec());
            continue;
        }
        if !t.name.contains("attn_q.") {
            continue;
        }
        let (k, v) = (
            t.name.replace("attn_q", "attn_k"),
            t.name.replace("attn_q", "attn_v"),
        );
        let (ki, kd) = f.tensor(&k).unwrap();
        let (_, vd) = f.tensor(&v).unwrap();
        let mut shape = t.shape.clone();
        *shape.last_mut().unwrap() += 2 * ki.shape.last().unwrap();
        specs.push(TensorSpec::new(
            t.name.replace("attn_q", "attn_qkv"),
            t.ty,
            &shape,
        ));
        data.push([f.tensor_data(t), kd, vd].concat());
    }
    let mut w = GgufWriter::create(dst, &f.metadata, specs.clone()).unwrap();
    for (s, d) in specs.iter().zip(&data) {
        w.write_tensor(&s.name, d).unwrap();
    }
    w.finish().unwrap();
}
