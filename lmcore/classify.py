"""Sentence classifiers built from the book's parts, and the loop that trains them.

Both models read a right-padded batch ``ids: (B, T)`` with ``lengths: (B,)`` (from
:func:`lmcore.textdata.pad_batch`) and return one logit per sentence, ``(B,)``;
``sigmoid(logit)`` is the probability of class 1. Padding never changes a prediction:

* :class:`LSTMClassifier` reads the LSTM state after each sentence's **last real token**
  (states at padding positions are ignored);
* :class:`TransformerClassifier` prepends a learned [CLS] vector, masks the padding keys in
  every attention layer, and classifies the [CLS] position's final vector.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .rnn import LSTM
from .seq2seq import EncoderBlock
from .transformer import LayerNorm, SinusoidalPositions


def _check_batch(ids, lengths):
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids must be a (batch, seq) int64 tensor, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != ids.shape[:1]:
        raise ValueError(f"lengths must be a ({ids.shape[0]},) tensor, one length per row of ids")
    if bool(((lengths < 1) | (lengths > ids.shape[1])).any()):
        raise ValueError(f"lengths must lie in 1..{ids.shape[1]} (the padded width), got "
                         f"{lengths.min().item()}..{lengths.max().item()}")


class LSTMClassifier(nn.Module):
    """Embedding -> lmcore.rnn.LSTM -> state after the last real token -> linear -> logit."""

    def __init__(self, vocab_size: int, emb: int = 64, hidden: int = 64, dropout: float = 0.0,
                 pad_id: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb, padding_idx=pad_id)
        self.lstm = LSTM(emb, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, T) right-padded, lengths (B,) -> logits (B,)."""
        _check_batch(ids, lengths)
        out, _ = self.lstm(self.embed(ids))         # (B, T, H); out[:, t] has read tokens 0..t
        rows = torch.arange(ids.shape[0], device=ids.device)
        last = out[rows, lengths.to(ids.device) - 1]  # NOT out[:, -1]: that one has read the padding
        return self.head(self.drop(last)).squeeze(-1)


@dataclass
class EncoderClassifierConfig:
    vocab_size: int
    max_len: int = 64  # longest sentence in tokens (the [CLS] vector is extra)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    bias: bool = True

    def __post_init__(self):  # checked once, before anything is built
        for name in ("vocab_size", "max_len", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EncoderClassifierConfig.{name}={value!r}; expected a positive int")
        if self.n_embd % self.n_head or self.n_embd % 2:
            raise ValueError(f"n_embd={self.n_embd} must be even (sinusoidal positions) and "
                             f"divisible by n_head={self.n_head}")
        if not 0 <= self.dropout <= 1:
            raise ValueError(f"dropout={self.dropout!r}; expected a probability in [0, 1]")


class TransformerClassifier(nn.Module):
    """[CLS] + token embeddings + positions -> encoder blocks (padding masked) -> LayerNorm
    -> the [CLS] vector -> linear -> logit. Blocks: :class:`lmcore.seq2seq.EncoderBlock`."""

    def __init__(self, config: EncoderClassifierConfig):
        super().__init__()
        if not isinstance(config, EncoderClassifierConfig):
            raise TypeError(f"config must be an EncoderClassifierConfig, got {type(config).__name__}")
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.n_embd))
        self.pos = SinusoidalPositions(c.max_len + 1, c.n_embd)  # Vaswani et al. 2017
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(c) for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, bias=c.bias, fused=True)
        self.head = nn.Linear(c.n_embd, 1)
        nn.init.normal_(self.embed.weight, std=c.n_embd ** -0.5)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, need_weights: bool = False):
        """ids (B, T) right-padded, lengths (B,) -> (logits (B,), attention weights per layer
        (B, heads, 1+T, 1+T) -- position 0 is [CLS] -- or None)."""
        _check_batch(ids, lengths)
        B, T = ids.shape
        if T > self.config.max_len:
            raise ValueError(f"ids has {T} tokens per row, more than max_len={self.config.max_len}")
        x = self.embed(ids) * math.sqrt(self.config.n_embd)
        x = torch.cat([self.cls.expand(B, 1, -1), x], dim=1)    # (B, 1+T, E)
        x = self.drop(x + self.pos(torch.arange(T + 1, device=ids.device)))
        # key_padding_mask: True = padding (never attended to); [CLS] is never padding
        steps = torch.arange(T + 1, device=ids.device)
        padding = steps[None, :] > lengths.to(ids.device)[:, None]
        weights = []
        for block in self.blocks:
            x, w = block(x, padding, need_weights)
            weights.append(w)
        logits = self.head(self.ln_f(x[:, 0])).squeeze(-1)
        return logits, (weights if need_weights else None)


