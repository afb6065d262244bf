"""Backpropagation written by hand: softmax-cross-entropy, LayerNorm and attention, and
the finite-difference check that needs no derivation at all.

LayerNorm and attention come twice:

* plain functions ``*_forward`` / ``*_backward`` that return the gradients explicitly
  (what the math chapter derives, one line per formula), and
* a ``torch.autograd.Function`` (``LayerNormFn``, ``AttentionFn``) built from them, so
  ``torch.autograd.gradcheck`` in float64 can check the hand-written backward against
  finite differences.

Softmax + cross-entropy has one home, :func:`lmcore.mlp.softmax_cross_entropy` (loss and
gradient); ``SoftmaxCrossEntropy`` / :func:`cross_entropy` here only wrap it for autograd.
:func:`numerical_grad` is the book's one finite-difference gradient.

Shapes: logits ``(N, C)``; LayerNorm ``x: (..., D)``; attention
``q: (..., Lq, d)``, ``k: (..., Lk, d)``, ``v: (..., Lk, dv)``.
"""
from __future__ import annotations

import math
import numbers

import torch

from .mlp import softmax_cross_entropy


def _check_float(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32/float64), "
                        f"got {t.dtype}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")


def _check_like(name: str, t, ref_name: str, ref) -> None:
    if t.dtype != ref.dtype or t.device != ref.device:
        raise ValueError(f"{name} has dtype {t.dtype} on {t.device} but {ref_name} has "
                         f"{ref.dtype} on {ref.device}; expected the same dtype and device")


# ---------------------------------------------------------------- softmax + cross-entropy
class SoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy whose backward is dloss * (p - onehot) / N from lmcore.mlp."""

    @staticmethod
    def forward(ctx, logits, labels):
        loss, grad = softmax_cross_entropy(logits, labels)
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        (grad,) = ctx.saved_tensors
        return dloss * grad, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits: (N, C)`` against class ids ``labels: (N,)``, as
    ``F.cross_entropy(logits, labels)`` (no ignore_index), with the hand-written
    gradient of :func:`lmcore.mlp.softmax_cross_entropy` as its backward."""
    return SoftmaxCrossEntropy.apply(logits, labels)


