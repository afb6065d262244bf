"""Tests for lmcore.checkpoint: plain data only, atomic writes that leave nothing behind,
all-or-nothing loads, and clear errors for every damaged or foreign file (on a CPU, with
the GPU paths simulated where a CPU can: RNG states stay CPU byte tensors)."""
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from lmcore.checkpoint import (
    _remove_stale_temps,
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from lmcore.tokenize import CharTokenizer
from lmcore.transformer import GPT, GPTConfig

TOK = CharTokenizer.from_text("to be or not to be, that is the question.")


def tiny_gpt(seed=0, n_embd=16, n_layer=1):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=16, n_layer=n_layer, n_head=2,
                         n_embd=n_embd))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rewrite(path, change):
    """Load the raw dict, change it, write it back (to make damaged checkpoints)."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


# ------------------------------------------------------------------ round trips
def test_rng_states_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    save_checkpoint(tmp_path / "c.pt", tiny_gpt(), generator=gen)
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    gen2 = torch.Generator().manual_seed(0)
    load_checkpoint(tmp_path / "c.pt", generator=gen2)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen2))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])


def test_checkpoint_is_plain_data_and_load_model_rebuilds_gpt(tmp_path):
    model = tiny_gpt()
    save_checkpoint(tmp_path / "m.pt", model, extra={"tokenizer": TOK.to_dict()})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # no pickled code inside
    assert raw["model_config"]["n_embd"] == 16
    loaded, extra = load_model(tmp_path / "m.pt")
    assert not loaded.training
    assert CharTokenizer.from_dict(extra["tokenizer"]).decode([1, 2]) == TOK.decode([1, 2])
    x = torch.tensor([TOK.encode("to be or not")])
    assert torch.equal(loaded(x).logits, model.eval()(x).logits)


@pytest.mark.parametrize("value", [
    torch.arange(3), 1, 2.5, float("nan"), 1j, "text", b"bytes", True, None, [1, "a"],
    (1, 2), {1: "int key"}, {"nested": {"deep": [torch.ones(2), {"x": None}]}}, {3, 4},
    torch.float16, torch.device("cpu"), torch.Size([2, 3]),
])
def test_plain_extra_saves_and_loads_back(tmp_path, value):
    save_checkpoint(tmp_path / "c.pt", tiny_gpt(), extra={"v": value})
    back = read_checkpoint(tmp_path / "c.pt")["extra"]["v"]
    assert type(back) is type(value) or isinstance(value, torch.Tensor)
    assert repr(back) == repr(value)


class Opaque:
    pass


@pytest.mark.parametrize("extra, where, hint", [
    ({"tokenizer": TOK}, r"\['extra'\]\['tokenizer'\]", r"to_dict\(\)"),
    ({"loss": np.float64(1.5)}, r"\['loss'\]", r"\.item\(\)"),
    ({"ids": np.arange(3)}, r"\['ids'\]", "from_numpy"),
    ({"deep": [1, {"x": np.int64(2)}]}, r"\['deep'\]\[1\]\['x'\]", r"\.item\(\)"),
    ({"fn": len}, r"\['fn'\]", "tensors, numbers"),
    ({"obj": Opaque()}, r"\['obj'\]", "Opaque"),
    ({"span": range(3)}, r"\['span'\]", "range"),
    ({"frozen": frozenset([1])}, r"\['frozen'\]", "frozenset"),
    ({Opaque(): 1}, "key", "Opaque"),
    ({"empty": b""}, r"\['empty'\]", "empty bytes"),  # b"" pickles as a call
])
def test_extra_that_would_not_load_is_refused_at_save_time(tmp_path, extra, where, hint):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=where) as err:
        save_checkpoint(path, tiny_gpt(), extra=extra)
    assert "weights_only=True" in str(err.value) and re.search(hint, str(err.value))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file


# ------------------------------------------------------------------ atomic writes
def test_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_gpt(), step=1)
    good = path.read_bytes()

    def crash(obj, f):  # half a file, then the process "dies"
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_gpt(seed=1), step=2)
    assert path.read_bytes() == good and load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_temp_files_are_recognisable(tmp_path, monkeypatch):
    names, real_save = [], torch.save

    def spy(obj, f):  # during the save, the temporary file is the only file there
        names.extend(p.name for p in tmp_path.iterdir())
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", spy)
    save_checkpoint(tmp_path / "ckpt.pt", tiny_gpt())
    assert len(names) == 1
    assert re.fullmatch(rf"\.ckpt\.pt\.{os.getpid()}\.\w+\.lmcore-tmp", names[0])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_of_dead_processes_are_removed_on_the_next_save(tmp_path):
    path = tmp_path / "ckpt.pt"
    stale = tmp_path / f".ckpt.pt.{dead_pid()}.abcd1234.lmcore-tmp"
    alive = tmp_path / f".ckpt.pt.{os.getppid()}.efgh5678.lmcore-tmp"  # a running process
    other = tmp_path / f".other.pt.{dead_pid()}.abcd1234.lmcore-tmp"  # another target
    lookalike = tmp_path / f".ckpt.pt.extra.{dead_pid()}.abcd1234.lmcore-tmp"
    for p in (stale, alive, other, lookalike):
        p.write_bytes(b"half a checkpoint")
    save_checkpoint(path, tiny_gpt())
    assert not stale.exists()
    assert alive.exists() and other.exists() and lookalike.exists()
    old = time.time() - 2 * 24 * 3600  # older than a day: no save runs that long
    os.utime(alive, (old, old))
    assert _remove_stale_temps(path) == [alive]


def test_a_killed_save_leaves_a_temp_that_the_next_save_removes(tmp_path):
    """SIGKILL in the middle of torch.save: the old file survives, the temp is cleaned."""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_gpt(), step=1)
    good = path.read_bytes()
    script = textwrap.dedent(f"""
        import time, torch
        from lmcore.checkpoint import save_checkpoint
        from lmcore.transformer import GPT, GPTConfig
        def slow(obj, f):
            f.write(b"PK partial"); f.flush(); time.sleep(60)
        torch.save = slow
        save_checkpoint({str(path)!r}, GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1,
                        n_head=1, n_embd=4)), step=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob(".ckpt.pt.*.lmcore-tmp")) and time.time() < deadline:
            time.sleep(0.05)
        temps = list(tmp_path.glob(".ckpt.pt.*.lmcore-tmp"))
        assert temps, "the child never started writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.read_bytes() == good  # the last good checkpoint is intact
    assert temps[0].exists()  # a kill runs no cleanup...
    save_checkpoint(path, tiny_gpt(), step=3)  # ...the next save does
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    assert read_checkpoint(path)["step"] == 3


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_read_only_checkpoint_is_not_replaced(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_gpt(), step=1)
    good = path.read_bytes()
    path.chmod(0o444)
    try:
        with pytest.raises(PermissionError, match="read-only: refusing to replace it"):
            save_checkpoint(path, tiny_gpt(seed=1), step=2)
        assert path.read_bytes() == good
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"model": "not a model"}, TypeError, "model must be a torch.nn.Module"),
    ({"step": -1}, ValueError, r"step=-1; expected an int >= 0"),
    ({"step": 1.5}, ValueError, "step=1.5"),
    ({"extra": [1, 2]}, TypeError, "extra must be a dict"),
])
def test_bad_save_arguments(tmp_path, kwargs, error, match):
    kw = {"model": tiny_gpt(), **kwargs}
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path / "c.pt", **kw)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        save_checkpoint(tmp_path, tiny_gpt())


