//! Writes a synthetic Phi-2 checkpoint in Hugging Face layout (random weights, the real
//! tokenizer): `cargo run --release -p phiq-quantize --example synth_phi2 -- OUT_DIR
//! [--full] [--layers N] [--dtype f32|f16|bf16] [--shards N] [--msft] [--seed S]`.
//! For tests and benchmarks only: `--full --layers 4` keeps every matrix shape of
//! Phi-2 in a file small enough to run under emulation (`benches/arm_icount.sh`).

#[path = "../../tests/support/synth_checkpoint.rs"]
mod synth_checkpoint;

use std::path::PathBuf;

use synth_checkpoint::{Dtype, Layout, Spec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut spec = Spec::tiny();
    let mut full = false;
    let mut layers = None;
    let (mut dtype, mut shards, mut layout, mut seed) = (Dtype::F16, 1, Layout::Hf, 1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--full" => full = true,
            "--msft" => layout = Layout::Msft,
            "--layers" => layers = Some(args.next().ok_or("--layers N")?.parse()?),
            "--dtype" => {
                dtype = match args.next().as_deref() {
                    Some("f32") => Dtype::F32,
                    Some("f16") => Dtype::F16,
                    Some("bf16") => Dtype::BF16,
                    other => return Err(format!("--dtype f32|f16|bf16, not {other:?}").into()),
                }
            }
            "--shards" => shards = args.next().ok_or("--shards N")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed S")?.parse()?,
            "-h" | "--help" => {
                println!(
                    "synth_phi2 OUT_DIR [--full] [--layers N] [--dtype f32|f16|bf16] [--shards N] [--msft] [--seed S]"
                );
                return Ok(());
            }
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a:?}").into()),
        }
    }
    if full {
        spec = Spec::full();
    }
    if let Some(n) = layers {
        spec.layers = n;
    }
    spec.dtype = dtype;
    spec.shards = shards;
    spec.layout = layout;
    spec.seed = seed;
    let out = out.ok_or("usage: synth_phi2 OUT_DIR [--full] ...")?;
    let tokenizer =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/oracle/dev/checkpoint");
    let files = synth_checkpoint::write(&out, &spec, &tokenizer)?;
    for f in files {
        println!("{} ({} bytes)", f.display(), std::fs::metadata(&f)?.len());
    }
    Ok(())
}
