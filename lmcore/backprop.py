"""Backpropagation written by hand: softmax-cross-entropy, LayerNorm and attention.

Each operation comes twice:

* plain functions ``*_forward`` / ``*_backward`` that return the gradients explicitly
  (what the math chapter derives, one line per formula), and
* a ``torch.autograd.Function`` (``SoftmaxCrossEntropy``, ``LayerNormFn``,
  ``AttentionFn``) built from them, so ``torch.autograd.gradcheck`` in float64 can check
  the hand-written backward against finite differences.

Shapes: logits ``(N, C)``; LayerNorm ``x: (..., D)``; attention
``q: (..., Lq, d)``, ``k: (..., Lk, d)``, ``v: (..., Lk, dv)``.
"""
from __future__ import annotations

import math

import torch


def _check_float(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32/float64), got {t.dtype}")


# ---------------------------------------------------------------- softmax + cross-entropy
def cross_entropy_forward(logits: torch.Tensor, targets: torch.Tensor):
    """Mean cross-entropy of ``logits: (N, C)`` against class ids ``targets: (N,)``.

    Returns ``(loss, cache)``. Uses log-sum-exp with the row maximum subtracted, so large
    logits do not overflow: log softmax(z)_y = z_y - m - log sum_j exp(z_j - m).
    """
    _check_float("logits", logits)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if not isinstance(targets, torch.Tensor) or targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets must be an integer tensor of class ids (N,), got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    n, c = logits.shape
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},) to match logits (N={n}), "
                         f"got {tuple(targets.shape)}")
    if n == 0:
        raise ValueError("logits must have at least one row (N >= 1)")
    if targets.min() < 0 or targets.max() >= c:
        raise ValueError(f"targets must be class ids in [0, {c - 1}] (C={c}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    targets = targets.long()
    m = logits.max(dim=1, keepdim=True).values
    shifted = logits - m
    lse = shifted.exp().sum(dim=1, keepdim=True).log()
    logp = shifted - lse  # log softmax, (N, C)
    loss = -logp.gather(1, targets[:, None]).mean()
    return loss, (logp.exp(), targets)


def cross_entropy_backward(dloss: torch.Tensor, cache):
    """dL/dlogits = dloss * (softmax(z) - onehot(y)) / N."""
    p, targets = cache
    n = p.shape[0]
    grad = p.clone()
    grad[torch.arange(n), targets] -= 1.0
    return dloss * grad / n


class SoftmaxCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets):
        loss, cache = cross_entropy_forward(logits, targets)
        ctx.cache = cache
        return loss

    @staticmethod
    def backward(ctx, dloss):
        return cross_entropy_backward(dloss, ctx.cache), None


def softmax_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy with the hand-written backward (same value as F.cross_entropy)."""
    return SoftmaxCrossEntropy.apply(logits, targets)


# ---------------------------------------------------------------- LayerNorm
def layer_norm_forward(x: torch.Tensor, weight=None, bias=None, eps: float = 1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim of ``x: (..., D)``.

    ``var`` is the biased variance (divide by D), as in torch.nn.LayerNorm. Returns
    ``(y, cache)``; the cache keeps x_hat and rstd = 1/sqrt(var + eps) for the backward.
    """
    _check_float("x", x)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (..., D)")
    d = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_float(name, t)
            if t.shape != (d,):
                raise ValueError(f"{name} must have shape ({d},) to match x's last dim, "
                                 f"got {tuple(t.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    rstd = (var + eps).rsqrt()
    xhat = (x - mean) * rstd
    y = xhat
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y, (xhat, rstd, weight, bias is not None)


def layer_norm_backward(dy: torch.Tensor, cache):
    """Return (dx, dweight, dbias).

    With g = dy * weight:  dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),
    dweight = sum of dy * x_hat over all leading dims, dbias = sum of dy.
    """
    xhat, rstd, weight, has_bias = cache
    g = dy * weight if weight is not None else dy
    dx = rstd * (g - g.mean(dim=-1, keepdim=True)
                 - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    flat = dy.reshape(-1, dy.shape[-1])  # all leading dims into one (sum(dim=()) sums all)
    dw = (flat * xhat.reshape(flat.shape)).sum(0) if weight is not None else None
    db = flat.sum(0) if has_bias else None
    return dx, dw, db


class LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, cache = layer_norm_forward(x, weight, bias, eps)
        ctx.cache = cache
        return y

    @staticmethod
    def backward(ctx, dy):
        dx, dw, db = layer_norm_backward(dy, ctx.cache)
        return dx, dw, db, None


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim with the hand-written backward (same as F.layer_norm)."""
    return LayerNormFn.apply(x, weight, bias, eps)


# ---------------------------------------------------------------- attention
def attention_forward(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d) masked) v.  q: (..., Lq, d), k: (..., Lk, d), v: (..., Lk, dv).

    ``mask``: bool, broadcastable to (..., Lq, Lk), True = may attend. Returns
    ``(out: (..., Lq, dv), weights P: (..., Lq, Lk), cache)``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_float(name, t)
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., L, d), got {tuple(t.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same last dim d, got q {tuple(q.shape)} "
                         f"and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length Lk (dim -2), got k "
                         f"{tuple(k.shape)} and v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = may attend), got "
                            f"{getattr(mask, 'dtype', type(mask).__name__)}")
        try:
            torch.broadcast_shapes(mask.shape, s.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the "
                             f"scores' shape {tuple(s.shape)} (..., Lq, Lk)") from None
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)  # a fully masked row gives NaN, as in F.sdpa
    return p @ v, p, (q, k, v, p, scale)


def attention_backward(dout, cache):
    """Return (dq, dk, dv) for out = P v with P = softmax(q k^T * scale).

    dV = P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dP * P));
    dQ = dS K * scale;  dK = dS^T Q * scale.  Masked entries have P = 0, hence dS = 0.
    """
    q, k, v, p, scale = cache
    dv = p.transpose(-2, -1) @ dout
    dp = dout @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))
    dq = ds @ k * scale
    dk = ds.transpose(-2, -1) @ q * scale
    return dq, _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def _unbroadcast(grad, shape):
    """Sum a gradient over dimensions that were broadcast in the forward pass."""
    while grad.dim() > len(shape):
        grad = grad.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(i, keepdim=True)
    return grad


class AttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask):
        out, _, cache = attention_forward(q, k, v, mask)
        ctx.cache = cache
        return out

    @staticmethod
    def backward(ctx, dout):
        dq, dk, dv = attention_backward(dout, ctx.cache)
        return _unbroadcast(dq, ctx.cache[0].shape), dk, dv, None


def attention(q, k, v, mask=None) -> torch.Tensor:
    """Scaled dot-product attention with the hand-written backward (as F.sdpa)."""
    return AttentionFn.apply(q, k, v, mask)
