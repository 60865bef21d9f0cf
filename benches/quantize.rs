//! Reference quantizer throughput per type, single thread: `cargo bench --bench quantize`.
//! Reported in millions of weights per second, with the ratio to Q8_0 measured in the
//! same run (the machine is shared and noisy; ratios travel better than rates), with
//! and without importance weights (`phiq-quantize --imatrix`'s path).
//!
//! `PHIQ_BENCH_DUMP=DIR` also writes the matrix and its weights (`x.f32`, `w.f32`,
//! 512 rows of 2560) for timing another implementation on the same data.

use std::time::Instant;

use phiq::quant::{self, GgmlType};

fn main() {
    let (rows, cols) = (512, 2560);
    let mut state = 0x1234_5678u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..rows * cols).map(|_| (next() - 0.5) * 0.1).collect();
    // Σx² of activations: positive, spread over two decades like a real imatrix's.
    let w: Vec<f32> = (0..cols).map(|_| 10f32.powf(2.0 * next())).collect();
    if let Ok(dir) = std::env::var("PHIQ_BENCH_DUMP") {
        let bytes = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
        std::fs::write(format!("{dir}/x.f32"), bytes(&x)).unwrap();
        std::fs::write(format!("{dir}/w.f32"), bytes(&w)).unwrap();
    }
    let types = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ];
    let mut base = 0.0;
    println!("type        plain M/s             weighted M/s");
    for ty in types {
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut out = vec![0u8; rows * rb];
        let mut rate = |qw: Option<&[f32]>| {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
                    quant::quantize_row_weighted(ty, xr, qw, o).unwrap();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            (rows * cols) as f64 / best / 1e6
        };
        let (plain, weighted) = (rate(None), rate(Some(&w)));
        if ty == GgmlType::Q8_0 {
            base = plain;
        }
        println!(
            "{:<6} {plain:8.1} ({:.3}x Q8_0)  {weighted:8.1} ({:.3}x Q8_0)",
            ty.name(),
            plain / base,
            weighted / base
        );
    }
}
