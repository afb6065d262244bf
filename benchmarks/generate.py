"""Tokens per second with and without the KV cache, measured side by side.

    python benchmarks/generate.py [--tokens 500] [--repeats 5] [--threads 1] [--device cpu]

Generates ``--tokens`` tokens (greedy, batch 1) from the shipped character model
``assets/models/shakespeare_char_gpt.pt`` (if it is missing: the same architecture, randomly
initialised, and the JSON says ``"model": "random-init"``). The model's window is 64 tokens,
so 500 tokens slide the window many times; both paths use generate()'s default rule
(cut to the last block_size // 2 tokens) and the cached path pays for every re-prefill.
The two paths run interleaved after a warm-up; the fastest run of each is reported (as
``timeit`` does: on a shared machine the slower runs measure the other processes, and a
median is still pulled down whenever most runs were disturbed). Prints one JSON line:
``tok_s_cache``, ``tok_s_nocache``, ``ratio`` for one sequence (batch 1, the latency case), and
the same with suffix ``_b8`` for a batch of 8 sequences (tokens/s counts all 8 rows);
``ratio_median`` and ``ratio_median_b8`` give the ratio of the median runs for comparison.

One thread by default: this model's matrices are tiny (128 wide), so a second thread adds
synchronisation, and on a busy machine it can make every forward pass many times slower.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from lmcore.generate import generate

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "assets" / "models" / "shakespeare_char_gpt.pt"


def load(device):
    if MODEL.exists():
        from lmcore.checkpoint import load_model

        model, _ = load_model(MODEL, map_location=device)  # on device, in eval mode
        return model, "shakespeare_char_gpt.pt"
    from lmcore.transformer import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    return GPT(config).to(device).eval(), "random-init"


def timed(model, prompt, n, use_cache):
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = generate(model, prompt, n, greedy=True, use_cache=use_cache)
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def measure(model, batch, tokens, repeats, device):
    """Run times (seconds) of the cached and the uncached loop, ``repeats`` of each."""
    prompt = torch.zeros(batch, 1, dtype=torch.long, device=device)  # id 0: a newline
    timed(model, prompt, 20, True), timed(model, prompt, 20, False)  # warm-up
    cache_s, nocache_s = [], []
    for _ in range(repeats):  # interleaved, so load on a shared machine hits both
        t, a = timed(model, prompt, tokens, True)
        cache_s.append(t)
        t, b = timed(model, prompt, tokens, False)
        nocache_s.append(t)
        assert torch.equal(a, b), "cached and uncached greedy outputs differ"
    return cache_s, nocache_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, source = load(device)
    result = {}
    for batch, suffix in ((1, ""), (8, "_b8")):
        cache_s, nocache_s = measure(model, batch, args.tokens, args.repeats, device)
        with_cache, without = batch * args.tokens / min(cache_s), batch * args.tokens / min(nocache_s)
        median_ratio = statistics.median(nocache_s) / statistics.median(cache_s)
        result.update({f"tok_s_cache{suffix}": round(with_cache, 1),
                       f"tok_s_nocache{suffix}": round(without, 1),
                       f"ratio{suffix}": round(with_cache / without, 2),
                       f"ratio_median{suffix}": round(median_ratio, 2)})
    result.update(tokens=args.tokens, block_size=model.config.block_size, keep=model.config.block_size // 2,
                  model=source, device=str(device), threads=torch.get_num_threads(),
                  load_average=round(os.getloadavg()[0], 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
