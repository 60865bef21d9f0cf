//! Every tile kernel (the plain-Rust reference engines in each offset and pairing
//! style, and every SIMD path this CPU has) against the scalar row dot, through the
//! path's own pack, prepare, gemv and gemm, on one set of inputs and edge cases:
//! zero blocks, maximal magnitudes, one-block rows, odd block counts (a padded last
//! tile block), odd row counts and tile-remainder rows, token counts that exercise
//! every group size.

use super::reference::Reference;
use super::*;
use crate::kernels::testing::*;
use crate::kernels::{TileKernel, act_type, scalar};
use crate::quant::GgmlType;

use GgmlType::*;

fn ref_gemv<F: Format, const R: usize, const C: bool>(
    _cols: usize,
    tile: &[u8],
    group: &[u32],
    out: &mut [f32],
) {
    mul_tile::<F, Reference<R, C, false>, R, 1>(Reference, tile, group, out)
}

fn ref_gemm<F: Format, const R: usize, const C: bool, const P: bool>(
    _cols: usize,
    tile: &[u8],
    group: &[u32],
    n: usize,
    out: &mut [f32],
) {
    match n {
        4 => mul_tile::<F, Reference<R, C, P>, R, 4>(Reference, tile, group, out),
        2 => mul_tile::<F, Reference<R, C, P>, R, 2>(Reference, tile, group, out),
        _ => panic!("group of {n}"),
    }
}

/// A reference engine's tile kernels: `R` rows, groups of up to 4 tokens.
struct RefTiles<const R: usize, const C: bool, const P: bool>;
impl<const R: usize, const C: bool, const P: bool> PerFormat for RefTiles<R, C, P> {
    type Out = TileKernel;
    fn call<F: Format>(self) -> TileKernel {
        tile_kernel::<F, R>(4, P, ref_gemv::<F, R, C>, ref_gemm::<F, R, C, P>)
    }
}

/// Every tile kernel of `ty` to test: the reference engines, then every path's.
fn all_tile_kernels(ty: GgmlType) -> Vec<(String, TileKernel)> {
    let mut out = vec![
        (
            "reference 4 rows, corrected".to_string(),
            for_type(ty, RefTiles::<4, false, false>).unwrap(),
        ),
        (
            "reference 4 rows, centred".into(),
            for_type(ty, RefTiles::<4, true, false>).unwrap(),
        ),
        (
            "reference 4 rows, centred, paired".into(),
            for_type(ty, RefTiles::<4, true, true>).unwrap(),
        ),
        (
            "reference 8 rows, corrected".into(),
            for_type(ty, RefTiles::<8, false, false>).unwrap(),
        ),
    ];
    for k in paths() {
        let tk = k
            .tiles(ty, 256)
            .unwrap_or_else(|| panic!("{}: no tiles for {ty}", k.isa.name()));
        out.push((k.isa.name().to_string(), tk));
    }
    out
}

/// Checks `out` (`[t][r]`) against the scalar dot of every row and token.
fn check_all(
    ty: GgmlType,
    tk: &TileKernel,
    w_rows: &[Vec<u8>],
    acts: &[Vec<u8>],
    out: &[f32],
    exact: bool,
    what: &str,
) {
    let rows = w_rows.len();
    for (t, a) in acts.iter().enumerate() {
        for (r, w) in w_rows.iter().enumerate() {
            let got = out[t * rows + r];
            let what = format!("{what} ({rows} rows x {} tokens) r={r} t={t}", acts.len());
            if ty == F16 {
                check_f16(w, a, got, exact, tk.f16_arith, &what);
            } else {
                check(ty, w, a, got, exact, &what);
            }
        }
    }
}

