"""lmcore.device: device choice, the CPU/GPU settings helper, seeding."""
import random

import numpy as np
import pytest
import torch

import lmcore
from lmcore.device import get_device, is_accelerator, pick, seed_everything


def test_version_is_a_string():
    assert isinstance(lmcore.__version__, str) and lmcore.__version__.count(".") == 2


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("LMCORE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(lmcore.device, "_mps_available", lambda: False)
    assert get_device() == torch.device("cpu")
    monkeypatch.setattr(lmcore.device, "_mps_available", lambda: True)
    assert get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cuda")


def test_env_var_overrides(monkeypatch):
    monkeypatch.setenv("LMCORE_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_device() == torch.device("cpu")


def test_unknown_env_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LMCORE_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"LMCORE_DEVICE='tpu'.*'auto', 'cpu', 'cuda'"):
        get_device()


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="asks for CUDA.*is_available"):
        get_device("cuda")
    monkeypatch.setenv("LMCORE_DEVICE", "cuda:0")
    with pytest.raises(RuntimeError, match="LMCORE_DEVICE"):
        get_device()


def test_mps_without_mps_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lmcore.device, "_mps_available", lambda: False)
    with pytest.raises(RuntimeError, match="MPS"):
        get_device("mps")


def test_pick_follows_the_device():
    assert pick(cpu=1, gpu=2, device="cpu") == 1
    assert pick(cpu=1, gpu=2, device=torch.device("cuda")) == 2
    assert is_accelerator("mps") and not is_accelerator("cpu")


def test_seed_everything_makes_runs_repeatable():
    seed_everything(123)
    a = (random.random(), np.random.rand(), torch.rand(3))
    g = seed_everything(123)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert torch.equal(torch.rand(2, generator=g), torch.rand(2, generator=seed_everything(123)))
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
