"""Where the computation runs, and how to make it repeatable.

Every chapter starts with::

    device = get_device()          # cuda, then mps, then cpu
    seed_everything(0)             # same numbers on every rerun
    steps = pick(cpu=300, gpu=3000, device=device)
"""
from __future__ import annotations

import numbers
import os
import random

import numpy as np
import torch

_CHOICES = ("auto", "cpu", "cuda", "mps")
SEED_RANGE = (0, 2**64)  # torch.manual_seed takes any seed in [0, 2**64)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(preferred: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple's MPS, then the CPU.

    ``preferred`` (or, if it is None, the environment variable ``LMCORE_DEVICE``) may be
    ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. Asking for a device this
    machine does not have raises ``RuntimeError`` instead of silently falling back.
    """
    source = "argument preferred"
    if preferred is None:
        preferred = os.environ.get("LMCORE_DEVICE", "auto")
        source = "environment variable LMCORE_DEVICE"
    choice = str(preferred).strip().lower()
    kind, _, index = choice.partition(":")
    digits = index.isascii() and index.isdigit()  # "cuda:¹" is not "cuda:1"
    if kind not in _CHOICES or (":" in choice and (kind != "cuda" or not digits)):
        raise ValueError(
            f"{source}={preferred!r} is not a device; expected one of "
            f"'auto', 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps'."
        )
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{source}={preferred!r} asks for CUDA, but torch.cuda.is_available() is "
                f"False on this machine (torch {torch.__version__}). Use 'auto' or 'cpu', "
                f"or install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
            )
        if index and int(index) >= torch.cuda.device_count():
            raise RuntimeError(
                f"{source}={preferred!r}: this machine has {torch.cuda.device_count()} "
                f"CUDA device(s), numbered from 0."
            )
    if kind == "mps" and not _mps_available():
        raise RuntimeError(
            f"{source}={preferred!r} asks for Apple's MPS backend, which this machine does "
            f"not have. Use 'auto' or 'cpu'."
        )
    return torch.device(choice)


def as_device(device, name: str = "device", available: bool = False) -> torch.device:
    """``device`` (a ``torch.device`` or a string such as ``"cpu"``, ``"cuda:0"``) as a
    ``torch.device``. Another type raises ``TypeError``, an unknown device string
    ``ValueError``, both naming the argument ``name``.

    With ``available=True`` a CUDA or MPS device this machine does not have raises
    ``RuntimeError`` (use it before allocating tensors there).
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a torch.device or a string such as 'cpu' or "
                         f"'cuda', got {device!r} ({type(device).__name__})")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{name}={device!r} is not a device; expected e.g. 'cpu', 'cuda', "
                         f"'cuda:0' or 'mps'") from None
    missing = ((device.type == "cuda" and not torch.cuda.is_available())
               or (device.type == "mps" and not _mps_available()))
    if available and missing:
        raise RuntimeError(f"{name}={str(device)!r}, but this machine has no "
                           f"{device.type.upper()} device; use lmcore.get_device() or 'cpu'")
    return device


def is_accelerator(device: torch.device | str) -> bool:
    """True for a GPU (CUDA or MPS), False for the CPU."""
    return as_device(device).type in ("cuda", "mps")


def pick(cpu, gpu, device: torch.device | str | None = None):
    """Return ``gpu`` when running on a GPU, otherwise ``cpu``.

    Chapters use it for sizes that should grow on a GPU, e.g.
    ``n_embd = pick(cpu=64, gpu=256)``. ``cpu`` and ``gpu`` may be any objects
    (numbers, dicts, config objects).
    """
    if device is None:
        device = get_device()
    return gpu if is_accelerator(device) else cpu


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as a Python int. A non-integer (or a bool) raises ``TypeError``, an int
    outside [0, 2**64) (the range ``torch.manual_seed`` accepts) ``ValueError``; both
    name the argument ``name``."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, 2**64), got {seed!r} "
                         f"({type(seed).__name__})")
    if not low <= int(seed) < high:
        raise ValueError(f"{name}={seed} is out of range; expected an int in [0, 2**64)")
    return int(seed)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random generators (all devices).

    ``seed``: an int in [0, 2**64). Returns a CPU ``torch.Generator`` seeded with ``seed``
    for code that wants its own stream. On the same machine and device, a rerun
    reproduces the same numbers.
    """
    seed = check_seed(seed)  # before seeding anything: all generators or none
    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed takes 32 bits
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
