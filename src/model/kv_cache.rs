//! The key/value cache: per layer, one row of `kv_dim` keys and one of values per
//! position, stored as F32, F16 (default, as llama.cpp) or Q8_0.
//!
//! The rows live in pages of a [`KvPool`]: a page holds `page_len` positions of
//! every layer, keys then values per layer. A session's cache takes pages from its
//! pool as it grows and gives them back when truncated or dropped, so sessions
//! sharing a pool (the server's slots) share one budget of positions instead of
//! each holding a full context. A session of its own (`phiq run`) has a pool of
//! one page of its whole context: its rows are contiguous, as a flat cache's.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::quant::{self, GgmlType};

/// How cached keys and values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    F32,
    F16,
    Q8_0,
}

impl KvType {
    pub fn ggml(self) -> GgmlType {
        match self {
            KvType::F32 => GgmlType::F32,
            KvType::F16 => GgmlType::F16,
            KvType::Q8_0 => GgmlType::Q8_0,
        }
    }

    pub fn from_name(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(KvType::F32),
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of one cached row of `kv_dim` elements; `None` if Q8_0 blocks do not fit.
    pub fn row_bytes(self, kv_dim: usize) -> Option<usize> {
        self.ggml().row_bytes(kv_dim as u64).map(|b| b as usize)
    }
}

/// Cached keys or values of one layer as stored: `row_bytes` per position, of type `ty`.
pub struct CachedRows<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub row_bytes: usize,
}

/// Positions `start..start + len` of one layer, contiguous in one page.
pub struct Run<'a> {
    pub start: usize,
    pub len: usize,
    /// From the run's first key row to the end of the page's key rows.
    pub keys: &'a [u8],
    pub values: &'a [u8],
}

/// Every page of a pool is gone: a session could not grow by `needed` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the KV pool is full: {needed} more position(s) needed, {free} free of {total}")]
pub struct PoolFull {
    pub needed: usize,
    pub free: usize,
    pub total: usize,
}

/// Pages of KV rows shared by the sessions made in it, allocated (and committed)
/// once, plus the f32 rows attention widens a layer's keys and values into: the
/// sessions of one pool run one at a time, so they share that scratch too.
pub struct KvPool {
    pub ty: KvType,
    pub kv_dim: usize,
    pub page_len: usize,
    n_layer: usize,
    row_bytes: usize,
    total: usize,
    free: Mutex<Vec<Box<[u8]>>>,
    scratch: Mutex<Scratch>,
}

/// Attention's f32 rows of one layer: keys (Q8_0 caches) and values.
#[derive(Default)]
pub struct Scratch {
    pub keys: Vec<f32>,
    pub values: Vec<f32>,
}

impl KvPool {
    /// A pool of `tokens` positions (rounded up to whole pages of `page_len`).
    /// Q8_0 needs `kv_dim` to be a multiple of 32 (Phi-2's 2560 is).
    pub fn new(
        ty: KvType,
        n_layer: usize,
        kv_dim: usize,
        tokens: usize,
        page_len: usize,
    ) -> Option<Arc<KvPool>> {
        let row_bytes = ty.row_bytes(kv_dim)?;
        let page_len = page_len.max(1);
        let total = tokens.div_ceil(page_len);
        let page_bytes = 2 * n_layer * page_len * row_bytes;
        let free = (0..total).map(|_| committed(page_bytes)).collect();
        Some(Arc::new(KvPool {
            ty,
            kv_dim,
            page_len,
            n_layer,
            row_bytes,
            total,
            free: Mutex::new(free),
            scratch: Mutex::new(Scratch::default()),
        }))
    }

    /// Positions the pool holds.
    pub fn tokens(&self) -> usize {
        self.total * self.page_len
    }

    /// Positions not taken by any session.
    pub fn free_tokens(&self) -> usize {
        self.pages().len() * self.page_len
    }

    /// Bytes of all pages.
    pub fn bytes(&self) -> usize {
        self.total * self.page_bytes()
    }

    fn page_bytes(&self) -> usize {
        2 * self.n_layer * self.page_len * self.row_bytes
    }

