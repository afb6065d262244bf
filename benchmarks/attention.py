"""Attention speed: lmcore's weights-returning path vs PyTorch's fused kernel, and the explorer.

    python benchmarks/attention.py      -> one JSON line

scratch_ms: forward + backward of lmcore.attention.scaled_dot_product_attention (the path
that also returns the (B, H, T, S) weights); sdpa_ms: the same for
torch.nn.functional.scaled_dot_product_attention; both at batch 8, heads 4, seq 256, d 32,
float32, interleaved repetitions (each alternately first, garbage collector off) after a
warm-up, medians. small_us / small_sdpa_us: one forward call at (1, 4, 8, 16) with a causal
mask, lmcore's fused path (argument checks + the same kernel) vs the bare PyTorch call: the
Python cost of the checks. explorer_ms: median recompute time of lmcore.viz.AttentionExplorer for a
32-token sentence (a 2-layer, 4-head toy model).
Not a timed test: numbers depend on the machine and its load.
"""
import gc
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from lmcore.attention import (
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)
from lmcore.viz import attention_explorer


def interleaved(runs, reps, before=lambda: None):
    """Median seconds of each ``(name, fn)``: runs interleaved (same load for all, each
    alternately first), after a warm-up, with the garbage collector off (as timeit does)."""
    times = {name: [] for name, _ in runs}
    for _ in range(5):                                   # warm-up
        for _, fn in runs:
            before()
            fn()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps):
            for name, fn in runs[::1 if i % 2 else -1]:
                before()
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(t) for name, t in times.items()}


def attention_times(B=8, H=4, T=256, d=32, reps=40):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, d, generator=g, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, d, generator=g)

    def scratch():
        out, _ = scaled_dot_product_attention(q, k, v)
        out.backward(grad)

    def sdpa():
        F.scaled_dot_product_attention(q, k, v).backward(grad)

    def clear():
        q.grad = k.grad = v.grad = None

    t = interleaved([("scratch", scratch), ("sdpa", sdpa)], reps, clear)
    return {name: s * 1e3 for name, s in t.items()}


def small_call_times(reps=2000):
    """Microseconds per call at a tiny shape (1, 4, 8, 16) with a causal mask, where the
    Python cost of lmcore's argument checks shows: lmcore's fused path (checks + the
    same kernel) vs calling F.scaled_dot_product_attention directly."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 8, 16, generator=g) for _ in range(3))
    mask = causal_mask(8)

    def ours():
        scaled_dot_product_attention(q, k, v, mask, need_weights=False)

    def theirs():
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    t = interleaved([("ours", ours), ("theirs", theirs)], reps)
    return {name: s * 1e6 for name, s in t.items()}


def explorer_time(reps=15):
    torch.manual_seed(0)
    embed = torch.nn.Embedding(1000, 64)
    layers = [MultiHeadAttention(64, 4).eval() for _ in range(2)]

    def attend(tokens, causal, scale):
        x = embed(torch.tensor([sum(map(ord, t)) % 1000 for t in tokens]))[None]
        weights = []
        for mha in layers:
            y, w = mha(x, is_causal=causal, need_weights=True)
            x = x + y
            weights.append(w)
        return weights

    explorer = attention_explorer(attend, " ".join(f"token{i}" for i in range(32)))
    times = []
    for i in range(reps):
        explorer.causal.value = bool(i % 2)              # each change triggers a recompute
        times.append(explorer.last_ms)
    assert explorer.weights.shape == (2, 4, 32, 32)
    return statistics.median(times)


if __name__ == "__main__":
    t = attention_times()
    small = small_call_times()
    result = {"scratch_ms": round(t["scratch"], 2), "sdpa_ms": round(t["sdpa"], 2),
              "ratio": round(t["scratch"] / t["sdpa"], 2),
              "small_us": round(small["ours"], 1), "small_sdpa_us": round(small["theirs"], 1),
              "small_ratio": round(small["ours"] / small["theirs"], 2),
              "explorer_ms": round(explorer_time(), 2),
              "shape": "B8 H4 T256 d32 fwd+bwd float32", "threads": torch.get_num_threads(),
              "loadavg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))
