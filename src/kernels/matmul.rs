//! Matrix products of a weight matrix (any block type, rows of `cols` elements) with
//! a batch of activation rows, parallel over weight rows.

use rayon::prelude::*;

use super::{GemmFn, KernelError, Kernels, PackedKernel, VecDotFn, VecDotX4Fn, act_type};
use crate::quant::GgmlType;

/// A weight matrix: `rows` rows of `cols` elements of type `ty`, row-major, as GGUF
/// stores it (ggml's `ne[0]` = `cols`). `data` is usually a slice of the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// The same rows repacked by [`pack`] for the path's [`PackedKernel`], if any:
    /// matmul then reads these instead of `data`.
    pub packed: Option<&'a [u8]>,
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

/// Bytes `rows` x `cols` weights of type `ty` take repacked for `k`'s packed kernel,
/// if that path repacks the type.
pub fn packed_len(k: &Kernels, ty: GgmlType, rows: usize, cols: usize) -> Option<usize> {
    let pk = k.packed(ty)?;
    Some(rows.div_ceil(pk.tile_rows) * (pk.tile_bytes)(cols))
}

/// Repacks `w` (its `data`) for `k`'s packed kernel into `out`, of [`packed_len`]
/// bytes, tiles in parallel. Returns false if the path does not repack `w.ty`.
pub fn pack(k: &Kernels, w: &Weight, out: &mut [u8]) -> bool {
    let Some(pk) = k.packed(w.ty) else {
        return false;
    };
    let tb = (pk.tile_bytes)(w.cols);
    let rb = w.row_bytes();
    assert_eq!(
        out.len(),
        w.rows.div_ceil(pk.tile_rows) * tb,
        "packed length"
    );
    out.par_chunks_mut(tb).enumerate().for_each(|(i, tile)| {
        let r0 = i * pk.tile_rows;
        let nr = (w.rows - r0).min(pk.tile_rows);
        (pk.pack)(w.cols, &w.data[r0 * rb..(r0 + nr) * rb], nr, tile);
    });
    true
}

/// One product of [`matvec_many`]: a weight matrix, one token's input row, the bias
/// and the output row.
pub struct MatJob<'a> {
    pub w: Weight<'a>,
    pub x: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub out: &'a mut [f32],
}

