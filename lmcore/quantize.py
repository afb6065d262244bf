"""Quantization: store each weight as a small integer times a shared float scale.

A float ``x`` becomes an integer ``q`` in ``[qmin, qmax]`` (``b`` bits, signed):

    q = clamp(round(x / scale) + zero_point, qmin, qmax)      x_hat = (q - zero_point) * scale

*Symmetric*: ``zero_point = 0`` and ``scale = max|x| / ((qmax - qmin) / 2)``. *Affine*: the
range ``[min(x, 0), max(x, 0)]`` is spread over all ``2^b`` levels and ``zero_point`` is
the integer that represents 0.0 exactly. One ``(scale, zero_point)`` for the whole tensor
(*per-tensor*) or one per index along ``axis`` (*per-channel*). The formulas are those of
PyTorch's min/max observers, so the results match ``torch.quantize_per_tensor`` and
``torch.quantize_per_channel`` (Jacob et al. 2018). Every element's round-trip error is at
most half a step, ``scale / 2``.

:class:`QuantLinear` stores a Linear layer's weight this way (4-bit values packed two per
byte) and :func:`quantize_model` swaps it into any model, e.g. :class:`lmcore.transformer.GPT`.
"""
from __future__ import annotations

import copy
import io

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)  # values live in int8; QuantLinear stores 4 and 8
_EPS = torch.finfo(torch.float32).eps  # smallest scale, as in torch.ao's observers


def qrange(bits: int) -> tuple[int, int]:
    """The signed integer range of ``bits`` bits: (-2^(b-1), 2^(b-1) - 1)."""
    _check_bits(bits)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _check_bits(bits, allowed=SUPPORTED_BITS) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"bits={bits!r} is not supported; expected one of {allowed}")


def _check_axis(axis, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis!r} is out of range for a tensor with {ndim} dimension(s); "
                         f"expected None (per-tensor) or an int in [{-ndim}, {ndim - 1}]")
    return axis % ndim


def _along(t: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    """Reshape per-channel values (C,) so they broadcast along ``axis`` of an ndim tensor."""
    if axis is None:
        return t
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def quantize(w: torch.Tensor, bits: int = 8, axis: int | None = None, symmetric: bool = True):
    """Quantize ``w`` to signed ``bits``-bit integers. Returns ``(q, scale, zero_point)``.

    w: any float tensor. axis: None for one scale for the whole tensor, else the channel
    dimension (one scale per index along it, like ``torch.quantize_per_channel``; for a
    Linear weight (out, in), ``axis=0`` gives one scale per output row).
    q: int8, same shape as w; scale: float32, shape () or (w.shape[axis],);
    zero_point: int64, same shape as scale (all zeros when symmetric).
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got "
                        f"{getattr(w, 'dtype', type(w).__name__)}")
    _check_bits(bits)
    axis = _check_axis(axis, w.dim())
    if w.numel() == 0:
        raise ValueError(f"w is empty (shape {tuple(w.shape)}); nothing to quantize")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w contains NaN or infinity; quantization needs finite values")
    qmin, qmax = qrange(bits)
    x = w.detach().float()
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, rest)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # the range always contains 0.0
    if symmetric:
        scale = (torch.maximum(-lo, hi) / ((qmax - qmin) / 2)).clamp(min=_EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = ((hi - lo) / (qmax - qmin)).clamp(min=_EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int64)
    s, z = _along(scale, axis, x.dim()), _along(zero_point, axis, x.dim())
    q = (torch.round(x * (1.0 / s)) + z).clamp(qmin, qmax).to(torch.int8)  # 1/s: as torch
    return q, scale, zero_point


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
               axis: int | None = None) -> torch.Tensor:
    """``(q - zero_point) * scale`` as float32; ``axis`` as given to :func:`quantize`."""
    if not isinstance(q, torch.Tensor) or q.is_floating_point() or q.dtype == torch.bool:
        raise TypeError(f"q must be an integer tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    axis = _check_axis(axis, q.dim())
    want = () if axis is None else (q.shape[axis],)
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if not isinstance(t, torch.Tensor) or (t.shape != want and not (axis is None and t.numel() == 1)):
            raise ValueError(f"{name} has shape {tuple(getattr(t, 'shape', ()))}; expected {want} "
                             f"for axis={axis} and q of shape {tuple(q.shape)}")
    if axis is None:
        scale, zero_point = scale.reshape(()), zero_point.reshape(())
    s, z = _along(scale.float(), axis, q.dim()), _along(zero_point, axis, q.dim())
    return (q.to(torch.int32) - z).float() * s


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values per byte. q: int8 in [-8, 7], last dim even -> uint8 (..., last/2)."""
    if q.dtype != torch.int8 or q.shape[-1] % 2:
        raise ValueError(f"q must be int8 with an even last dimension, got {q.dtype} {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError(f"q has values in [{int(q.min())}, {int(q.max())}]; 4 bits hold [-8, 7]")
    nibbles = (q & 0xF).to(torch.uint8)  # two's complement low nibble
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 (..., n) -> int8 (..., 2n) in [-8, 7]."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be uint8, got {packed.dtype}")
    signed = packed.view(torch.int8)  # arithmetic shifts below copy the sign bit
    return torch.stack([(signed << 4) >> 4, signed >> 4], dim=-1).flatten(-2)


class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored as ``bits``-bit integers plus scales.

    The forward pass dequantizes the whole weight and then runs an ordinary float matmul:
    it shows the storage format and its accuracy, **not** a fast kernel (a real int8 or
    int4 kernel reads the small integers and never materialises the float weight).
    x: (..., in_features) -> (..., out_features).
    """

    def __init__(self, linear: nn.Linear, bits: int = 8, axis: int | None = 0,
                 symmetric: bool = True):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        _check_bits(bits, (4, 8))
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.axis, self.symmetric = bits, _check_axis(axis, 2), symmetric
        q, scale, zero_point = quantize(linear.weight, bits, axis, symmetric)
        if bits == 4 and q.shape[1] % 2:
            raise ValueError(f"4-bit packing needs an even in_features, got {q.shape[1]}")
        self.register_buffer("qweight", pack_int4(q) if bits == 4 else q)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point.to(torch.int8))  # in [qmin, qmax]
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)

    def dequantized_weight(self) -> torch.Tensor:
        q = unpack_int4(self.qweight) if self.bits == 4 else self.qweight
        return dequantize(q, self.scale, self.zero_point, self.axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        scheme = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"
        kind = "symmetric" if self.symmetric else "affine"
        return f"{self.in_features}, {self.out_features}, bits={self.bits}, {scheme}, {kind}"


def quantize_model(model: nn.Module, bits: int = 8, axis: int | None = 0,
                   symmetric: bool = True) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a :class:`QuantLinear`.

    A Linear whose weight is shared with another module (GPT's ``lm_head``, tied to the
    token embedding) is left in float32: quantizing it would store the matrix twice.
    """
    _check_bits(bits, (4, 8))
    model = copy.deepcopy(model)
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and owners[id(child.weight)] == 1:
                setattr(module, child_name, QuantLinear(child, bits, axis, symmetric))
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in bytes (shared tensors counted once).

    The same measure works for float models, :class:`QuantLinear` models and PyTorch's own
    quantized modules, so their sizes can be compared in one table.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
