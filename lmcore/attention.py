"""Scaled dot-product attention and multi-head attention, from scratch.

    weights = softmax(q @ k.T / sqrt(d) + mask)        (..., T, S), each row sums to 1
    output  = weights @ v                               (..., T, dv)

Masks carry PyTorch's meaning for each name:

* ``scaled_dot_product_attention(..., mask=)`` takes what ``F.scaled_dot_product_attention``
  takes as ``attn_mask``: bool ``True`` = this query **may** attend to this key, or a float
  tensor added to the scores. :func:`causal_mask` and :func:`padding_mask` build such masks.
* ``MultiHeadAttention(..., attn_mask=, key_padding_mask=)`` takes what
  ``nn.MultiheadAttention`` takes: bool ``True`` = **not** allowed (blocked, or padding),
  float masks added to the scores; ``attn_mask`` is (T, S) or (B*H, T, S).

A query whose keys are all masked gets zero weights and a zero output, never NaN.
Tested against ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_int, check_probability, is_tracing


def _broadcasts(small, shape) -> bool:
    """Does ``small`` broadcast to ``shape`` (without changing it)? (torch.broadcast_shapes
    costs ~50 us per call; this is the same rule in plain Python.)"""
    return len(small) <= len(shape) and all(
        a == b or a == 1 for a, b in zip(reversed(small), reversed(shape)))


def _check_mask(mask, shape, dtype, name="mask"):
    """A bool or float (of the scores' dtype) tensor broadcastable to ``shape``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or not (mask.dtype == torch.bool or mask.dtype == dtype):
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor or a float tensor of the queries' dtype "
                        f"{dtype} (added to the scores), got {got}")
    if not _broadcasts(mask.shape, shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, which does not broadcast "
                         f"to the scores' shape {tuple(shape)} (..., T, S)")
    if mask.is_floating_point() and not is_tracing() and bool(mask.isnan().any()):
        raise ValueError(f"{name} contains NaN; use -inf to block a key, 0 to keep it")
    return mask


