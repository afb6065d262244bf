"""Train the GPT of chapter 12 ("Programs written in words") on the whole task suite.

    python tools/train_tasks_gpt.py --save assets/models/tasks_gpt.pt

One model, every operation at once (see :func:`lmcore.tasks.training_example`): named
operations, three compositions and few-shot prompts. Prints one JSON line per evaluation
and a last line with the final accuracies, the time and the SHA-256 of the saved file.
``--threads 1`` (the default) makes the run reproducible bit for bit on one machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmcore import get_device, seed_everything
from lmcore.checkpoint import save_checkpoint
from lmcore.tasks import (
    OPS,
    TRAIN_COMPOSITIONS,
    TaskTokenizer,
    accuracy,
    eval_set,
    train_tasks,
)
from lmcore.transformer import GPT, GPTConfig

CONFIG = dict(block_size=64, n_layer=3, n_head=4, n_embd=96, dropout=0.0)


def quick_eval(model, tok) -> dict:
    ops = [*OPS, *TRAIN_COMPOSITIONS]
    return {op: round(accuracy(model, eval_set(op, [2, 5, 8] if op != "add" else [1, 2, 3],
                                               30, seed=1), tok), 3) for op in ops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunk", type=int, default=500, help="steps between evaluations")
    p.add_argument("--save", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = get_device()
    tok = TaskTokenizer()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, **CONFIG)).to(device)
    start = time.perf_counter()
    losses = train_tasks(model, tok, args.steps, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed, log_every=args.chunk,
                         log=lambda step, loss: print(json.dumps(
                             {"step": step, "loss": round(loss, 4),
                              "seconds": round(time.perf_counter() - start, 1)}), flush=True))
    seconds = time.perf_counter() - start
    final = quick_eval(model, tok)
    save_checkpoint(args.save, model, step=args.steps, extra={
        "tokenizer": tok.itos, "losses": [round(x, 5) for x in losses],
        "command": " ".join(["python", "tools/train_tasks_gpt.py", *sys.argv[1:]])})
    sha = hashlib.sha256(args.save.read_bytes()).hexdigest()
    print(json.dumps({"final": final, "train_seconds": round(seconds, 1),
                      "params": model.num_params(), "device": str(device),
                      "threads": args.threads, "bytes": args.save.stat().st_size,
                      "sha256": sha}), flush=True)


if __name__ == "__main__":
    main()
