//! The key/value cache: per layer, one row of `kv_dim` keys and one of values per
//! position, stored as F32, F16 (default, as llama.cpp) or Q8_0.

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

pub struct KvCache {
    pub ty: KvType,
    pub n_ctx: usize,
    pub kv_dim: usize,
    row_bytes: usize,
    /// Per layer: `n_ctx` rows of keys, then `n_ctx` rows of values.
    layers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Positions filled.
    pub len: usize,
}

impl KvCache {
    /// Allocates the cache. Q8_0 needs `kv_dim` to be a multiple of 32 (Phi-2's 2560 is).
    pub fn new(ty: KvType, n_layer: usize, n_ctx: usize, kv_dim: usize) -> Option<KvCache> {
        let row_bytes = ty.row_bytes(kv_dim)?;
        let layers = (0..n_layer)
            .map(|_| (committed(n_ctx * row_bytes), committed(n_ctx * row_bytes)))
            .collect();
        Some(KvCache {
            ty,
            n_ctx,
            kv_dim,
            row_bytes,
            layers,
            len: 0,
        })
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> usize {
        self.layers.len() * 2 * self.n_ctx * self.row_bytes
    }

    /// Stores the key and value rows of position `pos` in `layer`.
    pub fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let rb = self.row_bytes;
        let ty = self.ty;
        let (ks, vs) = &mut self.layers[layer];
        encode(ty, k, &mut ks[pos * rb..(pos + 1) * rb]);
        encode(ty, v, &mut vs[pos * rb..(pos + 1) * rb]);
    }

    /// The cached key rows of positions `0..n` of `layer` as stored, when the kernel
    /// table can dot f32 queries with them directly (F32, F16); `None` for Q8_0.
    pub fn key_rows(&self, layer: usize, n: usize) -> Option<CachedRows<'_>> {
        match self.ty {
            KvType::F32 | KvType::F16 => Some(CachedRows {
                ty: self.ty.ggml(),
                data: &self.layers[layer].0[..n * self.row_bytes],
                row_bytes: self.row_bytes,
            }),
            KvType::Q8_0 => None,
        }
    }

    /// The cached value rows of positions `0..n` of `layer` as stored, for an F16
    /// cache (what [`AttnF16`](crate::kernels::AttnF16) reads); `None` otherwise.
    pub fn f16_value_rows(&self, layer: usize, n: usize) -> Option<CachedRows<'_>> {
        (self.ty == KvType::F16).then(|| CachedRows {
            ty: GgmlType::F16,
            data: &self.layers[layer].1[..n * self.row_bytes],
            row_bytes: self.row_bytes,
        })
    }

    /// Keys of positions `0..n` of `layer` as f32 rows.
    pub fn keys(&self, layer: usize, n: usize, out: &mut Vec<f32>) {
        self.read(&self.layers[layer].0, n, out);
    }

    /// Values of positions `0..n` of `layer` as f32 rows.
    pub fn values(&self, layer: usize, n: usize, out: &mut Vec<f32>) {
        self.read(&self.layers[layer].1, n, out);
    }

    fn read(&self, rows: &[u8], n: usize, out: &mut Vec<f32>) {
        out.resize(n * self.kv_dim, 0.0);
        let rb = self.row_bytes;
        let ty = self.ty.ggml();
        for (o, r) in out
            .chunks_exact_mut(self.kv_dim)
            .zip(rows[..n * rb].chunks_exact(rb))
        {
            // Same sizes as at construction: cannot fail.
            let _ = quant::dequantize_row(ty, r, o);
        }
    }
}

/// A zeroed buffer whose pages are really allocated now: a fresh allocation is mapped
/// lazily, so a cache too big for the machine would otherwise fail mid-conversation
/// (the OOM killer) instead of at start, and the memory a run reports would be a lie.
fn committed(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // Without the barrier the compiler may drop zero stores into zeroed memory.
    std::hint::black_box(&mut v);
    v.fill(0);
    v
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
