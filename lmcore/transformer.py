"""The Transformer: blocks of attention and feed-forward layers with residuals and LayerNorm.

The parts (LayerNorm, positions, feed-forward, the block) and :class:`GPT`, a decoder-only
language model (Radford et al. 2019) with a :class:`KVCache` for fast token-by-token
decoding. The encoder-decoder built from the same parts is in :mod:`lmcore.seq2seq`.

Attention itself lives in :mod:`lmcore.attention`; this module only wires it up.
Shapes: B batch, T query length, S key length, E = n_embd, H heads, D = E // H.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_mask, scaled_dot_product_attention


class LayerNorm(nn.Module):
    """Normalise the last dimension to mean 0, variance 1, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance
    (divide by E, not E - 1), exactly as ``torch.nn.LayerNorm``. x: (..., E) -> (..., E).

    ``fused=True`` computes the same function with PyTorch's single fused kernel
    (``F.layer_norm``): the models use it for speed, the way attention uses the fused
    ``F.scaled_dot_product_attention``; the tests check that both paths agree.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True, fused: bool = False):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim, self.eps, self.fused = dim, eps, fused
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x has last dimension {x.shape[-1]}, expected dim={self.dim}")
        if self.fused:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, like nn.LayerNorm
        y = (x - mean) / torch.sqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y

    @classmethod
    def from_torch(cls, ln: nn.LayerNorm) -> "LayerNorm":
        """Copy the parameters of a ``torch.nn.LayerNorm`` over the last dimension."""
        if not isinstance(ln, nn.LayerNorm) or len(ln.normalized_shape) != 1:
            raise TypeError("ln must be a torch.nn.LayerNorm over one (the last) dimension")
        out = cls(ln.normalized_shape[0], eps=ln.eps, bias=ln.bias is not None)
        with torch.no_grad():
            if ln.weight is not None:
                out.weight.copy_(ln.weight)
            if ln.bias is not None:
                out.bias.copy_(ln.bias)
        return out


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT-2). positions: (T,) int -> (T, E)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return F.embedding(positions, self.weight)


class SinusoidalPositions(nn.Module):
    """Fixed vectors of Vaswani et al. (2017). positions: (T,) int -> (T, E).

    PE[p, 2i] = sin(p / 10000^(2i/E)),  PE[p, 2i+1] = cos(p / 10000^(2i/E)).
    """

    def __init__(self, max_len: int, dim: int, base: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got dim={dim}")
        self.max_len = max_len
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]
        freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (E/2,)
        table = torch.zeros(max_len, dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


def _positions(kind: str, max_len: int, dim: int) -> nn.Module:
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(max_len, dim)
    raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {kind!r}")


def _dropout(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or for ``p = 0`` an ``nn.Identity`` that skips a no-op call per use."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(E, 4E) -> GELU -> Linear(4E, E) -> Dropout. (B, T, E) -> (B, T, E)."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 4 * n_embd
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, n_embd, bias=bias)  # a residual projection
        self.drop = _dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class KVCache:
    """The decoding "register file": per layer, the keys and values already computed.

    ``keys[l]`` and ``values[l]`` are (B, n_head, S, head_dim) tensors (None while empty).
    A new token only computes its own key and value and reads all the cached ones.
    """

    def __init__(self, n_layer: int):
        self.n_layer = n_layer
        self.reset()

    def reset(self) -> None:
        """Forget everything (start a new sequence)."""
        self.keys: list[Optional[torch.Tensor]] = [None] * self.n_layer
        self.values: list[Optional[torch.Tensor]] = [None] * self.n_layer

    @property
    def length(self) -> int:
        """Number of positions S cached so far (0 when empty)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    @property
    def batch_size(self) -> Optional[int]:
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
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_head, self.head_dim, self.dropout = n_head, n_embd // n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # one matmul for q, k and v
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)  # a residual projection
        self.drop = _dropout(dropout)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, need_weights: bool = False):
        B, T, E = x.shape
        # (B, T, 3E) -> (3, B, H, T, D): split heads by a view, no per-head loop.
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        S = k.shape[2]
        p = self.dropout if self.training else 0.0
        if not need_weights and (S == T or T == 1):
            # Fast path: the fused kernel. For S == T its built-in causal mask (no mask tensor);
            # a single new token (a decode step, S > 1 with the cache) sees every key: no mask.
            # (is_causal would be wrong there: torch aligns its mask top-left, so query 0 sees key 0.)
            out, w = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=T > 1), None
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
    (Xiong et al. 2020). x: (B, T, E) -> (B, T, E).
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


class GPTOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab_size)
    loss: Optional[torch.Tensor]  # scalar mean cross-entropy, or None without targets
    attentions: Optional[list]  # per layer (B, H, T, S), or None


def check_ids(name: str, ids, vocab_size: int) -> None:
    """Raise a clear error unless ``ids`` is a (B, T) integer tensor with values in [0, vocab_size)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(f"{name} must be a (batch, seq) tensor of token ids, got "
                         f"{type(ids).__name__} with shape {tuple(getattr(ids, 'shape', ()))}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}")
    if ids.numel() and bool(((ids < 0) | (ids >= vocab_size)).any()):  # one sync, not two
        raise ValueError(f"{name} has token ids in [{int(ids.min())}, {int(ids.max())}], "
                         f"expected 0 <= id < vocab_size={vocab_size}")


class GPT(nn.Module):
    """Decoder-only Transformer language model. idx: (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = _positions(c.positions, c.block_size, c.n_embd)
        self.drop = _dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.n_embd, c.n_head, c.dropout, c.bias) for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, bias=c.bias, fused=True)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.wte.weight  # one matrix reads and writes tokens
        self.apply(_init_weights)
        for name, p in self.named_parameters():  # residual projections: keep the stream's variance
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    def forward(self, idx, targets=None, *, cache: KVCache | None = None, need_weights: bool = False,
                validate: bool = True) -> GPTOutput:
        """idx: (B, T) new token ids; targets: (B, T), -100 = ignore.

        With a ``cache``, positions continue at ``cache.length`` and the new keys/values are
        appended to it. ``validate=False`` skips the check that every id is < vocab_size (it
        waits for the device), for callers whose ids are known to be valid, like the decoding loop.
        """
        c = self.config
        if validate:
            check_ids("idx", idx, c.vocab_size)
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > c.block_size:
            where = f" + cache.length {start}" if cache is not None else ""
            raise ValueError(
                f"sequence length {T}{where} = {start + T} exceeds block_size={c.block_size}; "
                f"crop the context to its last {c.block_size} tokens"
                + (" (reset the cache and re-run the cropped context)" if cache is not None else "")
            )
        if cache is not None and cache.batch_size not in (None, B):
            raise ValueError(f"idx has batch size {B} but the cache holds batch size {cache.batch_size}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        attentions = [] if need_weights else None
        for i, block in enumerate(self.blocks):
            x, w = block(x, cache, i, need_weights)
            if need_weights:
                attentions.append(w)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got "
                                 f"{tuple(getattr(targets, 'shape', ()))}")
            # CrossEntropy wants (N, V) logits and (N,) targets: flatten batch and time.
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return GPTOutput(logits, loss, attentions)

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


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
