"""Training a language model: the loop, the learning-rate schedule, mixed precision, early stopping.

Typical use (see ``chapters/06_training.ipynb``)::

    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64)).to(device)
    trainer = Trainer(model, train_ids, val_ids, TrainConfig(max_iters=500))
    history = trainer.run()
    trainer.save("ckpt.pt", extra={"tokenizer": tok.to_dict()})

One step: sample a batch with the trainer's own ``torch.Generator`` → forward → loss →
backward → clip the gradient norm → AdamW step with the learning rate ``lr_at(step)``.
The trainer reads the window (``block_size``) and the device from the model. Everything
that decides the next step (weights, optimiser moments, the step counter and every random
generator) goes into the checkpoint, so stopping and resuming gives exactly the run that
never stopped. A loss that is not a finite number stops training with the step and the
likely cause.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field

import torch

from .checkpoint import load_checkpoint, load_model, save_checkpoint  # noqa: F401  (re-exported)
from .data import get_batch
from .transformer import GPTConfig

_INTS = {"max_iters": 1, "batch_size": 1, "warmup_iters": 0, "eval_interval": 1,
         "eval_iters": 1, "seed": 0}
_REALS = ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name, value, low=0, integer=False, optional=False) -> None:
    """``value`` must be a finite number (an int if ``integer``) >= ``low``."""
    if optional and value is None:
        return
    number = _is_int(value) or (not integer and not isinstance(value, bool)
                                and isinstance(value, float) and math.isfinite(value))
    if not number or value < low:
        kind = "an int" if integer else "a finite number"
        none = " (or None)" if optional else ""
        raise ValueError(f"{name}={value!r}; expected {kind} >= {low}{none}")


@dataclass
class TrainConfig:
    """Settings of one training run (sizes of the model live in ``GPTConfig``)."""

    max_iters: int = 2000
    batch_size: int = 12  # sequences per step (the global batch when data-parallel)
    block_size: int | None = None  # tokens per sequence; None: the model's block_size
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
    patience: int | None = None  # early stopping: evaluations without a better val loss
    seed: int = 0

    def __post_init__(self):
        for name, low in _INTS.items():
            _check(f"TrainConfig.{name}", getattr(self, name), low, integer=True)
        for name in ("block_size", "lr_decay_iters", "patience"):
            _check(f"TrainConfig.{name}", getattr(self, name), 1, True, optional=True)
        for name in _REALS:
            _check(f"TrainConfig.{name}", getattr(self, name))
        if not (self.lr > 0 and self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig needs lr > 0 and 0 <= min_lr <= lr, got "
                             f"lr={self.lr}, min_lr={self.min_lr}")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"TrainConfig.beta1={self.beta1}, beta2={self.beta2}; "
                             "expected both in [0, 1)")


def char_gpt_recipe(vocab_size: int, max_iters: int = 2000):
    """The book's character GPT: returns ``(GPTConfig, TrainConfig)``.

    A 4-layer, 4-head, 128-wide GPT with a 64-character window, trained on
    batches of 12 windows by AdamW: min(100, max_iters // 10) warm-up steps to
    lr 1e-3, cosine decay to 1e-4, weight decay 0.1 on matrices, gradient
    clipping at 1.0, beta2 0.99, seed 0. ``benchmarks/train_char_gpt.py``
    made ``assets/models/shakespeare_char_gpt.pt`` with it (2000 steps);
    ``lmcore.ddp`` and chapter 06 use it too. Change a field with
    ``dataclasses.replace``.
    """
    _check("vocab_size", vocab_size, 1, integer=True)
    _check("max_iters", max_iters, 1, integer=True)
    model = GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=4,
                      n_head=4, n_embd=128, dropout=0.0)
    train = TrainConfig(max_iters=max_iters, batch_size=12, lr=1e-3,
                        min_lr=1e-4, warmup_iters=min(100, max_iters // 10),
                        weight_decay=0.1, grad_clip=1.0, beta1=0.9, beta2=0.99,
                        seed=0)
    return model, train


def _check_schedule(step, lr, min_lr, warmup_iters, decay_iters) -> None:
    for name, value in (("step", step), ("warmup_iters", warmup_iters),
                        ("decay_iters", decay_iters)):
        _check(name, value, integer=True)
    _check("lr", lr)
    _check("min_lr", min_lr)


def lr_at(step, lr, min_lr, warmup_iters, decay_iters) -> float:
    """Learning rate at ``step``: linear warm-up to ``lr``, cosine to min_lr.

    Warm-up: ``lr * (step + 1) / warmup_iters`` for ``step < warmup_iters``
    (small steps while Adam's moment estimates are still noisy). Then half a
    cosine from ``lr`` down to ``min_lr`` at ``decay_iters``, then ``min_lr``.
    """
    _check_schedule(step, lr, min_lr, warmup_iters, decay_iters)
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters:
        return min_lr
    progress = (step - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def configure_optimizer(model, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices (dim >= 2) only: not biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2],
         "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # foreach=True: one batched kernel per group, not a loop over tensors.
    return torch.optim.AdamW(groups, lr=config.lr,
                             betas=(config.beta1, config.beta2), foreach=True)


def amp_dtype(device) -> torch.dtype | None:
    """The autocast dtype for training on ``device``; None means float32.

    bfloat16 on CUDA GPUs of compute capability >= 8.0 (A100, RTX 30xx and
    newer), which have bf16 matrix units; float16 on older GPUs (T4, V100:
    bf16 would be emulated, and slow), where the Trainer scales the loss with
    a GradScaler so that small fp16 gradients do not underflow to zero;
    float32 on the CPU and on Apple's MPS.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        raise TypeError(f"model must be a torch.nn.Module with parameters, got "
                        f"{type(model).__name__}") from None


def _model_window(model) -> int:
    size = getattr(getattr(model, "config", None), "block_size", None)
    if not _is_int(size) or size < 1:
        raise TypeError(f"model must have model.config.block_size (an int >= 1), like "
                        f"lmcore.transformer.GPT; got {type(model).__name__}")
    return size


def _block_size(model, config: TrainConfig) -> int:
    """Tokens per training sequence: config.block_size, at most the model's window."""
    window = _model_window(model)
    if config.block_size is not None and config.block_size > window:
        raise ValueError(f"TrainConfig.block_size={config.block_size} is longer than the "
                         f"model's window model.config.block_size={window}")
    return config.block_size or window


@torch.no_grad()
def estimate_loss(model, splits: dict, config: TrainConfig, device=None):
    """Mean loss over ``config.eval_iters`` batches of each split: a dict.

    ``splits``: e.g. ``{"train": ids, "val": ids}``. Uses its own generator
    seeded with ``config.seed + 1``: every evaluation sees the same batches (a
    smoother curve) and the training stream is left untouched. The model is
    put in ``eval()`` mode (no dropout) and restored afterwards. Device and
    window come from the model (``device``, if given, must agree).
    """
    model_device, block_size = _model_device(model), _block_size(model, config)
    _check_same_device(model_device, device)
    device = model_device
    was_training = model.training
    model.eval()
    out = {}
    for name, data in splits.items():
        gen = torch.Generator().manual_seed(config.seed + 1)
        total = torch.zeros((), device=device)
        for _ in range(config.eval_iters):
            x, y = get_batch(data, block_size, config.batch_size, device, gen)
            with _autocast(device, amp_dtype(device)):
                total += model(x, y).loss.float()
        out[name] = (total / config.eval_iters).item()
    model.train(was_training)
    return out


def _check_same_device(model_device: torch.device, device) -> None:
    if device is None:
        return
    device = torch.device(device)
    if device.type != model_device.type or device.index not in (None, model_device.index):
        raise ValueError(f"device={str(device)!r} but the model is on {model_device}; the "
                         "trainer uses the model's device: move the model with model.to(device)")


def _check_ids(name: str, data, vocab_size, block_size: int) -> None:
    if not isinstance(data, torch.Tensor) or data.dim() != 1 \
            or data.dtype.is_floating_point or data.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor of token ids, got "
                         f"{type(data).__name__} {getattr(data, 'dtype', '')} with shape "
                         f"{tuple(getattr(data, 'shape', ()))}")
    if len(data) < block_size + 1:
        raise ValueError(f"{name} has {len(data)} tokens; a window of block_size={block_size} "
                         f"needs at least {block_size + 1}")
    low, high = int(data.min()), int(data.max())
    if low < 0 or (_is_int(vocab_size) and high >= vocab_size):
        raise ValueError(f"{name} has token ids from {low} to {high}; the model's vocab_size "
                         f"is {vocab_size} (was the text encoded with another tokenizer?)")


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

    def best(self) -> tuple[int, float]:
        """``(step, val_loss)`` of the evaluation with the lowest validation loss."""
        if not self.val_loss:
            raise ValueError("the history is empty: no evaluation has run yet")
        i = min(range(len(self.val_loss)), key=self.val_loss.__getitem__)
        return self.step[i], self.val_loss[i]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        keys = ("step", "train_loss", "val_loss", "lr", "tokens_per_s")
        return cls(**{k: list(d.get(k, [])) for k in keys})

    def figure(self, title: str = "Training and validation loss"):
        """A plotly figure of train/val loss against step."""
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_scatter(x=self.step, y=self.train_loss, name="train", mode="lines+markers")
        fig.add_scatter(x=self.step, y=self.val_loss, name="validation", mode="lines+markers")
        fig.update_layout(title=title, xaxis_title="step",
                          yaxis_title="cross-entropy (nats/token)", height=350,
                          margin={"l": 50, "r": 20, "t": 50, "b": 40})
        return fig


