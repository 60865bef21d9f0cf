//! Every SIMD path this CPU has against the scalar reference: the row dots, the
//! activation quantizers, and matmul through each path's tiles and rows (see
//! `testing.rs` for the inputs and the tolerance). Paths are also tested by
//! `tile/tests.rs` (the tile kernels alone) and each architecture's own tests.

use half::f16;

use super::matmul::{MatJob, Weight, matmul, matvec_many, pack, packed_len};
use super::testing::*;
use super::{Isa, Kernels, act_type, scalar};
use crate::quant::*;

use GgmlType::*;

/// Checks path `k`'s row dot of `w` and `a` against the scalar one.
fn check_dot(k: &Kernels, ty: GgmlType, w: &[u8], a: &[u8], exact: bool, what: &str) {
    let got = k.vec_dot(ty).unwrap()(row_len(ty, w), w, a);
    check(ty, w, a, got, exact, &format!("{} {what}", k.isa.name()));
}

#[test]
fn required_paths_are_present() {
    let names: Vec<&str> = paths().iter().map(|k| k.isa.name()).collect();
    eprintln!("SIMD paths under test: {names:?}");
}

#[test]
fn dots_equal_scalar_on_quantized_rows() {
    for k in paths() {
        let mut rng = Rng(11);
        for ty in WEIGHT_TYPES {
            for n in lengths(ty) {
                let cases = [
                    (
                        "normal",
                        (0..n).map(|_| rng.normal()).collect(),
                        (0..n).map(|_| rng.normal()).collect(),
                    ),
                    ("varied", varied(&mut rng, n), varied(&mut rng, n)),
                    (
                        "negative extremes",
                        negative_extremes(&mut rng, n),
                        negative_extremes(&mut rng, n),
                    ),
                    ("mixed", varied(&mut rng, n), negative_extremes(&mut rng, n)),
                ];
                for (what, wx, ax) in cases {
                    let (w, a): (Vec<f32>, Vec<f32>) = (wx, ax);
                    check_dot(
                        &k,
                        ty,
                        &quantize(ty, &w),
                        &quantize_act(ty, &a),
                        false,
                        what,
                    );
                }
            }
        }
    }
}

/// Random codes, every bit pattern of the weight formats, unit scales: the integer
/// parts must agree exactly. Counts the exact comparisons so none is vacuous.
#[test]
fn integer_parts_are_exact_on_random_codes() {
    for k in paths() {
        let mut rng = Rng(12);
        for ty in WEIGHT_TYPES {
            let mut exact = 0;
            for blocks in [1usize, 2, 3, 5, 8, 9, 13] {
                for _ in 0..40 {
                    let mut w = Vec::new();
                    let mut a = Vec::new();
                    for _ in 0..blocks {
                        w.extend(unit_weight_block(ty, &mut rng));
                        // Small codes keep K-quant totals inside f32's exact integers.
                        let span = if ty.block_size() == 256 { 8 } else { 255 };
                        let qs: Vec<i8> = (0..ty.block_size())
                            .map(|_| ((rng.next() % span) as i32 - (span as i32 - 1) / 2) as i8)
                            .collect();
                        a.extend(unit_act_block(act_type(ty), &qs));
                    }
                    check_dot(&k, ty, &w, &a, true, "random codes");
                    if magnitude(ty, &w, &a) < f64::from(1u32 << 24) {
                        exact += 1;
                    }
                }
            }
            assert!(exact > 100, "{ty}: only {exact} exact comparisons");
        }
    }
}

#[test]
fn extreme_codes_do_not_saturate() {
    for k in paths() {
        for ty in WEIGHT_TYPES {
            let qk = ty.block_size();
            for w in extreme_weight_blocks(ty) {
                for a in extreme_act_codes(qk) {
                    let a = unit_act_block(act_type(ty), &a);
                    check_dot(&k, ty, &w, &a, true, "extreme");
                    // The same blocks many times over, through every chunk position.
                    for reps in [3, 8, 11] {
                        let (wr, ar) = (w.repeat(reps), a.repeat(reps));
                        check_dot(&k, ty, &wr, &ar, true, "extreme, repeated");
                    }
                }
            }
        }
    }
}

