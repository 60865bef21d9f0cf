//! Matrix products of a weight matrix (any block type, rows of `cols` elements) with
//! a batch of activation rows, parallel over weight rows.
//!
//! Weights the path repacks go through its tile kernels ([`TileKernel`]): one tile
//! of rows against groups of tokens, the activations prepared once per product.
//! Other weights go row by row through the path's dot product. Every task owns a
//! range of weight rows and writes its results straight into the token-major output.

use rayon::prelude::*;

use super::tile::token_groups;
use super::{KernelError, Kernels, TileKernel, VecDotFn, act_type};
use crate::quant::GgmlType;

/// A weight matrix: `rows` rows of `cols` elements of type `ty`, row-major, as GGUF
/// stores it (ggml's `ne[0]` = `cols`). `data` is usually a slice of the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct Weight<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// The same rows repacked by [`pack`] for the path's [`TileKernel`], if any:
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

/// Bytes `rows` x `cols` weights of type `ty` take repacked for `k`'s tile kernels,
/// if that path repacks the type.
pub fn packed_len(k: &Kernels, ty: GgmlType, rows: usize, cols: usize) -> Option<usize> {
    let tk = k.tiles(ty, cols)?;
    Some(rows.div_ceil(tk.rows) * (tk.tile_bytes)(cols))
}

/// Repacks `w` (its `data`) for `k`'s tile kernels into `out`, of [`packed_len`]
/// bytes, tiles in parallel. Returns false if the path does not repack `w.ty`.
pub fn pack(k: &Kernels, w: &Weight, out: &mut [u8]) -> bool {
    let Some(tk) = k.tiles(w.ty, w.cols) else {
        return false;
    };
    let tb = (tk.tile_bytes)(w.cols);
    let rb = w.row_bytes();
    assert_eq!(out.len(), w.rows.div_ceil(tk.rows) * tb, "packed length");
    out.par_chunks_mut(tb).enumerate().for_each(|(i, tile)| {
        let r0 = i * tk.rows;
        let nr = (w.rows - r0).min(tk.rows);
        (tk.pack)(w.cols, &w.data[r0 * rb..(r0 + nr) * rb], nr, tile);
    });
    true
}

/// The token-major output `[tokens][rows]` of one product, shared by the tasks that
/// each own a range of its rows.
struct RowsOut {
    ptr: *mut f32,
    rows: usize,
    tokens: usize,
}

// SAFETY: a `RowsOut` is only a pointer to the output slice it was made from, which
// outlives the parallel region; tasks write disjoint elements (see `put`).
unsafe impl Sync for RowsOut {}

impl RowsOut {
    fn new(out: &mut [f32], rows: usize) -> RowsOut {
        assert!(rows > 0 && out.len().is_multiple_of(rows));
        RowsOut {
            ptr: out.as_mut_ptr(),
            rows,
            tokens: out.len() / rows,
        }
    }

    /// Writes `v` (plus `bias[r0..]`) at rows `r0..` of token `t`.
    ///
    /// # Safety
    ///
    /// No other thread may write or read those elements meanwhile: each caller owns
    /// the rows it writes.
    unsafe fn put(&self, t: usize, r0: usize, v: &[f32], bias: Option<&[f32]>) {
        assert!(
            t < self.tokens && r0 + v.len() <= self.rows,
            "output bounds"
        );
        // SAFETY: in bounds (asserted); the caller owns these elements.
        let o =
            unsafe { std::slice::from_raw_parts_mut(self.ptr.add(t * self.rows + r0), v.len()) };
        match bias {
            Some(b) => {
                for ((o, v), b) in o.iter_mut().zip(v).zip(&b[r0..]) {
                    *o = v + b;
                }
            }
            None => o.copy_from_slice(v),
        }
    }
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
/// more than some of the products. Each job's result is what it gives alone.
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
    /// Weights repacked at load: the tile kernel.
    Tiles {
        tk: TileKernel,
        tiles: &'a [u8],
        prepared: Vec<u32>,
    },
    /// The dot product per row; u64 backing keeps the activation blocks aligned.
    Dot {
        dot: VecDotFn,
        act: Vec<u64>,
        len: usize,
    },
}