class MiniLMClassifier(nn.Module):
    """A copy of the pretrained MiniLM encoder (:mod:`lmcore.pretrained`) + mean pooling over
    the real tokens + linear -> logit, for fine-tuning every weight. ids: WordPiece ids
    ([CLS] ... [SEP], right-padded with 0 = [PAD]) (B, T), lengths (B,) -> logits (B,)."""

    def __init__(self):
        super().__init__()
        from .pretrained import load_minilm

        self.encoder = copy.deepcopy(load_minilm()[0])  # never change the shared, cached model
        self.head = nn.Linear(self.encoder.config.hidden_size, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        _check_batch(ids, lengths)
        real = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        h = self.encoder(input_ids=ids, attention_mask=real.long()).last_hidden_state  # (B, T, 384)
        pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        return self.head(pooled).squeeze(-1)


def _logits(model, ids, lengths):
    out = model(ids, lengths)
    return out[0] if isinstance(out, tuple) else out


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Random batches of similar-length rows (less padding): shuffle, sort within windows of
    50 batches by length, cut into batches, shuffle the batches. Returns a list of index tensors."""
    perm = torch.randperm(len(lengths), generator=generator)
    window = 50 * batch_size
    batches = []
    for start in range(0, len(perm), window):
        chunk = perm[start:start + window]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order]


def train_classifier(model, train, *, val=None, epochs: int = 4, batch_size: int = 64,
                     lr: float = 2e-3, weight_decay: float = 0.01, seed: int = 0) -> dict:
    """Train with binary cross-entropy on the logits (AdamW, gradient norm clipped to 1).

    train, val: ``(ids (N, T), lengths (N,), labels (N,) of 0/1)`` on the CPU; batches go to
    the model's device. With ``val``, the accuracy on it is measured after every epoch and
    the weights of the best epoch are restored at the end (early stopping).
    Returns {"loss": mean training loss per epoch, "val_acc": per epoch (or []),
    "best_epoch": 1-based, "seconds": wall time}.
    """
    ids, lengths, labels = _check_split("train", train)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    out = {"loss": [], "val_acc": [], "best_epoch": epochs}
    best, t0 = None, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in length_batches(lengths, batch_size, generator):
            width = int(lengths[idx].max())  # cut the batch to its own longest sentence
            x, n, y = ids[idx, :width].to(device), lengths[idx].to(device), labels[idx].to(device)
            loss = F.binary_cross_entropy_with_logits(_logits(model, x, n), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(idx)
        out["loss"].append(total / len(lengths))
        if val is not None:
            v_ids, v_len, v_y = _check_split("val", val)
            acc = ((predict_logits(model, v_ids, v_len) > 0).float() == v_y).float().mean().item()
            out["val_acc"].append(acc)
            if best is None or acc > max(out["val_acc"][:-1]):
                best = {k: t.detach().clone() for k, t in model.state_dict().items()}
                out["best_epoch"] = epoch + 1
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    out["seconds"] = time.perf_counter() - t0
    return out


def _check_split(name, split):
    if not (isinstance(split, (tuple, list)) and len(split) == 3):
        raise ValueError(f"{name} must be a tuple (ids, lengths, labels)")
    ids, lengths, labels = split
    _check_batch(ids, lengths)
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if labels.shape != lengths.shape or not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"{name} labels must be ({len(lengths)},) zeros and ones, got shape "
                         f"{tuple(labels.shape)}")
    return ids, lengths, labels


@torch.no_grad()
def predict_logits(model, ids, lengths, batch_size: int = 256) -> torch.Tensor:
    """Logits (N,) on the CPU for every row, in eval mode (no dropout)."""
    _check_batch(ids, lengths)
    device = next(model.parameters()).device
    model.eval()
    out = []
    for idx in torch.arange(len(lengths)).split(batch_size):
        width = int(lengths[idx].max())
        out.append(_logits(model, ids[idx, :width].to(device), lengths[idx].to(device)).float().cpu())
    return torch.cat(out)