/// Hand-computed totals through the SIMD kernels: what saturating i16 pair sums
/// (or a wrong sign) would break.
#[test]
fn extreme_codes_match_hand_computed_totals() {
    for k in paths() {
        let dot = |ty: GgmlType, w: &[u8], a: &[i8]| {
            k.vec_dot(ty).unwrap()(ty.block_size(), w, &unit_act_block(act_type(ty), a))
        };
        let minus = vec![-127i8; 256];
        // Q4_0 codes 0 (value -8) against -127: 32·8·127.
        let w = to_bytes(&[BlockQ4_0 {
            d: f16::ONE,
            qs: [0; 16],
        }]);
        assert_eq!(dot(Q4_0, &w, &minus[..32]), (32 * 8 * 127) as f32);
        // Q5_0 all bits (value 15).
        let w = to_bytes(&[BlockQ5_0 {
            d: f16::ONE,
            qh: [0xff; 4],
            qs: [0xff; 16],
        }]);
        assert_eq!(dot(Q5_0, &w, &minus[..32]), -(32 * 15 * 127) as f32);
        // Q5_1 codes 31 with m = 0.
        let w = to_bytes(&[BlockQ5_1 {
            d: f16::ONE,
            m: f16::ZERO,
            qh: [0xff; 4],
            qs: [0xff; 16],
        }]);
        assert_eq!(dot(Q5_1, &w, &minus[..32]), -(32 * 31 * 127) as f32);
        // Q8_0 weights -128 against -127: pair sums 2·128·127 = 32512, the i16 edge.
        let w = to_bytes(&[BlockQ8_0 {
            d: f16::ONE,
            qs: [-128; 32],
        }]);
        assert_eq!(dot(Q8_0, &w, &minus[..32]), (32 * 128 * 127) as f32);
        // Q6_K: scale -128 times code -32, every element.
        let w = to_bytes(&[BlockQ6_K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [-128; 16],
            d: f16::ONE,
        }]);
        assert_eq!(dot(Q6_K, &w, &minus), -(256 * 128 * 32 * 127) as f32);
        // Q5_K: 63·31 - 63 per element.
        let w = to_bytes(&[BlockQ5_K {
            d: f16::ONE,
            dmin: f16::ONE,
            scales: [0xff; 12],
            qh: [0xff; 32],
            qs: [0xff; 128],
        }]);
        assert_eq!(dot(Q5_K, &w, &minus), -(256 * (63 * 31 - 63) * 127) as f32);
    }
}

#[test]
fn zero_blocks_give_zero() {
    for k in paths() {
        let mut rng = Rng(13);
        for ty in WEIGHT_TYPES {
            for n in [ty.block_size(), 9 * ty.block_size()] {
                let zero_w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
                let zero_a = quantize_act(ty, &vec![0.0; n]);
                let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let (w, a) = (quantize(ty, &x), quantize_act(ty, &x));
                let dot = k.vec_dot(ty).unwrap();
                assert_eq!(dot(n, &zero_w, &a), 0.0, "{ty}: zero weights");
                assert_eq!(dot(n, &w, &zero_a), 0.0, "{ty}: zero activations");
                assert_eq!(dot(n, &zero_w, &zero_a), 0.0, "{ty}: both zero");
                // Zero blocks among non-zero ones.
                let tb = ty.type_size();
                if w.len() >= 3 * tb {
                    let mut wz = w.clone();
                    wz[tb..2 * tb].fill(0);
                    check_dot(&k, ty, &wz, &a, false, "a zero block");
                }
            }
        }
    }
}

