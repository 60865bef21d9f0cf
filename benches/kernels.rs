//! Kernel throughput per weight type and kernel path: `cargo bench --bench kernels`.
//!
//! Weights are repacked first when the path has tile kernels for the type, as the
//! model does at load (GB/s count the file's bytes either way).
//!
//! Matrix-vector (generation), in GB/s of weights read, through what `matmul` uses
//! for one token (the path's tile kernel if it has one, else its dot per row):
//! - `mv hot`: one thread, 128 rows of 2560 that stay in L2: the kernel's own speed.
//! - `mv 1t`: one thread, a 10240x2560 matrix streamed from memory (rotating over
//!   enough matrices to leave the 32 MiB L3 behind).
//! - `mv`: `matmul` with one token over the same matrices, every thread.
//!
//! Matrix-matrix (prompts), 64 tokens, in GFLOP/s (2 per weight and token),
//! activation quantization included:
//! - `mm hot`: one thread, 64 rows of 2560 (in L2) through the path's tile kernels
//!   (activation preparation included), else the row dot.
//! - `mm64`: `matmul` on a 1024x2560 matrix, every thread; then the same through the
//!   row dot only (`rows`).
//!   `PHIQ_BENCH_TOKENS` changes the 64 tokens of both `mm` columns.
//!
//! Ratios are against the scalar path measured in the same run. The host is shared
//! and noisy, so every figure is the best of many short runs (a run shorter than a
//! scheduler slice often goes uninterrupted); `PHIQ_BENCH_REPS` scales their number
//! (default 10). The read bandwidth of this machine is measured alongside, the same
//! way. `PHIQ_BENCH_TYPES=q4_0,q4_k`, `PHIQ_BENCH_PATHS=avx2,avx512` and
//! `PHIQ_BENCH_COLS=mvhot,mv1,mv,mmhot,mm` narrow the table.

use std::hint::black_box;
use std::time::Instant;

use half::f16;
use phiq::kernels::matmul::{Weight, matmul, pack, packed_len};
use phiq::kernels::{Isa, Kernels, act_type};
use phiq::quant::GgmlType;
use rayon::prelude::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn float(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
    }
}

/// Offsets of the f16 scale fields in a block of `ty`, which must be sane numbers.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        IQ4_NL | IQ4_XS => &[0],
        _ => &[],
    }
}

/// `rows` random rows of `cols` weights of type `ty`: random codes, small scales.
fn random_matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let bytes = ty.row_bytes(cols as u64).unwrap() as usize * rows;
    let mut data = vec![0u8; bytes];
    match ty {
        GgmlType::F32 => {
            for c in data.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.float().to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for c in data.chunks_exact_mut(2) {
                c.copy_from_slice(&f16::from_f32(rng.float()).to_le_bytes());
            }
        }
        _ => {
            for c in data.chunks_mut(8) {
                let v = rng.next().to_le_bytes();
                c.copy_from_slice(&v[..c.len()]);
            }
            for block in data.chunks_exact_mut(ty.type_size()) {
                for &off in f16_fields(ty) {
                    let d = f16::from_f32(0.001 + 0.01 * rng.float().abs());
                    block[off..off + 2].copy_from_slice(&d.to_le_bytes());
                }
            }
        }
    }
    data
}

/// The shortest of `reps` runs of `f`, after one warm-up.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// Read bandwidth in GB/s, one thread and all threads: sums over 16 MiB pieces of a
/// 512 MiB array, taken in turn (each piece last read 496 MiB earlier).
fn bandwidth(reps: usize) -> (f64, f64) {
    let v: Vec<u64> = (0..64 << 20).map(|i| i as u64).collect();
    let pieces: Vec<&[u64]> = v.chunks(2 << 20).collect();
    let sum = |c: &[u64]| c.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let mut i = 0;
    let one = best_of(reps * 4, || {
        black_box(sum(pieces[i % pieces.len()]));
        i += 1;
    });
    let all = best_of(reps * 4, || {
        let p = pieces[i % pieces.len()];
        black_box(
            p.par_chunks(1 << 16)
                .map(sum)
                .reduce(|| 0, u64::wrapping_add),
        );
        i += 1;
    });
    let bytes = (pieces[0].len() * 8) as f64;
    (bytes / one / 1e9, bytes / all / 1e9)
}

/// Which measurements to take (`PHIQ_BENCH_COLS`, default all).
fn col(name: &str) -> bool {
    let cols = std::env::var("PHIQ_BENCH_COLS").unwrap_or_default();
    cols.is_empty() || cols.split(',').any(|c| c == name)
}

/// `f` timed if its column is wanted, else NaN.
fn measure(name: &str, f: impl FnOnce() -> f64) -> f64 {
    if col(name) { f() } else { f64::NAN }
}

