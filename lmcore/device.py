"""Where the computation runs, and how to make it repeatable.

Every chapter starts with::

    device = get_device()          # cuda, then mps, then cpu
    seed_everything(0)             # same numbers on every rerun
    steps = pick(cpu=300, gpu=3000, device=device)
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

_CHOICES = ("auto", "cpu", "cuda", "mps")


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
    kind = choice.split(":", 1)[0]
    if kind not in _CHOICES or (":" in choice and kind != "cuda"):
        raise ValueError(
            f"{source}={preferred!r} is not a device; expected one of "
            f"'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
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
        if ":" in choice:
            index = int(choice.split(":", 1)[1]) if choice.split(":", 1)[1].isdigit() else -1
            if not 0 <= index < torch.cuda.device_count():
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


def is_accelerator(device: torch.device | str) -> bool:
    """True for a GPU (CUDA or MPS), False for the CPU."""
    return torch.device(device).type in ("cuda", "mps")


def pick(cpu, gpu, device: torch.device | str | None = None):
    """Return ``gpu`` when running on a GPU, otherwise ``cpu``.

    Chapters use it for sizes that should grow on a GPU, e.g.
    ``n_embd = pick(cpu=64, gpu=256)``. ``cpu`` and ``gpu`` may be any objects
    (numbers, dicts, config objects).
    """
    if device is None:
        device = get_device()
    return gpu if is_accelerator(device) else cpu


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's random generators (all devices).

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    On the same machine and device, a rerun reproduces the same numbers.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