/// F16 against the scalar dot, within [`f16_tolerance`].
fn check_f16(w: &[u8], a: &[u8], got: f32, exact: bool, f16_arith: bool, what: &str) {
    let n = w.len() / 2;
    let want = scalar::vec_dot(F16).unwrap()(n, w, a);
    if exact {
        assert_eq!(got, want, "F16 {what}");
    } else {
        let tol = f16_tolerance(w, &blocks::<f32>(a), f16_arith);
        let d = (f64::from(got) - f64::from(want)).abs();
        assert!(d <= tol, "F16 {what}: {got} vs {want}, diff {d} > {tol}");
    }
}

fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..rows)
        .map(|r| {
            let x = if r % 3 == 2 {
                negative_extremes(rng, cols)
            } else {
                varied(rng, cols)
            };
            quantize(ty, &x)
        })
        .collect()
}

fn acts(ty: GgmlType, tokens: usize, cols: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..tokens)
        .map(|t| {
            let kinds = data_kinds(rng, cols);
            quantize_act(ty, &kinds[t % kinds.len()].1)
        })
        .collect()
}

const TYPES: [GgmlType; 13] = [
    Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS, F16,
];

/// Block counts per row: one, an odd count (a padded tile block), a few.
fn block_counts(ty: GgmlType) -> &'static [usize] {
    if ty.block_size() == 256 {
        &[1, 2, 3]
    } else {
        &[1, 3, 8, 9]
    }
}

fn elements_per_block(ty: GgmlType) -> usize {
    if ty == F16 { 32 } else { ty.block_size() }
}

#[test]
fn tiles_equal_scalar_dots() {
    let mut rng = Rng(31);
    for ty in TYPES {
        for (name, tk) in all_tile_kernels(ty) {
            for &nb in block_counts(ty) {
                let cols = nb * elements_per_block(ty);
                let r = tk.rows;
                for (rows, tokens) in [
                    (1, 1),
                    (r - 1, 2),
                    (r + 1, 3),
                    (2 * r + 3, 5),
                    (r, 9),
                    (3, 13),
                ] {
                    let w = weights(ty, rows, cols, &mut rng);
                    let a = acts(ty, tokens, cols, &mut rng);
                    let out = run_tiles(&tk, cols, &w.concat(), rows, &a);
                    check_all(
                        ty,
                        &tk,
                        &w,
                        &a,
                        &out,
                        false,
                        &format!("{name} {ty} n={cols}"),
                    );
                }
            }
        }
    }
}

/// Unit scales, every code pattern: every value formed is an integer f32 holds, so
/// each (row, token) must equal the scalar dot to the bit.
#[test]
fn tile_integer_parts_are_exact() {
    let mut rng = Rng(32);
    for ty in TYPES.into_iter().filter(|t| *t != F16) {
        for (name, tk) in all_tile_kernels(ty) {
            let mut exact = 0;
            for &nb in block_counts(ty) {
                let cols = nb * ty.block_size();
                let rows = tk.rows + 3;
                let w: Vec<Vec<u8>> = (0..rows)
                    .map(|_| {
                        (0..nb)
                            .flat_map(|_| unit_weight_block(ty, &mut rng))
                            .collect()
                    })
                    .collect();
                let a: Vec<Vec<u8>> = (0..7).map(|_| unit_acts(ty, nb, &mut rng)).collect();
                let out = run_tiles(&tk, cols, &w.concat(), rows, &a);
                check_all(
                    ty,
                    &tk,
                    &w,
                    &a,
                    &out,
                    true,
                    &format!("{name} {ty} unit scales"),
                );
                exact += w
                    .iter()
                    .flat_map(|w| a.iter().map(move |a| magnitude(ty, w, a)))
                    .filter(|m| *m < f64::from(1u32 << 24))
                    .count();
            }
            assert!(exact > 50, "{name} {ty}: only {exact} exact comparisons");
        }
    }
}