# ------------------------------------------------------------------ damaged and foreign files
def test_bad_checkpoints_give_clear_errors(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, tiny_gpt())
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not be read.*truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="could not be read"):
        load_model(tmp_path / "notes.txt")
    torch.save({"w": torch.randn(3)}, tmp_path / "random.pt")
    with pytest.raises(ValueError, match=r"not an lmcore checkpoint.*found \['w'\]"):
        load_checkpoint(tmp_path / "random.pt")
    torch.save({"payload": Opaque()}, tmp_path / "pickle.pt")  # code would run on load
    with pytest.raises(ValueError, match=r"could not be read by torch.load\(weights_only=True\)"):
        read_checkpoint(tmp_path / "pickle.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"does not fit this model.*wte.weight: checkpoint "
                                         r"\(\d+, 16\) vs model \(\d+, 32\)"):
        load_checkpoint(path, tiny_gpt(n_embd=32))


def test_empty_file_and_directory(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(IsADirectoryError, match="is a directory; expected a checkpoint file"):
        load_model(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_map_location_names_a_device_this_machine_lacks(tmp_path):
    save_checkpoint(tmp_path / "c.pt", tiny_gpt())
    with pytest.raises(ValueError, match="map_location='cuda', but this machine has no CUDA"):
        load_checkpoint(tmp_path / "c.pt", map_location="cuda")
    with pytest.raises(ValueError, match="no CUDA"):
        load_model(tmp_path / "c.pt", map_location="cuda:0")
    with pytest.raises(ValueError, match="map_location='gpu' is not a device"):
        read_checkpoint(tmp_path / "c.pt", map_location="gpu")
    with pytest.raises(TypeError, match="map_location must be a device name"):
        read_checkpoint(tmp_path / "c.pt", map_location=3)


def test_rng_states_stay_cpu_byte_tensors_whatever_the_map_location(tmp_path):
    """The GPU path, simulated: 'meta' stands in for a device other than the CPU."""
    gen = torch.Generator().manual_seed(1)
    save_checkpoint(tmp_path / "c.pt", tiny_gpt(), generator=gen,
                    extra={"t": torch.ones(2)})
    ckpt = read_checkpoint(tmp_path / "c.pt", map_location="meta")
    assert all(v.device.type == "meta" for v in ckpt["model"].values())
    assert ckpt["extra"]["t"].device.type == "meta"
    rng = ckpt["rng"]
    for t in (rng["torch"], rng["data"], rng["numpy"]["keys"]):
        assert t.device.type == "cpu"
    assert rng["torch"].dtype == torch.uint8 and rng["data"].dtype == torch.uint8
    # so restoring them works: torch.set_rng_state refuses anything but a CPU ByteTensor
    expected = torch.rand(2, generator=gen)
    gen2 = torch.Generator()
    load_checkpoint(tmp_path / "c.pt", generator=gen2, map_location="meta")
    assert torch.equal(torch.rand(2, generator=gen2), expected)
    # tied weights (one matrix under two names) stay one tensor after the move
    assert ckpt["model"]["wte.weight"] is ckpt["model"]["lm_head.weight"]


@pytest.mark.parametrize("change, match", [
    (lambda c: c.pop("model"), r"has no \['model'\] entry"),
    (lambda c: c.pop("rng"), r"has no \['rng'\] entry"),
    (lambda c: c["rng"].pop("numpy"), r"'rng' entry should hold"),
    (lambda c: c.update(model=[1, 2]), "not a state dict of tensors"),
    (lambda c: c.update(version=99), "has version 99, expected 1"),
    (lambda c: c.update(extra=[1]), "'extra' a dict"),
])
def test_missing_or_malformed_entries(tmp_path, change, match):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny_gpt())
    rewrite(path, change)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", [
    lambda r: r.update(torch=torch.zeros(3, dtype=torch.uint8)),  # wrong size
    lambda r: r.update(torch=torch.zeros(5056)),  # wrong dtype
    lambda r: r["numpy"].update(keys=torch.zeros(3, dtype=torch.int64)),
    lambda r: r.update(python=[3, [1, 2], None]),
    lambda r: r.update(data=torch.zeros(4, dtype=torch.uint8)),
    lambda r: r.update(cuda=[torch.zeros(3)]),
])
def test_bad_rng_state_fails_before_anything_changes(tmp_path, damage):
    path = tmp_path / "c.pt"
    gen = torch.Generator().manual_seed(3)
    model = tiny_gpt(seed=0)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]])).loss.backward()
    opt.step()
    save_checkpoint(path, model, opt, generator=gen)
    rewrite(path, lambda c: damage(c["rng"]))

    other = tiny_gpt(seed=1)
    other_opt = torch.optim.AdamW(other.parameters())
    before, opt_before = weights(other), repr(other_opt.state_dict())
    rng_before, gen2 = torch.get_rng_state(), torch.Generator().manual_seed(9)
    with pytest.raises(ValueError, match="damaged RNG state.*nothing was loaded"):
        load_checkpoint(path, other, other_opt, generator=gen2)
    assert same(weights(other), before)  # all or nothing: the weights are untouched
    assert repr(other_opt.state_dict()) == opt_before
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(gen2.get_state(), torch.Generator().manual_seed(9).get_state())
    load_checkpoint(path, other, restore_rng=False)  # the weights themselves are fine
    assert same(weights(other), weights(model))


