"""Choosing the next token from the logits ``(batch, vocab)``.

- greedy: ``argmax`` (ties go to the lowest token id);
- sampling: divide by a temperature ``tau > 0``, optionally keep only the ``top_k`` largest
  logits and/or the smallest "nucleus" whose probability reaches ``top_p``, then draw from
  ``softmax``. Temperature first, then top-k, then top-p.

All filters are pure functions on logits: a removed token gets logit ``-inf`` (probability 0).
A draw runs on the device of the ``torch.Generator`` passed in (see :func:`draw`).
The decoding loop that calls them is in :mod:`lmcore.generate`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- validation
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; "
            f"for deterministic argmax decoding pass greedy=True instead of temperature=0"
        )
    return float(temperature)


def _check_top_k(top_k) -> int:
    if not _is_int(top_k) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (or None for no top-k), got {top_k!r}")
    return top_k


def _check_top_p(top_p) -> float:
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) \
            or not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no top-p), "
                         f"got {top_p!r}")
    return float(top_p)


def _check_sampling(temperature, top_k, top_p, generator=None) -> None:
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or None), got "
                        f"{type(generator).__name__}")


def _check_logits(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[-1] < 1 \
            or not logits.dtype.is_floating_point:
        raise ValueError(
            f"logits must be a floating-point tensor of shape (batch, vocab), got "
            f"{type(logits).__name__} {getattr(logits, 'dtype', '')} with shape "
            f"{tuple(getattr(logits, 'shape', ()))}"
        )
    return logits


def _broken_rows(logits: torch.Tensor) -> torch.Tensor:
    """(batch,) bool: rows with a NaN or +inf, or with no finite logit (softmax is NaN there)."""
    return logits.isnan().any(-1) | logits.isposinf().any(-1) | ~logits.isfinite().any(-1)


def _check_finite(logits: torch.Tensor) -> None:
    bad = _broken_rows(logits)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"logits rows {rows[:8]} hold NaN or +inf, or no finite value (row {rows[0]}: "
            f"{logits[rows[0]].flatten()[:5].tolist()}...), so there is no distribution to "
            "sample from; the model's output is broken (NaN weights? a diverged run?)"
        )


# --------------------------------------------------------------------------- filters
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits divided by ``temperature``: tau < 1 sharpens the softmax, tau > 1 flattens it.

    logits: (batch, vocab) -> float32 (batch, vocab). Each row's maximum is subtracted
    first, which leaves the softmax unchanged; then a tiny tau (say 1e-300, which is 0 in
    float32) sends every other logit to -inf, the argmax limit, instead of producing NaN.
    """
    logits, tau = _check_logits(logits).float(), _check_temperature(temperature)
    tau = max(tau, torch.finfo(torch.float32).tiny)  # a smaller tau changes nothing more
    return (logits - logits.amax(dim=-1, keepdim=True)) / tau


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row, the rest become -inf.

    logits: (batch, vocab). Ties at the boundary go to the lower token id
    (stable sort), so exactly ``min(k, vocab)`` tokens survive even when
    several logits are equal.
    """
    logits = _check_logits(logits)
    k = min(_check_top_k(k), logits.shape[-1])
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, order[:, :k], True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: the fewest most likely tokens whose probability is >= p.

    logits: (batch, vocab). Tokens are taken in order of decreasing probability
    (ties: lower id first) until their cumulative probability reaches ``p``;
    the most likely token is always kept. ``p = 1`` keeps every token with
    nonzero probability (the rounding of the running sum must not cut it).
    """
    logits, p = _check_logits(logits), _check_top_p(p)
    probs = F.softmax(logits.float(), dim=-1)
    probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = probs.cumsum(dim=-1) - probs  # of the tokens ranked above
    keep_sorted = mass_before < p if p < 1 else probs > 0  # 1st: 0 < p, kept
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """What sampling draws from: temperature, top-k, top-p, then softmax.

    logits: (batch, vocab) -> probabilities (batch, vocab), rows sum to 1.
    """
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return F.softmax(logits.float(), dim=-1)


def draw(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One token per row: probs (batch, vocab) -> (batch,) int64, same device.

    The draw runs on the generator's device, the rule every sampler here
    follows (``torch.multinomial`` refuses a generator on another device): a
    CPU generator with probabilities on a GPU samples on the CPU, the same
    tokens as on a CPU-only machine, for one small copy per draw;
    ``torch.Generator(device=probs.device)`` samples in place.
    """
    if generator is not None and generator.device != probs.device:
        where = generator.device
        ids = torch.multinomial(probs.to(where), 1, generator=generator)
        return ids.squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _choose(logits, greedy, temperature, top_k, top_p, generator) -> torch.Tensor:
    if greedy:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    # A row of NaN (broken logits) would make the draw fail without saying why; draw
    # anything there and let the caller report it (generate checks after the loop).
    return draw(probs.masked_fill(probs.isnan().any(-1, keepdim=True), 1.0), generator)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                greedy=False) -> torch.Tensor:
    """Choose one token per row. logits: (batch, vocab) -> (batch,) int64.

    ``greedy=True`` takes the argmax (first maximum on ties) and ignores the other arguments'
    effect (they are still validated). Otherwise draws from :func:`next_token_probs` with
    :func:`draw`; pass a seeded ``torch.Generator`` for reproducible samples. Logits with
    NaN or +inf, or rows without a finite logit, raise a ``ValueError``.
    """
    _check_finite(_check_logits(logits))
    _check_sampling(temperature, top_k, top_p, generator)
    return _choose(logits, greedy, temperature, top_k, top_p, generator)