/// Several matrix-vector products (one token) in one parallel region: generation
/// runs a layer's independent products together (q, k, v and the MLP's up projection
/// read the same normed row), because waking the pool for each small product cost
/// more than some of the products. Each job's result is `matmul`'s, bit for bit.
pub fn matvec_many(k: &Kernels, jobs: &mut [MatJob]) -> Result<(), KernelError> {
    let plans = jobs
        .iter()
        .map(|j| {
            debug_assert_eq!(j.x.len(), j.w.cols);
            debug_assert_eq!(j.out.len(), j.w.rows);
            OneToken::new(k, &j.w, j.x)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut tasks = Vec::new();
    let mut views = Vec::new();
    for (i, (job, plan)) in jobs.iter_mut().zip(&plans).enumerate() {
        let n = plan.task_rows();
        views.push((job.w, job.bias));
        tasks.extend(
            job.out
                .chunks_mut(n)
                .enumerate()
                .map(move |(c, o)| (i, c * n, o)),
        );
    }
    tasks.into_par_iter().for_each(|(i, r0, o)| {
        let (w, bias) = &views[i];
        plans[i].rows(w, r0, o);
        if let Some(b) = bias {
            for (y, b) in o.iter_mut().zip(&b[r0..]) {
                *y += b;
            }
        }
    });
    Ok(())
}

/// One token's activation row prepared for the kernel the path has for a matrix.
enum OneToken<'a> {
    /// Weights repacked at load: the packed kernel.
    Packed {
        pk: PackedKernel,
        tiles: &'a [u8],
        prepared: Vec<u32>,
    },
    /// The path's batch kernel over the rows as stored.
    Gemm { gemm: GemmFn, prepared: Vec<u32> },
    /// The dot product per row; u64 backing keeps the activation blocks aligned.
    Dot {
        dot: VecDotFn,
        act: Vec<u64>,
        len: usize,
    },
}

impl<'a> OneToken<'a> {
    fn new(k: &Kernels, w: &Weight<'a>, x: &[f32]) -> Result<OneToken<'a>, KernelError> {
        let dot = k.vec_dot(w.ty)?;
        let act_ty = act_type(w.ty);
        let len = act_ty.row_bytes(w.cols as u64).unwrap_or(0) as usize;
        let quantize = k.quantize_act(act_ty)?;
        let mut act = vec![0u64; len.div_ceil(8)];
        quantize(x, &mut bytemuck::cast_slice_mut(&mut act)[..len]);
        let bytes = &bytemuck::cast_slice(&act)[..len];
        if let (Some(tiles), Some(pk)) = (w.packed, k.packed(w.ty)) {
            let prepared = (pk.prepare)(w.cols, bytes, 1);
            return Ok(OneToken::Packed {
                pk,
                tiles,
                prepared,
            });
        }
        if let Some((prepare, gemm)) = k.gemm(w.ty) {
            let prepared = prepare(w.cols, bytes, 1);
            return Ok(OneToken::Gemm { gemm, prepared });
        }
        Ok(OneToken::Dot { dot, act, len })
    }

    /// Rows per task: whole tiles for packed weights.
    fn task_rows(&self) -> usize {
        match self {
            OneToken::Packed { pk, .. } => PACKED_TILES_PER_TASK * pk.tile_rows,
            _ => ROWS_PER_TASK,
        }
    }

    /// Rows `r0..r0 + out.len()` of `w` (`r0` a multiple of [`OneToken::task_rows`]).
    fn rows(&self, w: &Weight, r0: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            OneToken::Packed {
                pk,
                tiles,
                prepared,
            } => {
                let tb = (pk.tile_bytes)(w.cols);
                let t0 = r0 / pk.tile_rows;
                let t = &tiles[t0 * tb..(t0 + n.div_ceil(pk.tile_rows)) * tb];
                (pk.gemm)(w.cols, t, n, prepared, 1, out);
            }
            OneToken::Gemm { gemm, prepared } => {
                let rb = w.row_bytes();
                gemm(w.cols, &w.data[r0 * rb..(r0 + n) * rb], n, prepared, 1, out);
            }
            OneToken::Dot { dot, act, len } => {
                let a = &bytemuck::cast_slice(act)[..*len];
                for (j, y) in out.iter_mut().enumerate() {
                    *y = dot(w.cols, w.row(r0 + j), a);
                }
            }
        }
    }
}

/// Tiles of packed weights per task: 32 rows, as [`GEMM_ROWS_PER_TASK`].
const PACKED_TILES_PER_TASK: usize = 2;

/// The product through a path's packed kernel; `act` holds the quantized activations.
fn matmul_packed(
    pk: &PackedKernel,
    w: &Weight,
    tiles: &[u8],
    act: &[u8],
    n_tokens: usize,
    bias_of: &(impl Fn(usize) -> f32 + Sync),
    out: &mut [f32],
) {
    let prepared = (pk.prepare)(w.cols, act, n_tokens);
    let tb = (pk.tile_bytes)(w.cols);
    let task_rows = PACKED_TILES_PER_TASK * pk.tile_rows;
    let task_tiles = |i: usize, rows: usize| {
        let t0 = i * PACKED_TILES_PER_TASK;
        &tiles[t0 * tb..(t0 + rows.div_ceil(pk.tile_rows)) * tb]
    };
    let tiles_out: Vec<Vec<f32>> = (0..w.rows.div_ceil(task_rows))
        .into_par_iter()
        .map(|i| {
            let rows = (i * task_rows)..((i + 1) * task_rows).min(w.rows);
            let mut tile = vec![0f32; rows.len() * n_tokens];
            (pk.gemm)(
                w.cols,
                task_tiles(i, rows.len()),
                rows.len(),
                &prepared,
                n_tokens,
                &mut tile,
            );
            for (o, r) in tile.chunks_exact_mut(n_tokens).zip(rows) {
                o.iter_mut().for_each(|v| *v += bias_of(r));
            }
            tile
        })
        .collect();
    scatter(&tiles_out, task_rows, n_tokens, out);
}

/// Weight rows handled per task: enough work to amortise scheduling, small enough
/// that both cores of a Pi stay busy to the end.
const ROWS_PER_TASK: usize = 16;

/// Weight rows per task of a batch kernel: it repacks them, and they share each
/// prepared group of tokens while it is in cache.
const GEMM_ROWS_PER_TASK: usize = 32;

/// Activation bytes a batch task keeps in flight at once: well inside a 1 MiB L2
/// (Zen 4, recent Intel; a Pi 5's is 512 KiB, a Pi 4 shares 1 MiB among 4 cores).
const TOKEN_CHUNK_BYTES: usize = 256 * 1024;

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
    if n_tokens == 0 {
        return Ok(());
    }
    if n_tokens == 1 {
        return matvec_many(
            k,
            &mut [MatJob {
                w: *w,
                x,
                bias,
                out,
            }],
        );
    }
    // u64 backing keeps the activation blocks aligned for every block type.
    let mut act_buf = vec![0u64; (n_tokens * act_row).div_ceil(8)];
    let act: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut act_buf)[..n_tokens * act_row];
    act.par_chunks_mut(act_row)
        .zip(x.par_chunks(w.cols))
        .for_each(|(a, xr)| quantize(xr, a));
    let act: &[u8] = act;

    let bias_of = |r: usize| bias.map_or(0.0, |b| b[r]);
    if let (Some(tiles), Some(pk)) = (w.packed, k.packed(w.ty)) {
        matmul_packed(&pk, w, tiles, act, n_tokens, &bias_of, out);
        return Ok(());
    }
    // Row-major tiles [rows of the task][tokens], scattered into token-major `out`.
    let (rows_per_task, tiles) = match k.gemm(w.ty) {
        Some((prepare, gemm)) => {
            // The path's batch kernel: activations laid out once, then every task
            // takes its rows through all tokens.
            let prepared = prepare(w.cols, act, n_tokens);
            let rb = w.row_bytes();
            let tiles: Vec<Vec<f32>> = (0..w.rows.div_ceil(GEMM_ROWS_PER_TASK))
                .into_par_iter()
                .map(|i| {
                    let rows = (i * GEMM_ROWS_PER_TASK)..((i + 1) * GEMM_ROWS_PER_TASK).min(w.rows);
                    let mut tile = vec![0f32; rows.len() * n_tokens];
                    let data = &w.data[rows.start * rb..rows.end * rb];
                    gemm(w.cols, data, rows.len(), &prepared, n_tokens, &mut tile);
                    for (o, r) in tile.chunks_exact_mut(n_tokens).zip(rows) {
                        o.iter_mut().for_each(|v| *v += bias_of(r));
                    }
                    tile
                })
                .collect();
            (GEMM_ROWS_PER_TASK, tiles)
        }
        None => {
            let x4 = k.vec_dot_x4(w.ty);
            let tiles = tiles_by_rows(w, act, act_row, n_tokens, dot, x4, &bias_of);
            (ROWS_PER_TASK, tiles)
        }
    };
    scatter(&tiles, rows_per_task, n_tokens, out);
    Ok(())
}

