"""Fixtures shared by the test files, and the hook that lets nbval's run feed the book.

- ``one_thread``: torch on one CPU thread for the test, then back to what it was. The
  models in the tests are tiny: a second thread costs more in coordination than it gains,
  and far more while two pytest workers share two cores. Use it per test
  (``def test_x(one_thread)``) or per file
  (``pytestmark = pytest.mark.usefixtures("one_thread")``).
- ``tiny_gpt_config`` / ``make_tiny_gpt`` / ``tiny_gpt``: a seeded two-layer GPT small
  enough for any test (``make_tiny_gpt(n_embd=32, seed=1)`` changes a field).
- With ``LMCORE_EXECUTION_CACHE`` set (``make test``), nbval's execution of each chapter is
  stored for the book build: see ``tools/nbval_cache.py``.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import nbval_cache
    finally:
        sys.path.remove(str(ROOT / "tools"))
    nbval_cache.register(config)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def tiny_gpt_config():
    """GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)."""
    from lmcore.transformer import GPTConfig

    return GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16)


@pytest.fixture
def make_tiny_gpt(tiny_gpt_config):
    """A factory: ``make_tiny_gpt(seed=0, **config_fields)`` -> a GPT in eval mode."""
    from lmcore.transformer import GPT

    def make(seed: int = 0, **fields):
        config = dataclasses.replace(tiny_gpt_config, **fields)
        torch.manual_seed(seed)
        return GPT(config).eval()

    return make


@pytest.fixture
def tiny_gpt(make_tiny_gpt):
    """A fresh seeded GPT (the tiny config) in eval mode."""
    return make_tiny_gpt()