/// Codes, scales and minimums at their extremes against activations at ±127: what a
/// saturating i16 sum or a lost sign would break.
#[test]
fn tile_extremes_are_exact() {
    for ty in TYPES.into_iter().filter(|t| *t != F16) {
        let blocks = extreme_weight_blocks(ty);
        let w: Vec<Vec<u8>> = blocks
            .iter()
            .flat_map(|b| [b.repeat(3), [&b[..], &blocks[0][..], &b[..]].concat()])
            .collect();
        let a: Vec<Vec<u8>> = extreme_act_codes(ty.block_size())
            .iter()
            .map(|q| unit_act_block(act_type(ty), q).repeat(3))
            .collect();
        let cols = 3 * ty.block_size();
        for (name, tk) in all_tile_kernels(ty) {
            let out = run_tiles(&tk, cols, &w.concat(), w.len(), &a);
            check_all(
                ty,
                &tk,
                &w,
                &a,
                &out,
                true,
                &format!("{name} {ty} extremes"),
            );
        }
    }
}

#[test]
fn zero_weights_give_zero() {
    let mut rng = Rng(33);
    for ty in TYPES {
        let cols = 3 * elements_per_block(ty);
        let zero = vec![0u8; ty.row_bytes(cols as u64).unwrap() as usize];
        for (name, tk) in all_tile_kernels(ty) {
            let a = acts(ty, 5, cols, &mut rng);
            let out = run_tiles(&tk, cols, &zero.repeat(3), 3, &a);
            assert!(out.iter().all(|v| *v == 0.0), "{name} {ty}: {out:?}");
        }
    }
}

/// F16 tiles on integer values: exact (in FP16 arithmetic, on integers whose
/// products and short sums f16 holds exactly).
#[test]
fn f16_tiles_on_integers_are_exact() {
    let mut rng = Rng(34);
    for (name, tk) in all_tile_kernels(F16) {
        let cols = 64;
        let half = if tk.f16_arith { 4 } else { 32 };
        let int = |rng: &mut Rng| (rng.below(2 * half) as f32) - half as f32;
        let w: Vec<Vec<u8>> = (0..tk.rows + 1)
            .map(|_| quantize(F16, &(0..cols).map(|_| int(&mut rng)).collect::<Vec<_>>()))
            .collect();
        let a: Vec<Vec<u8>> = (0..6)
            .map(|_| to_bytes(&(0..cols).map(|_| int(&mut rng)).collect::<Vec<_>>()))
            .collect();
        let out = run_tiles(&tk, cols, &w.concat(), w.len(), &a);
        check_all(F16, &tk, &w, &a, &out, true, &format!("{name} integers"));
    }
}

/// F16 weights at f16's largest magnitudes: every kernel's results stay finite and
/// within its tolerance (FP16 arithmetic's f16 sums overflow there: the tile is
/// summed again in f32).
#[test]
fn f16_tiles_at_the_largest_weights_stay_finite() {
    let mut rng = Rng(35);
    let cols = 64;
    let big =
        |rng: &mut Rng| f32::from(half::f16::MAX) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
    for (name, tk) in all_tile_kernels(F16) {
        let w: Vec<Vec<u8>> = (0..tk.rows + 1)
            .map(|r| {
                let x: Vec<f32> = (0..cols)
                    .map(|_| {
                        if r % 2 == 0 {
                            big(&mut rng).abs()
                        } else {
                            big(&mut rng)
                        }
                    })
                    .collect();
                quantize(F16, &x)
            })
            .collect();
        let a: Vec<Vec<u8>> = (0..3).map(|_| to_bytes(&varied(&mut rng, cols))).collect();
        let out = run_tiles(&tk, cols, &w.concat(), w.len(), &a);
        assert!(out.iter().all(|v| v.is_finite()), "{name}: {out:?}");
        check_all(
            F16,
            &tk,
            &w,
            &a,
            &out,
            false,
            &format!("{name} largest weights"),
        );
    }
}

