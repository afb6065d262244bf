"""The parts every Transformer here is built from, and their argument checks.

LayerNorm, position vectors (learned or sinusoidal), the position-wise feed-forward
network, GPT-2's weight initialisation, and the token-level cross-entropy. Both
:mod:`lmcore.transformer` (GPT) and :mod:`lmcore.seq2seq` (the encoder-decoder) use them.

The ``check_*`` helpers raise ``ValueError``/``TypeError`` naming the argument, the value
and what is expected; the models call them once, at their edge.
Shapes: B batch, T sequence length, E = n_embd, V vocabulary size.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100  # a target that the loss skips (padding), as in F.cross_entropy


def is_tracing() -> bool:
    """True under torch.compile / torch.export / jit tracing / ONNX export: data-dependent
    checks (``bool(tensor)``) cannot run there, so the callers skip them."""
    compiler = getattr(torch, "compiler", None)  # (the TorchScript ONNX exporter jit-traces)
    compiling = getattr(compiler, "is_compiling", lambda: False)()
    exporting = getattr(compiler, "is_exporting", lambda: False)()
    return bool(compiling or exporting or torch.jit.is_tracing())


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` must be a Python int (not bool) >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_probability(name: str, p) -> float:
    """A dropout probability: a real number in [0, 1] (NaN is refused)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def check_ids(name: str, ids, vocab_size: int, values: bool = True) -> None:
    """``ids`` must be a (B, T) tensor of int64/int32 token ids with T >= 1 and, when
    ``values``, every id in [0, vocab_size) (that check waits for the device)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(f"{name} must be a (batch, seq) tensor of token ids, got "
                         f"{type(ids).__name__} with shape {tuple(getattr(ids, 'shape', ()))}")
    if ids.dtype not in (torch.long, torch.int):
        raise TypeError(f"{name} must hold integer token ids of dtype torch.long (or torch.int32),"
                        f" got {ids.dtype}; convert with {name}.long()")
    if ids.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(ids.shape)}: expected at least one token (T >= 1)")
    if values and not is_tracing() and ids.numel() and bool(((ids < 0) | (ids >= vocab_size)).any()):
        raise ValueError(f"{name} has token ids in [{int(ids.min())}, {int(ids.max())}], "
                         f"expected 0 <= id < vocab_size={vocab_size}")


def check_targets(name: str, targets, shape, vocab_size: int, values: bool = True) -> None:
    """Targets of a language-model loss: integer ids of ``shape``, each -100 (ignored) or
    in [0, vocab_size)."""
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)} (like the input ids), "
                         f"got {type(targets).__name__} {tuple(getattr(targets, 'shape', ()))}")
    if targets.dtype not in (torch.long, torch.int):
        raise TypeError(f"{name} must hold integer ids (torch.long), got {targets.dtype}")
    if values and not is_tracing() and targets.numel():
        bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= vocab_size))
        if bool(bad.any()):
            raise ValueError(f"{name} has the id {int(targets[bad][0])}; expected -100 (ignore) "
                             f"or 0 <= id < vocab_size={vocab_size}")


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored tokens. logits (..., V), targets (...), -100 = skip.

    Equal to ``F.cross_entropy(..., ignore_index=-100)`` except when *no* token is scored
    (a fully padded batch, or T = 0): F.cross_entropy gives NaN (0/0), this gives 0 — the
    batch contributes nothing, and ``backward()`` gives zero gradients, not NaN.
    """
    V = logits.shape[-1]
    flat = targets.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, V), flat, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (flat != IGNORE_INDEX).sum().clamp(min=1)  # on the device: no wait for the count
    return total / count


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
        check_int("dim", dim)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
            raise ValueError(f"eps must be a finite number > 0 (it keeps the division away "
                             f"from zero), got {eps!r}")
        self.dim, self.eps, self.fused = dim, float(eps), fused
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
    def from_torch(cls, ln: nn.LayerNorm) -> LayerNorm:
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


def _lookup(table: torch.Tensor, positions: torch.Tensor, max_len: int) -> torch.Tensor:
    try:  # an index outside the table fails inside F.embedding (on the CPU): say why
        return F.embedding(positions, table)
    except (IndexError, RuntimeError) as err:
        raise ValueError(f"positions must be integers in [0, max_len={max_len}), got "
                         f"{positions.tolist() if positions.numel() < 20 else positions.shape}"
                         ) from err


class LearnedPositions(nn.Module):
    """One trained vector per position (GPT-2). positions: (T,) int in [0, max_len) -> (T, E)."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = check_int("max_len", max_len)
        self.weight = nn.Parameter(torch.zeros(max_len, check_int("dim", dim)))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return _lookup(self.weight, positions, self.max_len)


class SinusoidalPositions(nn.Module):
    """Fixed vectors of Vaswani et al. (2017). positions: (T,) int in [0, max_len) -> (T, E).

    PE[p, 2i] = sin(p / 10000^(2i/E)),  PE[p, 2i+1] = cos(p / 10000^(2i/E)).
    """

    def __init__(self, max_len: int, dim: int, base: float = 10000.0):
        super().__init__()
        if check_int("dim", dim) % 2:
            raise ValueError(f"sinusoidal positions need an even dim, got dim={dim}")
        self.max_len = check_int("max_len", max_len)
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]
        freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (E/2,)
        table = torch.zeros(max_len, dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return _lookup(self.table, positions, self.max_len)


def make_positions(kind: str, max_len: int, dim: int) -> nn.Module:
    """``LearnedPositions`` for ``"learned"``, ``SinusoidalPositions`` for ``"sinusoidal"``."""
    if kind == "learned":
        return LearnedPositions(max_len, dim)
    if kind == "sinusoidal":
        return SinusoidalPositions(max_len, dim)
    raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {kind!r}")


def dropout_layer(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or for ``p = 0`` an ``nn.Identity`` that skips a no-op call per use."""
    return nn.Dropout(p) if check_probability("dropout", p) > 0 else nn.Identity()


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(E, 4E) -> GELU -> Linear(4E, E) -> Dropout. (B, T, E) -> (B, T, E)."""

    def __init__(self, n_embd: int, dropout: float = 0.0, bias: bool = True, hidden: int | None = None):
        super().__init__()
        hidden = check_int("hidden", hidden) if hidden is not None else 4 * check_int("n_embd", n_embd)
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, n_embd, bias=bias)  # a residual projection
        self.drop = dropout_layer(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation: Linear and Embedding weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