#[test]
fn float_dots_equal_scalar() {
    for k in paths() {
        let mut rng = Rng(14);
        for n in [1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 2560, 2563, 10240] {
            let w: Vec<f32> = varied(&mut rng, n);
            let a: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let a_bytes = to_bytes(&a);
            check_dot(&k, F32, &to_bytes(&w), &a_bytes, false, "f32");
            check_dot(&k, F16, &to_bytes(&wh), &a_bytes, false, "f16");
            // Integers: exact.
            let wi: Vec<f32> = (0..n).map(|_| (rng.next() % 64) as f32 - 32.0).collect();
            let ai: Vec<f32> = (0..n).map(|_| (rng.next() % 64) as f32 - 32.0).collect();
            let wih: Vec<f16> = wi.iter().map(|&v| f16::from_f32(v)).collect();
            check_dot(
                &k,
                F32,
                &to_bytes(&wi),
                &to_bytes(&ai),
                true,
                "f32 integers",
            );
            check_dot(
                &k,
                F16,
                &to_bytes(&wih),
                &to_bytes(&ai),
                true,
                "f16 integers",
            );
        }
    }
}

/// Rows that start at odd addresses give the same bits as aligned ones.
#[test]
fn misaligned_rows_give_identical_dots() {
    for k in paths() {
        let mut rng = Rng(15);
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let n = 9 * ty.block_size().max(32);
            let x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let w = quantize(ty, &x);
            let a = if matches!(ty, F16 | F32) {
                to_bytes(&x)
            } else {
                quantize_act(ty, &x)
            };
            let dot = k.vec_dot(ty).unwrap();
            let aligned = dot(n, &w, &a);
            for shift in [1, 3] {
                let s = |v: &[u8]| [vec![0u8; shift], v.to_vec()].concat();
                let (ws, as_) = (s(&w), s(&a));
                assert_eq!(
                    dot(n, &ws[shift..], &as_[shift..]).to_bits(),
                    aligned.to_bits(),
                    "{ty}"
                );
            }
            // Longer buffers than the row: only the row is read.
            let (wl, al) = (
                [&w[..], &[0xff; 300]].concat(),
                [&a[..], &[0xff; 300]].concat(),
            );
            assert_eq!(dot(n, &wl, &al).to_bits(), aligned.to_bits(), "{ty}");
        }
    }
}

#[test]
fn short_rows_panic_rather_than_read_past_the_end() {
    for k in paths() {
        for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
            let n = 2 * ty.block_size().max(32);
            let w = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            let act = act_type(ty);
            let a = vec![0u8; act.row_bytes(n as u64).unwrap() as usize];
            let dot = k.vec_dot(ty).unwrap();
            for (wl, al) in [(w.len() - 1, a.len()), (w.len(), a.len() - 1)] {
                let r = std::panic::catch_unwind(|| dot(n, &w[..wl], &a[..al]));
                assert!(r.is_err(), "{ty}: a short row must panic");
            }
            if ty.block_size() > 1 {
                let r = std::panic::catch_unwind(|| dot(n + 1, &w, &a));
                assert!(r.is_err(), "{ty}: a partial block must panic");
            }
        }
    }
}

/// Blocks of 32 (and 256) values that probe the quantizers' rounding and edge cases.
fn quantizer_inputs(rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for n in [256, 512, 2560] {
        rows.push((0..n).map(|_| rng.normal()).collect());
        rows.push(varied(rng, n));
        rows.push(negative_extremes(rng, n));
    }
    // Ties: amax 127 gives d = 1, id = 1, so x is the scaled value itself.
    let ties: Vec<f32> = (0..256)
        .map(|i| match i % 32 {
            0 => 127.0,
            j => (j as f32 - 16.0) * 4.0 + 0.5,
        })
        .collect();
    rows.push(ties.clone());
    rows.push(ties.iter().map(|v| -v).collect());
    // Values a hair under and over the halves.
    rows.push(
        (0..256)
            .map(|i| match i % 32 {
                0 => -127.0,
                j => {
                    let v = (j as f32 - 16.0) * 3.0 + 0.5;
                    if j % 2 == 0 {
                        v.next_down()
                    } else {
                        v.next_up()
                    }
                }
            })
            .collect(),
    );
    rows.push(vec![0.0; 256]);
    rows.push(vec![-0.0; 256]);
    rows.push(vec![0.37; 256]);
    // Tiny, subnormal, huge, mixed magnitudes in one block.
    rows.push((0..256).map(|i| (i as f32 - 128.0) * 1e-40).collect());
    rows.push((0..256).map(|i| (i as f32 - 100.0) * 1e-38).collect());
    rows.push(cos_row(256, 1e-30));
    rows.push(cos_row(256, 1e30));
    let mut huge = cos_row(256, 1e30);
    huge[3] = -3.0e38;
    huge[200] = 3.4e38;
    rows.push(huge);
    rows.push(cos_row(256, 65504.0));
    // One large value among small ones; ties for the largest of either sign.
    let mut one = cos_row(256, 0.001);
    one[77] = -1000.0;
    rows.push(one);
    let mut both = cos_row(256, 1.0);
    both[10] = 8.0;
    both[20] = -8.0;
    rows.push(both.clone());
    both[10] = -8.0;
    both[20] = 8.0;
    rows.push(both);
    // Random bit patterns (finite), every exponent.
    rows.push(
        (0..512)
            .map(|_| {
                loop {
                    let v = f32::from_bits(rng.next() as u32);
                    if v.is_finite() {
                        break v;
                    }
                }
            })
            .collect(),
    );
    rows
}

