//! Rows that llama-quantize (llama.cpp b10470) wrote in Q2_K, Q3_K, IQ4_NL and IQ4_XS,
//! with and without an importance matrix, beside the F16 rows they came from and the
//! weights llama-quantize derived from the matrix (tests/fixtures/llama_types, see its
//! make.py): phiq reads llama.cpp's tensors of these types, quantizes the same rows to
//! the same bytes, and multiplies them on every kernel path as the scalar reference does.

use phiq::gguf::GgufFile;
use phiq::kernels::Kernels;
use phiq::kernels::matmul::{Weight, matmul, pack, packed_len};
use phiq::quant::{GgmlType, dequantize_row, quantize_row_weighted};

const TYPES: [GgmlType; 4] = [
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

fn fixture() -> GgufFile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama_types/rows.gguf"
    );
    GgufFile::open(path).unwrap()
}

/// The F16 source rows of `ty`'s tensor as f32, with their length.
fn source(file: &GgufFile, ty: GgmlType) -> (Vec<f32>, usize) {
    let (info, data) = file.tensor(&format!("src.{ty}")).unwrap();
    assert_eq!(info.ty, GgmlType::F16);
    let cols = info.shape[0] as usize;
    let mut x = vec![0f32; data.len() / 2];
    dequantize_row(GgmlType::F16, data, &mut x).unwrap();
    (x, cols)
}

fn f32s(file: &GgufFile, name: &str) -> Vec<f32> {
    let (_, data) = file.tensor(name).unwrap();
    let mut x = vec![0f32; data.len() / 4];
    dequantize_row(GgmlType::F32, data, &mut x).unwrap();
    x
}

#[test]
fn phiq_quantizes_rows_to_llama_quantizes_bytes() {
    let file = fixture();
    for ty in TYPES {
        let (x, cols) = source(&file, ty);
        let qw = f32s(&file, &format!("imatrix.{ty}"));
        for (prefix, weights) in [("llama", None), ("llama_im", Some(&qw[..]))] {
            let (info, theirs) = file.tensor(&format!("{prefix}.{ty}")).unwrap();
            assert_eq!(
                (info.ty, info.shape[0] as usize),
                (ty, cols),
                "{prefix}.{ty}"
            );
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut ours = vec![0u8; theirs.len()];
            for (xr, q) in x.chunks_exact(cols).zip(ours.chunks_exact_mut(row_bytes)) {
                quantize_row_weighted(ty, xr, weights, q).unwrap();
            }
            let differ = ours
                .chunks_exact(ty.type_size())
                .zip(theirs.chunks_exact(ty.type_size()))
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differ, 0,
                "{prefix}.{ty}: {differ} blocks differ from llama.cpp's"
            );
        }
    }
}

/// llama.cpp's rows dequantize close to their source (the types' expected error on
/// Gaussian-like weights), and the weighted ones closer under their weights.
#[test]
fn llama_rows_dequantize_near_their_source() {
    let file = fixture();
    for (ty, bound) in TYPES.into_iter().zip([0.45, 0.25, 0.12, 0.12]) {
        let (x, _) = source(&file, ty);
        let qw = f32s(&file, &format!("imatrix.{ty}"));
        let err = |prefix: &str, weighted: bool| {
            let (_, q) = file.tensor(&format!("{prefix}.{ty}")).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_row(ty, q, &mut y).unwrap();
            let (mut e, mut s) = (0f64, 0f64);
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                let w = if weighted {
                    f64::from(qw[i % qw.len()])
                } else {
                    1.0
                };
                e += w * f64::from(a - b).powi(2);
                s += w * f64::from(*a).powi(2);
            }
            (e / s).sqrt()
        };
        let plain = err("llama", false);
        assert!(plain < bound, "{ty}: relative RMS error {plain}");
        let (w0, w1) = (err("llama", true), err("llama_im", true));
        assert!(w1 < w0, "{ty}: weighted error {w1} not below {w0}");
    }
}

/// Each path's matrix products of llama.cpp's rows (repacked into its tiles for one
/// token, packed per task for a batch) equal the scalar reference's row dots within
/// the kernels' tolerance.
#[test]
fn every_path_multiplies_llama_rows_as_scalar_does() {
    let file = fixture();
    let n = 4;
    for ty in TYPES {
        let (x, cols) = source(&file, ty);
        let (_, data) = file.tensor(&format!("llama_im.{ty}")).unwrap();
        let rows = data.len() / ty.row_bytes(cols as u64).unwrap() as usize;
        let acts: Vec<f32> = x[..n * cols].iter().map(|v| v * 0.5 + 0.01).collect();
        let w = Weight {
            ty,
            data,
            rows,
            cols,
            packed: None,
        };
        let mut want = vec![0f32; n * rows];
        matmul(&Kernels::scalar(), &w, &acts, n, None, &mut want).unwrap();
        let tol = 1e-4 * want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for isa in Kernels::available() {
            let k = Kernels::for_isa(isa).unwrap();
            let mut packed = vec![0u8; packed_len(&k, ty, rows, cols).unwrap_or(0)];
            let tiles = pack(&k, &w, &mut packed);
            assert!(
                tiles || isa == phiq::kernels::Isa::Scalar,
                "{ty}: no tiles on {isa:?}"
            );
            let one = Weight {
                packed: tiles.then_some(&packed[..]),
                ..w
            };
            let mut got = vec![0f32; n * rows];
            for t in 0..n {
                let out = &mut got[t * rows..(t + 1) * rows];
                matmul(&k, &one, &acts[t * cols..(t + 1) * cols], 1, None, out).unwrap();
            }
            let mut batch = vec![0f32; n * rows];
            matmul(&k, &w, &acts, n, None, &mut batch).unwrap();
            for (what, got) in [("one token", &got), ("batch", &batch)] {
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= tol,
                        "{isa:?} {ty} {what} [{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }
}
