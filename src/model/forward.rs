//! The forward pass: a batch of new tokens in, logits out, the KV cache extended.
//!
//! Per layer, as HF's `PhiDecoderLayer`: one LayerNorm feeds attention and MLP in
//! parallel, and `h = h + attn(n) + mlp(n)`.

use rayon::prelude::*;

use std::sync::Arc;

use super::kv_cache::{KvCache, KvPool, KvType, Run};
use super::ops::{Rope, gelu_new, layer_norm, softmax};
use super::{Linear, Model, ModelError, Qkv, Result};
use crate::kernels::matmul::{MatJob, matmul, matvec_many};
use crate::quant;

/// Which logits a call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, tests).
    All,
}

/// A point of the forward pass an observer can read ([`Session::eval_observed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tap {
    /// Hidden state `i` in HF's `output_hidden_states` order (see [`Session::eval_with`]).
    Hidden(usize),
    /// The rows (`[t][columns]`) that layer `layer`'s `product` multiplies.
    Input { layer: usize, product: Product },
    /// The rows the output projection multiplies: the final LayerNorm of the tokens
    /// whose logits are computed.
    OutputInput,
}

/// A layer's products, by the input they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// q, k, v (or the fused qkv) and ffn_up: all read the attention LayerNorm's output.
    QkvUp,
    /// attn_output reads the attention's result.
    AttnOutput,
    /// ffn_down reads gelu(ffn_up).
    FfnDown,
}

/// A conversation with the model: its KV cache and position.
pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    rope: Rope,
}

impl<'m> Session<'m> {
    pub(super) fn new(model: &'m Model, n_ctx: usize, kv: KvType) -> Result<Session<'m>> {
        let hp = &model.hp;
        let cache =
            KvCache::new(kv, hp.n_layer, n_ctx, hp.kv_dim()).ok_or(ModelError::KvType(kv))?;
        Ok(Session::with_cache(model, cache))
    }

    pub(super) fn in_pool(model: &'m Model, pool: &Arc<KvPool>, n_ctx: usize) -> Session<'m> {
        Session::with_cache(model, KvCache::in_pool(pool, n_ctx))
    }

    fn with_cache(model: &'m Model, cache: KvCache) -> Session<'m> {
        Session {
            model,
            cache,
            rope: Rope::new(model.hp.n_rot, model.hp.rope_base),
        }
    }

    /// The model this session runs.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.cache.len
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx
    }

    /// Bytes of KV pages the session holds (its whole cache for a session of its own).
    pub fn cache_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// Forgets everything after the first `n` tokens (a new turn, a reset); pages
    /// no longer needed go back to the pool.
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
    }

    /// Takes the KV pages `n` positions need from the pool now (a forward pass
    /// takes them itself; this lets a caller sharing a pool decide what to do when
    /// it is full before a batch starts). Fails for more than the session's `n_ctx`.
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if n > self.cache.n_ctx {
            return Err(ModelError::ContextFull {
                needed: n,
                n_ctx: self.cache.n_ctx,
            });
        }
        Ok(self.cache.reserve(n)?)
    }

    /// Feeds `tokens` after what the cache holds and returns logits (`[t][n_vocab]`
    /// for `Logits::All`, `[n_vocab]` for `Logits::Last`).
    pub fn eval(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        self.eval_with(tokens, want, &mut |_, _| {})
    }

