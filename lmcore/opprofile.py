"""Every operation of a call, placed on the roofline: its time from ``torch.profiler``,
its FLOPs and bytes from the input shapes the profiler records.

:func:`op_cost` counts one ``aten`` operation (matrix products exactly; element-wise
operations with rough per-element FLOP counts, since the profiler gives none);
:func:`profile_ops` profiles a call a few times and keeps each operation's best time.
"""
from __future__ import annotations

import math
import os

import torch

from .device import as_device
from .layers import check_int
from .roofline import Cost, cpu_threads, synchronize

_MATMULS = {"aten::linear", "aten::matmul", "aten::mm", "aten::addmm", "aten::bmm",
            "aten::baddbmm"}
_ATTENTION = "aten::scaled_dot_product_attention"
# FLOPs per output element of element-wise ops: our rough counts (the profiler gives none),
# e.g. softmax = max, subtract, exp, sum, divide; LayerNorm = mean, subtract, square, sum,
# normalise, scale, shift.
_PER_ELEMENT = {"aten::add": 1, "aten::add_": 1, "aten::sub": 1, "aten::mul": 1,
                "aten::mul_": 1, "aten::div": 1, "aten::relu": 1, "aten::gelu": 8,
                "aten::tanh": 8, "aten::softmax": 5, "aten::_softmax": 5,
                "aten::layer_norm": 7}
_BROADCAST = {"aten::add", "aten::add_", "aten::sub", "aten::mul", "aten::mul_", "aten::div"}
_ITEMSIZE = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8,
             "int": 4, "bool": 1, "signed char": 1, "unsigned char": 1, "short int": 2}
_FLOATS = {"float", "double", "c10::Half", "c10::BFloat16"}


def _matmul_dims(name: str, tensors: list) -> tuple[int, int, int]:
    """(rows, k, n) of a product: ``rows`` counts every row of the left operand."""
    if name == "aten::linear":  # x (..., in) and weight (out, in)
        x, w = tensors[:2]
        return math.prod(x[:-1]), x[-1], w[0]
    a, b = tensors[-2:] if name in ("aten::addmm", "aten::baddbmm") else tensors[:2]
    b = b if len(b) > 1 else [b[0], 1]
    batch = math.prod(torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    return batch * (a[-2] if len(a) > 1 else 1), a[-1], b[-1]


def op_cost(name: str, shapes, dtypes=None) -> Cost | None:
    """FLOPs and bytes of one ``aten`` operation from its input shapes and dtypes (as
    ``torch.profiler`` records them), or None for operations without floating-point
    arithmetic (views, copies, look-ups, integer ops). Bytes: the tensor inputs plus the
    output, each moved once.
    """
    dtypes = list(dtypes or []) + [""] * len(shapes)
    tensors = [(list(s), d) for s, d in zip(shapes, dtypes)
               if isinstance(s, (list, tuple)) and len(s) > 0]
    if not tensors or tensors[0][1] not in _FLOATS:
        return None
    item = _ITEMSIZE[tensors[0][1]]
    moved = sum(math.prod(s) * _ITEMSIZE.get(d, item) for s, d in tensors)
    shapes = [s for s, _ in tensors]
    if name in _MATMULS and len(shapes) >= 2:
        rows, k, n = _matmul_dims(name, shapes)
        return Cost(2 * rows * k * n, moved + rows * n * item)
    if name == _ATTENTION and len(shapes) >= 3:
        q, k, v = shapes[:3]
        batch, T, S = math.prod(q[:-2]), q[-2], k[-2]
        return Cost(2 * batch * T * S * (q[-1] + v[-1]),
                    sum(math.prod(s) for s in (q, k, v)) * item + batch * T * v[-1] * item)
    if name in _PER_ELEMENT:
        out = math.prod(torch.broadcast_shapes(*map(tuple, shapes)) if name in _BROADCAST
                        else shapes[0])
        return Cost(_PER_ELEMENT[name] * out, moved + out * item)
    return None


def _known(name: str) -> bool:
    return name in _MATMULS or name == _ATTENTION or name in _PER_ELEMENT


def profile_ops(fn, device="cpu", repeat: int = 3, threads: int | None = None) -> list[dict]:
    """Profile ``fn()`` ``repeat`` times; one row per operation kind and input shapes.

    Each row: op, shapes, calls, flops, bytes, seconds (the best run's total), intensity,
    flops_per_s. Only the outermost known operation is counted (``linear``, not also the
    ``addmm`` inside it). Times are CPU times (on ``threads`` threads, None:
    :func:`lmcore.roofline.free_cores`), or GPU kernel times on CUDA.
    """
    from torch.profiler import ProfilerActivity, profile

    check_int("repeat", repeat)
    device = as_device(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    best: dict = {}
    with cpu_threads(threads):
        fn()
        synchronize(device)
        for _ in range(repeat):
            _keep_best(best, _profile_once(fn, device, activities, profile))
    rows = [dict(op=op, shapes=shapes, calls=n, flops=n * c.flops, bytes=n * c.bytes,
                 seconds=s, intensity=c.intensity, flops_per_s=n * c.flops / s)
            for (op, shapes), (n, s, c) in best.items() if s > 0 and c.flops > 0]
    return sorted(rows, key=lambda r: -r["seconds"])


def _profile_once(fn, device, activities, profile) -> dict:
    """{(op, shapes): (calls, seconds, Cost)} for one profiled call of fn."""
    # Kineto, torch.profiler's C++ library, prints "profiler_start/stop" markers for
    # tracing tools to stderr at its top level; only level 6 keeps them off a notebook
    # page. It reads the variable when the profiler first starts. A user's own wins.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        synchronize(device)
    run: dict = {}
    for ev in prof.events():
        parent, outer = ev.cpu_parent, _known(ev.name)
        while outer and parent is not None:
            outer, parent = not _known(parent.name), parent.cpu_parent
        cost = op_cost(ev.name, ev.input_shapes, ev.input_dtypes) if outer else None
        if cost is None:
            continue
        us = ev.device_time_total if device.type == "cuda" else ev.cpu_time_total
        key = (ev.name.removeprefix("aten::"), str(ev.input_shapes))
        calls, seconds, _ = run.get(key, (0, 0.0, cost))
        run[key] = (calls + 1, seconds + us * 1e-6, cost)
    return run


def _keep_best(best: dict, run: dict) -> None:
    for key, value in run.items():
        if key not in best or value[1] < best[key][1]:
            best[key] = value