const COLS: usize = 2560;

struct Row {
    mv_hot: f64,
    mv1: f64,
    mv: f64,
    mm_hot: f64,
    mm: f64,
    mm_single: f64,
}

fn run(k: &Kernels, ty: GgmlType, mats: &[Vec<u8>], reps: usize) -> Row {
    let rows = 10240;
    let mut rng = Rng(7);
    let x: Vec<f32> = (0..COLS).map(|_| rng.float()).collect();
    let act = act_type(ty);
    let act_row = act.row_bytes(COLS as u64).unwrap() as usize;
    let mut a = vec![0u8; act_row];
    k.quantize_act(act).unwrap()(&x, &mut a);
    let dot = k.vec_dot(ty).unwrap();
    let rb = ty.row_bytes(COLS as u64).unwrap() as usize;

    // Weights as the model holds them: repacked at load when the path has tile
    // kernels for the type (GB/s still count the file's bytes).
    let tk = k.tiles(ty, COLS);
    let packed: Vec<(Vec<u64>, usize)> = match tk {
        Some(_) => mats
            .iter()
            .map(|m| {
                let w = Weight {
                    packed: None,
                    ty,
                    data: m,
                    rows: m.len() / rb,
                    cols: COLS,
                };
                // u64-backed: tiles are read as aligned structs.
                let len = packed_len(k, ty, w.rows, COLS).unwrap();
                let mut buf = vec![0u64; len.div_ceil(8)];
                pack(k, &w, &mut bytemuck::cast_slice_mut(&mut buf)[..len]);
                (buf, len)
            })
            .collect(),
        None => Vec::new(),
    };
    let weight = |i: usize, n_rows: usize| Weight {
        packed: packed
            .get(i)
            .map(|(p, _)| &bytemuck::cast_slice(p)[..packed_len(k, ty, n_rows, COLS).unwrap()]),
        ty,
        data: &mats[i][..n_rows * rb],
        rows: n_rows,
        cols: COLS,
    };

    // What matmul does for one token on one thread: the tile kernel (activation row
    // prepared once), else a dot per row.
    let prepared = tk.map(|t| {
        let mut p = vec![0u32; (t.group_words)(COLS, 1)];
        (t.prepare)(COLS, &[&a], &mut p);
        p
    });
    let mut lanes = [0f32; 16];
    let mut matvec = |w: &Weight| -> f32 {
        match (tk, &prepared) {
            (Some(t), Some(p)) => {
                let tb = (t.tile_bytes)(COLS);
                let mut s = 0f32;
                for tile in w.packed.unwrap().chunks_exact(tb) {
                    (t.gemv)(COLS, tile, p, &mut lanes[..t.rows]);
                    s += lanes[0];
                }
                s
            }
            _ => w.data.chunks_exact(rb).map(|r| dot(COLS, r, &a)).sum(),
        }
    };
    let mv_hot = measure("mvhot", || {
        let hot = weight(0, 128);
        let t = best_of(reps * 30, || {
            black_box(matvec(&hot));
        });
        hot.data.len() as f64 / t / 1e9
    });

    // One matrix per run, in turn: short runs, each over a matrix out of the caches.
    let one = mats[0].len() as f64;
    let mut i = 0;
    let mv1 = measure("mv1", || {
        let t = best_of(reps * mats.len(), || {
            black_box(matvec(&weight(i % mats.len(), rows)));
            i += 1;
        });
        one / t / 1e9
    });
    let mut out = vec![0f32; rows];
    let mv = measure("mv", || {
        let t = best_of(reps * mats.len(), || {
            matmul(k, &weight(i % mats.len(), rows), &x, 1, None, &mut out).unwrap();
            black_box(&out);
            i += 1;
        });
        one / t / 1e9
    });

    let tokens: usize = std::env::var("PHIQ_BENCH_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let xs: Vec<f32> = (0..COLS * tokens).map(|_| rng.float()).collect();
    let mut acts = vec![0u8; act_row * tokens];
    for (o, xr) in acts.chunks_exact_mut(act_row).zip(xs.chunks_exact(COLS)) {
        k.quantize_act(act).unwrap()(xr, o);
    }
    let mm_hot = measure("mmhot", || {
        let hot_rows = 64;
        let hot = &mats[0][..hot_rows * rb];
        let t = match tk {
            Some(t) => {
                let tiles = weight(0, hot_rows).packed.unwrap();
                let tb = (t.tile_bytes)(COLS);
                let rows_of: Vec<&[u8]> = acts.chunks_exact(act_row).collect();
                let mut local = vec![0f32; t.max_tokens * t.rows];
                best_of(reps * 10, || {
                    for g in rows_of.chunks(t.max_tokens) {
                        let mut p = vec![0u32; (t.group_words)(COLS, g.len())];
                        (t.prepare)(COLS, g, &mut p);
                        for tile in tiles.chunks_exact(tb) {
                            let o = &mut local[..g.len() * t.rows];
                            if g.len() == 1 {
                                (t.gemv)(COLS, tile, &p, o);
                            } else {
                                (t.gemm)(COLS, tile, &p, g.len(), o);
                            }
                        }
                    }
                    black_box(&local);
                })
            }
            None => best_of(reps * 10, || {
                let mut s = 0f32;
                for r in hot.chunks_exact(rb) {
                    for t in 0..tokens {
                        s += dot(COLS, r, &acts[t * act_row..(t + 1) * act_row]);
                    }
                }
                black_box(s);
            }),
        };
        2.0 * (hot_rows * COLS * tokens) as f64 / t / 1e9
    });
    let sq_rows = 1024;
    let w = weight(1, sq_rows);
    let mut out = vec![0f32; sq_rows * tokens];
    let flops = 2.0 * (sq_rows * COLS * tokens) as f64;
    let mut mm_with = |k: &Kernels| {
        let t = best_of(reps * 5, || {
            matmul(k, &w, &xs, tokens, None, &mut out).unwrap();
            black_box(&out);
        });
        flops / t / 1e9
    };
    let mm = measure("mm", || mm_with(k));
    let mm_single = if tk.is_some() {
        measure("mm", || mm_with(&k.without_tiles()))
    } else {
        mm
    };
    Row {
        mv_hot,
        mv1,
        mv,
        mm_hot,
        mm,
        mm_single,
    }
}

fn main() {
    let reps: usize = std::env::var("PHIQ_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let want_types = std::env::var("PHIQ_BENCH_TYPES")
        .unwrap_or_default()
        .to_lowercase();
    let want_paths = std::env::var("PHIQ_BENCH_PATHS")
        .unwrap_or_default()
        .to_lowercase();
    use GgmlType::*;
    let types: Vec<GgmlType> = [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, F16, F32,
    ]
    .into_iter()
    .filter(|t| {
        want_types.is_empty() || want_types.split(',').any(|w| w == t.name().to_lowercase())
    })
    .collect();
    let paths: Vec<Isa> = Kernels::available()
        .into_iter()
        .filter(|p| {
            *p == Isa::Scalar
                || want_paths.is_empty()
                || want_paths.split(',').any(|w| w == p.name())
        })
        .collect();
    if col("bw") {
        let (bw1, bw) = bandwidth(reps);
        println!(
            "read bandwidth: {bw1:.1} GB/s (1 thread), {bw:.1} GB/s ({} threads)",
            rayon::current_num_threads()
        );
    }
    println!("best of many short runs (reps {reps}); ratios against scalar in the same run");
    println!(
        "{:<5} {:<7} {:>15} {:>15} {:>15} {:>16} {:>16} {:>7}",
        "type",
        "path",
        "mv hot GB/s",
        "mv 1t GB/s",
        "mv GB/s",
        "mm hot GFLOP/s",
        "mm64 GFLOP/s",
        "rows"
    );
    let rows = 10240;
    let mut rng = Rng(1);
    for ty in types {
        // Enough matrices to stream 96 MB per rotation: past the 32 MiB L3.
        let one = ty.row_bytes(COLS as u64).unwrap() as usize * rows;
        let count = 96_000_000usize.div_ceil(one).max(2);
        let mats: Vec<Vec<u8>> = (0..count)
            .map(|_| random_matrix(ty, rows, COLS, &mut rng))
            .collect();
        let mut base: Option<Row> = None;
        for &isa in &paths {
            let k = Kernels::for_isa(isa).unwrap();
            let r = run(&k, ty, &mats, reps);
            let ratio = |v: f64, b: Option<f64>| match b {
                Some(b) if v.is_finite() => format!("{v:6.1} ({:5.1}x)", v / b),
                _ => format!("{v:6.1}        "),
            };
            let b = base.as_ref();
            println!(
                "{:<5} {:<7} {:>15} {:>15} {:>15} {:>16} {:>16} {:>7.1}",
                ty.name(),
                isa.name(),
                ratio(r.mv_hot, b.map(|b| b.mv_hot)),
                ratio(r.mv1, b.map(|b| b.mv1)),
                ratio(r.mv, b.map(|b| b.mv)),
                ratio(r.mm_hot, b.map(|b| b.mm_hot)),
                ratio(r.mm, b.map(|b| b.mm)),
                r.mm_single,
            );
            if isa == Isa::Scalar {
                base = Some(r);
            }
        }
    }
}
