"""Scaled dot-product attention and multi-head attention, from scratch.

    weights = softmax(q @ k.T / sqrt(d) + mask)        (..., T, S), each row sums to 1
    output  = weights @ v                               (..., T, dv)

Mask convention used everywhere in lmcore: a **bool** tensor, ``True`` = "this query may
attend to this key" (the same as ``torch.nn.functional.scaled_dot_product_attention``).
``nn.MultiheadAttention`` uses the opposite for ``attn_mask`` (``True`` = blocked); its
``key_padding_mask`` (``True`` = padding) is accepted here unchanged.

A query whose keys are all masked gets zero weights and a zero output, never NaN.
Tested against ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_mask(mask, shape, name="mask"):
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor (True = may attend), got {got}")
    try:  # (torch.broadcast_shapes is slow in Python: skip it when the shapes are equal)
        out = tuple(shape) if mask.shape == shape else torch.broadcast_shapes(mask.shape, shape)
    except RuntimeError:
        out = None
    if out != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}, which does not broadcast "
                         f"to the scores' shape {tuple(shape)} (..., T, S)")
    return mask


def _scores_shape(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() < 2:
            raise ValueError(f"{name} must be a tensor with at least 2 dims (..., seq, dim), "
                             f"got {getattr(t, 'shape', type(t).__name__)}")
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


def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, need_weights=True,
                                 training=False, scale=None):
    """Attention of queries ``q`` over keys ``k`` and values ``v``.

    q: (..., T, d), k: (..., S, d), v: (..., S, dv).
    mask: bool, broadcastable to (..., T, S), True = may attend.
    scale: multiplies the scores; default 1/sqrt(d).
    Returns (output (..., T, dv), weights (..., T, S) or None). The weights are returned
    before dropout (they are the attention distribution). With ``need_weights=False`` the
    fused ``F.scaled_dot_product_attention`` computes the output (fast path).
    """
    shape = _scores_shape(q, k, v)
    mask = _check_mask(mask, shape)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    p = dropout_p if training else 0.0
    # A query whose keys are all masked would get softmax(all -inf) = 0/0 = NaN. Only with a
    # mask: let such rows see every key (no NaN), then zero their weights and output below.
    alive = None
    if mask is not None:
        alive = mask.any(dim=-1, keepdim=True)            # (..., T, 1): sees at least one key
        if bool(alive.all()):
            alive = None                                  # the usual case: nothing to fix
        else:
            mask = mask | ~alive

    if not need_weights:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=scale)
        return (out if alive is None else out * alive), None

    # scale q (T x d numbers), not the scores (T x S): the same maths, fewer multiplications
    scores = (q * scale) @ k.transpose(-2, -1)            # (..., T, S)
    if mask is not None:
        # blocked scores -> the most negative finite number, not -inf: exp(min - max)
        # underflows to exactly 0 and gradients stay finite. In place: scores is our own.
        scores.masked_fill_(~mask, torch.finfo(scores.dtype).min)
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
    for name, n in (("T", T), ("S", S)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    if S < T:
        raise ValueError(f"S={S} keys < T={T} queries: expected S >= T (queries are the last T positions)")
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
    S = int(lengths.max()) if max_len is None else int(max_len)
    if bool((lengths < 0).any()) or int(lengths.max()) > S:
        raise ValueError(f"lengths must lie in [0, max_len={S}], got {lengths.tolist()}")
    real = torch.arange(S, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
    return real[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Multi-head attention, batch first: H heads of size embed_dim // H, concatenated.

    Weights match ``nn.MultiheadAttention`` (see ``from_torch``), but the output weights
    are per head (B, H, T, S), not averaged over heads.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, kdim=None, vdim=None):
        super().__init__()
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if not isinstance(embed_dim, int) or embed_dim < 1 or embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim!r} must be a positive int divisible by "
                             f"num_heads={num_heads} (each head gets embed_dim // num_heads dims)")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _split(self, x):  # (B, L, E) -> (B, H, L, head_dim)
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key=None, value=None, *, attn_mask=None, key_padding_mask=None,
                is_causal=False, need_weights=False):
        """query: (B, T, embed_dim); key: (B, S, kdim), value: (B, S, vdim).

        key=None -> self-attention (key = value = query); value=None -> value = key.
        attn_mask: bool (T, S), (B*H, T, S) or broadcastable to (B, H, T, S);
            True = MAY attend (lmcore/SDPA convention, the opposite of nn.MultiheadAttention).
        key_padding_mask: bool (B, S), True = PADDING (torch's convention).
        is_causal: also apply ``causal_mask(T, S)``.
        Returns (output (B, T, embed_dim), weights (B, H, T, S) or None).
        """
        key = query if key is None else key
        value = key if value is None else value
        for name, t, e in (("query", query, self.embed_dim), ("key", key, self.kdim),
                           ("value", value, self.vdim)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[-1] != e:
                raise ValueError(f"{name} must be (batch, seq, {e}), got "
                                 f"{tuple(getattr(t, 'shape', ())) or type(t).__name__}")
        B, T, _ = query.shape
        S = key.shape[1]
        if key.shape[:2] != value.shape[:2] or key.shape[0] != B:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must be "
                             f"(B={B}, S, dim) with the same S")
        H = self.num_heads
        mask = None
        if attn_mask is not None:
            if isinstance(attn_mask, torch.Tensor) and attn_mask.dim() == 3 and attn_mask.shape[0] == B * H:
                attn_mask = attn_mask.view(B, H, T, S)  # torch's (B*H, T, S) layout
            mask = _check_mask(attn_mask, (B, H, T, S), "attn_mask")
        if key_padding_mask is not None:
            if (not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool
                    or tuple(key_padding_mask.shape) != (B, S)):
                raise ValueError(f"key_padding_mask must be bool (B={B}, S={S}), True = padding; got "
                                 f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)} "
                                 f"{tuple(getattr(key_padding_mask, 'shape', ()))}")
            kpm = padding_mask(key_padding_mask)
            mask = kpm if mask is None else mask & kpm
        if is_causal:
            cm = causal_mask(T, S, device=query.device)
            mask = cm if mask is None else mask & cm
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout, need_weights, self.training)
        out = out.transpose(1, 2).reshape(B, T, self.embed_dim)   # concatenate the heads
        return self.out_proj(out), weights

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the projections of an ``nn.MultiheadAttention`` (the weights do not depend on
        its ``batch_first``; our forward is always batch first)."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module must be nn.MultiheadAttention, got {type(module).__name__}")
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError("module uses add_bias_kv or add_zero_attn, which MultiHeadAttention does not support")
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