/// The activations of `n_tokens` rows of `x` in `ty`'s activation type, u64-backed
/// (aligned for every block type), and the bytes of one row.
fn quantize_rows(
    k: &Kernels,
    ty: GgmlType,
    cols: usize,
    x: &[f32],
    n_tokens: usize,
) -> Result<(Vec<u64>, usize), KernelError> {
    let act_ty = act_type(ty);
    let row = act_ty.row_bytes(cols as u64).unwrap_or(0) as usize;
    let quantize = k.quantize_act(act_ty)?;
    let mut buf = vec![0u64; (n_tokens * row).div_ceil(8)];
    let act: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut buf)[..n_tokens * row];
    if n_tokens == 1 {
        quantize(x, act);
    } else if row > 0 {
        act.par_chunks_mut(row)
            .zip(x.par_chunks(cols))
            .for_each(|(a, xr)| quantize(xr, a));
    }
    Ok((buf, row))
}

/// Prepares `n_tokens` activation rows (`act`, rows of `row` bytes) in `tk`'s groups.
/// Returns the prepared words and each group's (first token, tokens, word offset).
fn prepare_groups(
    tk: &TileKernel,
    cols: usize,
    act: &[u8],
    row: usize,
    n_tokens: usize,
) -> (Vec<u32>, Vec<(usize, usize, usize)>) {
    let mut groups = Vec::new();
    let mut total = 0;
    for (t0, n) in token_groups(n_tokens, tk.max_tokens) {
        groups.push((t0, n, total));
        total += (tk.group_words)(cols, n);
    }
    let mut words = vec![0u32; total];
    let mut rest: &mut [u32] = &mut words;
    let mut parts = Vec::new();
    for &(t0, n, _) in &groups {
        let (part, tail) = rest.split_at_mut((tk.group_words)(cols, n));
        parts.push((t0, n, part));
        rest = tail;
    }
    parts.into_par_iter().for_each(|(t0, n, part)| {
        let rows: Vec<&[u8]> = (t0..t0 + n).map(|t| &act[t * row..(t + 1) * row]).collect();
        (tk.prepare)(cols, &rows, part);
    });
    (words, groups)
}

