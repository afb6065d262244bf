"""The Transformer: blocks of attention and feed-forward layers with residuals and LayerNorm.

:class:`GPT`, a decoder-only language model (Radford et al. 2019), built from
:class:`Block` s, with a :class:`KVCache` for fast token-by-token decoding, and two sizes in
closed form: :func:`gpt_param_count` and :func:`kv_cache_bytes`. The parts (LayerNorm,
positions, feed-forward) are in :mod:`lmcore.layers`, attention in :mod:`lmcore.attention`;
the encoder-decoder built from the same parts is in :mod:`lmcore.seq2seq`.
Shapes: B batch, T query length, S key length, E = n_embd, H heads, D = E // H.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .attention import causal_mask, scaled_dot_product_attention
from .layers import (
    FeedForward,
    LayerNorm,
    LearnedPositions,
    SinusoidalPositions,
    check_ids,
    check_int,
    check_probability,
    check_targets,
    dropout_layer,
    init_weights,
    make_positions,
    token_cross_entropy,
)

__all__ = [  # the model, and the parts it is built from (re-exported from lmcore.layers)
    "GPT", "Block", "CausalSelfAttention", "FeedForward", "GPTConfig", "GPTOutput", "KVCache",
    "LayerNorm", "LearnedPositions", "SinusoidalPositions", "check_ids", "gpt_param_count",
    "kv_cache_bytes",
]


class KVCache:
    """The decoding "register file": per layer, the keys and values already computed.

    ``keys[l]`` and ``values[l]`` are (B, n_head, S, head_dim) tensors (None while empty).
    A new token only computes its own key and value and reads all the cached ones.
    """

    def __init__(self, n_layer: int):
        self.n_layer = check_int("n_layer", n_layer)
        self.reset()

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.keys: list[torch.Tensor | None] = [None] * self.n_layer
        self.values: list[torch.Tensor | None] = [None] * self.n_layer

    @property
    def length(self) -> int:
        """Number of positions S cached so far (0 when empty)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    @property
    def batch_size(self) -> int | None:
        return None if self.keys[0] is None else self.keys[0].shape[0]

    def crop(self, n: int) -> None:
        """Keep only the first ``n`` positions (e.g. to undo rejected draft tokens)."""
        if not 0 <= n <= self.length:
            raise ValueError(f"crop(n={n}): n must be between 0 and cache length {self.length}")
        if n == 0:
            return self.reset()
        self.keys = [k[:, :, :n] for k in self.keys]
        self.values = [v[:, :, :n] for v in self.values]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Add the new (B, H, T, D) keys/values of ``layer``; return all (B, H, S+T, D)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v



class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention with one fused q/k/v projection and an optional cache.

    x: (B, T, E) -> (B, T, E), and weights (B, H, T, S) when asked for.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if check_int("n_embd", n_embd) % check_int("n_head", n_head):
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.dropout = check_probability("dropout", dropout)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)  # a residual projection
        self.drop = dropout_layer(dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, need_weights: bool = False):
        B, T, E = x.shape
        # (B, T, 3E) -> (3, B, H, T, D): split heads by a view, no per-head loop.
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        S = k.shape[2]
        p = self.dropout if self.training else 0.0
        # Fast paths: the fused kernel, with no mask tensor. For S == T its built-in causal
        # mask; a single new token (a decode step, S > 1 with the cache) sees every key.
        # (is_causal would be wrong there: torch aligns its mask top-left, so query 0 sees key 0.)
        if not need_weights and S == T:
            out, w = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), None
        elif not need_weights and T == 1:
            out, w = F.scaled_dot_product_attention(q, k, v, dropout_p=p), None
        else:
            # Query i (absolute position S-T+i) sees keys 0..S-T+i; a single new token sees all.
            mask = None if T == 1 else causal_mask(T, S, device=x.device)
            out, w = scaled_dot_product_attention(
                q, k, v, mask=mask, dropout_p=p, need_weights=need_weights, training=self.training
            )
        out = out.transpose(1, 2).reshape(B, T, E)  # concatenate the heads
        return self.drop(self.proj(out)), w


