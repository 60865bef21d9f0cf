//! The runtime against Hugging Face transformers: logits, hidden states and greedy
//! continuations of the reference checkpoint, converted to F32 and F16 GGUFs.

mod common;
#[path = "support/oracle.rs"]
mod oracle;

use phiq::kernels::Kernels;
use phiq::model::{KvType, Logits, Model};
use phiq::quant::GgmlType;

/// Whether `k` multiplies F16 rows of `cols` elements in FP16 arithmetic.
fn fp16_arith(k: &Kernels, cols: usize) -> bool {
    k.tiles(GgmlType::F16, cols).is_some_and(|t| t.f16_arith)
}

/// Max |logit difference| from transformers: 1e-4, or, for an F16 file on a path
/// that multiplies F16 in FP16 arithmetic (aarch64 with FEAT_FP16, as llama.cpp
/// does there; activations rounded to f16), 2e-2 (measured 5.8e-3 on this
/// checkpoint under qemu's cortex-a76).
fn tolerance(ty: &str, model: &Model) -> f32 {
    if ty == "f16" && fp16_arith(model.kernels(), model.hp.n_embd) {
        2e-2
    } else {
        1e-4
    }
}

/// The F32 and F16 files on the best path; where that path computes F16 in FP16
/// arithmetic, the F16 file again on the best path that does not ("f16 exact").
fn models() -> (tempfile::TempDir, Vec<(&'static str, Model)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut models = Vec::new();
    for ty in ["f32", "f16"] {
        let path = oracle::gguf_from(
            &oracle::checkpoint(),
            ty,
            &dir.path().join(format!("{ty}.gguf")),
        );
        let model = Model::load(&path).unwrap();
        if tolerance(ty, &model) > 1e-4 {
            let mut exact = Model::load(&path).unwrap();
            let kernels = Kernels::available()
                .into_iter()
                .rev()
                .map(|isa| Kernels::for_isa(isa).unwrap())
                .find(|k| !fp16_arith(k, model.hp.n_embd))
                .expect("a path without FP16 arithmetic");
            exact.use_kernels(Box::leak(Box::new(kernels))).unwrap();
            models.push(("f16 exact", exact));
        }
        models.push((ty, model));
    }
    (dir, models)
}

#[test]
fn logits_match_transformers_within_1e_4() {
    let reference = oracle::reference();
    let (_dir, models) = models();
    for (ty, model) in &models {
        for seq in reference["logits"]["sequences"].as_array().unwrap() {
            let ids = oracle::ids(&seq["ids"]);
            let (shape, want) = oracle::npy_f32(
                &oracle::root()
                    .join("expected")
                    .join(seq["file"].as_str().unwrap()),
            );
            assert_eq!(shape, [ids.len(), model.hp.n_vocab]);
            // Whole sequence as one batch.
            let mut s = model.session(256, KvType::F32).unwrap();
            let got = s.eval(&ids, Logits::All).unwrap();
            let tol = tolerance(ty, model);
            let diff = common::max_abs_diff(&got, &want);
            assert!(diff < tol, "{ty} {}: batch max |diff| {diff}", seq["name"]);
            // Token by token through the KV cache (F32 cache: exact).
            let mut s = model.session(256, KvType::F32).unwrap();
            for (t, id) in ids.iter().enumerate() {
                let got = s.eval(&[*id], Logits::Last).unwrap();
                let row = &want[t * model.hp.n_vocab..(t + 1) * model.hp.n_vocab];
                let diff = common::max_abs_diff(&got, row);
                assert!(
                    diff < tol,
                    "{ty} {} token {t}: cached max |diff| {diff}",
                    seq["name"]
                );
            }
        }
    }
}

#[test]
fn hidden_states_match_layer_by_layer() {
    let reference = oracle::reference();
    let hs = &reference["hidden_states"];
    let seq = reference["logits"]["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == hs["sequence"])
        .unwrap();
    let ids = oracle::ids(&seq["ids"]);
    let (shape, want) = oracle::npy_f32(
        &oracle::root()
            .join("expected")
            .join(hs["file"].as_str().unwrap()),
    );
    let (_dir, models) = models();
    let (_, model) = &models[0];
    let per = shape[1] * shape[2];
    let mut s = model.session(256, KvType::F32).unwrap();
    let mut seen = 0;
    s.eval_with(&ids, Logits::All, &mut |i, h| {
        let diff = common::max_abs_diff(h, &want[i * per..(i + 1) * per]);
        assert!(diff < 1e-4, "hidden state {i}: max |diff| {diff}");
        seen += 1;
    })
    .unwrap();
    assert_eq!(seen, shape[0]);
}

#[test]
fn greedy_continuations_are_identical() {
    let reference = oracle::reference();
    let (_dir, models) = models();
    for (ty, model) in &models {
        for p in reference["generation"]["prompts"].as_array().unwrap() {
            let prompt = oracle::ids(&p["prompt_ids"]);
            let want = oracle::ids(&p["new_ids"]);
            let mut s = model.session(256, KvType::F16).unwrap();
            let mut logits = s.eval(&prompt, Logits::Last).unwrap();
            let mut got = Vec::new();
            for _ in 0..want.len() {
                let next = argmax(&logits);
                got.push(next);
                if next == 50256 {
                    break;
                }
                logits = s.eval(&[next], Logits::Last).unwrap();
            }
            assert_eq!(got, want, "{ty}: {:?}", p["prompt"]);
        }
    }
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn perplexity_matches_within_1e_4_relative() {
    let reference = oracle::reference();
    let ppl = &reference["perplexity"];
    let ids = oracle::ids(&ppl["ids"]);
    let (_dir, models) = models();
    for (ty, model) in &models {
        let mut s = model.session(256, KvType::F16).unwrap();
        let logits = s.eval(&ids, Logits::All).unwrap();
        let n = model.hp.n_vocab;
        let mut nll = 0f64;
        for t in 0..ids.len() - 1 {
            let row = &logits[t * n..(t + 1) * n];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            nll += lse - row[ids[t + 1] as usize] as f64;
        }
        let mean = nll / (ids.len() - 1) as f64;
        let want = ppl["mean_nll"].as_f64().unwrap();
        assert!(
            ((mean - want) / want).abs() < 1e-4,
            "{ty}: mean NLL {mean} vs {want}"
        );
    }
}

/// Continuous batching: one new token for each of several sessions at different
/// positions, in one forward pass, gives each session the logits it gets alone
/// (within the oracle tolerance: a batch's products may group sums differently
/// from one row's; on the x86 paths they are equal to the bit), and
/// leaves each cache as eval would.
#[test]
fn decode_batch_equals_each_session_alone() {
    let (_dir, models) = models();
    let prompts: [&[u32]; 3] = [
        &[464, 3139, 286, 4881],
        &[15496],
        &[40, 1842, 257, 3290, 290, 340, 318],
    ];
    let next = [318u32, 995, 13];
    for (ty, model) in &models {
        let mut alone = Vec::new();
        for (p, &t) in prompts.iter().zip(&next) {
            let mut s = model.session(64, KvType::F16).unwrap();
            s.eval(p, Logits::Last).unwrap();
            alone.push(s.eval(&[t], Logits::Last).unwrap());
            alone.push(s.eval(&[t], Logits::Last).unwrap());
        }
        let mut sessions: Vec<_> = prompts
            .iter()
            .map(|p| {
                let mut s = model.session(64, KvType::F16).unwrap();
                s.eval(p, Logits::Last).unwrap();
                s
            })
            .collect();
        let tol = tolerance(ty, model);
        for step in 0..2 {
            let mut refs: Vec<_> = sessions.iter_mut().collect();
            let batch = model.decode_batch(&mut refs, &next).unwrap();
            let n = model.hp.n_vocab;
            for (i, want) in alone.iter().skip(step).step_by(2).enumerate() {
                let diff = common::max_abs_diff(&batch[i * n..(i + 1) * n], want);
                assert!(diff < tol, "{ty} session {i} step {step}: {diff}");
            }
        }
        for (s, p) in sessions.iter().zip(&prompts) {
            assert_eq!(s.len(), p.len() + 2);
        }
    }
}

/// Sessions whose caches grow page by page in one shared pool (the server's slots)
/// give the logits of sessions with a cache of their own. Pages of 5 positions, so
/// that every prompt and step crosses page ends; the two sessions' pages
/// interleave in the pool. Exact where attention sums in f32 (the same products in
/// the same order, page by page); where an F16 cache is attended in FP16
/// arithmetic ([`phiq::kernels::AttnF16::f16_arith`]) each page's values are summed
/// in FP16 and the pages in f32, so the order differs: the FP16 bound above.
#[test]
fn sessions_in_a_shared_pool_equal_sessions_of_their_own() {
    let (_dir, models) = models();
    let prompts: [&[u32]; 2] = [&[464, 3139, 286, 4881, 318, 257, 922], &[40, 1842]];
    let next = [13u32, 290, 340, 995, 318, 257];
    for (ty, model) in &models {
        for kv in [KvType::F16, KvType::Q8_0, KvType::F32] {
            let fp16 = kv == KvType::F16 && model.kernels().attn_f16.is_some_and(|a| a.f16_arith);
            let tol = if fp16 { 2e-2 } else { 0.0 };
            let pool = model.kv_pool(40, kv, 5).unwrap();
            let mut paged: Vec<_> = (0..2).map(|_| model.session_in(&pool, 40)).collect();
            let mut own: Vec<_> = (0..2).map(|_| model.session(40, kv).unwrap()).collect();
            for i in 0..2 {
                let a = paged[i].eval(prompts[i], Logits::All).unwrap();
                let b = own[i].eval(prompts[i], Logits::All).unwrap();
                let diff = common::max_abs_diff(&a, &b);
                assert!(diff <= tol, "{ty} {kv:?} prompt {i}: {diff}");
            }
            for (step, &t) in next.iter().enumerate() {
                for i in 0..2 {
                    let a = paged[i].eval(&[t], Logits::Last).unwrap();
                    let b = own[i].eval(&[t], Logits::Last).unwrap();
                    let diff = common::max_abs_diff(&a, &b);
                    assert!(diff <= tol, "{ty} {kv:?} session {i} step {step}: {diff}");
                }
            }
            let held = paged[0].len().div_ceil(5) + paged[1].len().div_ceil(5);
            assert_eq!(pool.free_tokens(), 40 - 5 * held);
        }
    }
}

/// A session that would grow past what its pool has left fails with the numbers,
/// takes nothing and keeps what it had; pages freed by another session let it go on.
#[test]
fn a_full_pool_is_an_error_that_changes_nothing() {
    let (_dir, models) = models();
    let model = &models[0].1;
    let pool = model.kv_pool(16, KvType::F16, 4).unwrap();
    let mut a = model.session_in(&pool, 16);
    let mut b = model.session_in(&pool, 16);
    a.eval(&[464, 3139, 286, 4881, 318, 257, 922, 13, 40], Logits::Last)
        .unwrap();
    b.eval(&[40, 1842], Logits::Last).unwrap();
    let err = b.eval(&[1, 2, 3, 4, 5, 6, 7], Logits::Last).unwrap_err();
    assert!(
        err.to_string()
            .contains("the KV pool is full: 5 more position(s) needed, 0 free of 16"),
        "{err}"
    );
    assert_eq!(b.len(), 2);
    a.truncate(3);
    b.eval(&[1, 2, 3, 4, 5, 6, 7], Logits::Last).unwrap();
    assert_eq!(pool.free_tokens(), 0);
}

/// The server's step: one session's prompt chunk and other sessions' next tokens
/// in one forward pass give each the logits it gets alone (within the products'
/// summation-order bound), and an error (a part past its context) changes no cache.
#[test]
fn forward_batch_of_prompt_chunks_and_next_tokens_equals_each_alone() {
    let (_dir, models) = models();
    let chunk: &[u32] = &[464, 3139, 286, 4881, 318, 257, 922];
    for (ty, model) in &models {
        let tol = tolerance(ty, model);
        let mut alone = [
            model.session(64, KvType::F16).unwrap(),
            model.session(64, KvType::F16).unwrap(),
        ];
        alone[1].eval(&[40, 1842], Logits::Last).unwrap();
        let want = [
            alone[0].eval(chunk, Logits::Last).unwrap(),
            alone[1].eval(&[257], Logits::Last).unwrap(),
        ];
        let mut s0 = model.session(64, KvType::F16).unwrap();
        let mut s1 = model.session(64, KvType::F16).unwrap();
        s1.eval(&[40, 1842], Logits::Last).unwrap();
        let mut small = model.session(3, KvType::F16).unwrap();
        small.eval(&[1, 2], Logits::Last).unwrap();
        let err = model
            .forward_batch(&mut [(&mut s0, chunk), (&mut small, &[3, 4])])
            .unwrap_err();
        assert!(err.to_string().contains("holds 3 tokens; 4"), "{err}");
        assert_eq!((s0.len(), small.len()), (0, 2));
        let got = model
            .forward_batch(&mut [(&mut s0, chunk), (&mut s1, &[257])])
            .unwrap();
        let n = model.hp.n_vocab;
        for (i, w) in want.iter().enumerate() {
            let diff = common::max_abs_diff(&got[i * n..(i + 1) * n], w);
            assert!(diff < tol, "{ty} part {i}: {diff}");
        }
        assert_eq!((s0.len(), s1.len()), (chunk.len(), 3));
    }
}