fn check_quantizer(k: &Kernels, act: GgmlType, x: &[f32], what: &str) {
    let len = act.row_bytes(x.len() as u64).unwrap() as usize;
    let mut want = vec![0u8; len];
    Kernels::scalar().quantize_act(act).unwrap()(x, &mut want);
    let mut got = vec![0xaau8; len];
    k.quantize_act(act).unwrap()(x, &mut got);
    assert!(
        got == want,
        "{:?} {act} {what}: bytes differ from scalar",
        k.isa
    );
    // Into a misaligned buffer.
    let mut buf = vec![0x55u8; len + 1];
    k.quantize_act(act).unwrap()(x, &mut buf[1..]);
    assert!(
        buf[1..] == want[..],
        "{:?} {act} {what}: misaligned output",
        k.isa
    );
}

#[test]
fn quantizers_write_the_scalar_bytes() {
    for k in paths() {
        let mut rng = Rng(17);
        for (i, x) in quantizer_inputs(&mut rng).iter().enumerate() {
            for act in [Q8_0, Q8_1, Q8_K] {
                check_quantizer(&k, act, x, &format!("input {i}"));
            }
        }
        // Random rows at many scales.
        for _ in 0..200 {
            let scale = 10f32.powi((rng.next() % 20) as i32 - 10);
            let x: Vec<f32> = (0..256).map(|_| rng.normal() * scale).collect();
            for act in [Q8_0, Q8_1, Q8_K] {
                check_quantizer(&k, act, &x, "random");
            }
        }
    }
}

/// Non-finite values: the scalar quantizers define some bytes for them (ggml's on
/// x86-64); the SIMD ones write the same.
#[test]
fn quantizers_match_scalar_on_non_finite_input() {
    for k in paths() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for pos in [0, 5, 31, 32, 255] {
                let mut x = cos_row(256, 2.0);
                x[pos] = bad;
                for act in [Q8_0, Q8_1, Q8_K] {
                    check_quantizer(&k, act, &x, &format!("{bad} at {pos}"));
                }
            }
        }
        let mut x = vec![0.0f32; 256];
        x[3] = f32::NAN;
        for act in [Q8_0, Q8_1, Q8_K] {
            check_quantizer(&k, act, &x, "NaN among zeros");
        }
    }
}

/// What `k`'s matmul of row `w_row` with `x` may differ from the scalar one by.
fn matmul_tolerance(k: &Kernels, ty: GgmlType, w_row: &[u8], x: &[f32]) -> f64 {
    if ty == F16 {
        let f16_arith = k.tiles(ty, x.len()).is_some_and(|t| t.f16_arith);
        return f16_tolerance(w_row, x, f16_arith);
    }
    let a = if matches!(ty, F32) {
        to_bytes(x)
    } else {
        quantize_act(ty, x)
    };
    TOLERANCE * magnitude(ty, w_row, &a)
}