    fn pages(&self) -> MutexGuard<'_, Vec<Box<[u8]>>> {
        // A panic elsewhere cannot leave the list half-changed (push and pop only).
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn scratch(&self) -> MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct KvCache {
    pub ty: KvType,
    pub n_ctx: usize,
    pub kv_dim: usize,
    row_bytes: usize,
    page_len: usize,
    pool: Arc<KvPool>,
    pages: Vec<Box<[u8]>>,
    /// Positions filled.
    pub len: usize,
}

impl KvCache {
    /// A cache with a pool of its own: one page of all `n_ctx` positions.
    pub fn new(ty: KvType, n_layer: usize, n_ctx: usize, kv_dim: usize) -> Option<KvCache> {
        let pool = KvPool::new(ty, n_layer, kv_dim, n_ctx, n_ctx)?;
        Some(KvCache::in_pool(&pool, n_ctx))
    }

    /// A cache of at most `n_ctx` positions whose pages come from `pool`.
    pub fn in_pool(pool: &Arc<KvPool>, n_ctx: usize) -> KvCache {
        KvCache {
            ty: pool.ty,
            n_ctx,
            kv_dim: pool.kv_dim,
            row_bytes: pool.row_bytes,
            page_len: pool.page_len,
            pool: Arc::clone(pool),
            pages: Vec::new(),
            len: 0,
        }
    }

    pub fn pool(&self) -> &Arc<KvPool> {
        &self.pool
    }

    pub fn page_len(&self) -> usize {
        self.page_len
    }

    /// Bytes of the pages this cache holds.
    pub fn bytes(&self) -> usize {
        self.pages.len() * self.pool.page_bytes()
    }

    /// Takes pages from the pool until `n` positions fit; on failure takes none.
    pub fn reserve(&mut self, n: usize) -> Result<(), PoolFull> {
        let want = n.div_ceil(self.page_len).saturating_sub(self.pages.len());
        if want == 0 {
            return Ok(());
        }
        let mut free = self.pool.pages();
        if free.len() < want {
            return Err(PoolFull {
                needed: n - self.pages.len() * self.page_len,
                free: free.len() * self.page_len,
                total: self.pool.tokens(),
            });
        }
        let at = free.len() - want;
        self.pages.extend(free.drain(at..));
        Ok(())
    }

    /// Keeps the first `n` positions and returns the pages past them to the pool.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
        let keep = self.len.div_ceil(self.page_len);
        if self.pages.len() > keep {
            self.pool.pages().extend(self.pages.drain(keep..));
        }
    }

    /// Offset of the key (`which` 0) or value (1) row of `pos` within its page.
    fn offset(&self, layer: usize, which: usize, pos: usize) -> usize {
        ((2 * layer + which) * self.page_len + pos % self.page_len) * self.row_bytes
    }

    /// Stores the key and value rows of position `pos` in `layer`; its page must
    /// have been reserved.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let rb = self.row_bytes;
        let (ko, vo) = (self.offset(layer, 0, pos), self.offset(layer, 1, pos));
        let ty = self.ty;
        let page = &mut self.pages[pos / self.page_len];
        encode(ty, k, &mut page[ko..ko + rb]);
        encode(ty, v, &mut page[vo..vo + rb]);
    }

    /// Positions `0..n` of `layer`, page by page.
    pub fn runs(&self, layer: usize, n: usize) -> impl Iterator<Item = Run<'_>> {
        let (pl, rb) = (self.page_len, self.row_bytes);
        self.pages[..n.div_ceil(pl)]
            .iter()
            .enumerate()
            .map(move |(i, page)| {
                let (ko, vo) = (self.offset(layer, 0, 0), self.offset(layer, 1, 0));
                Run {
                    start: i * pl,
                    len: pl.min(n - i * pl),
                    keys: &page[ko..ko + pl * rb],
                    values: &page[vo..vo + pl * rb],
                }
            })
    }

    /// Whether the kernel table can dot f32 queries with the stored key rows (F32,
    /// F16); a Q8_0 cache's keys are widened to f32 first.
    pub fn keys_direct(&self) -> bool {
        matches!(self.ty, KvType::F32 | KvType::F16)
    }

    /// Keys of positions `0..n` of `layer` as f32 rows.
    pub fn keys(&self, layer: usize, n: usize, out: &mut Vec<f32>) {
        self.read(layer, n, |r| r.keys, out);
    }

    /// Values of positions `0..n` of `layer` as f32 rows.
    pub fn values(&self, layer: usize, n: usize, out: &mut Vec<f32>) {
        self.read(layer, n, |r| r.values, out);
    }

    fn read<'a>(
        &'a self,
        layer: usize,
        n: usize,
        rows: impl Fn(&Run<'a>) -> &'a [u8],
        out: &mut Vec<f32>,
    ) {
        out.resize(n * self.kv_dim, 0.0);
        let rb = self.row_bytes;
        let ty = self.ty.ggml();
        for run in self.runs(layer, n) {
            let o = &mut out[run.start * self.kv_dim..(run.start + run.len) * self.kv_dim];
            for (o, r) in o
                .chunks_exact_mut(self.kv_dim)
                .zip(rows(&run).chunks_exact(rb))
            {
                // Same sizes as at construction: cannot fail.
                let _ = quant::dequantize_row(ty, r, o);
            }
        }
    }
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

