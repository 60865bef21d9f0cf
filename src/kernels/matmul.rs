//! Matrix products of a weight matrix (any block type, rows of `cols` elements) with
//! a batch of activation rows, parallel over weight rows.

use rayon::prelude::*;

use super::{KernelError, Kernels, act_type};
use crate::quant::GgmlType;

/// A weight matrix: `rows` rows of `cols` elements of type `ty`, row-major, as GGUF
/// stores it (ggml's `ne[0]` = `cols`). `data` is usually a slice of the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl Weight<'_> {
    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }

    fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Weight rows handled per task: enough work to amortise scheduling, small enough
/// that both cores of a Pi stay busy to the end.
const ROWS_PER_TASK: usize = 16;

/// `out[t * rows + r] = Σ_c w[r][c] · x[t * cols + c] (+ bias[r])` for `n_tokens` rows
/// of `x`. Each weight row is loaded once and used for every token.
pub fn matmul(
    k: &Kernels,
    w: &Weight,
    x: &[f32],
    n_tokens: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> Result<(), KernelError> {
    debug_assert_eq!(x.len(), n_tokens * w.cols);
    debug_assert_eq!(out.len(), n_tokens * w.rows);
    let dot = k.vec_dot(w.ty)?;
    let act_ty = act_type(w.ty);
    let act_row = act_ty.row_bytes(w.cols as u64).unwrap_or(0) as usize;
    let quantize = k.quantize_act(act_ty)?;
    // u64 backing keeps the activation blocks aligned for every block type.
    let mut act_buf = vec![0u64; (n_tokens * act_row).div_ceil(8)];
    let act: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut act_buf)[..n_tokens * act_row];
    act.par_chunks_mut(act_row)
        .zip(x.par_chunks(w.cols))
        .for_each(|(a, xr)| quantize(xr, a));
    let act: &[u8] = act;

    let bias_of = |r: usize| bias.map_or(0.0, |b| b[r]);
    if n_tokens == 1 {
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(i, o)| {
                for (j, y) in o.iter_mut().enumerate() {
                    let r = i * ROWS_PER_TASK + j;
                    *y = dot(w.cols, w.row(r), act) + bias_of(r);
                }
            });
        return Ok(());
    }
    // Row-major tiles [rows of the task][tokens], scattered into token-major `out`.
    let tiles: Vec<Vec<f32>> = (0..w.rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|i| {
            let rows = (i * ROWS_PER_TASK)..((i + 1) * ROWS_PER_TASK).min(w.rows);
            let mut tile = Vec::with_capacity(rows.len() * n_tokens);
            for r in rows {
                let wr = w.row(r);
                for a in act.chunks_exact(act_row) {
                    tile.push(dot(w.cols, wr, a) + bias_of(r));
                }
            }
            tile
        })
        .collect();
    for (i, tile) in tiles.iter().enumerate() {
        for (j, row) in tile.chunks_exact(n_tokens).enumerate() {
            let r = i * ROWS_PER_TASK + j;
            for (t, v) in row.iter().enumerate() {
                out[t * w.rows + r] = *v;
            }
        }
    }
    Ok(())
}