def _check_qkv(q, k, v):
    """Shapes, dtypes and devices of q (..., T, d), k (..., S, d), v (..., S, dv) -> scores' shape."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2 or not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor with at least 2 dims (..., seq, dim), "
                             f"got {getattr(t, 'dtype', '')} {getattr(t, 'shape', type(t).__name__)}")
    if not q.dtype == k.dtype == v.dtype or not q.device == k.device == v.device:
        raise TypeError(f"q, k, v must share one dtype and device, got {q.dtype}/{k.dtype}/"
                        f"{v.dtype} on {q.device}/{k.device}/{v.device}; convert with .to(q)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q has feature size {q.shape[-1]} but k has {k.shape[-1]}; expected "
                         f"q (..., T, d) and k (..., S, d) with the same d")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree on all dims "
                         f"but the last: expected k (..., S, d) and v (..., S, dv)")
    try:
        batch = q.shape[:-2]
        if k.shape[:-2] != batch:
            batch = torch.broadcast_shapes(batch, k.shape[:-2])
    except RuntimeError:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} have batch dims that do "
                         f"not broadcast; expected q (..., T, d), k (..., S, d)") from None
    return (*batch, q.shape[-2], k.shape[-2])


def _check_scale(scale, d):
    if scale is None:
        return 1.0 / math.sqrt(d)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number (default 1/sqrt(d)), got {scale!r}")
    return float(scale)


def _dead_rows(mask):
    """A query that may see no key would get softmax(all -inf) = 0/0 = NaN. Return the mask
    with such rows opened to every key (no NaN) and ``alive`` (..., T, 1) to zero them after;
    ``alive`` is None when every row sees a key (the usual case, one wait for the device)."""
    if mask is None:
        return None, None
    allowed = mask if mask.dtype == torch.bool else mask > -math.inf
    alive = allowed.any(dim=-1, keepdim=True)
    if not is_tracing() and bool(alive.all()):
        return mask, None
    return (mask | ~alive if mask.dtype == torch.bool else mask.masked_fill(~alive, 0.0)), alive


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, need_weights=True,
                                 training=False, scale=None):
    """Attention of queries ``q`` over keys ``k`` and values ``v``.

    q: (..., T, d), k: (..., S, d), v: (..., S, dv), one float dtype and device.
    mask: broadcastable to (..., T, S), as ``F.scaled_dot_product_attention``'s attn_mask:
        bool **True = may attend** (False = blocked), or float added to the scores
        (the opposite of ``nn.MultiheadAttention``'s bool attn_mask).
    dropout_p: in [0, 1], used only when ``training``. scale: default 1/sqrt(d).
    Returns (output (..., T, dv), weights (..., T, S) or None): the weights before dropout.
    ``need_weights=False`` computes the output with the fused PyTorch kernel.
    """
    mask = _check_mask(mask, _check_qkv(q, k, v), q.dtype)
    scale = _check_scale(scale, q.shape[-1])
    p = check_probability("dropout_p", dropout_p)
    p = p if training else 0.0                            # dropout only while training
    mask, alive = _dead_rows(mask)
    if not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scale)
        return (out if alive is None else out * alive), None

    # scale q (T x d numbers), not the scores (T x S): the same maths, fewer multiplications
    scores = (q * scale) @ k.transpose(-2, -1)            # (..., T, S)
    if mask is not None and mask.dtype == torch.bool:
        # blocked scores -> the most negative finite number, not -inf: exp(min - max)
        # underflows to exactly 0 and gradients stay finite. In place: scores is our own.
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + mask                            # a float mask is added
    weights = scores.softmax(dim=-1)                      # each row sums to 1
    if alive is not None:
        weights = weights * alive
    out = F.dropout(weights, p) @ v if p > 0 else weights @ v
    return out, weights


def causal_mask(T, S=None, device=None):
    """bool (T, S), True on and below the diagonal: query i sees keys 0 .. i + S - T.

    With S > T (decoding with a KV cache: S - T keys are already cached) the last query
    sees every key.
    """
    S = T if S is None else S
    if not is_tracing():  # under export, T and S are symbolic: nothing to check
        check_int("T", T)
        check_int("S", S)
        if S < T:
            raise ValueError(f"S={S} keys < T={T} queries: expected S >= T "
                             f"(queries are the last T positions)")
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def padding_mask(lengths_or_key_padding, max_len=None, device=None):
    """Key mask for padded batches: bool (B, 1, 1, S), True = real token (may attend).

    lengths_or_key_padding: either the lengths (B,) of each sequence (ints; S = max_len or
    the largest length), or a ``key_padding_mask`` bool (B, S) in torch's convention,
    True = PADDING (it is inverted here).
    """
    x = lengths_or_key_padding
    if isinstance(x, torch.Tensor) and x.dtype == torch.bool:
        if x.dim() != 2:
            raise ValueError(f"key_padding_mask must be bool (B, S), got shape {tuple(x.shape)}")
        return (~x)[:, None, None, :].to(device or x.device)
    lengths = torch.as_tensor(x, device=device)
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty 1-D sequence of ints (B,), got {x!r}")
    S = int(lengths.max()) if max_len is None else check_int("max_len", max_len, 0)
    if bool((lengths < 0).any()) or int(lengths.max()) > S:
        raise ValueError(f"lengths must lie in [0, max_len={S}], got {lengths.tolist()}")
    real = torch.arange(S, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
    return real[:, None, None, :]


def _combine(masks, dtype):
    """AND of masks in scaled_dot_product_attention's convention (bool True = may attend,
    float added); with any float mask, the bool ones become 0 / -inf and all are added."""
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        out = masks[0]
        for m in masks[1:]:
            out = out & m
        return out
    as_float = [m if m.is_floating_point() else
                torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, -math.inf)
                for m in masks]
    return sum(as_float[1:], as_float[0])


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first: H heads of size embed_dim // H, concatenated.

    Weights and masks match ``nn.MultiheadAttention`` (see ``from_torch``), but the
    returned weights are per head (B, H, T, S), not averaged over heads.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None):
        super().__init__()
        check_int("num_heads", num_heads)
        if check_int("embed_dim", embed_dim) % num_heads:
            raise ValueError(f"embed_dim={embed_dim!r} must be a positive int divisible by "
                             f"num_heads={num_heads} (each head gets embed_dim // num_heads dims)")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else check_int("kdim", kdim)
        self.vdim = embed_dim if vdim is None else check_int("vdim", vdim)
        self.dropout = check_probability("dropout", dropout)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def split_heads(self, x):
        """(B, L, embed_dim) -> (B, H, L, head_dim): a view, no copy."""
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key=None, value=None, *, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=False):
        """query: (B, T, embed_dim); key: (B, S, kdim), value: (B, S, vdim).

        key=None -> self-attention (key = value = query); value=None -> value = key.
        attn_mask: (T, S) or (B*H, T, S), as in ``nn.MultiheadAttention``: bool True = NOT
            allowed to attend; a float mask is added to the scores.
        key_padding_mask: (B, S), bool True = padding (or float, added).
        is_causal: also apply ``causal_mask(T, S)`` (no attn_mask needed).
        Returns (output (B, T, embed_dim), weights (B, H, T, S) or None).
        """
        key = query if key is None else key
        value = key if value is None else value
        mask = self.merge_masks(query, key, value, attn_mask, key_padding_mask, is_causal)
        q = self.split_heads(self.q_proj(query))
        k, v = self.split_heads(self.k_proj(key)), self.split_heads(self.v_proj(value))
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout,
                                                    need_weights, self.training)
        out = out.transpose(1, 2).flatten(2)              # concatenate the heads: (B, T, E)
        return self.out_proj(out), weights

    def merge_masks(self, query, key, value, attn_mask, key_padding_mask, is_causal):
        """Check the inputs of ``forward``; return their masks as one mask in
        ``scaled_dot_product_attention``'s convention, broadcastable to (B, H, T, S)."""
        for name, t, e in (("query", query, self.embed_dim), ("key", key, self.kdim),
                           ("value", value, self.vdim)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != e:
                raise ValueError(f"{name} must be (batch, seq, {e}), got "
                                 f"{tuple(getattr(t, 'shape', ())) or type(t).__name__}")
        dtype = self.q_proj.weight.dtype
        if not query.dtype == key.dtype == value.dtype == dtype:
            raise TypeError(f"query, key, value must have the module's dtype {dtype}, got "
                            f"{query.dtype}/{key.dtype}/{value.dtype}; use .to({dtype})")
        (B, T, _), S, H = query.shape, key.shape[1], self.num_heads
        if key.shape[:2] != value.shape[:2] or key.shape[0] != B:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must be "
                             f"(B={B}, S, dim) with the same S")
        masks = []
        if attn_mask is not None:
            if isinstance(attn_mask, torch.Tensor) and attn_mask.dim() == 3:
                if attn_mask.shape[0] != B * H:
                    raise ValueError(f"a 3-D attn_mask must be (B*H={B * H}, T={T}, S={S}), "
                                     f"got {tuple(attn_mask.shape)}")
                attn_mask = attn_mask.view(B, H, *attn_mask.shape[1:])
            m = _check_mask(attn_mask, (B, H, T, S), query.dtype, "attn_mask")
            masks.append(~m if m.dtype == torch.bool else m)      # torch: True = blocked
        if key_padding_mask is not None:
            kpm = key_padding_mask
            if not isinstance(kpm, torch.Tensor) or tuple(kpm.shape) != (B, S):
                raise ValueError(f"key_padding_mask must be (B={B}, S={S}), True = padding; "
                                 f"got {tuple(getattr(kpm, 'shape', ())) or type(kpm).__name__}")
            kpm = _check_mask(kpm, (B, S), query.dtype, "key_padding_mask")[:, None, None, :]
            masks.append(~kpm if kpm.dtype == torch.bool else kpm)
        if is_causal:
            masks.append(causal_mask(T, S, device=query.device))
        return _combine(masks, query.dtype)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the projections of an ``nn.MultiheadAttention`` (the weights do not depend on
        its ``batch_first``; our forward is always batch first)."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("module uses add_bias_kv or add_zero_attn, which "
                             "MultiHeadAttention does not support")
        bias = module.in_proj_bias is not None
        new = cls(module.embed_dim, module.num_heads, module.dropout, bias, module.kdim, module.vdim)
        E = module.embed_dim
        with torch.no_grad():
            if module._qkv_same_embed_dim:
                wq, wk, wv = module.in_proj_weight.split(E)
            else:
                wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
            for lin, w, i in ((new.q_proj, wq, 0), (new.k_proj, wk, 1), (new.v_proj, wv, 2)):
                lin.weight.copy_(w)
                if bias:
                    lin.bias.copy_(module.in_proj_bias[i * E:(i + 1) * E])
            new.out_proj.weight.copy_(module.out_proj.weight)
            if bias:
                new.out_proj.bias.copy_(module.out_proj.bias)
        return new.to(module.out_proj.weight.device, module.out_proj.weight.dtype)
