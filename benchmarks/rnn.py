"""Scratch LSTM (lmcore.rnn.LSTM) vs torch.nn.LSTM: forward + backward time on the CPU.

    python benchmarks/rnn.py [--repeats 15]

Shape: seq 64, batch 32, input 128, hidden 256, one layer, float32. The two are timed side
by side in one run (interleaved repetitions after a warm-up; medians), so machine load
affects both alike. Prints one JSON line: scratch_ms, torch_ms, ratio (= scratch / torch).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lmcore.rnn import LSTM


def step_ms(model, x, h0, c0) -> float:
    start = time.perf_counter()
    out, (h, c) = model(x, (h0, c0))
    (out.sum() + h.sum() + c.sum()).backward()
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    seq, batch, n_in, hidden = 64, 32, 128, 256
    ref = torch.nn.LSTM(n_in, hidden, batch_first=True)
    scratch = LSTM.from_torch(ref)
    x = torch.randn(batch, seq, n_in, requires_grad=True)
    h0 = torch.zeros(1, batch, hidden)
    c0 = torch.zeros(1, batch, hidden)
    times = {"scratch": [], "torch": []}
    for rep in range(args.warmup + args.repeats):
        for name, model in (("scratch", scratch), ("torch", ref)):
            model.zero_grad(set_to_none=True)
            x.grad = None
            ms = step_ms(model, x, h0, c0)
            if rep >= args.warmup:
                times[name].append(ms)
    s, t = statistics.median(times["scratch"]), statistics.median(times["torch"])
    print(json.dumps({
        "benchmark": "lstm_forward_backward", "seq": seq, "batch": batch, "input": n_in, "hidden": hidden,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "scratch_ms": round(s, 2), "torch_ms": round(t, 2), "ratio": round(s / t, 3),
    }))


if __name__ == "__main__":
    main()
