"""Checkpoints that survive crashes and resume training exactly.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)`` (which refuses to run arbitrary pickled code)::

    {"format": "lmcore.checkpoint", "version": 1, "model_class": "GPT",
     "model_config": {...}, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "step": int, "rng": {"torch", "cuda", "numpy", "python", "data"}, "extra": {...}}

It is written atomically: to a temporary file in the same folder, flushed to disk, then
renamed over the old one with ``os.replace``. A crash mid-write leaves the last good
checkpoint untouched.
"""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT, VERSION = "lmcore.checkpoint", 1
_KEYS = ("format", "version", "model_config", "model", "optimizer", "scheduler", "step", "rng", "extra")


def _rng_state(generator: torch.Generator | None) -> dict:
    """Every random generator a training step may touch, as tensors and plain containers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "data": generator.get_state() if generator is not None else None,
    }


def _set_rng_state(rng: dict, generator: torch.Generator | None) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    if generator is not None and rng["data"] is not None:
        generator.set_state(rng["data"])


def save_checkpoint(path, model, optimizer=None, scheduler=None, step: int = 0, extra: dict | None = None,
                    generator: torch.Generator | None = None) -> Path:
    """Atomically write ``model`` (config + weights), optimiser, scheduler, RNG states and step.

    ``model.config`` (a dataclass, as in :class:`lmcore.transformer.GPTConfig`) is stored as a
    dict so :func:`load_model` can rebuild the model. ``extra``: plain data only (e.g.
    ``{"tokenizer": tok.to_dict()}``). ``generator``: the data-sampling generator.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "model_config": asdict(config) if is_dataclass(config) else None,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "rng": _rng_state(generator),
        "extra": dict(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600); a checkpoint is shared
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave half-written files behind
        raise
    return path


def read_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint file; clear errors for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint path={str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, text file, pickle with code in it, ...
        raise ValueError(
            f"checkpoint path={str(path)!r} ({path.stat().st_size} bytes) could not be read by "
            f"torch.load(weights_only=True): {type(err).__name__}: {str(err).splitlines()[0][:200]}. "
            "Expected an lmcore checkpoint written by save_checkpoint; the file may be truncated "
            "(an interrupted copy or write) or not a checkpoint at all."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"checkpoint path={str(path)!r} is a PyTorch file but not an lmcore checkpoint: expected "
            f"a dict with format={FORMAT!r} and keys {list(_KEYS)}, found {found}"
        )
    if ckpt.get("version") != VERSION:
        raise ValueError(f"checkpoint path={str(path)!r} has version {ckpt.get('version')}, expected {VERSION}")
    return ckpt


def _check_shapes(model, state: dict, path) -> None:
    """Name every missing, unexpected or differently shaped tensor before loading."""
    own = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in own]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems)} in all)" if len(problems) > 6 else "")
        raise ValueError(f"checkpoint path={str(path)!r} does not fit this model (another shape?): {shown}")


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, generator=None,
                    restore_rng: bool = True, map_location="cpu") -> dict:
    """Read ``path`` and restore whatever is passed in; returns the checkpoint dict.

    ``model``/``optimizer``/``scheduler``: loaded in place. ``restore_rng``: set torch, CUDA,
    NumPy and Python RNGs (and ``generator``, the data generator) to their saved states.
    """
    ckpt = read_checkpoint(path, map_location)
    if model is not None:
        _check_shapes(model, ckpt["model"], path)
        model.load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng:
        _set_rng_state(ckpt["rng"], generator)
    return ckpt


def load_model(path, map_location=None):
    """Rebuild a :class:`lmcore.transformer.GPT` from a checkpoint: returns ``(model, extra)``.

    The model is in ``eval()`` mode; ``extra`` holds what was saved with it, e.g.
    ``extra["tokenizer"]`` for :meth:`lmcore.tokenize.CharTokenizer.from_dict`.
    """
    from .transformer import GPT, GPTConfig

    ckpt = read_checkpoint(path, map_location or "cpu")
    if ckpt.get("model_class") != "GPT" or ckpt["model_config"] is None:
        raise ValueError(f"checkpoint path={str(path)!r} holds a {ckpt.get('model_class')!r}, expected a GPT with its config")
    model = GPT(GPTConfig(**ckpt["model_config"]))
    _check_shapes(model, ckpt["model"], path)
    model.load_state_dict(ckpt["model"])
    if map_location is not None:
        model.to(map_location)
    return model.eval(), ckpt["extra"]
