"""Smaller models: pruning, knowledge distillation and low-rank adaptation (LoRA).

Quantization (fewer bits per weight) lives in :mod:`lmcore.quantize` and is re-exported
here. This module removes weights (magnitude pruning, Han et al. 2015: unstructured single
weights, or whole MLP neurons and attention heads), trains a small model from a large
one's softened outputs (distillation, Hinton et al. 2015), and adapts a frozen model
through a low-rank update ``W + (alpha / r) B A`` (LoRA, Hu et al. 2021).

The model functions work on any model whose feed-forward layers have ``fc`` and ``proj``
Linear children and whose attention layers have ``qkv``, ``proj``, ``n_head`` and
``head_dim`` (as :class:`lmcore.transformer.GPT`). They return changed copies.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .quantize import (  # noqa: F401
    QuantLinear,
    dequantize,
    quantize,
    quantize_model,
    state_dict_bytes,
)


def _check_fraction(name: str, value, high_open: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0 <= value < 1 if high_open else 0 <= value <= 1):
        raise ValueError(f"{name}={value!r}; expected a number in [0, {'1)' if high_open else '1]'}")
    return float(value)


def _shared(model: nn.Module) -> set:
    """ids of parameters owned by more than one module (e.g. GPT's tied lm_head)."""
    seen, shared = set(), set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            (shared if id(p) in seen else seen).add(id(p))
    return shared


# --------------------------------------------------------------------------- pruning
def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask (bool, shape of w) that drops the ``round(sparsity * w.numel())``
    smallest-magnitude entries, like ``torch.nn.utils.prune.l1_unstructured``."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {getattr(w, 'dtype', type(w))}")
    sparsity = _check_fraction("sparsity", sparsity)
    n_drop = round(sparsity * w.numel())
    keep = torch.ones_like(w, dtype=torch.bool)
    if n_drop:
        drop = torch.topk(w.detach().abs().flatten(), n_drop, largest=False).indices
        keep.view(-1)[drop] = False
    return keep


def prune_unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """Copy of ``model`` with ``sparsity`` of every Linear weight set to zero (smallest
    magnitudes, layer by layer). A tied Linear (GPT's lm_head) is left dense."""
    sparsity = _check_fraction("sparsity", sparsity)
    model = copy.deepcopy(model)
    shared = _shared(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and id(m.weight) not in shared:
                m.weight.mul_(magnitude_mask(m.weight, sparsity))
    return model


def _feed_forwards(model):
    return [m for m in model.modules() if isinstance(getattr(m, "fc", None), nn.Linear)
            and isinstance(getattr(m, "proj", None), nn.Linear)]


def prune_neurons(model: nn.Module, sparsity: float) -> nn.Module:
    """Copy of ``model`` whose MLPs keep only the ``1 - sparsity`` hidden neurons with the
    largest L2 norm of their ``fc`` row (as ``prune.ln_structured(fc, n=2, dim=0)``).

    The matrices really shrink: fc (H, E) -> (H', E) and proj (E, H) -> (E, H'), so the
    smaller model also runs faster with ordinary dense kernels.
    """
    sparsity = _check_fraction("sparsity", sparsity)
    model = copy.deepcopy(model)
    for ff in _feed_forwards(model):
        fc, proj = ff.fc, ff.proj
        n_keep = fc.out_features - round(sparsity * fc.out_features)
        if n_keep < 1:
            raise ValueError(f"sparsity={sparsity} would remove all {fc.out_features} neurons")
        keep = fc.weight.detach().norm(dim=1).topk(n_keep).indices.sort().values
        new_fc = nn.Linear(fc.in_features, n_keep, bias=fc.bias is not None)
        new_proj = nn.Linear(n_keep, proj.out_features, bias=proj.bias is not None)
        with torch.no_grad():
            new_fc.weight.copy_(fc.weight[keep])
            new_proj.weight.copy_(proj.weight[:, keep])
            if fc.bias is not None:
                new_fc.bias.copy_(fc.bias[keep])
            if proj.bias is not None:
                new_proj.bias.copy_(proj.bias)
        ff.fc, ff.proj = new_fc.to(fc.weight.device), new_proj.to(fc.weight.device)
    return model


def head_importance(attn: nn.Module) -> torch.Tensor:
    """L2 norm of each head's columns in the output projection: (n_head,).

    A head writes to the residual stream only through its D columns of ``proj``."""
    cols = attn.proj.weight.detach().view(attn.proj.out_features, attn.n_head, attn.head_dim)
    return cols.norm(dim=(0, 2))


def prune_heads(model: nn.Module, sparsity: float) -> nn.Module:
    """Copy of ``model`` with the ``round(sparsity * n_head)`` weakest heads of every
    attention layer zeroed: their q, k, v rows in ``qkv`` and their columns in ``proj``.
    (The shapes stay; the head's output is exactly zero.)"""
    sparsity = _check_fraction("sparsity", sparsity)
    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "n_head")]
    with torch.no_grad():
        for attn in layers:
            H, D = attn.n_head, attn.head_dim
            for h in head_importance(attn).topk(round(sparsity * H), largest=False).indices.tolist():
                attn.proj.weight[:, h * D:(h + 1) * D] = 0
                for part in range(3):  # q, k and v rows of head h: qkv output is (3, H, D)
                    rows = slice(part * H * D + h * D, part * H * D + (h + 1) * D)
                    attn.qkv.weight[rows] = 0
                    if attn.qkv.bias is not None:
                        attn.qkv.bias[rows] = 0
    return model


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all Linear weights (tied ones excluded)."""
    shared = _shared(model)
    ws = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) not in shared]
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


# --------------------------------------------------------------------------- distillation
def distillation_loss(student_logits, teacher_logits, targets=None, temperature: float = 2.0,
                      alpha: float = 0.5, ignore_index: int = -100) -> torch.Tensor:
    """Hinton et al. (2015): ``alpha * T^2 * KL(p_teacher^T || p_student^T)
    + (1 - alpha) * cross_entropy(student, targets)``.

    logits: (..., V), targets: (...) ints (``ignore_index`` positions are skipped by both
    terms). ``p^T = softmax(logits / T)``; the ``T^2`` keeps the soft term's gradient the
    same size for every temperature. ``alpha=1`` (or no targets) is the soft term alone.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature={temperature!r}; expected a finite number > 0")
    alpha = _check_fraction("alpha", alpha, high_open=False)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (..., V)")
    V = student_logits.shape[-1]
    s, t = student_logits.reshape(-1, V).float(), teacher_logits.detach().reshape(-1, V).float()
    keep = None
    if targets is not None:
        if targets.shape != student_logits.shape[:-1]:
            raise ValueError(f"targets {tuple(targets.shape)} must have shape {tuple(student_logits.shape[:-1])}")
        keep = targets.reshape(-1) != ignore_index
        s, t, y = s[keep], t[keep], targets.reshape(-1)[keep]
    T = float(temperature)
    soft = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                    reduction="batchmean") * T * T
    loss = soft if targets is None else alpha * soft + (1 - alpha) * F.cross_entropy(s, y)
    if not bool(torch.isfinite(loss)):
        raise ValueError("distillation_loss is NaN or infinite: check the logits for NaN/inf")
    return loss


