"""Benchmark: train the character GPT on tiny-shakespeare and report how fast and how well.

    python benchmarks/train_char_gpt.py [--iters 2000] [--save assets/models/shakespeare_char_gpt.pt]

Prints ONE JSON line:
  tokens_per_s   training tokens per second in the best 50-step window (evaluation excluded)
  matmul_gflops  best 1024x1024 float32 matmul speed, measured between the training windows
  model_gflops   achieved model FLOP/s: (6*N + 12*n_layer*block_size*n_embd) * tokens_per_s / 1e9,
                 where N counts the parameters used in matmuls (all but the position table;
                 the tied token embedding counts once, as the output layer) and the second
                 term is attention's QK^T and AV (forward 4*L*T*E per token, x3 with backward)
  peak_fraction  model_gflops / matmul_gflops
  tokens_per_s_mean, peak_fraction_mean   the same over the whole run (all windows)
  val_loss (mean over --eval-iters batches of the validation split), iters, params, train_seconds

The model and training settings are ``lmcore.train.char_gpt_recipe`` (the flags below change
single fields of it). ``--eval-interval N`` also evaluates every N steps (20 batches per
split, outside the timed windows: the training stream is untouched) and ``--curve FILE``
writes those evaluations as JSON: the training curve of the shipped model.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from lmcore.data import load_corpus, train_val_split
from lmcore.device import get_device, seed_everything
from lmcore.tokenize import CharTokenizer
from lmcore.train import Trainer, char_gpt_recipe, estimate_loss
from lmcore.transformer import GPT


def matmul_gflops(n: int = 1024, repeats: int = 20, device="cpu") -> float:
    """Best-of float32 n x n matmul speed in GFLOP/s (2 n^3 flops each)."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if a.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--save", default=None, help="write the trained weights (+ config, tokenizer) here")
    p.add_argument("--device", default=None)
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (recipe: min(100, iters // 10))")
    p.add_argument("--weight-decay", type=float, default=None, help="recipe: 0.1")
    p.add_argument("--min-lr", type=float, default=None, help="recipe: 1e-4")
    p.add_argument("--beta2", type=float, default=None, help="recipe: 0.99")
    p.add_argument("--eval-iters", type=int, default=200, help="validation batches averaged at the end")
    p.add_argument("--eval-interval", type=int, default=None, help="also evaluate every N steps (untimed)")
    p.add_argument("--curve", default=None, help="write the evaluations (step, train/val loss) as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = get_device(args.device)
    seed_everything(0)
    text = load_corpus("shakespeare")
    tok = CharTokenizer.from_text(text)
    train, val = train_val_split(torch.tensor(tok.encode(text)), 0.1)
    mconf, tconf = char_gpt_recipe(tok.vocab_size, max_iters=args.iters)
    changes = {"warmup_iters": args.warmup, "weight_decay": args.weight_decay,
               "min_lr": args.min_lr, "beta2": args.beta2}
    tconf = dataclasses.replace(tconf, eval_interval=args.iters, eval_iters=args.eval_iters,
                                **{k: v for k, v in changes.items() if v is not None})
    model = GPT(mconf).to(device)
    # The machine may be shared: time the training in windows of 50 steps, measure the matmul
    # between windows, and compare the best window with the best matmul (same "best-of" rule
    # for both). The mean over the whole run is reported too.
    trainer = Trainer(model, train, val, tconf)
    block = trainer.block_size
    curve = dataclasses.replace(tconf, eval_iters=20)  # the curve: 20 batches per point
    peak, windows, total_tokens, total_seconds = 0.0, [], 0, 0.0
    while trainer.step < args.iters:
        peak = max(peak, matmul_gflops(repeats=3, device=device))
        n = min(50, args.iters - trainer.step)
        if args.eval_interval:  # end the window at the next evaluation
            n = min(n, args.eval_interval - trainer.step % args.eval_interval)
        start = time.perf_counter()
        for _ in range(n):
            trainer.train_step()  # no .item(), no evaluation inside the timed window
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        windows.append(n * tconf.batch_size * block / seconds)
        total_tokens += n * tconf.batch_size * block
        total_seconds += seconds
        if args.eval_interval and trainer.step % args.eval_interval == 0:
            losses = estimate_loss(model, {"train": train, "val": val}, curve)
            trainer.history.append(trainer.step, losses["train"], losses["val"],
                                   trainer.lr(trainer.step - 1), windows[-1])
    peak = max(peak, matmul_gflops(device=device))
    val_loss = trainer.evaluate()["val"]
    if not args.eval_interval:
        trainer.history.append(trainer.step, float("nan"), val_loss, trainer.lr(trainer.step - 1),
                               total_tokens / total_seconds)
    tokens_per_s, tokens_per_s_mean = max(windows), total_tokens / total_seconds

    n_matmul = model.num_params() - sum(q.numel() for q in model.wpe.parameters())
    flops_per_token = 6 * n_matmul + 12 * mconf.n_layer * block * mconf.n_embd
    model_gflops = flops_per_token * tokens_per_s / 1e9
    if args.save:
        trainer.save(args.save, extra={"tokenizer": tok.to_dict(), "corpus": "shakespeare",
                                       "val_loss": val_loss}, optimizer=False)
    if args.curve:
        with open(args.curve, "w", encoding="utf-8") as f:
            json.dump({"recipe": "lmcore.train.char_gpt_recipe", "iters": args.iters,
                       "eval_iters": curve.eval_iters, "batch_size": tconf.batch_size,
                       "block_size": block, "final_val_loss": val_loss,
                       **{k: v for k, v in trainer.history.to_dict().items() if k != "tokens_per_s"}},
                      f, indent=1)
            f.write("\n")
    print(json.dumps({
        "tokens_per_s": round(tokens_per_s, 1),
        "matmul_gflops": round(peak, 2),
        "model_gflops": round(model_gflops, 2),
        "peak_fraction": round(model_gflops / peak, 3),
        "tokens_per_s_mean": round(tokens_per_s_mean, 1),
        "peak_fraction_mean": round(flops_per_token * tokens_per_s_mean / 1e9 / peak, 3),
        "val_loss": round(val_loss, 4),
        "iters": args.iters,
        "params": model.num_params(),
        "train_seconds": round(total_seconds, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
