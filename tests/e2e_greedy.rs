//! End to end on every kernel path this CPU has: a small synthetic Phi-2, converted to
//! Q4_0 and Q8_0, fed the tokens recorded in `tests/fixtures/e2e_greedy.json` (made
//! greedily on x86-64 with AVX-512), chooses each of them itself at every step (on a
//! path with FP16 attention: a token within its precision of the best). Run under
//! qemu for each aarch64 CPU model, this proves the ARM paths compute what x86 does.
//!
//! Each path also runs with four worker threads, as on a Pi's four cores.
//!
//! `PHIQ_E2E_RECORD=1 cargo test --test e2e_greedy` rewrites the fixture.

#[path = "support/oracle.rs"]
mod oracle;
#[path = "support/synth_checkpoint.rs"]
mod synth_checkpoint;

use phiq::kernels::Kernels;
use phiq::model::{KvType, Logits, Model};
use serde_json::{Value, json};
use synth_checkpoint::Spec;

const PROMPT: [u32; 6] = [43993, 25, 19430, 257, 387, 13];
const N_GEN: usize = 16;

/// One greedy run: per step the path's best token, the gap between its two best
/// logits, and how far the followed token's logit is below the best one.
struct Run {
    tokens: Vec<u32>,
    margins: Vec<f32>,
    shortfalls: Vec<f32>,
}

/// Generates [`N_GEN`] tokens greedily, or, given `follow` (the recorded tokens),
/// feeds those instead of its own choices, so that one step's near-tie cannot
/// change every later step's input.
fn generate(model: &Model, follow: Option<&[u32]>) -> Run {
    let mut s = model.session(64, KvType::F16).unwrap();
    let mut logits = s.eval(&PROMPT, Logits::Last).unwrap();
    let mut run = Run {
        tokens: Vec::new(),
        margins: Vec::new(),
        shortfalls: Vec::new(),
    };
    for i in 0..N_GEN {
        let best = phiq::sample::argmax(&logits);
        let second = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != best)
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        let next = follow.map_or(best, |f| f[i]);
        run.margins.push(logits[best as usize] - second);
        run.shortfalls
            .push(logits[best as usize] - logits[next as usize]);
        run.tokens.push(best);
        logits = s.eval(&[next], Logits::Last).unwrap();
    }
    run
}

/// How far below a path's best logit the recorded token may be: 0 (the same
/// choice) on exact paths; on a path that computes attention over the F16 cache in
/// FP16 arithmetic (aarch64 with FEAT_FP16, as llama.cpp there), the recorded
/// near-ties may go either way.
fn allowed_shortfall(k: &Kernels) -> f32 {
    if k.attn_f16.is_some_and(|a| a.f16_arith) {
        2e-2
    } else {
        0.0
    }
}

#[test]
fn greedy_tokens_equal_the_recorded_x86_run_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ck");
    synth_checkpoint::write(
        &ck,
        &Spec {
            seed: 7,
            ..Spec::tiny()
        },
        &oracle::checkpoint(),
    )
    .unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e2e_greedy.json");
    let mut recorded = serde_json::Map::new();
    let want: Value = if std::env::var_os("PHIQ_E2E_RECORD").is_some() {
        Value::Null
    } else {
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap()
    };
    let paths = Kernels::available();
    eprintln!(
        "kernel paths: {:?}",
        paths.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
    for ty in ["q4_0", "q8_0"] {
        let gguf = oracle::gguf_from(&ck, ty, &dir.path().join(format!("{ty}.gguf")));
        let mut model = Model::load(&gguf).unwrap();
        for &isa in &paths {
            let kernels: &'static Kernels = Box::leak(Box::new(Kernels::for_isa(isa).unwrap()));
            model.use_kernels(kernels).unwrap();
            let follow = (!want.is_null()).then(|| ids(&want[ty]["tokens"]));
            let run = generate(&model, follow.as_deref());
            // A Pi has four cores: the same tokens with four worker threads (the
            // products split their rows four ways, the prompt's tokens too).
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .unwrap();
            let four = pool.install(|| generate(&model, follow.as_deref()));
            assert_eq!(
                four.tokens,
                run.tokens,
                "{ty} on {} with 4 threads",
                isa.name()
            );
            let smallest = run.margins.iter().copied().fold(f32::INFINITY, f32::min);
            let worst = run.shortfalls.iter().copied().fold(0.0, f32::max);
            eprintln!(
                "{ty} on {}: {:?} (smallest top-1 margin {smallest:.4}, recorded token at most {worst:.4} below the best)",
                isa.name(),
                run.tokens
            );
            match follow {
                None => {
                    recorded.insert(
                        ty.to_string(),
                        json!({ "tokens": run.tokens, "margins": run.margins }),
                    );
                }
                Some(want) => {
                    let allowed = allowed_shortfall(kernels);
                    for (i, &short) in run.shortfalls.iter().enumerate() {
                        assert!(
                            short <= allowed,
                            "{ty} on the {} path, step {i}: chose {} where the recording has {} ({short} above it; allowed {allowed})",
                            isa.name(),
                            run.tokens[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
    if want.is_null() {
        std::fs::write(
            &fixture,
            serde_json::to_string_pretty(&Value::Object(recorded)).unwrap(),
        )
        .unwrap();
    }
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