# --------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update (Hu et al. 2021).

    ``y = base(x) + (alpha / r) * x A^T B^T`` with A: (r, in), B: (out, r). B starts at
    zero, so the wrapped layer starts exactly equal to ``base``; only A and B train:
    ``r * (in + out)`` parameters instead of ``in * out``. x: (..., in) -> (..., out).
    """

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"base must be a torch.nn.Linear, got {type(base).__name__}")
        limit = min(base.in_features, base.out_features)
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= limit:
            raise ValueError(f"r={r!r}; expected an int rank in [1, {limit}] for a Linear "
                             f"{base.in_features} -> {base.out_features}")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha={alpha!r}; expected a finite number > 0")
        self.base, self.r, self.alpha, self.scaling = base, r, float(alpha), alpha / r
        for p in base.parameters():
            p.requires_grad_(False)
        w = base.weight
        self.A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # like nn.Linear's own weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scaling

    def merge(self) -> nn.Linear:
        """A plain Linear with ``W + (alpha / r) B A``: same outputs, no extra cost."""
        w = self.base.weight
        out = nn.Linear(self.base.in_features, self.base.out_features,
                        bias=self.base.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            out.weight.copy_(w + self.scaling * self.B @ self.A)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def add_lora(model: nn.Module, r: int = 4, alpha: float = 8.0,
             targets=("qkv", "proj", "fc")) -> nn.Module:
    """Copy of ``model`` with every Linear named in ``targets`` wrapped in a LoRALinear and
    every other parameter frozen (tied Linears are skipped)."""
    model = copy.deepcopy(model)
    for p in model.parameters():
        p.requires_grad_(False)
    shared = _shared(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear) and id(child.weight) not in shared:
                setattr(module, name, LoRALinear(child, r, alpha))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Copy of ``model`` with every LoRALinear replaced by its merged Linear."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merge())
    return model


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- measuring
def tokens_per_second(models: dict, tokens: int = 128, repeats: int = 3, batch: int = 1,
                      clock=None) -> dict:
    """Greedy decode speed of each model (tokens/s, best of ``repeats``), measured
    interleaved after a warm-up so that load on a shared machine hits every model alike.

    models: {name: GPT-like model}; each decodes ``tokens`` tokens from a batch of
    ``batch`` one-token prompts on the device of its first parameter.
    clock: ``time.perf_counter`` (wall time, the default). ``time.process_time`` counts
    only this process's CPU time, which other programs on a busy machine do not inflate;
    for a single-threaded CPU run it equals wall time on an idle machine (never use it
    for GPU work, which happens outside the process's CPU time).
    """
    import time

    from .generate import generate

    for name, value in (("tokens", tokens), ("repeats", repeats), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; expected a positive int")
    clock = clock or time.perf_counter

    def run(model, n):
        device = next(model.parameters()).device
        prompt = torch.zeros(batch, 1, dtype=torch.long, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        generate(model, prompt, n, greedy=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return clock() - start

    for model in models.values():
        run(model, 8)  # warm-up
    best = dict.fromkeys(models, math.inf)
    for _ in range(repeats):
        for name, model in models.items():
            best[name] = min(best[name], run(model, tokens))
    return {name: batch * tokens / seconds for name, seconds in best.items()}
