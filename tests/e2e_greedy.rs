//! End to end on every kernel path this CPU has: a small synthetic Phi-2, converted to
//! Q4_0 and Q8_0, generates greedily the tokens recorded in
//! `tests/fixtures/e2e_greedy.json` (made on x86-64 with AVX-512). Run under qemu for
//! each aarch64 CPU model, this proves the ARM paths compute what x86 does.
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

/// Greedy tokens and, per step, the gap between the two best logits.
fn generate(model: &Model) -> (Vec<u32>, Vec<f32>) {
    let mut s = model.session(64, KvType::F16).unwrap();
    let mut logits = s.eval(&PROMPT, Logits::Last).unwrap();
    let (mut tokens, mut margins) = (Vec::new(), Vec::new());
    for _ in 0..N_GEN {
        let best = phiq::sample::argmax(&logits);
        let second = logits
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u32 != best)
            .map(|(_, v)| *v)
            .fold(f32::NEG_INFINITY, f32::max);
        margins.push(logits[best as usize] - second);
        tokens.push(best);
        logits = s.eval(&[best], Logits::Last).unwrap();
    }
    (tokens, margins)
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
            let (tokens, margins) = generate(&model);
            // A Pi has four cores: the same tokens with four worker threads (the
            // products split their rows four ways, the prompt's tokens too).
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .unwrap();
            let (four, _) = pool.install(|| generate(&model));
            assert_eq!(four, tokens, "{ty} on {} with 4 threads", isa.name());
            let smallest = margins.iter().copied().fold(f32::INFINITY, f32::min);
            eprintln!(
                "{ty} on {}: {tokens:?} (smallest top-1 margin {smallest:.4})",
                isa.name()
            );
            if want.is_null() {
                recorded.insert(
                    ty.to_string(),
                    json!({ "tokens": tokens, "margins": margins }),
                );
            } else {
                assert_eq!(
                    json!(tokens),
                    want[ty]["tokens"],
                    "{ty} on the {} path",
                    isa.name()
                );
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
