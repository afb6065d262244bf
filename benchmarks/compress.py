"""Bytes, validation loss and decode speed of the shipped GPT: float32 vs int8 vs int4.

    python benchmarks/compress.py [--tokens 256] [--repeats 5] [--threads 1] [--gemv 4096]

Loads ``assets/models/shakespeare_char_gpt.pt`` and builds, side by side in one run:
float32; ``lmcore.quantize.quantize_model`` at 8 bits per channel (``int8``) and 4 bits
per channel (``int4``), whose forward dequantizes and then runs a float matmul; and
PyTorch's own dynamic int8 (``torch.ao.quantization.quantize_dynamic``, fbgemm kernels
that multiply int8 weights directly). Bytes are ``torch.save(state_dict)`` sizes; the
validation loss is the mean over ``--eval-batches`` fixed batches of 16 x 64 characters
from the last 10 % of Shakespeare; tokens/s are greedy decoding of ``--tokens`` tokens,
batch 1, best of ``--repeats`` runs, interleaved. ``gemv_*`` time one matrix-vector
product with a ``--gemv`` square matrix (float32 vs dynamic int8): a layer too big for the
cache, where fewer bytes per weight should mean speed. ``--clock cpu`` times with
``time.process_time`` (this process's CPU time, which other programs on a busy machine
cannot inflate; equal to wall time for this one-thread run on an idle machine).
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
from pathlib import Path

import torch

from lmcore.compress import tokens_per_second
from lmcore.data import load_corpus, train_val_split
from lmcore.quantize import quantize_model, state_dict_bytes
from lmcore.tokenize import CharTokenizer
from lmcore.train import TrainConfig, estimate_loss, load_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "assets" / "models" / "shakespeare_char_gpt.pt"


def torch_dynamic_int8(model):
    """PyTorch's int8 dynamic quantization of every Linear (CPU only; deprecated in favour
    of torchao but still the CPU path with fast int8 kernels in torch 2.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def gemv_ms(n: int, repeats: int = 5, number: int = 10, clock=time.perf_counter) -> dict:
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(n, n)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, n, generator=g) / n ** 0.5)
    layers = {"fp32": layer, "int8_dynamic": torch_dynamic_int8(torch.nn.Sequential(layer))}
    x = torch.randn(1, n, generator=g)
    best = {k: float("inf") for k in layers}
    with torch.inference_mode():
        for m in layers.values():
            m(x)
        for _ in range(repeats):
            for k, m in layers.items():
                start = clock()
                for _ in range(number):
                    m(x)
                best[k] = min(best[k], (clock() - start) / number * 1e3)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-batches", type=int, default=50)
    parser.add_argument("--gemv", type=int, default=4096)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, extra = load_model(MODEL)
    tok = CharTokenizer.from_dict(extra["tokenizer"])
    text = load_corpus("shakespeare")
    _, val = train_val_split(torch.tensor(tok.encode(text)), 0.1)
    variants = {"fp32": model, "int8": quantize_model(model, 8, axis=0),
                "int4": quantize_model(model, 4, axis=0), "torch_int8": torch_dynamic_int8(model)}
    cfg = TrainConfig(eval_iters=args.eval_batches, batch_size=16, block_size=64, seed=0)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    tok_s = tokens_per_second(variants, args.tokens, args.repeats, clock=clock)
    result = {}
    for name, m in variants.items():
        result[f"{name}_bytes"] = state_dict_bytes(m)
        result[f"{name}_val_loss"] = round(estimate_loss(m, {"val": val}, cfg)["val"], 4)
        result[f"{name}_tok_s"] = round(tok_s[name], 1)
    for name in ("int8", "int4", "torch_int8"):
        result[f"{name}_size_ratio"] = round(result["fp32_bytes"] / result[f"{name}_bytes"], 2)
        result[f"{name}_speed_ratio"] = round(result[f"{name}_tok_s"] / result["fp32_tok_s"], 2)
    gemv = gemv_ms(args.gemv, args.repeats, clock=clock)
    result.update(gemv_n=args.gemv, gemv_fp32_ms=round(gemv["fp32"], 3),
                  gemv_int8_ms=round(gemv["int8_dynamic"], 3),
                  gemv_speed_ratio=round(gemv["fp32"] / gemv["int8_dynamic"], 2),
                  tokens=args.tokens, clock=args.clock, threads=torch.get_num_threads(),
                  load_average=round(os.getloadavg()[0], 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
