"""Corpora shipped with the book, split into train/validation, cut into training batches.

Typical use (with a tokenizer from :mod:`lmcore.tokenize`)::

    text = load_corpus("shakespeare")
    ids = torch.tensor(tokenizer.encode(text))
    train, val = train_val_split(ids, val_fraction=0.1)
    x, y = get_batch(train, block_size=64, batch_size=32, device=device)
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

CORPORA = {
    "shakespeare": "tiny_shakespeare.txt",  # English, ~1.1 MB, public domain
    "tang300": "tang300.txt",  # 300 Tang poems, Chinese, ~84 KB, public domain
}


def assets_dir() -> Path:
    """The book's ``assets/`` folder.

    Found from ``LMCORE_ASSETS`` if set, otherwise next to the package (a git checkout or
    ``pip install -e .``), otherwise in the current folder or its parents (a chapter
    running from ``chapters/``).
    """
    env = os.environ.get("LMCORE_ASSETS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "assets")
    here = Path.cwd().resolve()
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
    """Return the whole text of a shipped corpus: ``"shakespeare"`` or ``"tang300"``."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus name={name!r}; expected one of {sorted(CORPORA)}")
    text = (assets_dir() / "data" / CORPORA[name]).read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"corpus {name!r} is empty: the file {CORPORA[name]} has no text")
    return text


def train_val_split(data: torch.Tensor, val_fraction: float = 0.1):
    """Split a 1-D tensor of token ids into (train, val); the last ``val_fraction`` is val.

    The split is by position, not shuffled, so validation text is text the model never saw.
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError(
            f"data must be a 1-D tensor of token ids, got "
            f"{type(data).__name__} with shape {tuple(getattr(data, 'shape', ()))}"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = int(round(len(data) * val_fraction))
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
    """
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError("data must be a 1-D tensor of token ids")
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
    if len(data) < block_size + 1:
        raise ValueError(
            f"data has {len(data)} tokens but block_size={block_size} needs at least "
            f"{block_size + 1}; use a smaller block_size or more text"
        )
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x.long().to(device), y.long().to(device)