def test_optimizer_mismatch_fails_before_the_weights_change(tmp_path):
    path = tmp_path / "c.pt"
    model = tiny_gpt()
    save_checkpoint(path, model, torch.optim.AdamW(model.parameters()))
    other = tiny_gpt(seed=1)
    groups = [{"params": [p for p in other.parameters() if p.dim() >= 2]},
              {"params": [p for p in other.parameters() if p.dim() < 2]}]
    before = weights(other)
    with pytest.raises(ValueError, match="optimiser state does not fit"):
        load_checkpoint(path, other, torch.optim.AdamW(groups))
    assert same(weights(other), before)


# ------------------------------------------------------------------ load_model's config check
def test_load_model_checks_the_config_before_building(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny_gpt())
    rewrite(path, lambda c: c["model_config"].update(n_layer=100_000))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"n_layer=100000.*describes a GPT with [\d,]+ "
                                         r"parameters, but the checkpoint's weights hold [\d,]+"):
        load_model(path)
    assert time.perf_counter() - start < 5  # fails fast: nothing was built


@pytest.mark.parametrize("change, match", [
    (lambda c: c["model_config"].update(n_embd=32), "does not belong to these weights"),
    (lambda c: c["model_config"].update(vocab_size=10**9), "does not belong"),
    (lambda c: c["model_config"].update(tie_weights=False), "does not belong"),
    (lambda c: c["model_config"].update(colour="red"), r"unknown fields \['colour'\]"),
    (lambda c: c["model_config"].pop("vocab_size"), "not a valid GPTConfig"),
    (lambda c: c.update(model_class="LSTM"), "holds a 'LSTM', expected a GPT"),
    (lambda c: c.update(model_config=None), "expected a GPT with its config"),
    (lambda c: c["model_config"].update(positions="sinusoidal", block_size=2**30),
     "does not belong|position table exceeds"),
])
def test_load_model_rejects_configs_that_do_not_match_the_weights(tmp_path, change, match):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny_gpt())
    rewrite(path, change)
    with pytest.raises(ValueError, match=match):
        load_model(path)