/// A zeroed buffer whose pages are really allocated now: a fresh allocation is mapped
/// lazily, so a cache too big for the machine would otherwise fail mid-conversation
/// (the OOM killer) instead of at start, and the memory a run reports would be a lie.
fn committed(len: usize) -> Box<[u8]> {
    let mut v = vec![0u8; len];
    // Without the barrier the compiler may drop zero stores into zeroed memory.
    std::hint::black_box(&mut v);
    v.fill(0);
    v.into_boxed_slice()
}

/// Stores activations as ggml's cache does: no refusal of values F16 cannot hold
/// (they become infinite, as in llama.cpp), unlike the checked weight quantizers.
fn encode(ty: KvType, x: &[f32], out: &mut [u8]) {
    match ty {
        KvType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        KvType::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        KvType::Q8_0 => quant::with_blocks_mut(out, |b| quant::quantize_row_q8_0_ref(x, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_share_the_pool_and_return_pages() {
        let pool = KvPool::new(KvType::F32, 2, 4, 10, 4).unwrap();
        assert_eq!(pool.tokens(), 12);
        let mut a = KvCache::in_pool(&pool, 12);
        let mut b = KvCache::in_pool(&pool, 12);
        a.reserve(5).unwrap();
        assert_eq!(pool.free_tokens(), 4);
        let full = b.reserve(8).unwrap_err();
        assert_eq!((full.needed, full.free, full.total), (8, 4, 12));
        assert_eq!(pool.free_tokens(), 4, "a failed reserve takes nothing");
        b.reserve(4).unwrap();
        a.len = 5;
        a.truncate(4);
        assert_eq!(pool.free_tokens(), 4);
        drop(a);
        assert_eq!(pool.free_tokens(), 8);
    }

    #[test]
    fn rows_read_back_across_pages() {
        let pool = KvPool::new(KvType::F32, 2, 4, 12, 4).unwrap();
        let mut c = KvCache::in_pool(&pool, 12);
        c.reserve(10).unwrap();
        for p in 0..10 {
            let k: Vec<f32> = (0..4).map(|e| (p * 10 + e) as f32).collect();
            let v: Vec<f32> = k.iter().map(|x| -x).collect();
            c.store(1, p, &k, &v);
        }
        let (mut k, mut v) = (Vec::new(), Vec::new());
        c.keys(1, 10, &mut k);
        c.values(1, 10, &mut v);
        for p in 0..10 {
            for e in 0..4 {
                assert_eq!(k[p * 4 + e], (p * 10 + e) as f32);
                assert_eq!(v[p * 4 + e], -((p * 10 + e) as f32));
            }
        }
        let runs: Vec<(usize, usize)> = c.runs(1, 10).map(|r| (r.start, r.len)).collect();
        assert_eq!(runs, [(0, 4), (4, 4), (8, 2)]);
    }
}