class Block(nn.Module):
    """One Transformer block: attention then feed-forward, each inside a residual.

    Pre-LN (``norm_first=True``, GPT-2 and most modern models)::

        x = x + attn(ln1(x));  x = x + mlp(ln2(x))

    Post-LN (``norm_first=False``, the 2017 original)::

        x = ln1(x + attn(x));  x = ln2(x + mlp(x))

    Pre-LN keeps an un-normalised "residual stream" from input to output, so gradients
    reach early layers directly and training is stable without learning-rate warm-up
    (Xiong et al. 2020). x: (B, T, E) -> (B, T, E). The same function as
    ``nn.TransformerEncoderLayer(E, H, 4E, dropout, "gelu", batch_first=True,
    norm_first=norm_first)`` with a causal mask (tested with copied weights).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = LayerNorm(n_embd, bias=bias, fused=True)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln2 = LayerNorm(n_embd, bias=bias, fused=True)
        self.mlp = FeedForward(n_embd, dropout, bias)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, need_weights: bool = False):
        if self.norm_first:
            a, w = self.attn(self.ln1(x), cache, layer, need_weights)
            x = x + a
            return x + self.mlp(self.ln2(x)), w
        a, w = self.attn(x, cache, layer, need_weights)
        x = self.ln1(x + a)
        return self.ln2(x + self.mlp(x)), w


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 128  # longest context
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True  # lm_head.weight is the token embedding (Press & Wolf 2017)
    positions: str = "learned"  # or "sinusoidal"

    def __post_init__(self):  # every size checked here, before anything is built
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        check_probability("dropout", self.dropout)
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {self.positions!r}")
        if self.positions == "sinusoidal" and self.n_embd % 2:
            raise ValueError(f"sinusoidal positions need an even n_embd, got {self.n_embd}")


class GPTOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    loss: torch.Tensor | None  # scalar mean cross-entropy, or None without targets
    attentions: list | None  # per layer (B, H, T, S), or None


class GPT(nn.Module):
    """Decoder-only Transformer language model. idx: (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = make_positions(c.positions, c.block_size, c.n_embd)
        self.drop = dropout_layer(c.dropout)
        self.blocks = nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout, c.bias) for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, bias=c.bias, fused=True)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix reads and writes tokens
        self.apply(init_weights)
        for name, p in self.named_parameters():  # residual projections: keep the stream's variance
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    def forward(self, idx, targets=None, *, cache: KVCache | None = None,
                need_weights: bool = False, validate: bool = True) -> GPTOutput:
        """idx: (B, T) token ids; targets: (B, T) next ids, -100 = not scored.

        loss: mean cross-entropy over the scored targets; 0 (not NaN) if none is scored.
        With a ``cache``, positions continue at ``cache.length`` and the new keys and values
        are appended to it. ``validate=False`` skips the id checks that wait for the device.
        """
        self.check_inputs(idx, targets, cache, validate)
        start = 0 if cache is None else cache.length
        pos = torch.arange(start, start + idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        attentions = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, cache, i, need_weights)
            attentions.append(w)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else token_cross_entropy(logits, targets)
        return GPTOutput(logits, loss, attentions if need_weights else None)

    def check_inputs(self, idx, targets=None, cache=None, validate: bool = True) -> None:
        """Raise a clear error unless ``forward`` can run on these arguments. ``validate=False``
        skips the checks of the id values (they wait for the device)."""
        c = self.config
        check_ids("idx", idx, c.vocab_size, values=validate)
        B, T = idx.shape
        start = 0
        if cache is not None:
            if not isinstance(cache, KVCache) or cache.n_layer != c.n_layer:
                raise TypeError(f"cache must be a KVCache for n_layer={c.n_layer} (model.new_cache()),"
                                f" got {type(cache).__name__}")
            if cache.batch_size not in (None, B):
                raise ValueError(f"idx has batch size {B} but the cache holds batch size {cache.batch_size}")
            start = cache.length
        if start + T > c.block_size:
            where = f" + cache.length {start}" if cache is not None else ""
            raise ValueError(
                f"sequence length {T}{where} = {start + T} exceeds block_size={c.block_size}; "
                f"crop the context to its last {c.block_size} tokens"
                + (" (reset the cache and re-run the cropped context)" if cache is not None else ""))
        if targets is not None:
            check_targets("targets", targets, idx.shape, c.vocab_size, values=validate)

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied matrix counts once).

        ``non_embedding=True`` (nanoGPT's convention) leaves out the position table and,
        when the weights are NOT tied, the token embedding (a pure look-up); a tied token
        embedding stays in, since it is also the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self.wpe.parameters())
            if not self.config.tie_weights:
                n -= self.wte.weight.numel()
        return n


def gpt_param_count(config: GPTConfig) -> int:
    """Parameters of ``GPT(config)`` in closed form, without building it (= ``num_params()``).

    Tokens V*E, learned positions T*E (sinusoidal ones are not trained), per block
    12E^2 + 13E (qkv 3E^2+3E, proj E^2+E, MLP 8E^2+5E, two LayerNorms 4E; 12E^2 + 2E
    without biases), the final LayerNorm 2E, and V*E more if the head is not tied.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    V, T, L, E = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    ln = 2 * E if config.bias else E
    per_block = 12 * E * E + (9 * E if config.bias else 0) + 2 * ln
    n = V * E + L * per_block + ln
    n += T * E if config.positions == "learned" else 0
    return n + (0 if config.tie_weights else V * E)


def kv_cache_bytes(n_layer: int, n_embd: int, seq_len: int, batch: int = 1,
                   bytes_per_value: int = 4) -> int:
    """Bytes a :class:`KVCache` holds: 2 tensors (K and V) per layer of batch x seq_len x n_embd.

    ``n_embd`` = n_head x head_dim; ``bytes_per_value`` 4 for float32, 2 for float16/bf16.
    """
    for name, v in (("n_layer", n_layer), ("n_embd", n_embd), ("batch", batch),
                    ("bytes_per_value", bytes_per_value)):
        check_int(name, v)
    check_int("seq_len", seq_len, 0)
    return 2 * n_layer * batch * seq_len * n_embd * bytes_per_value