impl<'a> OneToken<'a> {
    fn new(k: &Kernels, w: &Weight<'a>, x: &[f32]) -> Result<OneToken<'a>, KernelError> {
        let kernel = k.kernel(w.ty)?;
        let (act, len) = quantize_rows(k, w.ty, w.cols, x, 1)?;
        if let (Some(tiles), Some(tk)) = (w.packed, k.tiles(w.ty, w.cols)) {
            let bytes = &bytemuck::cast_slice(&act)[..len];
            let mut prepared = vec![0u32; (tk.group_words)(w.cols, 1)];
            (tk.prepare)(w.cols, &[bytes], &mut prepared);
            return Ok(OneToken::Tiles {
                tk,
                tiles,
                prepared,
            });
        }
        Ok(OneToken::Dot {
            dot: kernel.vec_dot,
            act,
            len,
        })
    }

    /// Rows per task: whole tiles for packed weights.
    fn task_rows(&self) -> usize {
        match self {
            OneToken::Tiles { tk, .. } => TASK_ROWS.next_multiple_of(tk.rows),
            OneToken::Dot { .. } => TASK_ROWS,
        }
    }

    /// Rows `r0..r0 + out.len()` of `w` (`r0` a multiple of [`OneToken::task_rows`]).
    fn rows(&self, w: &Weight, r0: usize, out: &mut [f32]) {
        match self {
            OneToken::Tiles {
                tk,
                tiles,
                prepared,
            } => {
                let tb = (tk.tile_bytes)(w.cols);
                let mut lanes = vec![0f32; tk.rows];
                for (i, o) in out.chunks_mut(tk.rows).enumerate() {
                    let t = (r0 / tk.rows) + i;
                    (tk.gemv)(w.cols, &tiles[t * tb..(t + 1) * tb], prepared, &mut lanes);
                    o.copy_from_slice(&lanes[..o.len()]);
                }
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

/// Weight rows per task of a matrix-vector product: enough work to amortise
/// scheduling, small enough that the four cores of a Pi stay busy to the end.
const TASK_ROWS: usize = 32;

/// Weight bytes a batch task keeps in cache while its tokens pass over them, and
/// activation bytes it keeps in flight at once: both inside a Pi 5's 512 KiB L2.
const TASK_WEIGHT_BYTES: usize = 192 * 1024;
const TOKEN_CHUNK_BYTES: usize = 192 * 1024;

/// `out[t * rows + r] = Σ_c w[r][c] · x[t * cols + c] (+ bias[r])` for `n_tokens` rows
/// of `x`. Each weight row is loaded once per chunk of tokens and used for all of them.
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
    let kernel = k.kernel(w.ty)?;
    k.quantize_act(act_type(w.ty))?;
    if n_tokens == 0 || w.rows == 0 {
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
    let (act_buf, row) = quantize_rows(k, w.ty, w.cols, x, n_tokens)?;
    let act: &[u8] = &bytemuck::cast_slice(&act_buf)[..n_tokens * row];
    let out = RowsOut::new(out, w.rows);
    match k.tiles(w.ty, w.cols) {
        Some(tk) => matmul_tiles(&tk, w, act, row, n_tokens, bias, &out),
        None => matmul_rows(kernel.vec_dot, w, act, row, n_tokens, bias, &out),
    }
    Ok(())
}

/// The batch product through tile kernels: tasks of whole tiles; within a task, the
/// tokens in chunks whose prepared activations stay in cache while the task's tiles
/// pass over them. Weights not repacked at load (`--no-mmap`) are packed per task.
fn matmul_tiles(
    tk: &TileKernel,
    w: &Weight,
    act: &[u8],
    row: usize,
    n_tokens: usize,
    bias: Option<&[f32]>,
    out: &RowsOut,
) {
    let (prepared, groups) = prepare_groups(tk, w.cols, act, row, n_tokens);
    let tb = (tk.tile_bytes)(w.cols);
    let task_tiles = (TASK_WEIGHT_BYTES / tb.max(1)).clamp(1, 16);
    let chunk_tokens = (TOKEN_CHUNK_BYTES / row.max(1)).max(tk.max_tokens);
    let n_tiles = w.rows.div_ceil(tk.rows);
    let rb = w.row_bytes();
    (0..n_tiles.div_ceil(task_tiles))
        .into_par_iter()
        .for_each(|task| {
            let tiles = task * task_tiles..((task + 1) * task_tiles).min(n_tiles);
            let mut own = Vec::new();
            let packed: &[u8] = match w.packed {
                Some(p) => &p[tiles.start * tb..tiles.end * tb],
                None => {
                    own.resize(tiles.len() * tb, 0u8);
                    for (i, tile) in own.chunks_exact_mut(tb).enumerate() {
                        let r0 = (tiles.start + i) * tk.rows;
                        let nr = (w.rows - r0).min(tk.rows);
                        (tk.pack)(w.cols, &w.data[r0 * rb..(r0 + nr) * rb], nr, tile);
                    }
                    &own
                }
            };
            let mut local = vec![0f32; tk.max_tokens * tk.rows];
            let mut g0 = 0;
            while g0 < groups.len() {
                // The groups of this chunk of tokens.
                let first = groups[g0].0;
                let mut g1 = g0;
                while g1 < groups.len() && groups[g1].0 - first < chunk_tokens {
                    g1 += 1;
                }
                for (i, tile) in packed.chunks_exact(tb).enumerate() {
                    let r0 = (tiles.start + i) * tk.rows;
                    let nr = (w.rows - r0).min(tk.rows);
                    for &(t0, n, off) in &groups[g0..g1] {
                        let group = &prepared[off..off + (tk.group_words)(w.cols, n)];
                        let o = &mut local[..n * tk.rows];
                        if n == 1 {
                            (tk.gemv)(w.cols, tile, group, o);
                        } else {
                            (tk.gemm)(w.cols, tile, group, n, o);
                        }
                        for (t, v) in o.chunks_exact(tk.rows).enumerate() {
                            // SAFETY: this task owns rows r0..r0 + nr of every token.
                            unsafe { out.put(t0 + t, r0, &v[..nr], bias) };
                        }
                    }
                }
                g0 = g1;
            }
        });
}

/// The batch product without tile kernels: per task of rows (which stay in cache),
/// every token.
fn matmul_rows(
    dot: VecDotFn,
    w: &Weight,
    act: &[u8],
    row: usize,
    n_tokens: usize,
    bias: Option<&[f32]>,
    out: &RowsOut,
) {
    (0..w.rows.div_ceil(TASK_ROWS))
        .into_par_iter()
        .for_each(|task| {
            let rows = (task * TASK_ROWS)..((task + 1) * TASK_ROWS).min(w.rows);
            let mut col = vec![0f32; rows.len()];
            for t in 0..n_tokens {
                let a = &act[t * row..(t + 1) * row];
                for (y, r) in col.iter_mut().zip(rows.clone()) {
                    *y = dot(w.cols, w.row(r), a);
                }
                // SAFETY: this task owns `rows` of every token.
                unsafe { out.put(t, rows.start, &col, bias) };
            }
        });
}
