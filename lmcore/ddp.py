"""Data-parallel training with ``torch.distributed``: one process per device, same model.

Launch with ``torchrun`` (it starts the processes and sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT)::

    torchrun --standalone --nproc_per_node=2 -m lmcore.ddp --iters 200 --out ddp.pt

Each process ("rank") holds a full copy of the model and takes its slice of every global
batch. ``DistributedDataParallel`` all-reduces the gradients during ``backward()`` and
divides by the number of ranks, so every rank applies the same averaged gradient and the
copies stay identical: the result equals one process training on the whole batch.
Backend: ``gloo`` on CPU, ``nccl`` on CUDA GPUs.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .data import load_corpus, train_val_split
from .device import get_device, seed_everything
from .tokenize import CharTokenizer
from .train import Trainer, char_gpt_recipe
from .transformer import GPT


def init_distributed(timeout_s: float = 120.0):
    """Join the process group torchrun describes; returns ``(rank, world_size, device)``.

    Without torchrun (no ``RANK`` in the environment) this is a single process: (0, 1, device).
    """
    if "RANK" not in os.environ:
        return 0, 1, get_device()
    cuda = torch.cuda.is_available()
    if cuda:  # one GPU per process
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel if a process group runs (else as is).

    DDP broadcasts rank 0's weights at construction, then averages the
    gradients during backward.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def parse_args(argv=None):
    """Command-line settings; a size left out keeps ``lmcore.train.char_gpt_recipe``'s value."""
    p = argparse.ArgumentParser(description="Data-parallel training of the character GPT "
                                "(launch with torchrun).")
    p.add_argument("--corpus", default="shakespeare", choices=["shakespeare", "tang300"])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=None, help="global batch, split across "
                   "ranks (recipe: 12)")
    p.add_argument("--block-size", type=int, default=None, help="recipe: 64")
    p.add_argument("--n-layer", type=int, default=None, help="recipe: 4")
    p.add_argument("--n-head", type=int, default=None, help="recipe: 4")
    p.add_argument("--n-embd", type=int, default=None, help="recipe: 128")
    p.add_argument("--lr", type=float, default=None, help="peak lr (recipe: 1e-3); "
                   "min_lr is lr / 10")
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--eval-iters", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="rank 0 writes a resumable checkpoint here")
    return p.parse_args(argv)


def _given(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def build(args, device, rank: int = 0, world_size: int = 1) -> Trainer:
    """The same model, data and settings on every rank (and in a single process)."""
    text = load_corpus(args.corpus)
    tok = CharTokenizer.from_text(text)
    train, val = train_val_split(torch.tensor(tok.encode(text)), 0.1)
    seed_everything(args.seed)
    mconf, tconf = char_gpt_recipe(tok.vocab_size, max_iters=args.iters)
    mconf = dataclasses.replace(mconf, **_given(block_size=args.block_size, n_layer=args.n_layer,
                                                n_head=args.n_head, n_embd=args.n_embd))
    lr = _given(lr=args.lr, min_lr=None if args.lr is None else args.lr / 10)
    tconf = dataclasses.replace(tconf, **_given(batch_size=args.batch_size), **lr,
                                eval_interval=args.eval_interval, eval_iters=args.eval_iters,
                                seed=args.seed)
    model = GPT(mconf).to(device)
    trainer = Trainer(wrap(model, device), train, val, tconf, rank=rank, world_size=world_size)
    trainer.tokenizer = tok
    return trainer


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = init_distributed()
    try:
        trainer = build(args, device, rank, world_size)
        history = trainer.run(progress=rank == 0)
        if rank == 0:
            print(f"world_size={world_size} step={trainer.step} "
                  f"val_loss={history.val_loss[-1]:.4f}", flush=True)
            if args.out:
                trainer.save(args.out, extra={"tokenizer": trainer.tokenizer.to_dict(),
                                              "world_size": world_size})
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
