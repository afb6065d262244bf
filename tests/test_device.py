"""lmcore.device: device choice, the CPU/GPU settings helper, seeding."""
import random

import numpy as np
import pytest
import torch

import lmcore
from lmcore.device import (
    as_device,
    check_seed,
    get_device,
    is_accelerator,
    pick,
    seed_everything,
)


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
    with pytest.raises(ValueError, match="seed=-1 is out of range"):
        seed_everything(-1)


def test_seed_range_is_torchs_and_bad_seeds_seed_nothing():
    # torch.manual_seed takes [0, 2**64); the ends work, one past them is a clear error
    for ok in (0, 2**64 - 1, np.int64(7)):
        g = seed_everything(ok)
        assert g.initial_seed() == int(ok)
    random.seed(5)
    state = random.getstate()
    with pytest.raises(ValueError, match=r"seed=18446744073709551616 is out of range.*2\*\*64"):
        seed_everything(2**64)
    with pytest.raises(ValueError, match=r"seed=1180591620717411303424 is out of range"):
        seed_everything(2**70)  # torch alone would say "Overflow when unpacking long long"
    assert random.getstate() == state  # refused before any generator was seeded
    for bad in (True, 1.0, "3", None, torch.tensor(3)):
        with pytest.raises(TypeError, match="seed must be an int"):
            seed_everything(bad)
    with pytest.raises(TypeError, match="my_seed must be an int"):
        check_seed(0.5, "my_seed")


def test_bad_devices_are_clear_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='tpu' is not a device"):
        pick(1, 2, device="tpu")
    with pytest.raises(TypeError, match="device must be a torch.device or a string.*got 5"):
        pick(1, 2, device=5)  # torch.device(5) would mean "accelerator number 5"
    with pytest.raises(TypeError, match="device must be a torch.device"):
        is_accelerator(None)
    with pytest.raises(ValueError, match=r"preferred='cuda:x' is not a device.*'cuda:N'"):
        get_device("cuda:x")
    with pytest.raises(RuntimeError, match="this machine has no CUDA device"):
        as_device("cuda", available=True)
    assert as_device("cuda") == torch.device("cuda")  # naming a device needs no GPU
    assert as_device(torch.device("cpu"), available=True) == torch.device("cpu")
