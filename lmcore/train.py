"""Training a language model: the loop, the learning-rate schedule, and exact checkpoints.

Typical use (see ``chapters/06_training.ipynb``)::

    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64))
    trainer = Trainer(model, train_ids, val_ids, TrainConfig(max_iters=500), device=device)
    history = trainer.run()
    trainer.save("ckpt.pt", extra={"tokenizer": tok.to_dict()})

One step: sample a batch with the trainer's own ``torch.Generator`` → forward → loss →
backward → clip the gradient norm → AdamW step with the learning rate ``lr_at(step)``.
Everything that decides the next step (weights, optimiser moments, the step counter and
every random generator) goes into the checkpoint, so stopping and resuming gives exactly
the run that never stopped.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: F401  (re-exported)
from .data import get_batch


@dataclass
class TrainConfig:
    """Settings of one training run (sizes of the model live in ``GPTConfig``)."""

    max_iters: int = 2000
    batch_size: int = 12  # sequences per step (the global batch when data-parallel)
    block_size: int = 64  # tokens per sequence
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    min_lr: float = 1e-4  # floor of the cosine decay
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # cosine reaches min_lr here; None means max_iters
    weight_decay: float = 0.1  # only on >=2-D weights (matrices), not biases/LayerNorm
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_interval: int = 250
    eval_iters: int = 20  # batches averaged by estimate_loss
    seed: int = 0

    def __post_init__(self):
        for name in ("max_iters", "batch_size", "block_size", "eval_interval", "eval_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig needs lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_iters < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig.warmup_iters, weight_decay and grad_clip must be >= 0")


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, then cosine decay to ``min_lr``.

    Warm-up: ``lr * (step + 1) / warmup_iters`` for ``step < warmup_iters`` (small steps
    while Adam's moment estimates are still noisy). Then half a cosine from ``lr`` down
    to ``min_lr`` at ``decay_iters``, and ``min_lr`` after that.
    """
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def configure_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only; biases and norms are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # foreach=True: one batched kernel per group instead of a Python loop over tensors.
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), foreach=True)


def _autocast(device: torch.device):
    """bfloat16 autocast on CUDA (faster, no loss scaling needed); float32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def estimate_loss(model, splits: dict, config: TrainConfig, device="cpu") -> dict:
    """Mean loss over ``config.eval_iters`` batches of each split, e.g. ``{"train": .., "val": ..}``.

    Uses its own generator seeded with ``config.seed + 1``: every evaluation sees the same
    batches (a smoother curve) and the training stream is left untouched. The model is put
    in ``eval()`` mode (no dropout) and restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = {}
    for name, data in splits.items():
        gen = torch.Generator().manual_seed(config.seed + 1)
        total = torch.zeros((), device=device)
        for _ in range(config.eval_iters):
            x, y = get_batch(data, config.block_size, config.batch_size, device, gen)
            with _autocast(device):
                total += model(x, y).loss.float()
        out[name] = (total / config.eval_iters).item()
    model.train(was_training)
    return out


