"""The roofline: how fast this machine computes, how fast it moves bytes, and which of the
two limits an operation (Williams, Waterman & Patterson, 2009).

An operation that does F floating-point operations and moves B bytes between memory and
the processor has **arithmetic intensity** I = F / B FLOP/byte. On a machine with a peak of
P FLOP/s and a memory bandwidth of W bytes/s it cannot run faster than min(P, W * I):
below the **ridge point** I* = P / W it is memory-bound, above it compute-bound.

* measure (waits for the GPU before reading the clock; on a CPU, on every free core
  unless told otherwise, since a peak is what we are after):
  :func:`best_time`, :func:`matmul_flops`, :func:`copy_bandwidth`, :func:`cache_bytes`,
  :func:`cpu_threads`, :func:`processor_name`
* model: :class:`Roofline`; count: :class:`Cost`, :func:`linear_cost`,
  :func:`gpt_forward_cost`

Every operation of a real call, with its time, FLOPs and bytes: :mod:`lmcore.opprofile`.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .device import as_device
from .layers import check_int
from .transformer import GPTConfig, gpt_param_count, kv_cache_bytes


def synchronize(device) -> None:
    """Wait until the device has finished the queued work (GPU calls return early)."""
    device = as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def free_cores() -> int:
    """CPU threads for a peak measurement: ``OMP_NUM_THREADS`` if set, else the cores this
    process may run on less those other programs keep busy (the 1-minute load average,
    minus our own thread), at least 1. On a busy core a thread waits for its turn and
    every thread of the operation waits for it, so timings there say nothing about the
    hardware."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):  # no load average on this system
        others = 0.0
    return max(1, min(cores, round(cores - others)))


@contextlib.contextmanager
def cpu_threads(n: int | None = None):
    """Run the block with torch on ``n`` CPU threads (None: :func:`free_cores`), then go back
    to the previous count. The book's small models run on one thread (``setup()``);
    measuring the hardware's peak needs all of them."""
    n = free_cores() if n is None else check_int("threads", n)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def best_time(fn, device="cpu", repeat: int = 5, min_seconds: float = 1e-3,
              threads: int | None = None) -> float:
    """Seconds per call of ``fn()``: the best of ``repeat`` timings, each averaging enough
    calls to last ``min_seconds``. The best is the run least disturbed by other programs.
    On a CPU torch uses ``threads`` threads meanwhile (None: :func:`free_cores`).
    """
    check_int("repeat", repeat)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    with cpu_threads(threads):
        fn()  # warm-up: allocation, page faults, kernel choice
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        once = max(time.perf_counter() - start, 1e-9)
        number, best = max(1, min(1000, math.ceil(min_seconds / once))), math.inf
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            synchronize(device)
            best = min(best, (time.perf_counter() - start) / number)
    return best


def matmul_flops(n: int, device="cpu", dtype=torch.float32, repeat: int = 5,
                 threads: int | None = None) -> float:
    """FLOP/s of an (n, n) @ (n, n) product: 2 n^3 FLOPs (n^3 multiply-adds) per call."""
    check_int("n", n)
    device = as_device(device, available=True)
    g = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=g, device=device).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b, out=out), device, repeat,
                                threads=threads)


def copy_bandwidth(n_bytes: int, device="cpu", repeat: int = 5,
                   threads: int | None = None) -> float:
    """Bytes/s of ``dst.copy_(src)`` for ``n_bytes``-byte tensors, counting 2 n_bytes moved
    (each byte read once and written once). A CPU that also reads each destination line
    before writing it ("write-allocate") moves a third more, so this is a lower estimate.
    Use a size well beyond the caches (:func:`cache_bytes`) to measure main memory.
    """
    check_int("n_bytes", n_bytes, 4)
    device = as_device(device, available=True)
    src = torch.ones(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = best_time(lambda: dst.copy_(src), device, repeat, threads=threads)
    return 2 * src.numel() * 4 / seconds


def cache_bytes(device="cpu") -> int | None:
    """The largest cache between the processor and main memory: the GPU's L2, or the CPU's
    last-level cache as Linux reports it; None where it cannot be read."""
    device = as_device(device)
    if device.type == "cuda":
        size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
        return int(size) or None
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=None)


def processor_name(device="cpu") -> str:
    """The GPU's name, or the CPU's model name as Linux reports it (else the platform's)."""
    device = as_device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown processor"


@dataclass(frozen=True)
class Roofline:
    """peak_flops in FLOP/s, bandwidth in bytes/s; intensities in FLOP/byte."""

    peak_flops: float
    bandwidth: float

    def __post_init__(self):
        for name, v in (("peak_flops", self.peak_flops), ("bandwidth", self.bandwidth)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}={v!r}; expected a positive finite number")

    @property
    def ridge(self) -> float:
        """The intensity where the memory roof meets the compute roof."""
        return self.peak_flops / self.bandwidth

    def attainable(self, intensity: float) -> float:
        """The roof: min(peak, bandwidth * intensity) FLOP/s."""
        return min(self.peak_flops, self.bandwidth * intensity)

    def bound(self, intensity: float) -> str:
        return "memory" if intensity < self.ridge else "compute"

    def seconds(self, cost: Cost) -> float:
        """Shortest possible time: the slower of computing and moving the bytes."""
        return max(cost.flops / self.peak_flops, cost.bytes / self.bandwidth)


class Cost(NamedTuple):
    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes


def linear_cost(in_features: int, out_features: int, tokens: int, bytes_per_value: int = 4,
                bias: bool = True) -> Cost:
    """A Linear layer on ``tokens`` rows: 2 T in out FLOPs (the bias adds are left out);
    bytes: the weights (and bias), the input and the output, each moved once."""
    for name, v in (("in_features", in_features), ("out_features", out_features),
                    ("tokens", tokens), ("bytes_per_value", bytes_per_value)):
        check_int(name, v)
    values = in_features * out_features + tokens * (in_features + out_features)
    return Cost(2 * tokens * in_features * out_features,
                bytes_per_value * (values + (out_features if bias else 0)))


def gpt_forward_cost(config: GPTConfig, tokens: int, context: int = 0, batch: int = 1,
                     bytes_per_value: int = 4) -> Cost:
    """One forward pass of ``GPT(config)`` on ``tokens`` new tokens per sequence, with
    ``context`` tokens already in the KV cache: ``tokens=T, context=0`` is a prefill,
    ``tokens=1`` a decode step.

    FLOPs: 2 B T (12 L E^2 + V E) for the weight products plus 4 L B T S E for attention
    (S = context + tokens keys, every score computed as a dense product would; a causal
    kernel may skip up to half). Bytes: the unavoidable traffic only, every parameter and
    every cached key and value read once, so the intensity is an upper bound.
    """
    if not isinstance(config, GPTConfig):
        raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
    for name, v, low in (("tokens", tokens, 1), ("context", context, 0), ("batch", batch, 1),
                         ("bytes_per_value", bytes_per_value, 1)):
        check_int(name, v, low)
    S = context + tokens
    if S > config.block_size:
        raise ValueError(f"context + tokens = {S} exceeds block_size={config.block_size}")
    L, E, V = config.n_layer, config.n_embd, config.vocab_size
    flops = 2 * batch * tokens * (12 * L * E * E + V * E) + 4 * L * batch * tokens * S * E
    moved = bytes_per_value * gpt_param_count(config) + kv_cache_bytes(L, E, S, batch,
                                                                       bytes_per_value)
    return Cost(flops, moved)