class Trainer:
    """Owns a model, its AdamW optimiser, the data generator and the step counter.

    ``train_data``/``val_data``: 1-D int tensors of token ids. The device and the window
    (``model.config.block_size``) are the model's. For data-parallel training pass
    ``rank``/``world_size``: every rank samples the same global batch from the same
    generator and keeps its own slice, so ``world_size`` ranks together take exactly the
    step one process would take on the whole batch (DDP averages the gradients).
    With ``config.patience`` set, training stops once the validation loss has not improved
    for that many evaluations, and the weights of the best evaluation are put back
    (early stopping).
    """

    def __init__(self, model, train_data, val_data, config: TrainConfig, device=None,
                 rank: int = 0, world_size: int = 1, callback=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if not (_is_int(world_size) and world_size >= 1 and _is_int(rank)
                and 0 <= rank < world_size):
            raise ValueError(f"rank={rank!r}, world_size={world_size!r}; expected ints with "
                             "0 <= rank < world_size")
        if config.batch_size % world_size:
            raise ValueError(f"batch_size={config.batch_size} must be divisible by "
                             f"world_size={world_size}")
        raw = getattr(model, "module", model)  # without a DistributedDataParallel wrapper
        self.device, self.block_size = _model_device(raw), _block_size(raw, config)
        _check_same_device(self.device, device)
        vocab_size = getattr(raw.config, "vocab_size", None)
        _check_ids("train_data", train_data, vocab_size, self.block_size)
        _check_ids("val_data", val_data, vocab_size, self.block_size)
        self.model, self.config = model, config
        self.train_data, self.val_data = train_data, val_data
        self.rank, self.world_size, self.callback = rank, world_size, callback
        self.optimizer = configure_optimizer(model, config)
        self.amp = amp_dtype(self.device)  # bf16 / fp16 / None (float32)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history = History()
        self.best_val, self.best_step, self._best_weights, self._bad_evals = math.inf, None, None, 0
        self.stopped_early = False

    @property
    def raw_model(self):
        """The model without a DistributedDataParallel wrapper (for saving and evaluation)."""
        return getattr(self.model, "module", self.model)

    def lr(self, step: int) -> float:
        c = self.config
        return lr_at(step, c.lr, c.min_lr, c.warmup_iters, c.lr_decay_iters or c.max_iters)

    def get_batch(self):
        """This rank's slice of the next global batch.

        Returns x, y of shape (batch_size // world_size, block_size)."""
        c = self.config
        x, y = get_batch(self.train_data, self.block_size, c.batch_size, "cpu",
                         self.generator)
        share = c.batch_size // self.world_size
        rows = slice(self.rank * share, (self.rank + 1) * share)
        return x[rows].to(self.device), y[rows].to(self.device)

    def train_step(self) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss of this batch."""
        lr = self.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.get_batch()
        with _autocast(self.device, self.amp):
            loss = self.model(x, y).loss
        if not torch.isfinite(loss):  # never train on NaN: say where and why
            raise FloatingPointError(self._divergence_message(loss))
        self.scaler.scale(loss).backward()  # fp16 only: scaled, so grads > 0
        if self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient
            params, clip = self.model.parameters(), self.config.grad_clip
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(self.optimizer)  # fp16: skipped if a grad overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss.detach()

    def _divergence_message(self, loss) -> str:
        c = self.config
        bad = next((n for n, p in self.raw_model.named_parameters()
                    if not bool(torch.isfinite(p).all())), None)
        if bad is not None and self.step == 0:
            cause = (f"the weight {bad!r} already held NaN/inf before the first step "
                     "(a corrupted checkpoint or initialisation?)")
        elif bad is not None:
            cause = (f"the weight {bad!r} became NaN/inf during training: the updates were too "
                     f"large (lr at step {self.step - 1} was {self.lr(self.step - 1):.3g}, "
                     f"peak lr={c.lr:g}); lower lr or keep grad_clip={c.grad_clip:g} > 0")
        else:
            cause = (f"the weights are finite but the loss overflowed: the learning rate "
                     f"(lr={self.lr(self.step):.3g} at this step, peak {c.lr:g}) is likely "
                     "too large, or the inputs are not token ids the model knows")
        return (f"training stopped at step {self.step}: the loss is {float(loss.detach())}, not a "
                f"finite number. Likely cause: {cause}.")

    def evaluate(self) -> dict:
        splits = {"train": self.train_data, "val": self.val_data}
        return estimate_loss(self.raw_model, splits, self.config)

    def _early_stop(self, val: float) -> bool:
        """Note the best evaluation (and, with patience, copy its weights);
        True once ``patience`` evaluations in a row brought nothing better."""
        patience = self.config.patience
        if val < self.best_val:
            self.best_val, self.best_step, self._bad_evals = val, self.step, 0
            if patience is not None:  # the weights that run() puts back
                state = self.raw_model.state_dict()
                self._best_weights = {k: v.clone() for k, v in state.items()}
        else:
            self._bad_evals += 1
        return patience is not None and self._bad_evals >= patience

    def run(self, iters: int | None = None, progress: bool = True) -> History:
        """Train until ``max_iters`` (or for ``iters`` more steps), evaluating every
        ``eval_interval`` steps and at the end. Returns the :class:`History`."""
        _check("iters", iters, integer=True, optional=True)  # None: to max_iters
        c = self.config
        stop = c.max_iters if iters is None else min(c.max_iters, self.step + iters)
        bar = None
        if progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop - self.step, desc="training", leave=False)
        self.model.train()
        tokens, seconds = 0, 0.0
        while self.step < stop and not self.stopped_early:
            start = time.perf_counter()
            self.train_step()
            seconds += time.perf_counter() - start
            tokens += c.batch_size * self.block_size
            if bar is not None:
                bar.update(1)
            if self.step % c.eval_interval == 0 or self.step == stop:
                losses = self.evaluate()
                self.history.append(self.step, losses["train"], losses["val"],
                                    self.lr(self.step - 1), tokens / max(seconds, 1e-9))
                tokens, seconds = 0, 0.0
                self.stopped_early = self._early_stop(losses["val"])
                if bar is not None:
                    bar.set_postfix(train=f"{losses['train']:.3f}", val=f"{losses['val']:.3f}")
                if self.callback is not None:
                    self.callback(self.history)
        if bar is not None:
            bar.close()
        if c.patience is not None and self._best_weights is not None:
            self.raw_model.load_state_dict(self._best_weights)  # early stopping: keep the best
        return self.history

    def _state(self) -> dict:
        """Mixed-precision and early-stopping state, for exact resume."""
        return {"grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "early_stopping": {"best_val": self.best_val, "best_step": self.best_step,
                                   "bad_evals": self._bad_evals,
                                   "stopped": self.stopped_early,
                                   "best_weights": self._best_weights}}

    def save(self, path, extra: dict | None = None, optimizer: bool = True):
        """Write a checkpoint that resumes exactly (``optimizer=False``: weights only)."""
        extra = dict(extra or {})
        extra["history"] = self.history.to_dict()
        extra["train_config"] = asdict(self.config)
        if optimizer:
            extra["trainer"] = self._state()
        save_checkpoint(path, self.raw_model, self.optimizer if optimizer else None,
                        step=self.step, extra=extra,
                        generator=self.generator if optimizer else None)

    def load(self, path) -> dict:
        """Restore weights, optimiser, step, history and all random generators from ``path``."""
        ckpt = load_checkpoint(path, self.raw_model, self.optimizer, generator=self.generator,
                               map_location=self.device)
        if ckpt["optimizer"] is None:
            raise ValueError(f"checkpoint {path} holds no optimiser state, so training cannot "
                             "resume exactly; it was saved with optimizer=False (weights only)")
        self.step = ckpt["step"]
        self.history = History.from_dict(ckpt["extra"].get("history", {}))
        state = ckpt["extra"].get("trainer") or {}
        if state.get("grad_scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["grad_scaler"])
        stopping = state.get("early_stopping") or {}
        self.best_val = stopping.get("best_val", math.inf)
        self.best_step = stopping.get("best_step")
        self._bad_evals = stopping.get("bad_evals", 0)
        self.stopped_early = stopping.get("stopped", False)
        self._best_weights = stopping.get("best_weights")
        return ckpt
