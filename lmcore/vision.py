"""Images as tokens: patches for a Vision Transformer, pixels for a GPT.

A Vision Transformer (Dosovitskiy et al. 2021) cuts the image into P x P
patches, embeds each patch as one token, prepends a learned class token, and
runs Transformer blocks without a causal mask. For generation, each pixel,
quantised to a few grey levels, is one token, and a GPT predicts them one by
one in raster order after a class token (the idea of iGPT, Chen et al. 2020,
at toy scale). Shapes: B batch, C channels, H x W image, L patches,
E = n_embd.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import MultiHeadAttention
from .cnn import im2col
from .layers import FeedForward, LayerNorm, check_int, init_weights


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, C * P * P): P x P patches in row-major order.

    The windows of a convolution with kernel = stride = P (im2col, transposed).
    """
    check_int("patch_size", patch_size)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 \
            or images.shape[-1] % patch_size or images.shape[-2] % patch_size:
        got = tuple(getattr(images, "shape", ()))
        raise ValueError(f"images must be (B, C, H, W) with H and W multiples "
                         f"of patch_size={patch_size}, got {got}")
    return im2col(images, patch_size, stride=patch_size).transpose(1, 2)


class AttentionBlock(nn.Module):
    """Pre-LN block, no causal mask: x attends to itself, or to ``memory``.

    x: (B, T, E). memory: None (self-attention) or (B, S, E), already
    normalised (cross-attention: queries from x, keys and values from memory).
    key_padding_mask: (B, S) bool, True = ignore that key.
    Returns (B, T, E) and the weights (B, H, T, S) (None unless need_weights).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = LayerNorm(n_embd, fused=True)
        self.attn = MultiHeadAttention(n_embd, n_head, dropout=dropout)
        self.ln2 = LayerNorm(n_embd, fused=True)
        self.mlp = FeedForward(n_embd, dropout)

    def forward(self, x, memory=None, key_padding_mask=None,
                need_weights=False):
        h = self.ln1(x)
        kv = h if memory is None else memory
        a, w = self.attn(h, kv, kv, key_padding_mask=key_padding_mask,
                         need_weights=need_weights)
        x = x + a
        return x + self.mlp(self.ln2(x)), w


@dataclass
class ViTConfig:
    image_size: int = 8
    patch_size: int = 2
    in_channels: int = 1
    n_classes: int = 10
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("image_size", "patch_size", "in_channels", "n_classes",
                     "n_layer", "n_head", "n_embd"):
            check_int(name, getattr(self, name))
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple "
                             f"of patch_size={self.patch_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by "
                             f"n_head={self.n_head}")

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class PatchEmbedding(nn.Module):
    """(B, C, H, W) -> (B, L, E): one shared linear map per patch, plus one
    learned vector per place."""

    def __init__(self, c: ViTConfig):
        super().__init__()
        self.patch_size, self.image_size = c.patch_size, c.image_size
        self.proj = nn.Linear(c.in_channels * c.patch_size ** 2, c.n_embd)
        self.pos = nn.Parameter(torch.randn(c.n_patches, c.n_embd) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        side = self.image_size
        if images.shape[-2:] != (side, side):
            raise ValueError(f"images are {tuple(images.shape[-2:])}, "
                             f"expected {side}x{side}")
        return self.proj(patchify(images, self.patch_size)) + self.pos


class ViT(nn.Module):
    """Vision Transformer: images (B, C, H, W) -> logits (B, n_classes).

    Token 0 is the class token, tokens 1..L the patches. With need_weights,
    also the attention weights per layer, (B, H, 1 + L, 1 + L).
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        if not isinstance(config, ViTConfig):
            raise TypeError(f"config must be a ViTConfig, "
                            f"got {type(config).__name__}")
        self.config = c = config
        self.patches = PatchEmbedding(c)
        self.cls = nn.Parameter(torch.randn(1, 1, c.n_embd) * 0.02)
        self.blocks = nn.ModuleList(
            AttentionBlock(c.n_embd, c.n_head, c.dropout)
            for _ in range(c.n_layer))
        self.ln_f = LayerNorm(c.n_embd, fused=True)
        self.head = nn.Linear(c.n_embd, c.n_classes)
        self.apply(init_weights)

    def forward(self, images, need_weights=False):
        x = self.patches(images)                             # (B, L, E)
        cls = self.cls.expand(len(x), -1, -1)                # (B, 1, E)
        x = torch.cat([cls, x], dim=1)                       # (B, 1 + L, E)
        weights = []
        for block in self.blocks:
            x, w = block(x, need_weights=need_weights)
            weights.append(w)
        logits = self.head(self.ln_f(x[:, 0]))               # the class token
        return logits, (weights if need_weights else None)


# -------------------------------------------------------- pixels as tokens
def pixels_to_tokens(images, labels, levels: int, max_value: float):
    """A class token, then every pixel as a grey level: a sequence for a GPT.

    images: (B, H, W), values in [0, max_value]; labels: (B,) classes >= 0.
    Pixel tokens are 0 .. levels - 1 (equal-width bins); class c is token
    levels + c. Returns (B, 1 + H * W) int64.
    """
    check_int("levels", levels, 2)
    if not isinstance(images, torch.Tensor) or images.dim() != 3:
        got = tuple(getattr(images, "shape", ()))
        raise ValueError(f"images must be (B, H, W), got {got}")
    if bool(images.isnan().any()) or images.min() < 0 \
            or images.max() > max_value:
        raise ValueError(f"images must lie in [0, max_value={max_value}] "
                         "(no NaN)")
    labels = torch.as_tensor(labels, device=images.device)
    if labels.shape != images.shape[:1] or labels.is_floating_point() \
            or bool((labels < 0).any()):
        raise ValueError(f"labels must be ({len(images)},) classes >= 0, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    pixels = (images / max_value * levels).long().clamp(max=levels - 1)
    return torch.cat([(labels.long() + levels)[:, None], pixels.flatten(1)],
                     dim=1)


def tokens_to_pixels(tokens, levels: int, side: int, max_value: float):
    """Pixel tokens back to values: (B, side * side) -> (B, side, side).

    Grey levels are spread evenly from 0 (level 0, blank) to max_value (the
    top level), at most one bin from the original. A token >= levels (a class
    token where a pixel belongs) is counted and drawn as 0. Returns (images,
    that count).
    """
    check_int("levels", levels, 2)
    bad = tokens >= levels
    values = tokens.masked_fill(bad, 0).float() * (max_value / (levels - 1))
    return values.view(-1, side, side), int(bad.sum())