/// Each path's matmul equals the scalar matmul within the tolerance, with weights
/// as stored (row dots for one token, tiles packed per task for a batch) and
/// repacked at load; a product through row dots only equals the path's own dots
/// bit for bit.
#[test]
fn matmul_equals_scalar_matmul() {
    let paths: Vec<(Isa, Kernels)> = paths().into_iter().map(|k| (k.isa, k)).collect();
    let mut rng = Rng(19);
    for ty in WEIGHT_TYPES.into_iter().chain([F16, F32]) {
        let cols = if ty.block_size() == 256 { 512 } else { 320 };
        let rows = 37;
        let w_rows: Vec<Vec<u8>> = (0..rows)
            .map(|_| quantize(ty, &varied(&mut rng, cols)))
            .collect();
        let data = w_rows.concat();
        let w = Weight {
            packed: None,
            ty,
            data: &data,
            rows,
            cols,
        };
        let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.25 - 4.0).collect();
        for n_tokens in [1, 3, 8, 37] {
            let x: Vec<f32> = (0..n_tokens)
                .flat_map(|t| {
                    if t % 3 == 1 {
                        negative_extremes(&mut rng, cols)
                    } else {
                        varied(&mut rng, cols)
                    }
                })
                .collect();
            let mut want = vec![f32::NAN; n_tokens * rows];
            matmul(&Kernels::scalar(), &w, &x, n_tokens, Some(&bias), &mut want).unwrap();
            for (isa, k) in &paths {
                let tiles = packed(k, ty, &data, rows, cols);
                let mut runs = vec![("as stored", w)];
                if let Some(t) = &tiles {
                    runs.push((
                        "repacked",
                        Weight {
                            packed: Some(t.bytes()),
                            ..w
                        },
                    ));
                }
                runs.push(("rows only", w));
                for (kind, wk) in runs {
                    let k = if kind == "rows only" {
                        k.without_tiles()
                    } else {
                        k.clone()
                    };
                    let mut got = vec![f32::NAN; n_tokens * rows];
                    matmul(&k, &wk, &x, n_tokens, Some(&bias), &mut got).unwrap();
                    let dot = k.vec_dot(ty).unwrap();
                    let through_tiles =
                        k.tiles(ty, cols).is_some() && (wk.packed.is_some() || n_tokens > 1);
                    for (t, xt) in x.chunks_exact(cols).enumerate() {
                        let a = if matches!(ty, F16 | F32) {
                            to_bytes(xt)
                        } else {
                            quantize_act(ty, xt)
                        };
                        for r in 0..rows {
                            let (g, s) = (got[t * rows + r], want[t * rows + r]);
                            let tol = matmul_tolerance(&k, ty, &w_rows[r], xt);
                            assert!(
                                (f64::from(g) - f64::from(s)).abs() <= tol,
                                "{isa:?} {kind} {ty} tokens={n_tokens} t={t} r={r}: {g} vs scalar {s} (tol {tol})"
                            );
                            if !through_tiles {
                                let single = dot(cols, &w_rows[r], &a) + bias[r];
                                assert_eq!(
                                    g.to_bits(),
                                    single.to_bits(),
                                    "{isa:?} {kind} {ty} t={t} r={r}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `rows` rows of `w` repacked for `k`, if the path repacks `ty`.
fn packed(k: &Kernels, ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Option<Aligned> {
    let len = packed_len(k, ty, rows, cols)?;
    let mut tiles = Aligned::new(len);
    tiles.bytes_mut().fill(0xa5);
    let weight = Weight {
        packed: None,
        ty,
        data: w,
        rows,
        cols,
    };
    assert!(pack(k, &weight, tiles.bytes_mut()));
    Some(tiles)
}

/// Odd shapes: a single row, rows fewer than a task, no bias.
#[test]
fn matmul_handles_small_and_odd_shapes() {
    let paths: Vec<(Isa, Kernels)> = paths().into_iter().map(|k| (k.isa, k)).collect();
    let mut rng = Rng(20);
    for ty in [Q4_0, Q5_1, Q4_K, F16] {
        let cols = ty.block_size().max(32) * 3;
        for rows in [1, 5, 17] {
            let data = quantize(ty, &varied(&mut rng, rows * cols));
            let w = Weight {
                packed: None,
                ty,
                data: &data,
                rows,
                cols,
            };
            for n_tokens in [1, 2, 5] {
                let x = varied(&mut rng, n_tokens * cols);
                let mut want = vec![0f32; n_tokens * rows];
                matmul(&Kernels::scalar(), &w, &x, n_tokens, None, &mut want).unwrap();
                for (isa, k) in &paths {
                    let mut got = vec![0f32; n_tokens * rows];
                    matmul(k, &w, &x, n_tokens, None, &mut got).unwrap();
                    for (i, (g, s)) in got.iter().zip(&want).enumerate() {
                        let r = i % rows;
                        let rb = w.row_bytes();
                        let t = i / rows;
                        let tol = matmul_tolerance(
                            k,
                            ty,
                            &data[r * rb..(r + 1) * rb],
                            &x[t * cols..(t + 1) * cols],
                        );
                        assert!(
                            (f64::from(*g) - f64::from(*s)).abs() <= tol,
                            "{isa:?} {ty} {rows}x{cols} t={t}"
                        );
                    }
                }
            }
        }
    }
}

/// Products run together in one region give each job what it gives alone, and
/// every result is within the tolerance of the scalar dot, on every path this CPU
/// has (types and shapes mixed, packed and not).
#[test]
fn matvec_many_equals_each_job_alone() {
    let mut rng = Rng(0x9e37_79b9);
    let shapes = [
        (Q4_0, 40, 64),
        (Q4_K, 33, 256),
        (Q8_0, 17, 96),
        (F16, 5, 40),
        (Q6_K, 9, 512),
    ];
    let weights: Vec<(GgmlType, usize, usize, Vec<u8>)> = shapes
        .iter()
        .map(|&(ty, rows, cols)| (ty, rows, cols, quantize(ty, &varied(&mut rng, rows * cols))))
        .collect();
    let inputs: Vec<Vec<f32>> = shapes.iter().map(|s| varied(&mut rng, s.2)).collect();
    let biases: Vec<Vec<f32>> = shapes.iter().map(|s| rng.normals(s.1)).collect();
    for k in paths().into_iter().chain([Kernels::scalar()]) {
        let packs: Vec<Option<Aligned>> = weights
            .iter()
            .map(|(ty, rows, cols, data)| packed(&k, *ty, data, *rows, *cols))
            .collect();
        let ws: Vec<Weight> = weights
            .iter()
            .zip(&packs)
            .map(|((ty, rows, cols, data), p)| Weight {
                ty: *ty,
                data,
                rows: *rows,
                cols: *cols,
                packed: p.as_ref().map(|p| p.bytes()),
            })
            .collect();
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|s| vec![f32::NAN; s.1]).collect();
        let mut jobs: Vec<MatJob> = outs
            .iter_mut()
            .enumerate()
            .map(|(i, out)| MatJob {
                w: ws[i],
                x: &inputs[i],
                bias: Some(&biases[i]),
                out,
            })
            .collect();
        matvec_many(&k, &mut jobs).unwrap();
        for (i, w) in ws.iter().enumerate() {
            let mut alone = vec![f32::NAN; w.rows];
            let mut job = [MatJob {
                w: *w,
                x: &inputs[i],
                bias: Some(&biases[i]),
                out: &mut alone,
            }];
            matvec_many(&k, &mut job).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&outs[i]),
                bits(&alone),
                "{} job {i} ({})",
                k.isa.name(),
                w.ty
            );
            let mut want = vec![0f32; w.rows];
            matmul(
                &Kernels::scalar(),
                w,
                &inputs[i],
                1,
                Some(&biases[i]),
                &mut want,
            )
            .unwrap();
            let rb = w.row_bytes();
            for r in 0..w.rows {
                let tol = matmul_tolerance(&k, w.ty, &w.data[r * rb..(r + 1) * rb], &inputs[i]);
                let d = (f64::from(outs[i][r]) - f64::from(want[r])).abs();
                assert!(
                    d <= tol,
                    "{} job {i} row {r}: {} vs {}",
                    k.isa.name(),
                    outs[i][r],
                    want[r]
                );
            }
        }
    }
}

/// Every path against the scalar `y += a·x`: lengths around every vector width (and
/// an attention row of 80), zeros, signs, large magnitudes. A fused multiply-add
/// rounds once where the reference rounds twice, so each element may differ by an
/// ulp of the terms' size.
#[test]
fn axpy_matches_scalar_on_every_path() {
    let mut rng = Rng(0x1234_5678_9abc_def0);
    for k in paths() {
        for n in (0..=100).chain([160, 2560]) {
            for scale in [0.0f32, 1.0, 1e-30, 1e18] {
                let x: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) * 2.0 * scale).collect();
                let y0: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) * 2.0 * scale).collect();
                let a = (rng.unit() - 0.5) * 6.0;
                let (mut got, mut want) = (y0.clone(), y0.clone());
                (k.axpy)(a, &x, &mut got);
                scalar::axpy(a, &x, &mut want);
                for i in 0..n {
                    let tol = 2.0 * f32::EPSILON * ((a * x[i]).abs() + y0[i].abs());
                    assert!(
                        (got[i] - want[i]).abs() <= tol,
                        "{}: n {n} scale {scale} element {i}: {} vs {}",
                        k.isa.name(),
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
}

/// Every path against the scalar `y += Σ_k a[k]·x_k`: lengths around each vector
/// width and its 4-vector blocks (and rows of Phi-2's widths), ranks 0 to 17,
/// strides with NaN poison between the rows (a read outside them shows), zeros and
/// extreme magnitudes. Each product rounds once on a SIMD path and twice in the
/// reference, so each element may differ by two roundings of every partial sum.
/// Rows that do not fit `x` panic on every path.
#[test]
fn axpy_rows_matches_scalar_on_every_path() {
    let mut rng = Rng(0x51ab_0c0d_e5e1_7a11);
    for k in paths() {
        for n in (0..=70).chain([127, 128, 129, 511, 512, 2560]) {
            for r in [0usize, 1, 2, 3, 4, 5, 8, 16, 17] {
                let scale = [0.0f32, 1.0, 1e-30, 1e18][rng.next() as usize % 4];
                let stride = n + (rng.next() % 5) as usize;
                let mut x = vec![f32::NAN; r.saturating_sub(1) * stride + n];
                for row in 0..r {
                    for v in &mut x[row * stride..row * stride + n] {
                        *v = (rng.unit() - 0.5) * 2.0 * scale;
                    }
                }
                let a: Vec<f32> = (0..r).map(|_| (rng.unit() - 0.5) * 6.0).collect();
                let y0: Vec<f32> = (0..n).map(|_| (rng.unit() - 0.5) * 2.0 * scale).collect();
                let (mut got, mut want) = (y0.clone(), y0.clone());
                (k.axpy_rows)(&a, &x, stride, &mut got);
                scalar::axpy_rows(&a, &x, stride, &mut want);
                for i in 0..n {
                    let terms: f32 = y0[i].abs()
                        + (0..r)
                            .map(|j| (a[j] * x[j * stride + i]).abs())
                            .sum::<f32>();
                    let tol = 2.0 * (r as f32 + 1.0) * f32::EPSILON * terms;
                    assert!(
                        (got[i] - want[i]).abs() <= tol,
                        "{}: n {n} r {r} stride {stride} scale {scale} element {i}: {} vs {}",
                        k.isa.name(),
                        got[i],
                        want[i]
                    );
                }
            }
        }
        let short = vec![0f32; 2 * 40 + 39];
        let r = std::panic::catch_unwind(|| {
            (k.axpy_rows)(&[1.0, 2.0, 3.0], &short, 40, &mut [0f32; 40])
        });
        assert!(r.is_err(), "{}: rows beyond x must panic", k.isa.name());
    }
}

/// The IQ types phiq does not run are refused by name, with what to do instead.
#[test]
fn other_iq_types_are_refused_by_name() {
    use crate::kernels::KernelError;
    for ty in [IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M] {
        let err = Kernels::scalar().vec_dot(ty).unwrap_err();
        assert_eq!(err, KernelError::NoKernel(ty));
        let msg = err.to_string();
        assert!(
            msg.contains(ty.name()) && msg.contains("--type iq4_xs"),
            "{msg}"
        );
    }
    for ty in [IQ4_NL, IQ4_XS] {
        assert!(Kernels::scalar().vec_dot(ty).is_ok(), "{ty}");
    }
}