    /// As [`Session::eval`], also handing each hidden state to `hidden(index, [t][n_embd])`:
    /// index 0 is the embeddings, `i` the output of layer `i - 1`, `n_layer + 1` the
    /// final LayerNorm's output (HF's `output_hidden_states` order).
    pub fn eval_with(
        &mut self,
        tokens: &[u32],
        want: Logits,
        hidden: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<f32>> {
        self.eval_observed(tokens, want, &mut |tap, x| {
            if let Tap::Hidden(i) = tap {
                hidden(i, x)
            }
        })
    }

    /// As [`Session::eval`], also handing `tap` every hidden state and every
    /// product's input rows (an importance matrix is made from these).
    pub fn eval_observed(
        &mut self,
        tokens: &[u32],
        want: Logits,
        tap: &mut dyn FnMut(Tap, &[f32]),
    ) -> Result<Vec<f32>> {
        let hp = &self.model.hp;
        let needed = self.cache.len + tokens.len();
        self.reserve(needed)?;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let m = self.model;
        let mut h = m.embed(tokens)?;
        tap(Tap::Hidden(0), &h);
        let t = tokens.len();
        let mut n = vec![0f32; t * hp.n_embd];
        let mut parts = [Part { s: self, t }];
        for layer in 0..hp.n_layer {
            m.layer(layer, &mut parts, &mut h, &mut n, tap)?;
            tap(Tap::Hidden(layer + 1), &h);
        }
        self.cache.len = needed;
        let rows: Vec<usize> = match want {
            Logits::All => (0..t).collect(),
            Logits::Last => vec![t - 1],
        };
        m.logits(&h, &rows, &mut |normed| {
            if want == Logits::All {
                tap(Tap::Hidden(hp.n_layer + 1), normed);
            }
            tap(Tap::OutputInput, normed);
        })
    }
}

/// One session's tokens inside a batch: `t` consecutive rows.
struct Part<'a, 'm> {
    s: &'a mut Session<'m>,
    t: usize,
}

impl Model {
    /// One new token for each of several sessions, in one forward pass: every
    /// product reads its weights once for all of them (continuous batching), while
    /// each token attends over its own session's cache. Returns the logits,
    /// `[sessions.len()][n_vocab]`; each session's result equals what
    /// [`Session::eval`] gives for that token alone up to the products' summation
    /// order for `t` rows instead of one.
    pub fn decode_batch(
        &self,
        sessions: &mut [&mut Session<'_>],
        tokens: &[u32],
    ) -> Result<Vec<f32>> {
        assert_eq!(sessions.len(), tokens.len(), "one token per session");
        let mut parts: Vec<(&mut Session, &[u32])> = sessions
            .iter_mut()
            .zip(tokens.chunks(1))
            .map(|(s, t)| (&mut **s, t))
            .collect();
        self.forward_batch(&mut parts)
    }

    /// Several sessions' new tokens in one forward pass (a prompt chunk of one, the
    /// next token of others: the server's step): the products read every weight
    /// once for all the rows. Returns the logits of each part's last token,
    /// `[parts.len()][n_vocab]`. Every session is checked, and its KV pages taken,
    /// before any work: on an error no cache has changed.
    pub fn forward_batch(&self, parts: &mut [(&mut Session<'_>, &[u32])]) -> Result<Vec<f32>> {
        let hp = &self.hp;
        for (s, t) in parts.iter_mut() {
            assert!(std::ptr::eq(s.model, self), "a session of another model");
            assert!(!t.is_empty(), "a part without tokens");
            let needed = s.cache.len + t.len();
            s.reserve(needed)?;
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<u32> = parts.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let mut h = self.embed(&tokens)?;
        let mut n = vec![0f32; tokens.len() * hp.n_embd];
        let mut rows = Vec::with_capacity(parts.len());
        let mut batch: Vec<Part> = parts
            .iter_mut()
            .map(|(s, t)| {
                rows.push(rows.last().map_or(0, |r| r + 1) + t.len() - 1);
                Part { s, t: t.len() }
            })
            .collect();
        for layer in 0..hp.n_layer {
            self.layer(layer, &mut batch, &mut h, &mut n, &mut |_, _| {})?;
        }
        for p in batch {
            p.s.cache.len += p.t;
        }
        self.logits(&h, &rows, &mut |_| {})
    }

    /// The output LayerNorm and logits of the hidden states' `rows`.
    fn logits(
        &self,
        h: &[f32],
        rows: &[usize],
        normed_out: &mut dyn FnMut(&[f32]),
    ) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let mut normed = vec![0f32; rows.len() * hp.n_embd];
        for (o, &r) in normed.chunks_exact_mut(hp.n_embd).zip(rows) {
            let x = &h[r * hp.n_embd..(r + 1) * hp.n_embd];
            layer_norm(x, &self.output_norm.w, &self.output_norm.b, hp.eps, o);
        }
        normed_out(&normed);
        let mut logits = vec![0f32; rows.len() * hp.n_vocab];
        self.linear(&self.output, &normed, rows.len(), &mut logits)?;
        Ok(logits)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = self;
        let d = m.hp.n_embd;
        let w = m.weight(&m.token_embd);
        let rb = w.row_bytes();
        let mut h = vec![0f32; tokens.len() * d];
        for (row, &id) in h.chunks_exact_mut(d).zip(tokens) {
            if id as usize >= m.hp.n_vocab {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    n_vocab: m.hp.n_vocab,
                });
            }
            let at = id as usize * rb;
            quant::dequantize_row(w.ty, &w.data[at..at + rb], row).map_err(|_| {
                ModelError::TokenOutOfRange {
                    id,
                    n_vocab: m.hp.n_vocab,
                }
            })?;
        }
        Ok(h)
    }

    fn linear(&self, l: &Linear, x: &[f32], t: usize, out: &mut [f32]) -> Result<()> {
        self.products(t, &mut [(l, x, out)])
    }

    /// Independent products `out = x·Wᵀ + b` of `t` tokens each. One token runs them
    /// in one parallel region (see [`matvec_many`]); a batch runs them one by one,
    /// each big enough to keep every core busy.
    fn products(&self, t: usize, jobs: &mut [(&Linear, &[f32], &mut [f32])]) -> Result<()> {
        let m = self;
        if t == 1 {
            let mut many: Vec<MatJob> = jobs
                .iter_mut()
                .map(|(l, x, out)| MatJob {
                    w: m.weight(&l.w),
                    x,
                    bias: Some(&l.b),
                    out,
                })
                .collect();
            matvec_many(m.kernels, &mut many)?;
            return Ok(());
        }
        for (l, x, out) in jobs.iter_mut() {
            matmul(m.kernels, &m.weight(&l.w), x, t, Some(&l.b), out)?;
        }
        Ok(())
    }

    /// One layer, as HF's `PhiDecoderLayer`: the normed input feeds attention and
    /// MLP in parallel. Products with the same input run together (q, k, v, up), then
    /// the two with independent inputs (attention output, down).
    fn layer(
        &self,
        i: usize,
        parts: &mut [Part],
        h: &mut [f32],
        n: &mut [f32],
        tap: &mut dyn FnMut(Tap, &[f32]),
    ) -> Result<()> {
        let m = self;
        let hp = &m.hp;
        let (d, kv, hd) = (hp.n_embd, hp.kv_dim(), hp.head_dim);
        let layer = &m.layers[i];
        for (o, x) in n.chunks_exact_mut(d).zip(h.chunks_exact(d)) {
            layer_norm(x, &layer.attn_norm.w, &layer.attn_norm.b, hp.eps, o);
        }
        let input = |product| Tap::Input { layer: i, product };
        tap(input(Product::QkvUp), n);
        let t: usize = parts.iter().map(|p| p.t).sum();
        let (mut q, mut k, mut v) = (vec![0f32; t * d], vec![0f32; t * kv], vec![0f32; t * kv]);
        let mut up = vec![0f32; t * hp.n_ff];
        match &layer.qkv {
            Qkv::Split {
                q: lq,
                k: lk,
                v: lv,
            } => self.products(
                t,
                &mut [
                    (lq, n, &mut q),
                    (lk, n, &mut k),
                    (lv, n, &mut v),
                    (&layer.ffn_up, n, &mut up),
                ],
            )?,
            Qkv::Fused(l) => {
                let w = d + 2 * kv;
                let mut all = vec![0f32; t * w];
                self.products(t, &mut [(l, n, &mut all), (&layer.ffn_up, n, &mut up)])?;
                for (r, row) in all.chunks_exact(w).enumerate() {
                    q[r * d..(r + 1) * d].copy_from_slice(&row[..d]);
                    k[r * kv..(r + 1) * kv].copy_from_slice(&row[d..d + kv]);
                    v[r * kv..(r + 1) * kv].copy_from_slice(&row[d + kv..]);
                }
            }
        }
        let mut o = vec![0f32; t * d];
        let mut row = 0;
        for p in parts.iter_mut() {
            let s = &mut *p.s;
            let past = s.cache.len;
            for j in row..row + p.t {
                let pos = past + j - row;
                s.rope.apply(&mut q[j * d..(j + 1) * d], hd, pos);
                s.rope.apply(&mut k[j * kv..(j + 1) * kv], hd, pos);
                s.cache
                    .store(i, pos, &k[j * kv..(j + 1) * kv], &v[j * kv..(j + 1) * kv]);
            }
            let rows = row * d..(row + p.t) * d;
            s.attend(i, past, past + p.t, &q[rows.clone()], &mut o[rows])?;
            row += p.t;
        }
        gelu_new(&mut up);
        tap(input(Product::AttnOutput), &o);
        tap(input(Product::FfnDown), &up);
        let (mut attn, mut mlp) = (vec![0f32; t * d], vec![0f32; t * d]);
        self.products(
            t,
            &mut [
                (&layer.attn_output, &o, &mut attn),
                (&layer.ffn_down, &up, &mut mlp),
            ],
        )?;
        for ((h, a), f) in h.iter_mut().zip(&attn).zip(&mlp) {
            *h += a + f;
        }
        Ok(())
    }
}

impl Session<'_> {
    /// Causal attention of the batch's queries `q` (`[t][n_embd]`, after RoPE) over
    /// the cache's first `total` positions, into `o`, page run by page run. An F16
    /// cache is read as stored where the kernel table has
    /// [`AttnF16`](crate::kernels::AttnF16) kernels for the head size; otherwise
    /// scores are dotted straight off the cached key rows with the table's row dot
    /// (F32/F16 caches; a Q8_0 cache is widened to f32 first) and values are
    /// widened to f32 once per layer, into the pool's scratch.
    fn attend(
        &mut self,
        i: usize,
        past: usize,
        total: usize,
        q: &[f32],
        o: &mut [f32],
    ) -> Result<()> {
        let m = self.model;
        let hp = &m.hp;
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let group = hp.n_head / hp.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let runs: Vec<Run> = self.cache.runs(i, total).collect();
        let attn_f16 = m.kernels.attn_f16.filter(|a| a.head_dims.contains(&hd));
        if let (Some(a), KvType::F16) = (attn_f16, self.cache.ty) {
            let rb = self.cache.kv_dim * 2;
            o.par_chunks_mut(hd).enumerate().for_each_init(
                || (Vec::new(), vec![0f32; hd]),
                |(scores, part), (j, out)| {
                    let (t, head) = (j / hp.n_head, j % hp.n_head);
                    let at = head / group * hd * 2;
                    let visible = past + t + 1;
                    scores.resize(visible, 0.0);
                    let qh = &q[t * d + head * hd..t * d + (head + 1) * hd];
                    for r in visible_runs(&runs, visible) {
                        let s = &mut scores[r.start..r.start + r.len];
                        (a.scores)(qh, &r.keys[at..], rb, s);
                    }
                    scores.iter_mut().for_each(|s| *s *= scale);
                    softmax(scores);
                    out.fill(0.0);
                    for r in visible_runs(&runs, visible) {
                        let w = &scores[r.start..r.start + r.len];
                        (a.values)(w, &r.values[at..], rb, part);
                        out.iter_mut().zip(&*part).for_each(|(o, p)| *o += p);
                    }
                },
            );
            return Ok(());
        }
        let pool = Arc::clone(self.cache.pool());
        let mut scratch = pool.scratch();
        let scratch = &mut *scratch;
        let kv = self.cache.kv_dim;
        let (key_ty, key_rb) = if self.cache.keys_direct() {
            let ty = self.cache.ty.ggml();
            (ty, ty.row_bytes(kv as u64).unwrap_or(0) as usize)
        } else {
            self.cache.keys(i, total, &mut scratch.keys);
            (quant::GgmlType::F32, 4 * kv)
        };
        let direct = self.cache.keys_direct();
        let page_len = self.cache.page_len();
        let widened: &[u8] = bytemuck::cast_slice(&scratch.keys);
        // The bytes of position `p`'s key row.
        let key_row = |p: usize| -> &[u8] {
            if direct {
                let r = &runs[p / page_len];
                &r.keys[(p - r.start) * key_rb..]
            } else {
                &widened[p * key_rb..]
            }
        };
        let dot = m.kernels.vec_dot(key_ty)?;
        let es = key_ty.row_bytes(1).unwrap_or(4) as usize;
        self.cache.values(i, total, &mut scratch.values);
        let values = &scratch.values;
        let axpy = m.kernels.axpy;
        // One task per (token, head): each reads its own q slice and writes its own
        // output slice; the score buffer is reused within a thread.
        o.par_chunks_mut(hd)
            .enumerate()
            .for_each_init(Vec::new, |scores, (j, out)| {
                let (t, head) = (j / hp.n_head, j % hp.n_head);
                let g = head / group;
                let qh: &[u8] =
                    bytemuck::cast_slice(&q[t * d + head * hd..t * d + (head + 1) * hd]);
                let visible = past + t + 1;
                scores.clear();
                scores.extend((0..visible).map(|p| {
                    let at = g * hd * es;
                    dot(hd, &key_row(p)[at..at + hd * es], qh) * scale
                }));
                softmax(scores);
                out.fill(0.0);
                for (p, &w) in scores.iter().enumerate() {
                    axpy(w, &values[p * kv + g * hd..p * kv + (g + 1) * hd], out);
                }
            });
        Ok(())
    }
}

/// The runs' positions below `visible` (a token sees itself and what precedes it).
fn visible_runs<'r, 'a>(runs: &'r [Run<'a>], visible: usize) -> impl Iterator<Item = Run<'a>> + 'r {
    runs.iter()
        .take_while(move |r| r.start < visible)
        .map(move |r| Run {
            start: r.start,
            len: r.len.min(visible - r.start),
            keys: r.keys,
            values: r.values,
        })
}
