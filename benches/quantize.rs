//! Reference quantizer throughput per type, single thread: `cargo bench --bench quantize`.
//! Reported in millions of weights per second, with the ratio to Q8_0 measured in the
//! same run (the machine is shared and noisy; ratios travel better than rates).

use std::time::Instant;

use phiq::quant::{self, GgmlType};

fn main() {
    let (rows, cols) = (512, 2560);
    let mut state = 0x1234_5678u64;
    let x: Vec<f32> = (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
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
    for ty in types {
        let rb = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut out = vec![0u8; rows * rb];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for (xr, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
                quant::quantize_row(ty, xr, o).unwrap();
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let rate = (rows * cols) as f64 / best / 1e6;
        if ty == GgmlType::Q8_0 {
            base = rate;
        }
        println!(
            "{:<6} {rate:8.1} M weights/s  ({:.2}x Q8_0)",
            ty.name(),
            rate / base
        );
    }
}
