"""lmcore.export.to_onnx: the ONNX file, run by onnxruntime, computes what lmcore computes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from lmcore.export import to_onnx
from lmcore.transformer import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "assets" / "models" / "shakespeare_char_gpt.pt"
TOL = 1e-4  # max abs difference on logits and on attention weights


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _compare(model, session, idx):
    logits, attention = session.run(None, {"idx": idx.numpy()})
    with torch.no_grad():
        out = model(idx, need_weights=True)
    want_logits = out.logits[:, -1].numpy()
    want_weights = torch.stack(out.attentions).numpy()  # (L, B, H, T, T)
    assert logits.shape == want_logits.shape and attention.shape == want_weights.shape
    return np.abs(logits - want_logits).max(), np.abs(attention - want_weights).max()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from lmcore.checkpoint import load_model

    model, _ = load_model(CHECKPOINT)
    path = to_onnx(model, tmp_path_factory.mktemp("onnx") / "char_gpt.onnx")
    return model, _session(path)


@pytest.mark.parametrize("T", [1, 2, 7, 33, 63, 64])
def test_shipped_model_matches_lmcore(shipped, T):
    model, session = shipped
    g = torch.Generator().manual_seed(T)
    idx = torch.randint(0, model.config.vocab_size, (1, T), generator=g)
    d_logits, d_weights = _compare(model, session, idx)
    assert d_logits <= TOL and d_weights <= TOL, (T, d_logits, d_weights)


def test_batch_is_dynamic_and_rows_are_independent(shipped):
    model, session = shipped
    idx = torch.randint(0, model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    d_logits, d_weights = _compare(model, session, idx)
    assert d_logits <= TOL and d_weights <= TOL
    one, _ = session.run(None, {"idx": idx[1:2].numpy()})
    three, _ = session.run(None, {"idx": idx.numpy()})
    assert np.abs(one[0] - three[1]).max() <= TOL


def test_weights_are_causal_distributions(shipped):
    _, session = shipped
    _, w = session.run(None, {"idx": np.arange(12, dtype=np.int64)[None]})
    assert np.allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0)  # no query sees a later key


@pytest.mark.parametrize("config", [
    dict(n_layer=1, n_head=1, n_embd=8, block_size=5, bias=False, tie_weights=False),
    dict(n_layer=3, n_head=2, n_embd=16, block_size=12, positions="sinusoidal"),
])
def test_other_configs(tmp_path, config):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, **config)).train()  # left as it was after export
    path = to_onnx(model, tmp_path / "m.onnx")
    assert model.training
    model.eval()
    session = _session(path)
    for T in sorted({1, 3, config["block_size"]}):
        idx = torch.randint(0, 11, (2, T))
        assert max(_compare(model, session, idx)) <= TOL


def test_bad_arguments(tmp_path):
    model = GPT(GPTConfig(vocab_size=5, n_layer=1, n_head=1, n_embd=4, block_size=4))
    with pytest.raises(TypeError, match="model must be an lmcore.transformer.GPT"):
        to_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="example_len"):
        to_onnx(model, tmp_path / "x.onnx", example_len=1)
    with pytest.raises(ValueError, match="does not exist"):
        to_onnx(model, tmp_path / "missing" / "x.onnx")
    with torch.no_grad():
        model.wte.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        to_onnx(model, tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
