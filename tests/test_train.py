"""Tests for lmcore.train and lmcore.checkpoint: schedule, optimiser groups, exact resume,
atomic checkpoints and clear errors for bad ones. All on CPU with a tiny GPT (a few s)."""
import math
import random

import numpy as np
import pytest
import torch

from lmcore.checkpoint import load_checkpoint, load_model, save_checkpoint
from lmcore.tokenize import CharTokenizer
from lmcore.train import History, Trainer, TrainConfig, configure_optimizer, estimate_loss, lr_at
from lmcore.transformer import GPT, GPTConfig

TEXT = "to be or not to be, that is the question. " * 40
TOK = CharTokenizer.from_text(TEXT)
IDS = torch.tensor(TOK.encode(TEXT))
TRAIN, VAL = IDS[:1500], IDS[1500:]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads; one thread avoids contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_gpt(seed=0, n_embd=16, dropout=0.0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=n_embd,
                         dropout=dropout))


def tiny_config(**kw):
    base = dict(max_iters=20, batch_size=4, block_size=16, lr=3e-3, min_lr=3e-4, warmup_iters=4,
                eval_interval=10, eval_iters=2, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_cosine_floor():
    kw = dict(lr=1.0, min_lr=0.1, warmup_iters=10, decay_iters=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, **kw) == pytest.approx(1.0)  # warm-up ends at the peak
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half-way down the cosine: mean of lr and min_lr
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == 0.1
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_weight_decay_only_on_matrices():
    model = tiny_gpt()
    opt = configure_optimizer(model, tiny_config(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_training_lowers_the_loss_and_records_history():
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(max_iters=60, eval_interval=30), "cpu")
    before = trainer.evaluate()["val"]
    history = trainer.run(progress=False)
    assert history.step == [30, 60]
    assert history.val_loss[-1] < before - 0.5, (before, history.val_loss)
    assert all(t > 0 for t in history.tokens_per_s)
    assert History.from_dict(history.to_dict()) == history
    assert len(history.figure().data) == 2


def test_estimate_loss_restores_mode_and_leaves_training_stream_alone():
    trainer = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, tiny_config(), "cpu")
    state = trainer.generator.get_state()
    a = estimate_loss(trainer.model, {"val": VAL}, trainer.config)
    b = estimate_loss(trainer.model, {"val": VAL}, trainer.config)
    assert a == b  # same batches, no dropout in eval mode
    assert trainer.model.training and torch.equal(trainer.generator.get_state(), state)


def test_resume_is_exact(tmp_path):
    """10 steps + save + load into a fresh trainer + 10 steps == 20 uninterrupted steps."""
    cfg = tiny_config(max_iters=20, eval_interval=5)
    full = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, cfg, "cpu")
    torch.manual_seed(123)  # dropout draws from torch's global RNG
    full.run(progress=False)

    first = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, cfg, "cpu")
    torch.manual_seed(123)
    first.run(iters=10, progress=False)
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(999), random.seed(999), np.random.seed(999)  # disturb every RNG
    second = Trainer(tiny_gpt(seed=7, dropout=0.1), TRAIN, VAL, cfg, "cpu")  # other initial weights
    second.load(tmp_path / "ckpt.pt")
    assert second.step == 10 and second.history.step == [5, 10]
    second.run(progress=False)
    for (name, p), q in zip(full.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name  # bitwise equal on CPU
    for key in ("step", "train_loss", "val_loss", "lr"):  # tokens_per_s is wall-clock, not compared
        assert getattr(second.history, key) == getattr(full.history, key), key


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
    assert not loaded.training and CharTokenizer.from_dict(extra["tokenizer"]).decode(IDS[:5]) == TEXT[:5]
    x = IDS[:16][None]
    assert torch.equal(loaded(x).logits, model.eval()(x).logits)


def test_failed_write_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model = tiny_gpt()
    save_checkpoint(path, model, step=1)
    good = path.read_bytes()

    def crash(obj, f):  # half a file, then the process "dies"
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny_gpt(seed=1), step=2)
    assert path.read_bytes() == good and load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


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
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"does not fit this model.*wte.weight: checkpoint \(\d+, 16\) vs model \(\d+, 32\)"):
        load_checkpoint(path, tiny_gpt(n_embd=32))


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), "cpu")
    trainer.save(tmp_path / "w.pt", optimizer=False)
    with pytest.raises(ValueError, match="no optimiser state"):
        Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), "cpu").load(tmp_path / "w.pt")


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="max_iters"):
        TrainConfig(max_iters=0)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="divisible by world_size"):
        Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(batch_size=5), world_size=2)
    assert math.isclose(tiny_config().lr, 3e-3)
