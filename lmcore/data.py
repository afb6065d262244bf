"""Corpora shipped with the book, split into train/validation, cut into training batches.

Typical use (with a tokenizer from :mod:`lmcore.tokenize`)::

    text = load_corpus("shakespeare")
    ids = torch.tensor(tokenizer.encode(text))
    train, val = train_val_split(ids, val_fraction=0.1)
    x, y = get_batch(train, block_size=64, batch_size=32, device=device)
"""
from __future__ import annotations

import hashlib
import numbers
import os
from pathlib import Path

import torch

# name -> (file in assets/data, size in bytes, SHA-256): the values recorded in
# assets/data/README.md. load_corpus checks them, so a changed file is never used silently.
CORPORA = {
    "shakespeare": ("tiny_shakespeare.txt", 1115394,  # English, public domain
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    "tang300": ("tang300.txt", 83605,  # 300 Tang poems, Chinese, public domain
                "a78f4e39b0dcc6e682e46f46be3b46f9be2cc2d5a5667eae67631efded0c28f8"),
}


def assets_dir() -> Path:
    """The book's ``assets/`` folder.

    ``LMCORE_ASSETS``, if set, must name it (an error otherwise: a typo never falls back
    to another copy). If unset: next to the package (a git checkout or
    ``pip install -e .``), otherwise in the current folder or its parents (a chapter
    running from ``chapters/``).
    """
    env = os.environ.get("LMCORE_ASSETS")
    if env:
        if not (Path(env) / "data").is_dir():
            raise FileNotFoundError(f"LMCORE_ASSETS={env!r} is not the book's assets/ folder "
                                    "(it has no data/ subfolder); fix or unset it")
        return Path(env)
    here = Path.cwd().resolve()
    candidates = [Path(__file__).resolve().parent.parent / "assets"]
    candidates += [p / "assets" for p in (here, *here.parents)]
    for path in candidates:
        if (path / "data").is_dir():
            return path
    raise FileNotFoundError(
        "could not find the book's assets/ folder (looked in: "
        + ", ".join(str(c) for c in candidates[:4])
        + "). Run from a clone of the book's repository, or set LMCORE_ASSETS to its assets/ path."
    )


def load_corpus(name: str) -> str:
    """Return the whole text of a shipped corpus: ``"shakespeare"`` or ``"tang300"``.
    The file must have its recorded size and SHA-256 (see ``CORPORA``)."""
    if not isinstance(name, str) or name not in CORPORA:
        raise ValueError(f"unknown corpus name={name!r}; expected one of {sorted(CORPORA)}")
    filename, size, sha256 = CORPORA[name]
    path = assets_dir() / "data" / filename
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if len(blob) != size or digest != sha256:
        raise ValueError(f"{path} does not match its recorded checksum: {len(blob):,} bytes "
                         f"with SHA-256 {digest[:16]}..., expected {size:,} bytes with "
                         f"{sha256[:16]}... (assets/data/README.md); restore the file")
    return blob.decode("utf-8")


def _check_ids(data, name: str = "data") -> None:
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError(
            f"{name} must be a 1-D tensor of token ids, got "
            f"{type(data).__name__} with shape {tuple(getattr(data, 'shape', ()))}"
        )
    if data.dtype.is_floating_point or data.dtype.is_complex or data.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {data.dtype} "
                        "(ids are never fractional: check how the tensor was made)")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def train_val_split(data: torch.Tensor, val_fraction: float = 0.1):
    """Split a 1-D tensor of token ids into (train, val); the last ``val_fraction`` is val.

    The split is by position, not shuffled, so validation text is text the model never saw.
    """
    _check_ids(data)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) \
            or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = round(len(data) * val_fraction)
    if n_val < 2 or len(data) - n_val < 2:
        raise ValueError(
            f"data has only {len(data)} tokens: too few to split with val_fraction={val_fraction}"
        )
    return data[:-n_val], data[-n_val:]


def get_batch(
    data: torch.Tensor,
    block_size: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
):
    """Sample ``batch_size`` random windows from ``data`` (1-D token ids).

    Returns ``(x, y)``, both ``(batch_size, block_size)`` int64 on ``device``, where
    ``y[b, t] = x[b, t + 1]``: the target at each position is the next token.
    The window starts are drawn on the generator's device (CPU if generator is None).
    """
    _check_ids(data)
    _check_positive_int("block_size", block_size)
    _check_positive_int("batch_size", batch_size)
    if len(data) < block_size + 1:
        raise ValueError(
            f"data has {len(data)} tokens but block_size={block_size} needs at least "
            f"{block_size + 1}; use a smaller block_size or more text"
        )
    where = generator.device if generator is not None else "cpu"
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator,
                           device=where).to(data.device)
    offsets = torch.arange(block_size, device=data.device)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x.long().to(device), y.long().to(device)
