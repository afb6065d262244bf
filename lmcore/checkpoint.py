"""Checkpoints that survive crashes and resume training exactly.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)`` (which refuses to run arbitrary pickled code)::

    {"format": "lmcore.checkpoint", "version": 1, "model_class": "GPT",
     "model_config": {...}, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "step": int, "rng": {"torch", "cuda", "numpy", "python", "data"}, "extra": {...}}

Saving checks that everything in it is plain data (so what saves also loads), refuses to
replace a read-only file, and writes atomically: to a temporary file beside the target
(``.NAME.PID.<random>.lmcore-tmp``), flushed to disk, then renamed over the old one with
``os.replace``. A crash mid-write leaves the last good checkpoint untouched, and the next
save to the same target deletes temporary files whose process is gone. Loading checks
everything (shapes, optimiser groups, RNG states) before it changes anything: a load is
all or nothing. RNG states always stay CPU byte tensors, whatever ``map_location`` says.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import random
import re
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

FORMAT, VERSION = "lmcore.checkpoint", 1
_KEYS = ("format", "version", "model_class", "model_config", "model", "optimizer",
         "scheduler", "step", "rng", "extra")
_RNG_KEYS = ("torch", "cuda", "numpy", "python", "data")
_TMP = ".lmcore-tmp"  # suffix of the temporary files of a save in progress
_STALE_SECONDS = 24 * 3600  # a temporary file this old belongs to no running save
# What torch.load(weights_only=True) reads back (besides tensors and containers).
_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device)


def _rng_state(generator: torch.Generator | None) -> dict:
    """Every random generator a training step may touch, as tensors and plain containers."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached": float(np_state[4])},
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "data": generator.get_state() if generator is not None else None,
    }


def _rng_restorer(rng: dict, generator: torch.Generator | None, path):
    """Check every saved RNG state on scratch generators; return a function that sets them."""
    try:
        torch.Generator().set_state(rng["torch"])
        cuda = list(rng["cuda"])
        if any(not isinstance(s, torch.Tensor) or s.dtype != torch.uint8 for s in cuda):
            raise TypeError("CUDA states must be uint8 tensors")
        n = rng["numpy"]
        np_state = (n["name"], n["keys"].cpu().numpy().astype(np.uint32), int(n["pos"]),
                    int(n["has_gauss"]), float(n["cached"]))
        np.random.RandomState().set_state(np_state)
        version, state, gauss = rng["python"]
        py_state = (version, tuple(state), gauss)
        random.Random().setstate(py_state)
        data = rng["data"] if generator is not None else None
        if data is not None:
            torch.Generator(device=generator.device).set_state(data)
    except Exception as err:  # noqa: BLE001  (any damage: report it, change nothing)
        raise ValueError(
            f"checkpoint path={str(path)!r} has a damaged RNG state ({type(err).__name__}: "
            f"{err}); nothing was loaded. Pass restore_rng=False to load it without the "
            "random generators."
        ) from None

    def restore() -> None:
        torch.set_rng_state(rng["torch"])
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for i, s in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(s, i)
        np.random.set_state(np_state)
        random.setstate(py_state)
        if data is not None:
            generator.set_state(data)

    return restore


def _check_plain(obj, where: str) -> None:
    """Raise unless ``torch.load(weights_only=True)`` can read ``obj`` back."""
    kind = type(obj)
    if kind is bytes and not obj:  # pickled as a call to bytes(), which is refused
        raise TypeError(f"{where} is b'' (empty bytes), which "
                        "torch.load(weights_only=True) refuses to read back; store None "
                        "or '' instead")
    if kind in _PLAIN or kind in (torch.Tensor, torch.nn.Parameter):
        return
    if kind in (list, tuple, set, torch.Size):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if kind.__module__ == "numpy":
        hint = "; convert it with .item() (a number) or torch.from_numpy / .tolist() (an array)"
    elif hasattr(obj, "to_dict"):
        hint = f"; store its .to_dict() instead (rebuild it with {kind.__name__}.from_dict)"
    else:
        hint = ""
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which "
        "torch.load(weights_only=True) refuses to read back: a checkpoint may hold only "
        f"tensors, numbers, str, bytes, bool, None and lists/tuples/dicts of them{hint}"
    )


def _writable_target(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path={str(path)!r} is a directory; expected a "
                                "file name such as 'ckpt.pt'")
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise PermissionError(f"checkpoint path={str(path)!r} is read-only: refusing to "
                              "replace it. Make it writable (chmod u+w) or save elsewhere.")
    return path


