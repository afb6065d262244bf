"""The encoder-decoder Transformer (Vaswani et al. 2017), for sequence-to-sequence tasks.

A bidirectional encoder reads the whole source; the decoder has masked (causal)
self-attention over the target so far plus cross-attention to the encoder's output. It
reuses the parts of :mod:`lmcore.layers` and the attention of :mod:`lmcore.attention`.
Shapes: B batch, S source length, T target length, E = n_embd, H heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .attention import MultiHeadAttention
from .layers import (
    FeedForward,
    LayerNorm,
    check_ids,
    check_int,
    check_probability,
    check_targets,
    init_weights,
    make_positions,
    token_cross_entropy,
)


@dataclass
class EncoderDecoderConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    max_len: int = 64  # longest source or target sequence
    n_layer: int = 2  # encoder layers = decoder layers
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    bias: bool = True
    positions: str = "sinusoidal"
    pad_id: int = 0  # source padding; the target side uses -100 in tgt_out instead
    bos_id: int = 1  # target start token
    eos_id: int = 2  # target end token

    def __post_init__(self):  # every size checked here, before anything is built
        for name in ("src_vocab_size", "tgt_vocab_size", "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name))
        check_int("max_len", self.max_len, 2)  # <bos> and at least one target token
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        check_probability("dropout", self.dropout)
        for name, vocab in (("pad_id", "src_vocab_size"), ("bos_id", "tgt_vocab_size"),
                            ("eos_id", "tgt_vocab_size")):
            if not 0 <= check_int(name, getattr(self, name), 0) < getattr(self, vocab):
                raise ValueError(f"{name}={getattr(self, name)} must be < {vocab}={getattr(self, vocab)}")


class EncoderDecoderOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, tgt_vocab_size)
    loss: torch.Tensor | None
    encoder_attentions: list | None  # per layer (B, H, S, S)
    decoder_attentions: list | None  # per layer (B, H, T, T), causal
    cross_attentions: list | None  # per layer (B, H, T, S): which source word each output reads


def _ln(c) -> LayerNorm:
    return LayerNorm(c.n_embd, bias=c.bias, fused=True)


class EncoderBlock(nn.Module):
    """Pre-LN: x + self_attn(ln1(x)) over all (non-padding) source words; x + mlp(ln2(x))."""

    def __init__(self, c: EncoderDecoderConfig):
        super().__init__()
        self.ln1, self.ln2 = _ln(c), _ln(c)
        self.attn = MultiHeadAttention(c.n_embd, c.n_head, dropout=c.dropout, bias=c.bias)
        self.mlp = FeedForward(c.n_embd, c.dropout, c.bias)

    def forward(self, x, pad_mask, need_weights=False):
        a, w = self.attn(self.ln1(x), key_padding_mask=pad_mask, need_weights=need_weights)
        x = x + a
        return x + self.mlp(self.ln2(x)), w


class DecoderBlock(nn.Module):
    """Pre-LN: masked self-attention, cross-attention to the encoder output, feed-forward."""

    def __init__(self, c: EncoderDecoderConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = _ln(c), _ln(c), _ln(c)
        self.self_attn = MultiHeadAttention(c.n_embd, c.n_head, dropout=c.dropout, bias=c.bias)
        self.cross_attn = MultiHeadAttention(c.n_embd, c.n_head, dropout=c.dropout, bias=c.bias)
        self.mlp = FeedForward(c.n_embd, c.dropout, c.bias)

    def forward(self, y, memory, src_pad_mask, need_weights=False):
        a, w_self = self.self_attn(self.ln1(y), is_causal=True, need_weights=need_weights)
        y = y + a
        h = self.ln2(y)  # queries from the target, keys and values from the source
        a, w_cross = self.cross_attn(h, memory, memory, key_padding_mask=src_pad_mask, need_weights=need_weights)
        y = y + a
        return y + self.mlp(self.ln3(y)), w_self, w_cross


class EncoderDecoder(nn.Module):
    """Transformer for sequence-to-sequence tasks. src: (B, S), tgt_in: (B, T) -> logits (B, T, V_tgt)."""

    def __init__(self, config: EncoderDecoderConfig):
        super().__init__()
        if not isinstance(config, EncoderDecoderConfig):
            raise TypeError(f"config must be an EncoderDecoderConfig, got {type(config).__name__}")
        self.config = c = config
        self.src_emb = nn.Embedding(c.src_vocab_size, c.n_embd)
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, c.n_embd)
        self.pos = make_positions(c.positions, c.max_len, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(c) for _ in range(c.n_layer))
        self.decoder = nn.ModuleList(DecoderBlock(c) for _ in range(c.n_layer))
        self.ln_enc, self.ln_dec = _ln(c), _ln(c)
        self.head = nn.Linear(c.n_embd, c.tgt_vocab_size, bias=False)
        self.apply(init_weights)
        for emb in (self.src_emb, self.tgt_emb):
            nn.init.normal_(emb.weight, std=c.n_embd ** -0.5)

    def embed(self, emb, ids):
        """ids (B, L) -> token vectors (B, L, E) plus positions, through ``emb``."""
        if ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds max_len={self.config.max_len}")
        pos = torch.arange(ids.shape[1], device=ids.device)
        # Vaswani et al. scale the embeddings by sqrt(E) (they start with std 1/sqrt(E)),
        # so tokens and sinusoidal positions have comparable sizes.
        return self.drop(emb(ids) * math.sqrt(self.config.n_embd) + self.pos(pos))

    def encode(self, src, src_padding_mask=None, need_weights=False):
        """src: (B, S) -> memory (B, S, E), padding mask (B, S) (True = padding), weights per layer."""
        check_ids("src", src, self.config.src_vocab_size)
        if src_padding_mask is None:
            src_padding_mask = src == self.config.pad_id
        elif (not isinstance(src_padding_mask, torch.Tensor) or src_padding_mask.dtype != torch.bool
              or src_padding_mask.shape != src.shape):
            raise ValueError(f"src_padding_mask must be a bool tensor of shape {tuple(src.shape)} "
                             f"(True = padding), got {getattr(src_padding_mask, 'dtype', '')} "
                             f"{tuple(getattr(src_padding_mask, 'shape', ())) or type(src_padding_mask).__name__}")
        x, weights = self.embed(self.src_emb, src), []
        for block in self.encoder:
            x, w = block(x, src_padding_mask, need_weights)
            weights.append(w)
        return self.ln_enc(x), src_padding_mask, weights

    def decode(self, tgt_in, memory, src_padding_mask, need_weights=False):
        """tgt_in: (B, T) starting with BOS -> logits (B, T, V_tgt), self and cross weights."""
        check_ids("tgt_in", tgt_in, self.config.tgt_vocab_size)
        if not isinstance(memory, torch.Tensor) or memory.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"tgt_in has batch size {tgt_in.shape[0]} but the source (memory) has "
                             f"{tuple(getattr(memory, 'shape', ()))[:1]}: one target row per source row")
        y, w_self, w_cross = self.embed(self.tgt_emb, tgt_in), [], []
        for block in self.decoder:
            y, ws, wc = block(y, memory, src_padding_mask, need_weights)
            w_self.append(ws)
            w_cross.append(wc)
        return self.head(self.ln_dec(y)), w_self, w_cross

    def forward(self, src, tgt_in, tgt_out=None, src_padding_mask=None, need_weights=False) -> EncoderDecoderOutput:
        """src: (B, S) source ids (pad_id = padding unless ``src_padding_mask`` is given);
        tgt_in: (B, T) target ids shifted right (BOS first); tgt_out: (B, T) the ids to
        predict, -100 = ignore (padding). The loss is their mean cross-entropy, 0 if every
        tgt_out is -100 (as in ``GPT``)."""
        memory, pad, w_enc = self.encode(src, src_padding_mask, need_weights)
        logits, w_dec, w_cross = self.decode(tgt_in, memory, pad, need_weights)
        loss = None if tgt_out is None else self.loss(logits, tgt_out)
        if not need_weights:
            w_enc = w_dec = w_cross = None
        return EncoderDecoderOutput(logits, loss, w_enc, w_dec, w_cross)

    def loss(self, logits, tgt_out) -> torch.Tensor:
        """Mean cross-entropy of logits (B, T, V) against tgt_out (B, T), -100 = ignore;
        0, not NaN, when every target is ignored."""
        check_targets("tgt_out", tgt_out, logits.shape[:2], self.config.tgt_vocab_size)
        return token_cross_entropy(logits, tgt_out)

    @torch.no_grad()
    def generate(self, src, max_new_tokens: int | None = None, src_padding_mask=None) -> torch.Tensor:
        """Greedy decoding: (B, S) -> (B, <= max_new_tokens) ids after BOS; EOS ends a row
        (later positions are filled with EOS). max_new_tokens: 0 .. max_len - 1 (the
        decoder has max_len positions and BOS takes one); None = max_len - 1."""
        c = self.config
        max_new_tokens = c.max_len - 1 if max_new_tokens is None else max_new_tokens
        if check_int("max_new_tokens", max_new_tokens, 0) > c.max_len - 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} exceeds max_len - 1 = {c.max_len - 1}"
                             f" (the decoder's positions, one taken by <bos>)")
        memory, pad, _ = self.encode(src, src_padding_mask)
        out = torch.full((src.shape[0], 1), c.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            logits, _, _ = self.decode(out, memory, pad)
            nxt = logits[:, -1].argmax(-1).masked_fill(done, c.eos_id)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == c.eos_id
            if done.all():
                break
        return out[:, 1:]

    translate = generate