@dataclass
class History:
    """What happened during training, one entry per evaluation."""

    step: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    tokens_per_s: list = field(default_factory=list)  # training throughput, evaluation excluded

    def append(self, step, train_loss, val_loss, lr, tokens_per_s):
        for name, value in zip(("step", "train_loss", "val_loss", "lr", "tokens_per_s"),
                               (step, train_loss, val_loss, lr, tokens_per_s)):
            getattr(self, name).append(value)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: list(d.get(k, [])) for k in ("step", "train_loss", "val_loss", "lr", "tokens_per_s")})

    def figure(self, title: str = "Training and validation loss"):
        """A plotly figure of train/val loss against step."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_scatter(x=self.step, y=self.train_loss, name="train", mode="lines+markers")
        fig.add_scatter(x=self.step, y=self.val_loss, name="validation", mode="lines+markers")
        fig.update_layout(title=title, xaxis_title="step", yaxis_title="cross-entropy (nats/token)",
                          height=350, margin=dict(l=50, r=20, t=50, b=40))
        return fig


class Trainer:
    """Owns a model, its AdamW optimiser, the data generator and the step counter.

    ``train_data``/``val_data``: 1-D int tensors of token ids. For data-parallel training
    pass ``rank``/``world_size``: every rank samples the same global batch from the same
    generator and keeps its own slice, so ``world_size`` ranks together take exactly the step
    one process would take on the whole batch (DDP averages the gradients).
    """

    def __init__(self, model, train_data, val_data, config: TrainConfig, device="cpu",
                 rank: int = 0, world_size: int = 1, callback=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if config.batch_size % world_size:
            raise ValueError(f"batch_size={config.batch_size} must be divisible by world_size={world_size}")
        self.model, self.config, self.device = model, config, torch.device(device)
        self.train_data, self.val_data = train_data, val_data
        self.rank, self.world_size, self.callback = rank, world_size, callback
        self.optimizer = configure_optimizer(model, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history = History()

    @property
    def raw_model(self):
        """The model without a DistributedDataParallel wrapper (for saving and evaluation)."""
        return getattr(self.model, "module", self.model)

    def lr(self, step: int) -> float:
        c = self.config
        return lr_at(step, c.lr, c.min_lr, c.warmup_iters, c.lr_decay_iters or c.max_iters)

    def get_batch(self):
        """This rank's slice of the next global batch: (batch_size // world_size, block_size)."""
        c = self.config
        x, y = get_batch(self.train_data, c.block_size, c.batch_size, "cpu", self.generator)
        share = c.batch_size // self.world_size
        rows = slice(self.rank * share, (self.rank + 1) * share)
        return x[rows].to(self.device), y[rows].to(self.device)

    def train_step(self) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss of this rank's batch."""
        lr = self.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.get_batch()
        with _autocast(self.device):
            loss = self.model(x, y).loss
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach()

    def evaluate(self) -> dict:
        splits = {"train": self.train_data, "val": self.val_data}
        return estimate_loss(self.raw_model, splits, self.config, self.device)

    def run(self, iters: int | None = None, progress: bool = True) -> History:
        """Train until ``max_iters`` (or for ``iters`` more steps), evaluating every
        ``eval_interval`` steps and at the end. Returns the :class:`History`."""
        c = self.config
        stop = c.max_iters if iters is None else min(c.max_iters, self.step + iters)
        bar = None
        if progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop - self.step, desc="training", leave=False)
        self.model.train()
        tokens, seconds = 0, 0.0
        while self.step < stop:
            start = time.perf_counter()
            self.train_step()
            seconds += time.perf_counter() - start
            tokens += c.batch_size * c.block_size
            if bar is not None:
                bar.update(1)
            if self.step % c.eval_interval == 0 or self.step == stop:
                losses = self.evaluate()
                self.history.append(self.step, losses["train"], losses["val"], self.lr(self.step - 1),
                                    tokens / max(seconds, 1e-9))
                tokens, seconds = 0, 0.0
                if bar is not None:
                    bar.set_postfix(train=f"{losses['train']:.3f}", val=f"{losses['val']:.3f}")
                if self.callback is not None:
                    self.callback(self.history)
        if bar is not None:
            bar.close()
        return self.history

    def save(self, path, extra: dict | None = None, optimizer: bool = True):
        """Write a checkpoint that resumes exactly (``optimizer=False``: weights only)."""
        extra = dict(extra or {})
        extra["history"] = self.history.to_dict()
        extra["train_config"] = asdict(self.config)
        save_checkpoint(path, self.raw_model, self.optimizer if optimizer else None, step=self.step,
                        extra=extra, generator=self.generator if optimizer else None)

    def load(self, path) -> dict:
        """Restore weights, optimiser, step, history and all random generators from ``path``."""
        # Read to the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        ckpt = load_checkpoint(path, self.raw_model, self.optimizer, generator=self.generator,
                               map_location="cpu")
        if ckpt["optimizer"] is None:
            raise ValueError(f"checkpoint {path} holds no optimiser state, so training cannot resume "
                             "exactly; it was saved with optimizer=False (weights only)")
        self.step = ckpt["step"]
        self.history = History.from_dict(ckpt["extra"].get("history", {}))
        return ckpt