def _remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files left by earlier saves to ``path`` whose process is gone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+{re.escape(_TMP)}")
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{_TMP}"):
        match = pattern.fullmatch(tmp.name)
        if match and not _running_save(int(match.group(1)), tmp):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running_save(pid: int, tmp: Path) -> bool:
    """Could process ``pid`` still be writing ``tmp``? (Only temp files of dead processes go.)"""
    try:
        if time.time() - tmp.stat().st_mtime > _STALE_SECONDS:
            return False
    except FileNotFoundError:
        return True  # gone already
    if pid == os.getpid() or os.name == "nt":  # this process, or no safe liveness test
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _atomic_save(obj, path: Path) -> None:
    """Write ``obj`` beside ``path``, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)  # left behind by saves that were killed (SIGKILL, power loss)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=_TMP)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp, 0o644)  # mkstemp makes the file private (0600); a checkpoint is shared
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave half-written files behind
        raise


def save_checkpoint(path, model, optimizer=None, scheduler=None, step=0,
                    extra=None, generator=None) -> Path:
    """Atomically write model (config, weights), optimiser, scheduler, RNGs.

    ``model.config`` (a dataclass such as ``GPTConfig``) is stored as a dict,
    so :func:`load_model` can rebuild the model. ``extra``: plain data only,
    e.g. ``{"tokenizer": tok.to_dict()}``, checked before anything is
    written. ``generator``: the data-sampling generator; ``step``: an int.
    """
    path = _writable_target(path)
    _check_save_args(model, step, extra)
    config = getattr(model, "config", None)
    is_config = dataclasses.is_dataclass(config)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(model).__name__,
        "model_config": dataclasses.asdict(config) if is_config else None,
        "model": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "step": step,
        "rng": _rng_state(generator),
        "extra": dict(extra or {}),
    }
    _check_plain(ckpt, "checkpoint")  # what could not be loaded is not saved
    _atomic_save(ckpt, path)
    return path


def _check_save_args(model, step, extra) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r}; expected an int >= 0")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict (or None), got {type(extra).__name__}")


def _device(map_location) -> torch.device:
    """``map_location`` as a device this machine has (a clear error otherwise)."""
    if not isinstance(map_location, (str, torch.device)):
        raise TypeError(f"map_location must be a device name such as 'cpu' or 'cuda' (or a "
                        f"torch.device), got {type(map_location).__name__}")
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError):
        raise ValueError(f"map_location={map_location!r} is not a device; expected e.g. "
                         "'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"map_location={map_location!r}, but this machine has no CUDA GPU "
                         "(torch.cuda.is_available() is False); load with map_location='cpu' "
                         "or lmcore.get_device()")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"map_location={map_location!r}, but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"map_location={map_location!r}, but Apple's MPS is not available here")
    return device


def _to(obj, device: torch.device, memo: dict):
    """Move every tensor in ``obj`` to ``device``; tensors that shared memory still do."""
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), obj.shape, obj.stride(),
               obj.dtype)
        if key not in memo:
            memo[key] = obj.to(device)
        return memo[key]
    if isinstance(obj, dict):
        return type(obj)((k, _to(v, device, memo)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_to(v, device, memo) for v in obj)
    return obj


def _check_layout(ckpt, path) -> None:
    where = f"checkpoint path={str(path)!r}"
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{where} is a PyTorch file but not an lmcore checkpoint: expected a "
                         f"dict with format={FORMAT!r} and keys {list(_KEYS)}, found {found}")
    if ckpt.get("version") != VERSION:
        raise ValueError(f"{where} has version {ckpt.get('version')!r}, expected {VERSION}")
    missing = [k for k in _KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{where} has no {missing} entr{'y' if len(missing) == 1 else 'ies'}: it "
                         "is damaged or was not written by save_checkpoint")
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ValueError(f"{where}: its 'model' entry is not a state dict of tensors")
    rng = ckpt["rng"]
    if not isinstance(rng, dict) or any(k not in rng for k in _RNG_KEYS):
        found = sorted(rng) if isinstance(rng, dict) else type(rng).__name__
        raise ValueError(f"{where}: its 'rng' entry should hold {list(_RNG_KEYS)}, found {found}")
    if not isinstance(ckpt["step"], int) or not isinstance(ckpt["extra"], dict):
        # a damaged file is a bad value, not a bad argument type
        raise ValueError(f"{where}: 'step' must be an int and 'extra' a dict")  # noqa: TRY004


def read_checkpoint(path, map_location="cpu") -> dict:
    """Load and validate a checkpoint file; clear errors for missing, truncated or foreign files.

    Tensors go to ``map_location`` (a device this machine has); RNG states stay CPU tensors.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path={str(path)!r} is a directory; expected a "
                                "checkpoint file written by save_checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint path={str(path)!r} does not exist")
    device = _device(map_location)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint path={str(path)!r} is empty (0 bytes): a write or copy "
                         "was interrupted. Expected a checkpoint written by save_checkpoint.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (truncated zip, text file, pickled code, ...)
        lines = str(err).strip().splitlines()
        raise ValueError(
            f"checkpoint path={str(path)!r} ({size} bytes) could not be read by "
            f"torch.load(weights_only=True): {type(err).__name__}: "
            f"{lines[0][:200] if lines else 'no message'}. Expected an lmcore checkpoint "
            "written by save_checkpoint; the file may be truncated (an interrupted copy or "
            "write) or not a checkpoint at all."
        ) from None
    _check_layout(ckpt, path)
    if device.type != "cpu":
        memo = {}
        for key in ("model", "optimizer", "scheduler", "extra"):
            ckpt[key] = _to(ckpt[key], device, memo)
    return ckpt