# ---------------------------------------------------------------- LayerNorm
def _check_layer_norm_args(x, weight, bias, eps):
    _check_float("x", x)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have shape (..., D) with D >= 1, got {tuple(x.shape)}")
    d = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            _check_float(name, t)
            if t.shape != (d,):
                raise ValueError(f"{name} must have shape ({d},) to match x's last dim, "
                                 f"got {tuple(t.shape)}")
            _check_like(name, t, "x", x)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive finite number, got {eps!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be > 0 and finite, got {eps!r}")


def layer_norm_forward(x: torch.Tensor, weight=None, bias=None, eps: float = 1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim of x: (..., D).

    ``var`` is the biased variance (divide by D), as in torch.nn.LayerNorm. Returns
    ``(y, cache)``; the cache keeps x_hat and rstd = 1/sqrt(var + eps) for the backward.
    """
    _check_layer_norm_args(x, weight, bias, eps)
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
    g_mean = g.mean(dim=-1, keepdim=True)
    dx = rstd * (g - g_mean - xhat * (g * xhat).mean(dim=-1, keepdim=True))
    flat = dy.reshape(-1, dy.shape[-1])  # all leading dims into one row axis
    dw = None if weight is None else (flat * xhat.reshape(flat.shape)).sum(0)
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
    """LayerNorm over the last dim, hand-written backward (same as F.layer_norm)."""
    return LayerNormFn.apply(x, weight, bias, eps)


# ---------------------------------------------------------------- attention
def _check_attention_args(q, k, v, mask):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_float(name, t)
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., L, d), got {tuple(t.shape)}")
        _check_like(name, t, "q", q)
    if q.shape[-1] != k.shape[-1] or q.shape[-1] == 0:
        raise ValueError(f"q and k must have the same last dim d >= 1, got q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v must have the same length Lk (dim -2), got k "
                         f"{tuple(k.shape)} and v {tuple(v.shape)}")
    try:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the leading (batch, head) dims of q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)} do not "
                         f"broadcast") from None
    scores = (*batch, q.shape[-2], k.shape[-2])
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.device != q.device:
        raise ValueError(f"mask is on {mask.device} but q on {q.device}")
    try:
        fits = torch.broadcast_shapes(mask.shape, scores) == scores
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the "
                         f"scores' shape {scores} (..., Lq, Lk)")


def attention_forward(q, k, v, mask=None):
    """P = softmax(q k^T / sqrt(d), masked), out = P v.

    q: (..., Lq, d), k: (..., Lk, d), v: (..., Lk, dv). ``mask``: bool, broadcastable to
    (..., Lq, Lk), True = may attend. A query that may attend to no key gets zero weights
    and a zero output (as in lmcore.attention), never NaN.
    Returns ``(out: (..., Lq, dv), weights P: (..., Lq, Lk), cache)``.
    """
    _check_attention_args(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    if mask is not None:  # a row with no visible key: softmax(all -inf) = 0/0 = NaN -> 0
        p = p.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return p @ v, p, (q, k, v, p, scale)


def attention_backward(dout, cache):
    """Return (dq, dk, dv) for out = P v with P = softmax(q k^T * scale).

    dV = P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dP * P));
    dQ = dS K * scale;  dK = dS^T Q * scale.
    Masked entries have P = 0, hence dS = 0.
    """
    q, k, v, p, scale = cache
    dv = p.transpose(-2, -1) @ dout
    dp = dout @ v.transpose(-2, -1)
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True))
    dq = ds @ k * scale
    dk = ds.transpose(-2, -1) @ q * scale
    return (_unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape),
            _unbroadcast(dv, v.shape))


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
        return dq, dk, dv, None


def attention(q, k, v, mask=None) -> torch.Tensor:
    """Scaled dot-product attention with the hand-written backward (as F.sdpa)."""
    return AttentionFn.apply(q, k, v, mask)


# ---------------------------------------------------------------- finite differences
def _check_numerical_grad_args(f, x, eps):
    if not callable(f):
        raise TypeError(f"f must be a function of one tensor returning a scalar, "
                        f"got {type(f).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf; expected finite values")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a positive finite number, got {eps!r}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be > 0 and finite, got {eps!r}")


def _scalar(value, where):
    """f's value as a float; f must return one finite number."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"f must return a scalar, but f({where}) has shape "
                             f"{tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"f must return a number or a one-element tensor, but f({where}) "
                        f"returned {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"f({where}) = {value}: a finite-difference gradient needs "
                         f"finite values")
    return float(value)


def _check_step(up_x, down_x, eps, dtype, i, old):
    if up_x == down_x:
        raise ValueError(f"eps={eps} is below the resolution of {dtype} at "
                         f"x.view(-1)[{i}] = {old}: use a larger eps or float64")


def numerical_grad(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences, one entry at a time:
    g_i = (f(x + h e_i) - f(x - h e_i)) / 2h with h = eps.

    f: a function of a tensor shaped like x that returns a scalar.
    x: floating tensor, any shape; not modified. Use float64: the error is
    O(h^2) from the Taylor series plus O(machine epsilon / h) from rounding.
    Returns a tensor shaped like x; calls f 2 * x.numel() times, no autograd.
    """
    _check_numerical_grad_args(f, x, eps)
    x = x.detach().clone(memory_format=torch.contiguous_format)
    grad = torch.zeros_like(x)
    flat, flat_grad = x.view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up_x, up = flat[i].item(), _scalar(f(x), f"x + h e_{i}")
            flat[i] = old - eps
            down_x, down = flat[i].item(), _scalar(f(x), f"x - h e_{i}")
            flat[i] = old
            _check_step(up_x, down_x, eps, x.dtype, i, old)
            # divide by the step x actually took (rounded to x's dtype)
            flat_grad[i] = (up - down) / (up_x - down_x)
    return grad