/// Tokens per task of [`scatter`]: a cache line of each tile row.
const SCATTER_TOKENS: usize = 16;

/// Row-major tiles `[rows of the task][tokens]` into token-major `out`, in parallel
/// over groups of tokens: each task reads one cache line per tile row and writes its
/// tokens' output rows front to back (a plain loop over `out`'s columns strode a
/// whole output row per store, a tenth of a prompt's time).
fn scatter(tiles: &[Vec<f32>], rows_per_task: usize, n_tokens: usize, out: &mut [f32]) {
    let rows = out.len() / n_tokens;
    out.par_chunks_mut(SCATTER_TOKENS * rows)
        .enumerate()
        .for_each(|(c, o)| {
            let t0 = c * SCATTER_TOKENS;
            let nt = o.len() / rows;
            for (i, tile) in tiles.iter().enumerate() {
                for (j, row) in tile.chunks_exact(n_tokens).enumerate() {
                    let r = i * rows_per_task + j;
                    for (dt, v) in row[t0..t0 + nt].iter().enumerate() {
                        o[dt * rows + r] = *v;
                    }
                }
            }
        });
}

/// The batch product without a batch kernel: per task of rows, the tokens in chunks
/// whose activations stay in L2 while the task's rows pass over them, four at a time
/// through the four-row kernel when the path has one (the same bits as four single
/// dots). Returns row-major tiles [rows of the task][tokens].
fn tiles_by_rows(
    w: &Weight,
    act: &[u8],
    act_row: usize,
    n_tokens: usize,
    dot: VecDotFn,
    dot_x4: Option<VecDotX4Fn>,
    bias_of: &(impl Fn(usize) -> f32 + Sync),
) -> Vec<Vec<f32>> {
    // Tokens go in chunks whose activations stay in L2 while the task's rows pass
    // over them, four at a time through the four-row kernel when the path has one
    // (the same bits as four single dots).
    let chunk = (TOKEN_CHUNK_BYTES / act_row.max(1)).clamp(4, 64) / 4 * 4;
    (0..w.rows.div_ceil(ROWS_PER_TASK))
        .into_par_iter()
        .map(|i| {
            let rows = (i * ROWS_PER_TASK)..((i + 1) * ROWS_PER_TASK).min(w.rows);
            let mut tile = vec![0f32; rows.len() * n_tokens];
            for t0 in (0..n_tokens).step_by(chunk) {
                let t1 = (t0 + chunk).min(n_tokens);
                for (j, r) in rows.clone().enumerate() {
                    let wr = w.row(r);
                    let out = &mut tile[j * n_tokens..(j + 1) * n_tokens];
                    let a_row = |t: usize| &act[t * act_row..(t + 1) * act_row];
                    let mut t = t0;
                    if let Some(x4) = dot_x4 {
                        while t + 4 <= t1 {
                            let v = x4(
                                w.cols,
                                wr,
                                [a_row(t), a_row(t + 1), a_row(t + 2), a_row(t + 3)],
                            );
                            out[t..t + 4].copy_from_slice(&v);
                            t += 4;
                        }
                    }
                    for (o, t) in out[t..t1].iter_mut().zip(t..t1) {
                        *o = dot(w.cols, wr, a_row(t));
                    }
                    out[t0..t1].iter_mut().for_each(|v| *v += bias_of(r));
                }
            }
            tile
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{self, GgmlType};

    /// Products run together in one region give each job exactly what `matmul` of
    /// that job alone gives, on every path this CPU has, types and shapes mixed.
    #[test]
    fn matvec_many_equals_matmul_per_job() {
        let mut seed = 0x9e37_79b9u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        };
        let shapes = [
            (GgmlType::Q4_0, 40, 64),
            (GgmlType::Q4_K, 33, 256),
            (GgmlType::Q8_0, 17, 96),
            (GgmlType::F16, 5, 40),
        ];
        let weights: Vec<(GgmlType, usize, usize, Vec<u8>)> = shapes
            .iter()
            .map(|&(ty, rows, cols)| {
                let x: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
                let mut data = vec![0u8; ty.row_bytes(cols as u64).unwrap() as usize * rows];
                quant::quantize_row(ty, &x, &mut data).unwrap();
                (ty, rows, cols, data)
            })
            .collect();
        let inputs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| (0..s.2).map(|_| next()).collect())
            .collect();
        let biases: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| (0..s.1).map(|_| next()).collect())
            .collect();
        for isa in Kernels::available() {
            let k = Kernels::for_isa(isa).unwrap();
            let packs: Vec<Option<Vec<u8>>> = weights
                .iter()
                .map(|(ty, rows, cols, data)| {
                    let len = packed_len(&k, *ty, *rows, *cols)?;
                    let mut p = vec![0u8; len];
                    let w = Weight {
                        ty: *ty,
                        data,
                        rows: *rows,
                        cols: *cols,
                        packed: None,
                    };
                    pack(&k, &w, &mut p);
                    Some(p)
                })
                .collect();
            let ws: Vec<Weight> = weights
                .iter()
                .zip(&packs)
                .map(|((ty, rows, cols, data), p)| Weight {
                    ty: *ty,
                    data,
                    rows: *rows,
                    cols: *cols,
                    packed: p.as_deref(),
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
                matmul(&k, w, &inputs[i], 1, Some(&biases[i]), &mut alone).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&outs[i]),
                    bits(&alone),
                    "{} job {i} ({})",
                    isa.name(),
                    w.ty
                );
                assert!(
                    outs[i].iter().all(|v| v.is_finite()),
                    "{} job {i}",
                    isa.name()
                );
            }
        }
    }
}
