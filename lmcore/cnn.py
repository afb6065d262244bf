"""Convolution and pooling from scratch: a sliding dot product, as one matmul.

A 2-D convolution slides a small kernel over the image and takes a dot product
at every position. ``im2col`` copies every window into one column of a matrix,
so the whole layer becomes a single matrix product (Chellapilla et al. 2006),
the way fast libraries do it. Like PyTorch (and every deep-learning library) it
does not flip the kernel: this is a cross-correlation, called a convolution.
Shapes: N batch, C channels, H x W image, kH x kW kernel, L = H_out * W_out
window positions.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------- checks
def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints >= minimum -> (h, w), as torch.nn accepts."""
    pair = value if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                 and v >= minimum for v in pair):
        raise ValueError(f"{name}={value!r}; expected an int >= {minimum} "
                         "or a pair of them")
    return int(pair[0]), int(pair[1])


def _check_image(x) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 \
            or not x.is_floating_point():
        got = (f"{x.dtype} tensor of shape {tuple(x.shape)}"
               if isinstance(x, torch.Tensor) else type(x).__name__)
        raise ValueError(f"x must be a float (N, C, H, W) tensor, got {got}; "
                         "add a batch dimension with x[None] for one image")


def _out_size(x, kernel, stride, padding) -> tuple[int, int]:
    """(H_out, W_out) = floor((H + 2 p - k) / s) + 1, once the kernel fits."""
    H, W = x.shape[-2] + 2 * padding[0], x.shape[-1] + 2 * padding[1]
    if kernel[0] > H or kernel[1] > W:
        raise ValueError(f"kernel {kernel[0]}x{kernel[1]} is larger than the "
                         f"padded input {H}x{W} (input {tuple(x.shape[-2:])}, "
                         f"padding {padding})")
    return (H - kernel[0]) // stride[0] + 1, (W - kernel[1]) // stride[1] + 1


def _check_conv_args(x, weight, bias) -> None:
    _check_image(x)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = tuple(getattr(weight, "shape", ())) or type(weight).__name__
        raise ValueError(f"weight must be a (C_out, C_in, kH, kW) tensor, "
                         f"got {got}")
    if weight.dtype != x.dtype:
        raise TypeError(f"x is {x.dtype} but weight is {weight.dtype}; "
                        "expected one dtype")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"x has {x.shape[1]} channels but weight expects "
                         f"C_in={weight.shape[1]} (weight shape "
                         f"{tuple(weight.shape)})")
    if bias is not None and (not isinstance(bias, torch.Tensor)
                             or tuple(bias.shape) != (weight.shape[0],)):
        got = tuple(getattr(bias, "shape", ())) or type(bias).__name__
        raise ValueError(f"bias must have shape (C_out,) = "
                         f"({weight.shape[0]},), got {got}")