def _check_shapes(model, state: dict, path) -> None:
    """Name every missing, unexpected or differently shaped tensor before loading."""
    own = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in own.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in own]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in own.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:6])
        shown += f"; ... ({len(problems)} in all)" if len(problems) > 6 else ""
        raise ValueError(f"checkpoint path={str(path)!r} does not fit this model (another "
                         f"shape?): {shown}")


def _check_optimizer(optimizer, state: dict, path) -> None:
    """The saved optimiser must have the same groups, with params of the same shapes."""
    own = [g["params"] for g in optimizer.param_groups]
    saved = [g.get("params", []) for g in state.get("param_groups", [])]
    moments = state.get("state", {})
    fits = [len(s) for s in saved] == [len(o) for o in own] and all(
        t.shape == p.shape for ids, ps in zip(saved, own) for i, p in zip(ids, ps)
        for t in moments.get(i, {}).values() if isinstance(t, torch.Tensor) and t.dim())
    if not fits:
        raise ValueError(f"checkpoint path={str(path)!r}: its optimiser state does not fit this "
                         f"optimiser (groups of {[len(o) for o in own]} parameters); nothing "
                         "was loaded")


def load_checkpoint(path, model=None, optimizer=None, scheduler=None, generator=None,
                    restore_rng: bool = True, map_location="cpu") -> dict:
    """Read ``path`` and restore whatever is passed in; returns the checkpoint dict.

    ``model``/``optimizer``/``scheduler``: loaded in place. ``restore_rng``: set torch, CUDA,
    NumPy and Python RNGs (and ``generator``, the data generator) to their saved states.
    Everything is checked first, then loaded: on an error nothing has changed.
    """
    ckpt = read_checkpoint(path, map_location)
    if model is not None:
        _check_shapes(model, ckpt["model"], path)
    if optimizer is not None and ckpt["optimizer"] is not None:
        _check_optimizer(optimizer, ckpt["optimizer"], path)
    restore = _rng_restorer(ckpt["rng"], generator, path) if restore_rng else None
    if model is not None:
        model.load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore is not None:
        restore()
    return ckpt


def _gpt_config(ckpt: dict, path):
    """The checkpoint's GPTConfig, checked against its weights before anything is built."""
    from .transformer import GPTConfig, gpt_param_count

    where = f"checkpoint path={str(path)!r}"
    cfg = ckpt["model_config"]
    if ckpt.get("model_class") != "GPT" or not isinstance(cfg, dict):
        raise ValueError(f"{where} holds a {ckpt.get('model_class')!r}, expected a GPT with "
                         "its config")
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    if set(cfg) - known:
        raise ValueError(f"{where}: model_config has unknown fields {sorted(set(cfg) - known)}; "
                         f"GPTConfig has {sorted(known)}")
    try:
        config = GPTConfig(**cfg)
        expected = gpt_param_count(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: model_config {cfg} is not a valid GPTConfig: {err}") from None
    seen, actual = set(), 0
    for t in ckpt["model"].values():  # tied weights (one matrix, two names) count once
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape)
        actual += 0 if key in seen else t.numel()
        seen.add(key)
    if expected != actual:
        raise ValueError(
            f"{where}: model_config (n_layer={config.n_layer}, n_embd={config.n_embd}, "
            f"vocab_size={config.vocab_size}, block_size={config.block_size}) describes a GPT "
            f"with {expected:,} parameters, but the checkpoint's weights hold {actual:,}: the "
            "config does not belong to these weights. Nothing was built."
        )
    if config.positions != "learned" and config.block_size * config.n_embd > 2**28:
        raise ValueError(f"{where}: block_size={config.block_size} x n_embd={config.n_embd} "
                         "position table exceeds 1 GiB; expected a smaller window")
    return config


def load_model(path, map_location=None):
    """Rebuild a :class:`lmcore.transformer.GPT` from a checkpoint: returns ``(model, extra)``.

    The config is checked against the weights before the model is built. The model is in
    ``eval()`` mode; ``extra`` holds what was saved with it, e.g. ``extra["tokenizer"]``
    for :meth:`lmcore.tokenize.CharTokenizer.from_dict`.
    """
    from .transformer import GPT

    device = _device(map_location or "cpu")
    ckpt = read_checkpoint(path, "cpu")
    model = GPT(_gpt_config(ckpt, path))
    _check_shapes(model, ckpt["model"], path)
    model.load_state_dict(ckpt["model"])
    extra = _to(ckpt["extra"], device, {}) if device.type != "cpu" else ckpt["extra"]
    return model.to(device).eval(), extra
