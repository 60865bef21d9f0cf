//! `y += Σ_k a[k]·x_k` over f32 rows: the LoRA merge's low-rank update (`W += B·A`,
//! a row of `W` gaining `r` scaled rows of `A`). One body for every SIMD path, over
//! the path's f32 vector ([`F32Vector`]); the path picks the width.
//!
//! Each block of `y` is loaded once, gains its `r` products in registers (one fused
//! multiply-add each, in `k` order) and is stored once: `r` axpys would load and
//! store it `r` times, and the merge is bound by those loads and stores.

/// An instruction set's f32 vector.
///
/// # Safety
///
/// Implementors are zero-sized proofs that the running CPU has the instructions
/// their methods use: a value must be constructible only after detecting them.
pub(crate) unsafe trait F32Vector: Copy {
    type V: Copy;
    const LANES: usize;
    /// # Safety
    /// `p` is valid for `LANES` reads (any alignment).
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` is valid for `LANES` writes (any alignment).
    unsafe fn store(self, p: *mut f32, v: Self::V);
    fn splat(self, a: f32) -> Self::V;
    /// `y + a·x`, rounded once.
    fn mul_add(self, a: Self::V, x: Self::V, y: Self::V) -> Self::V;
}

/// Vectors of `y` per register block: 4 accumulators keep both FMA ports busy
/// while each `x` vector is loaded once.
const UNROLL: usize = 4;

/// `y += Σ_k a[k]·x[k·stride..][..y.len()]` (see [`super::AxpyRowsFn`]).
#[inline(always)]
pub(crate) fn axpy_rows<S: F32Vector>(s: S, a: &[f32], x: &[f32], stride: usize, y: &mut [f32]) {
    super::check_axpy_rows(a.len(), x.len(), stride, y.len());
    let n = y.len();
    let mut j = 0;
    while j + UNROLL * S::LANES <= n {
        block::<S, UNROLL>(s, a, x, stride, y, j);
        j += UNROLL * S::LANES;
    }
    while j + S::LANES <= n {
        block::<S, 1>(s, a, x, stride, y, j);
        j += S::LANES;
    }
    for (i, y) in y.iter_mut().enumerate().skip(j) {
        for (k, &ak) in a.iter().enumerate() {
            *y = ak.mul_add(x[k * stride + i], *y);
        }
    }
}

/// [`axpy_rows`] on the `U` vectors of `y` from element `j`.
#[inline(always)]
fn block<S: F32Vector, const U: usize>(
    s: S,
    a: &[f32],
    x: &[f32],
    stride: usize,
    y: &mut [f32],
    j: usize,
) {
    debug_assert!(j + U * S::LANES <= y.len());
    // SAFETY: j + U·LANES <= y.len() (the callers' loop bounds), and
    // `check_axpy_rows` found (a.len() - 1)·stride + y.len() <= x.len(), so row k's
    // elements j..j + U·LANES lie inside `x` for every k < a.len().
    unsafe {
        let yp = y.as_mut_ptr().add(j);
        let mut acc: [S::V; U] = core::array::from_fn(|u| s.load(yp.add(u * S::LANES)));
        for (k, &ak) in a.iter().enumerate() {
            let va = s.splat(ak);
            let xp = x.as_ptr().add(k * stride + j);
            for (u, acc) in acc.iter_mut().enumerate() {
                *acc = s.mul_add(va, s.load(xp.add(u * S::LANES)), *acc);
            }
        }
        for (u, acc) in acc.iter().enumerate() {
            s.store(yp.add(u * S::LANES), *acc);
        }
    }
}
