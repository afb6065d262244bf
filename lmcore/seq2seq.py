"""The encoder-decoder Transformer (Vaswani et al. 2017), for sequence-to-sequence tasks.

A bidirectional encoder reads the whole source; the decoder has masked (causal)
self-attention over the target so far plus cross-attention to the encoder's output. It
reuses the parts of :mod:`lmcore.transformer` and the attention of :mod:`lmcore.attention`.
Shapes: B batch, S source length, T target length, E = n_embd, H heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import MultiHeadAttention
from .transformer import FeedForward, LayerNorm, _init_weights, _positions, check_ids


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


class EncoderDecoderOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, tgt_vocab_size)
    loss: Optional[torch.Tensor]
    encoder_attentions: Optional[list]  # per layer (B, H, S, S)
    decoder_attentions: Optional[list]  # per layer (B, H, T, T), causal
    cross_attentions: Optional[list]  # per layer (B, H, T, S): which source word each output reads


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
        self.pos = _positions(c.positions, c.max_len, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(c) for _ in range(c.n_layer))
        self.decoder = nn.ModuleList(DecoderBlock(c) for _ in range(c.n_layer))
        self.ln_enc, self.ln_dec = _ln(c), _ln(c)
        self.head = nn.Linear(c.n_embd, c.tgt_vocab_size, bias=False)
        self.apply(_init_weights)
        for emb in (self.src_emb, self.tgt_emb):
            nn.init.normal_(emb.weight, std=c.n_embd ** -0.5)

    def _embed(self, emb, ids):
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
        elif src_padding_mask.shape != src.shape or src_padding_mask.dtype != torch.bool:
            raise ValueError(f"src_padding_mask must be a bool tensor of shape {tuple(src.shape)} "
                             f"(True = padding), got {src_padding_mask.dtype} {tuple(src_padding_mask.shape)}")
        x, weights = self._embed(self.src_emb, src), []
        for block in self.encoder:
            x, w = block(x, src_padding_mask, need_weights)
            weights.append(w)
        return self.ln_enc(x), src_padding_mask, weights

    def decode(self, tgt_in, memory, src_padding_mask, need_weights=False):
        """tgt_in: (B, T) starting with BOS -> logits (B, T, V_tgt), self and cross weights."""
        check_ids("tgt_in", tgt_in, self.config.tgt_vocab_size)
        y, w_self, w_cross = self._embed(self.tgt_emb, tgt_in), [], []
        for block in self.decoder:
            y, ws, wc = block(y, memory, src_padding_mask, need_weights)
            w_self.append(ws)
            w_cross.append(wc)
        return self.head(self.ln_dec(y)), w_self, w_cross

    def forward(self, src, tgt_in, tgt_out=None, src_padding_mask=None, need_weights=False) -> EncoderDecoderOutput:
        """src: (B, S) source ids (pad_id = padding unless ``src_padding_mask`` is given);
        tgt_in: (B, T) target ids shifted right (BOS first); tgt_out: (B, T) the ids to
        predict, -100 = ignore (padding)."""
        memory, pad, w_enc = self.encode(src, src_padding_mask, need_weights)
        logits, w_dec, w_cross = self.decode(tgt_in, memory, pad, need_weights)
        loss = None
        if tgt_out is not None:
            if tgt_out.shape != tgt_in.shape:
                raise ValueError(f"tgt_out must have the shape of tgt_in {tuple(tgt_in.shape)}, "
                                 f"got {tuple(tgt_out.shape)}")
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1), ignore_index=-100)
        if not need_weights:
            w_enc = w_dec = w_cross = None
        return EncoderDecoderOutput(logits, loss, w_enc, w_dec, w_cross)

    @torch.no_grad()
    def generate(self, src, max_new_tokens: int = 20, src_padding_mask=None) -> torch.Tensor:
        """Greedy decoding: (B, S) -> (B, <= max_new_tokens) ids after BOS; EOS ends a row
        (later positions are filled with EOS)."""
        c = self.config
        memory, pad, _ = self.encode(src, src_padding_mask)
        out = torch.full((src.shape[0], 1), c.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(min(max_new_tokens, c.max_len - 1)):
            logits, _, _ = self.decode(out, memory, pad)
            nxt = logits[:, -1].argmax(-1).masked_fill(done, c.eos_id)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == c.eos_id
            if done.all():
                break
        return out[:, 1:]

    translate = generate
