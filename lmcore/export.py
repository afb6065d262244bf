"""A GPT as an ONNX file: one call gives the next-token logits and every attention map.

:func:`to_onnx` writes ``lmcore.transformer.GPT`` with ``torch.onnx.export`` (the dynamo
exporter) so that ONNX Runtime — in Python, or in a web page with onnxruntime-web — runs
the model without PyTorch. The graph has one input and two outputs::

    idx        int64 (batch, seq)                  token ids, 1 <= seq <= block_size
    logits     float (batch, vocab_size)           scores of the token after idx[:, -1]
    attention  float (n_layer, batch, n_head, seq, seq)   every layer's and head's weights

``batch`` and ``seq`` are dynamic. It is the model's own ``forward(need_weights=True)``,
traced, not a second copy of the model: its data-dependent checks are skipped while
tracing (``lmcore.layers.is_tracing``), so the caller checks the ids (as
:meth:`GPT.check_inputs` does) and keeps a longer text to the window rule of
:func:`lmcore.generate.generate`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "NextTokenAndAttention", "to_onnx"]

INPUT_NAMES = ["idx"]
OUTPUT_NAMES = ["logits", "attention"]


class NextTokenAndAttention(nn.Module):
    """Wrap a GPT: idx (B, T) -> (logits (B, V) at the last position, weights (L, B, H, T, T))."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor):
        out = self.model(idx, need_weights=True, validate=False)
        return out.logits[:, -1], torch.stack(out.attentions)


def _check_model(model) -> None:
    from .transformer import GPT

    if not isinstance(model, GPT):
        raise TypeError(f"model must be an lmcore.transformer.GPT, got {type(model).__name__}")
    if any(not torch.isfinite(p).all() for p in model.parameters()):
        raise ValueError("model has NaN or inf parameters; there is nothing sound to export")


def to_onnx(model, path, *, opset: int = 20, example_len: int | None = None) -> Path:
    """Export ``model`` (an ``lmcore.transformer.GPT``) to the ONNX file ``path``.

    The file is written atomically (a temporary file beside it, then renamed), with the
    weights inside (no external-data file). ``example_len`` is the sequence length traced
    (default ``min(8, block_size)``); every length 1..block_size runs, since ``seq`` is a
    dynamic axis. The model is exported in ``eval()`` mode on the CPU and left as it was.
    Returns the path.
    """
    _check_model(model)
    block = model.config.block_size
    example_len = min(8, block) if example_len is None else example_len
    if isinstance(example_len, bool) or not isinstance(example_len, int) \
            or not 2 <= example_len <= block:
        raise ValueError(f"example_len must be an int in [2, block_size={block}], "
                         f"got {example_len!r} (length 1 would fix seq to 1)")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 18:
        raise ValueError(f"opset must be an int >= 18 (the dynamo exporter's range), got {opset!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"path={str(path)!r}: the folder {str(path.parent)!r} does not exist")
    was_training, device = model.training, next(model.parameters()).device
    idx = torch.zeros(2, example_len, dtype=torch.long)
    seq = torch.export.Dim.DYNAMIC  # T == 1 specialises nothing in the ONNX graph
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        wrapper = NextTokenAndAttention(model.cpu().eval()).eval()
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper, (idx,), dynamo=True, opset_version=opset,
                input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                dynamic_shapes={"idx": {0: torch.export.Dim.DYNAMIC, 1: seq}},
                verbose=False)
        program.save(tmp, external_data=False)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a web server must read it
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        model.to(device).train(was_training)
    return path