/// Short or mismatched buffers panic instead of reading past them.
#[test]
fn short_inputs_panic() {
    for ty in TYPES {
        let cols = 2 * elements_per_block(ty);
        for (name, tk) in all_tile_kernels(ty) {
            let rb = ty.row_bytes(cols as u64).unwrap() as usize;
            let w = vec![0u8; rb * tk.rows];
            let tb = (tk.tile_bytes)(cols);
            let fails =
                |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
            let mut tile = Aligned::new(tb);
            assert!(
                fails(&|| (tk.pack)(cols, &w[..rb * tk.rows - 1], tk.rows, &mut vec![0u8; tb])),
                "{name} {ty}: short weights"
            );
            (tk.pack)(cols, &w, tk.rows, tile.bytes_mut());
            let act = vec![0u8; act_type(ty).row_bytes(cols as u64).unwrap() as usize];
            let words = (tk.group_words)(cols, 1);
            let mut group = vec![0u32; words];
            (tk.prepare)(cols, &[&act], &mut group);
            assert!(
                fails(&|| (tk.prepare)(cols, &[&act[..act.len() - 1]], &mut vec![0u32; words])),
                "{name} {ty}: short activations"
            );
            let mut out = vec![0f32; tk.rows];
            assert!(
                fails(&|| (tk.gemv)(cols, tile.bytes(), &group[..words - 1], &mut out.clone())),
                "{name} {ty}: short prepared row"
            );
            assert!(
                fails(&|| (tk.gemv)(cols, &tile.bytes()[..tb / 2], &group, &mut out.clone())),
                "{name} {ty}: short tile"
            );
            (tk.gemv)(cols, tile.bytes(), &group, &mut out);
        }
    }
}

#[test]
fn token_groups_cover_every_token_once() {
    for max in [1, 2, 4, 8] {
        for tokens in 0..40 {
            let groups: Vec<_> = token_groups(tokens, max).collect();
            let mut next = 0;
            for (t0, n) in &groups {
                assert_eq!(*t0, next);
                assert!(n.is_power_of_two() && *n <= max);
                next += n;
            }
            assert_eq!(next, tokens);
            // Full groups first, then strictly smaller ones.
            let full = tokens / max;
            assert!(groups[..full].iter().all(|g| g.1 == max));
            assert!(groups[full..].windows(2).all(|w| w[0].1 > w[1].1));
        }
    }
}

/// The Q4_0 tile layout, byte by byte: lane `r` of code vector `v` of block `k` is
/// bytes `4v..4v + 4` of row `r`'s `qs`, each nibble XOR 8; a missing row and the
/// padding block are zero (value 0 under scale 0).
#[test]
fn q4_0_layout_is_as_documented() {
    use crate::quant::BlockQ4_0;
    let row = |r: u8| -> Vec<BlockQ4_0> {
        (0..3)
            .map(|b| BlockQ4_0 {
                d: half::f16::from_f32(f32::from(r) + 0.5 * f32::from(b)),
                qs: core::array::from_fn(|i| r * 16 + b * 5 + i as u8),
            })
            .collect()
    };
    let w: Vec<u8> = (0..3u8).flat_map(|r| to_bytes(&row(r))).collect();
    let mut tile = Aligned::new(tile_bytes_of::<formats::Q4_0, 4>(96));
    pack_of::<formats::Q4_0, 4>(96, &w, 3, tile.bytes_mut());
    let tbs: &[layout::BlockQ4_0x<4>] = bytemuck::cast_slice(tile.bytes());
    assert_eq!(
        tbs.len(),
        2,
        "three blocks: two tile blocks, the last padded"
    );
    for r in 0..4u8 {
        for b in 0..4usize {
            let (tb, k) = (&tbs[b / 2], b % 2);
            for v in 0..4 {
                let want: [u8; 4] = if r < 3 && b < 3 {
                    core::array::from_fn(|j| row(r)[b].qs[4 * v + j] ^ 0x88)
                } else {
                    [0; 4]
                };
                assert_eq!(tb.qs[k][v][r as usize], want, "r={r} b={b} v={v}");
            }
            let d = if r < 3 && b < 3 {
                row(r)[b].d
            } else {
                half::f16::ZERO
            };
            assert_eq!(tb.d[k][r as usize], d);
        }
    }
}
