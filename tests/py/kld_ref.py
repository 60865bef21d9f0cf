#!/usr/bin/env python3
"""An independent check of `phiq perplexity --kl-divergence-base/--kl-divergence` for
tests/kld.rs: the base file read the way llama-perplexity's kl_divergence() reads it
(every size checked), its stored log-probabilities against numpy's log-softmax of the
base model's logits, and every statistic recomputed in float64 from the logits.

    kld_ref.py check BASE.bin LOGITS_BASE.f32 LOGITS_Q.f32 REPORT.json
        LOGITS_*: float32 [positions][n_vocab], the scored positions (second half of
        each chunk) of the base model and of the model under test, in order.
"""
import json
import sys

import numpy as np


def read_base(path):
    """llama-perplexity's reader: magic, header, tokens, then n_chunk blocks of rows."""
    b = open(path, "rb").read()
    assert b[:8] == b"_logits_", "magic"
    n_ctx, n_vocab, n_chunk = (int(v) for v in np.frombuffer(b, "<i4", 3, 8))
    assert n_ctx > 0 and n_vocab > 0 and n_chunk > 0
    tokens = np.frombuffer(b, "<i4", n_ctx * n_chunk, 20)
    nv = 2 * ((n_vocab + 1) // 2) + 4
    per_chunk = n_ctx - 1 - n_ctx // 2
    at = 20 + 4 * n_ctx * n_chunk
    need = at + 2 * nv * per_chunk * n_chunk
    assert len(b) == need, f"{path}: {len(b)} bytes, the header says {need}"
    rows = np.frombuffer(b, "<u2", nv * per_chunk * n_chunk, at).reshape(-1, nv)
    head = rows[:, :4].copy().view("<f4")
    return n_ctx, n_vocab, n_chunk, tokens, head[:, 0], head[:, 1], rows[:, 4:4 + n_vocab]


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def near(got, want, rel, what, absolute=0.0):
    if not abs(got - want) <= rel * abs(want) + absolute:
        sys.exit(f"{what}: phiq {got!r}, numpy {want!r}")


def main():
    cmd, base_path, lb_path, lq_path, report_path = sys.argv[1:]
    assert cmd == "check"
    n_ctx, n_vocab, n_chunk, tokens, scale, min_lp, levels = read_base(base_path)
    first, per = n_ctx // 2, n_ctx - 1 - n_ctx // 2
    lb = np.fromfile(lb_path, "<f4").reshape(-1, n_vocab)
    lq = np.fromfile(lq_path, "<f4").reshape(-1, n_vocab)
    assert lb.shape[0] == lq.shape[0] == per * n_chunk, (lb.shape, lq.shape, per, n_chunk)
    nxt = np.array([tokens[c * n_ctx + first + r + 1] for c in range(n_chunk) for r in range(per)])

    # The stored rows: within one level of the base model's log-probabilities over the
    # top 16 nats, and the offset at the row's floor.
    decoded = scale[:, None].astype(np.float32) * levels.astype(np.float32) + min_lp[:, None]
    exact = log_softmax(lb)
    kept = exact > (exact.max(axis=1, keepdims=True) - 16 + 1e-3)
    err = np.abs(decoded - exact)[kept]
    tol = (scale[:, None] * np.ones_like(decoded))[kept] + 1e-4
    assert (err <= tol).all(), f"stored log-probabilities off by {err.max()}"

    # The statistics, float64 from the logits, base as stored.
    lpq = log_softmax(lq)
    nll = -lpq[np.arange(len(nxt)), nxt]
    nll_base = -decoded[np.arange(len(nxt)), nxt].astype(np.float64)
    pb = np.where(decoded > -16, np.exp(decoded.astype(np.float64)), 0.0)
    kld = (pb * (decoded - lpq)).sum(axis=1)
    p_diff = np.exp(-nll) - np.exp(-nll_base)
    same = (lq.argmax(axis=1) == decoded.argmax(axis=1)).mean()
    n = len(nxt)
    rep = json.load(open(report_path))
    assert rep["count"] == n, (rep["count"], n)
    near(rep["ppl"]["value"], np.exp(nll.mean()), 1e-5, "PPL(Q)")
    near(rep["ppl_base"]["value"], np.exp(nll_base.mean()), 1e-5, "PPL(base)")
    near(rep["ppl"]["uncertainty"], np.exp(nll.mean()) * nll.std(ddof=0) / np.sqrt(n - 1), 1e-3, "PPL uncertainty")
    near(rep["ln_ppl_ratio"]["value"], nll.mean() - nll_base.mean(), 1e-4, "ln PPL ratio", 1e-7)
    near(rep["kld"]["value"], kld.mean(), 1e-4, "mean KLD")
    near(rep["kld"]["uncertainty"], kld.std(ddof=0) / np.sqrt(n - 1), 1e-3, "KLD uncertainty")
    for key, q in [("kld_99_9", 99.9), ("kld_99", 99), ("kld_95", 95), ("kld_90", 90), ("kld_median", 50)]:
        near(rep[key], np.percentile(kld, q), 1e-3, key, 1e-7)
    near(rep["kld_max"], kld.max(), 1e-3, "max KLD")
    near(rep["p_diff"]["value"], p_diff.mean(), 1e-3, "mean Δp", 1e-7)
    near(rep["p_diff_rms"]["value"], np.sqrt((p_diff ** 2).mean()), 1e-3, "RMS Δp", 1e-9)
    near(rep["same_top"]["value"], same, 0, "same top p", 0.5 / n)
    print(f"{n} positions agree: KLD {kld.mean():.6f}, same top {same:.4f}")


if __name__ == "__main__":
    main()