# ------------------------------------------------------------------ windows
def _windows(x: torch.Tensor, kernel_size, stride) -> torch.Tensor:
    """Every window, as a view: (N, C, H, W) -> (N, C, Ho, Wo, kH, kW)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    return x.unfold(2, kh, sh).unfold(3, kw, sw)


def im2col(x: torch.Tensor, kernel_size, stride=1, padding=0) -> torch.Tensor:
    """One column per window position, like ``F.unfold``.

    x: (N, C, H, W) -> (N, C * kH * kW, L). Column l is the window at output
    position l (row-major); its rows go channel, kernel row, kernel column.
    """
    _check_image(x)
    kernel = _pair("kernel_size", kernel_size, 1)
    stride, padding = _pair("stride", stride, 1), _pair("padding", padding, 0)
    ph, pw = padding
    _out_size(x, kernel, stride, padding)
    x = F.pad(x, (pw, pw, ph, ph))                 # zeros all round
    w = _windows(x, kernel, stride)                # (N, C, Ho, Wo, kH, kW)
    N, C, Ho, Wo, kh, kw = w.shape
    return w.permute(0, 1, 4, 5, 2, 3).reshape(N, C * kh * kw, Ho * Wo)


# ------------------------------------------------------------------- layers
def conv2d(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """Convolution as im2col + one matrix product, like ``F.conv2d``.

    x: (N, C_in, H, W); weight: (C_out, C_in, kH, kW); bias: (C_out,) or None.
    Returns (N, C_out, H_out, W_out); H_out = (H + 2p - kH) // s + 1.
    """
    _check_conv_args(x, weight, bias)
    C_out, _, kh, kw = weight.shape
    stride, padding = _pair("stride", stride, 1), _pair("padding", padding, 0)
    Ho, Wo = _out_size(x, (kh, kw), stride, padding)
    cols = im2col(x, (kh, kw), stride, padding)    # (N, C_in*kH*kW, L)
    out = weight.reshape(C_out, -1) @ cols         # (N, C_out, L)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(x.shape[0], C_out, Ho, Wo)


def conv2d_sliding(x, weight, bias=None, stride=1, padding=0) -> torch.Tensor:
    """The definition: one dot product per output position (slow: for teaching
    and testing). Same arguments and result as ``conv2d``."""
    _check_conv_args(x, weight, bias)
    kh, kw = weight.shape[-2:]
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    Ho, Wo = _out_size(x, (kh, kw), (sh, sw), (ph, pw))
    x = F.pad(x, (pw, pw, ph, ph))
    out = x.new_zeros(x.shape[0], weight.shape[0], Ho, Wo)
    for i in range(Ho):
        for j in range(Wo):
            window = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = torch.einsum("nchw,ochw->no", window, weight)
    return out if bias is None else out + bias[:, None, None]


def max_pool2d(x, kernel_size, stride=None) -> torch.Tensor:
    """Largest value of each window, like ``F.max_pool2d``.

    x: (N, C, H, W) -> (N, C, H_out, W_out); stride defaults to kernel_size.
    The gradient goes to the first maximum of each window, as in PyTorch.
    """
    _check_image(x)
    kernel = _pair("kernel_size", kernel_size, 1)
    stride = kernel if stride is None else _pair("stride", stride, 1)
    _out_size(x, kernel, stride, (0, 0))
    w = _windows(x, kernel, stride)                # (N, C, Ho, Wo, kH, kW)
    return w.flatten(-2).max(dim=-1).values


def receptive_field(layers) -> list[int]:
    """Side of the input region one unit sees, after each layer.

    layers: (kernel_size, stride) per layer, in order. With jump j (input
    pixels between neighbouring units, 1 at the input):
    r <- r + (k - 1) * j, then j <- j * s.
    """
    r, j, sizes = 1, 1, []
    for k, s in layers:
        k, s = _pair("kernel_size", k, 1)[0], _pair("stride", s, 1)[0]
        r, j = r + (k - 1) * j, j * s
        sizes.append(r)
    return sizes


class Conv2d(nn.Module):
    """A convolution layer: (N, C_in, H, W) -> (N, C_out, H_out, W_out).

    Same arguments, initialisation and parameter shapes as ``torch.nn.Conv2d``
    (without dilation and groups).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size,
                 stride=1, padding=0, bias: bool = True):
        super().__init__()
        for name, n in (("in_channels", in_channels),
                        ("out_channels", out_channels)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"{name}={n!r}; expected a positive int")
        self.kernel_size = kh, kw = _pair("kernel_size", kernel_size, 1)
        self.stride = _pair("stride", stride, 1)
        self.padding = _pair("padding", padding, 0)
        shape = (out_channels, in_channels, kh, kw)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        bound = 1 / math.sqrt(in_channels * kh * kw)  # torch's default init:
        nn.init.uniform_(self.weight, -bound, bound)  # kaiming_uniform_(a=√5)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        c_out, c_in = self.weight.shape[:2]
        return (f"{c_in}, {c_out}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}")

    @classmethod
    def from_torch(cls, conv: nn.Conv2d) -> Conv2d:
        """Copy an ``nn.Conv2d`` (numeric zero padding, no dilation, groups)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, "
                            f"got {type(conv).__name__}")
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros" \
                or conv.dilation != (1, 1) or conv.groups != 1:
            raise ValueError(
                f"conv has padding={conv.padding!r}, padding_mode="
                f"{conv.padding_mode!r}, dilation={conv.dilation}, groups="
                f"{conv.groups}; expected numeric zero padding, dilation 1, "
                "groups 1")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                  conv.stride, conv.padding, bias=conv.bias is not None)
        new = new.to(conv.weight.device, conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new


class MaxPool2d(nn.Module):
    """Max pooling: (N, C, H, W) -> (N, C, H_out, W_out).

    stride defaults to kernel_size, as in ``torch.nn.MaxPool2d``.
    """

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _pair("kernel_size", kernel_size, 1)
        self.stride = (self.kernel_size if stride is None
                       else _pair("stride", stride, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"

    @classmethod
    def from_torch(cls, pool: nn.MaxPool2d) -> MaxPool2d:
        """Copy an ``nn.MaxPool2d`` (no padding, dilation, ceil_mode...)."""
        if not isinstance(pool, nn.MaxPool2d):
            raise TypeError(f"pool must be a torch.nn.MaxPool2d, "
                            f"got {type(pool).__name__}")
        if _pair("padding", pool.padding, 0) != (0, 0) \
                or _pair("dilation", pool.dilation, 1) != (1, 1) \
                or pool.ceil_mode or pool.return_indices:
            raise ValueError(
                f"pool has padding={pool.padding}, dilation={pool.dilation}, "
                f"ceil_mode={pool.ceil_mode}, return_indices="
                f"{pool.return_indices}; expected padding 0, dilation 1 and "
                "both flags False")
        return cls(pool.kernel_size, pool.stride)


class DigitCNN(nn.Module):
    """Seed D's image classifier, sized for 8x8 digits: (B, C, 8, 8) -> logits.

    Three blocks of Conv 3x3 (padding 1) -> ReLU -> 2x2 max-pool, with 32, 64
    and 128 channels (8x8 -> 4x4 -> 2x2 -> 1x1), then Linear(128, 1024) ->
    ReLU -> Dropout -> Linear(1024, n_classes). The softmax is in the loss.
    """

    def __init__(self, channels=(32, 64, 128), hidden: int = 1024,
                 n_classes: int = 10, in_channels: int = 1,
                 image_size: int = 8, dropout: float = 0.25):
        super().__init__()
        side = image_size >> len(channels)      # each block halves the side
        if side < 1 or image_size % (1 << len(channels)):
            raise ValueError(f"image_size={image_size} cannot be halved "
                             f"{len(channels)} times (one 2x2 pool per block "
                             f"of channels={channels})")
        sizes = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            nn.Sequential(Conv2d(a, b, 3, padding=1), nn.ReLU(), MaxPool2d(2))
            for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels[-1] * side * side, hidden),
            nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for block in self.blocks:
            x = block(x)
        return self.head(x)
