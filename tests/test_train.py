"""Tests for lmcore.train: schedule, optimiser groups, exact resume, mixed precision (the GPU
choice simulated on a CPU), NaN that stops training with its cause, early stopping, the
char-GPT recipe and clear errors for bad settings. All on CPU with a tiny GPT (a few s).
Checkpoint files themselves are tested in test_checkpoint.py."""
import dataclasses
import math
import random

import numpy as np
import pytest
import torch

import lmcore.train as train_module
from lmcore.tokenize import CharTokenizer
from lmcore.train import (
    History,
    TrainConfig,
    Trainer,
    amp_dtype,
    char_gpt_recipe,
    configure_optimizer,
    estimate_loss,
    load_model,
    lr_at,
)
from lmcore.transformer import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "to be or not to be, that is the question. " * 40
TOK = CharTokenizer.from_text(TEXT)
IDS = torch.tensor(TOK.encode(TEXT))
TRAIN, VAL = IDS[:1500], IDS[1500:]


def tiny_gpt(seed=0, n_embd=16, dropout=0.0, block_size=16):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=block_size, n_layer=1, n_head=2,
                         n_embd=n_embd, dropout=dropout))


def tiny_config(**kw):
    base = {"max_iters": 20, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 4,
            "eval_interval": 10, "eval_iters": 2, "seed": 0}
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedule_warmup_cosine_floor():
    kw = {"lr": 1.0, "min_lr": 0.1, "warmup_iters": 10, "decay_iters": 110}
    assert lr_at(0, **kw) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(9, **kw) == pytest.approx(1.0)  # warm-up ends at the peak
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half-way: mean of lr and min_lr
    assert lr_at(110, **kw) == pytest.approx(0.1) and lr_at(500, **kw) == 0.1
    decay = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_weight_decay_only_on_matrices():
    model = tiny_gpt()
    opt = configure_optimizer(model, tiny_config(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()


def test_training_lowers_the_loss_and_records_history():
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(max_iters=60, eval_interval=30))
    before = trainer.evaluate()["val"]
    history = trainer.run(progress=False)
    assert history.step == [30, 60]
    assert history.val_loss[-1] < before - 0.5, (before, history.val_loss)
    assert all(t > 0 for t in history.tokens_per_s)
    assert History.from_dict(history.to_dict()) == history
    assert len(history.figure().data) == 2
    assert history.best() == min(zip(history.step, history.val_loss), key=lambda s: s[1])


def test_window_and_device_come_from_the_model():
    trainer = Trainer(tiny_gpt(block_size=12), TRAIN, VAL, tiny_config())
    assert trainer.block_size == 12 and trainer.device == torch.device("cpu")
    assert trainer.get_batch()[0].shape == (4, 12)
    shorter = Trainer(tiny_gpt(block_size=12), TRAIN, VAL, tiny_config(block_size=8))
    assert shorter.get_batch()[0].shape == (4, 8)  # a shorter window may be asked for
    with pytest.raises(ValueError, match=r"block_size=20 is longer than the model's window"):
        Trainer(tiny_gpt(block_size=12), TRAIN, VAL, tiny_config(block_size=20))
    with pytest.raises(ValueError, match="the model is on cpu"):
        Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), device="meta")
    Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), device="cpu")  # agreeing is fine


def test_estimate_loss_restores_mode_and_leaves_training_stream_alone():
    trainer = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, tiny_config())
    state = trainer.generator.get_state()
    a = estimate_loss(trainer.model, {"val": VAL}, trainer.config)
    b = estimate_loss(trainer.model, {"val": VAL}, trainer.config)
    assert a == b  # same batches, no dropout in eval mode
    assert trainer.model.training and torch.equal(trainer.generator.get_state(), state)


def test_resume_is_exact(tmp_path):
    """10 steps + save + load into a fresh trainer + 10 steps == 20 uninterrupted steps."""
    cfg = tiny_config(max_iters=20, eval_interval=5)
    full = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, cfg)
    torch.manual_seed(123)  # dropout draws from torch's global RNG
    full.run(progress=False)

    first = Trainer(tiny_gpt(dropout=0.1), TRAIN, VAL, cfg)
    torch.manual_seed(123)
    first.run(iters=10, progress=False)
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(999), random.seed(999), np.random.seed(999)  # disturb every RNG
    second = Trainer(tiny_gpt(seed=7, dropout=0.1), TRAIN, VAL, cfg)  # other initial weights
    second.load(tmp_path / "ckpt.pt")
    assert second.step == 10 and second.history.step == [5, 10]
    second.run(progress=False)
    for (name, p), q in zip(full.model.named_parameters(), second.model.parameters()):
        assert torch.equal(p, q), name  # bitwise equal on CPU
    for key in ("step", "train_loss", "val_loss", "lr"):  # tokens_per_s is wall-clock
        assert getattr(second.history, key) == getattr(full.history, key), key


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config())
    trainer.save(tmp_path / "w.pt", optimizer=False)
    with pytest.raises(ValueError, match="no optimiser state"):
        Trainer(tiny_gpt(), TRAIN, VAL, tiny_config()).load(tmp_path / "w.pt")


# ------------------------------------------------------------------ the recipe
def test_char_gpt_recipe_is_the_shipped_models_recipe():
    from lmcore.data import assets_dir

    path = assets_dir() / "models" / "shakespeare_char_gpt.pt"
    model, extra = load_model(path)
    mconf, tconf = char_gpt_recipe(model.config.vocab_size)
    assert mconf == model.config
    shipped = dict(extra["train_config"])
    for name in ("eval_interval", "eval_iters", "block_size"):  # how it was measured, or None
        shipped.pop(name)
    ours = dataclasses.asdict(tconf)
    assert {k: ours[k] for k in shipped} == shipped
    assert char_gpt_recipe(65, max_iters=200)[1].warmup_iters == 20  # min(100, iters // 10)
    with pytest.raises(ValueError, match="vocab_size=0"):
        char_gpt_recipe(0)
    with pytest.raises(ValueError, match="max_iters=-1"):
        char_gpt_recipe(65, max_iters=-1)


# ------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("capability, expected", [
    ((7, 5), torch.float16),  # T4: fp16 with a GradScaler, bf16 would be emulated
    ((7, 0), torch.float16),  # V100
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),  # RTX 30xx
    ((9, 0), torch.bfloat16),  # H100
])
def test_autocast_dtype_follows_the_compute_capability(monkeypatch, capability, expected):
    seen = []
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: seen.append(device) or capability)
    assert amp_dtype(torch.device("cuda", 0)) == expected
    assert seen == [torch.device("cuda", 0)]
    assert amp_dtype("cpu") is None and amp_dtype("mps") is None


def test_fp16_path_scales_the_loss_and_clips_the_true_gradient(monkeypatch):
    """The T4 path, simulated on the CPU (which has fp16 autocast and a GradScaler too)."""
    norms = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **kw):
        params = list(params)
        norms.append(float(torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None]))))
        return real_clip(params, max_norm, *a, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    plain = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(max_iters=40))
    assert plain.amp is None and not plain.scaler.is_enabled()
    plain.train_step()
    monkeypatch.setattr(train_module, "amp_dtype", lambda device: torch.float16)
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(max_iters=40))
    assert trainer.amp == torch.float16 and trainer.scaler.is_enabled()
    scale = trainer.scaler.get_scale()
    assert scale > 1000
    trainer.train_step()
    # clipping saw the unscaled gradient (same size as in float32), not scale times it
    assert norms[1] == pytest.approx(norms[0], rel=0.05), norms
    before = trainer.evaluate()["val"]
    trainer.run(progress=False)
    assert trainer.history.val_loss[-1] < before - 0.3  # fp16 training still learns


# ------------------------------------------------------------------ NaN stops training
def test_nan_weight_stops_training_at_step_0_naming_the_weight():
    model = tiny_gpt()
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[0, 0] = float("nan")
    trainer = Trainer(model, TRAIN, VAL, tiny_config())
    with pytest.raises(FloatingPointError, match=r"stopped at step 0: the loss is nan.*"
                                                 r"'blocks\.0\.mlp\.fc\.weight' already held"):
        trainer.run(progress=False)
    assert trainer.step == 0


def test_huge_learning_rate_stops_training_naming_the_step_and_the_lr():
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(lr=1e6, min_lr=0.0, warmup_iters=0,
                                                          grad_clip=0.0))
    with pytest.raises(FloatingPointError, match=r"training stopped at step [1-9]\d*: the "
                                                 r"loss is (nan|inf).*lr"):
        trainer.run(progress=False)
    assert 0 < trainer.step < 20  # stopped where it happened, did not go on to max_iters


@pytest.mark.parametrize("field, value", [
    ("lr", float("inf")), ("lr", float("nan")), ("lr", 0.0), ("lr", -1e-3), ("lr", "1e-3"),
    ("min_lr", float("nan")), ("min_lr", 1.0), ("warmup_iters", float("nan")),
    ("warmup_iters", -1), ("warmup_iters", 2.5), ("weight_decay", float("nan")),
    ("weight_decay", -0.1), ("grad_clip", float("nan")), ("grad_clip", float("inf")),
    ("beta1", 1.0), ("beta2", float("nan")), ("max_iters", 0), ("batch_size", 2.5),
    ("batch_size", True), ("block_size", 0), ("eval_interval", 0), ("eval_iters", -3),
    ("patience", 0), ("seed", -1), ("lr_decay_iters", float("inf")),
])
def test_bad_train_config_is_refused_at_construction(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):  # the message names the field
        tiny_config(**{field: value})


@pytest.mark.parametrize("make, error, match", [
    (lambda: Trainer(tiny_gpt(), TRAIN.float(), VAL, tiny_config()), ValueError,
     "train_data must be a 1-D integer tensor"),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL[:10], tiny_config()), ValueError,
     "val_data has 10 tokens; a window of block_size=16 needs at least 17"),
    (lambda: Trainer(tiny_gpt(), TRAIN + 100, VAL, tiny_config()), ValueError,
     "train_data has token ids from .* the model's vocab_size"),
    (lambda: Trainer(tiny_gpt(), TRAIN.tolist(), VAL, tiny_config()), ValueError,
     "train_data must be a 1-D integer tensor"),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, {"max_iters": 5}), TypeError,
     "config must be a TrainConfig"),
    (lambda: Trainer(torch.nn.Identity(), TRAIN, VAL, tiny_config()), TypeError,
     "model must be a torch.nn.Module with parameters"),
    (lambda: Trainer(torch.nn.Linear(2, 2), TRAIN, VAL, tiny_config()), TypeError,
     "model.config.block_size"),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(batch_size=5), world_size=2),
     ValueError, "divisible by world_size"),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), rank=2, world_size=2), ValueError,
     "0 <= rank < world_size"),
    (lambda: lr_at(0, float("nan"), 0.0, 10, 100), ValueError, "lr=nan"),
    (lambda: lr_at(0, 1e-3, 0.0, float("nan"), 100), ValueError, "warmup_iters=nan"),
    (lambda: lr_at(-1, 1e-3, 0.0, 10, 100), ValueError, "step=-1"),
])
def test_bad_trainer_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("iters", [-5, -1, 2.5, "3", True])
def test_run_refuses_a_negative_or_non_int_number_of_steps(iters):
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config())
    with pytest.raises(ValueError, match=rf"iters={iters!r}; expected an int >= 0"):
        trainer.run(iters=iters, progress=False)
    assert trainer.run(iters=0, progress=False).step == [] and trainer.step == 0


# ------------------------------------------------------------------ early stopping
def test_early_stopping_stops_and_keeps_the_best_weights(tmp_path):
    """A constant, too-large learning rate on 400 characters over-fits quickly."""
    cfg = tiny_config(max_iters=400, lr=2e-2, min_lr=2e-2, warmup_iters=0, eval_interval=10,
                      eval_iters=4, patience=3)
    trainer = Trainer(tiny_gpt(n_embd=32), TRAIN[:400], VAL, cfg)
    history = trainer.run(progress=False)
    best_step, best_val = history.best()
    assert trainer.stopped_early and trainer.step < 400
    assert (trainer.best_step, trainer.best_val) == (best_step, best_val)
    assert trainer.step == best_step + 3 * 10  # three evaluations without a better one
    assert history.val_loss[-1] > best_val  # it had got worse...
    assert trainer.evaluate()["val"] == pytest.approx(best_val, abs=1e-6)  # ...and went back
    trainer.save(tmp_path / "c.pt")
    again = Trainer(tiny_gpt(n_embd=32), TRAIN[:400], VAL, cfg)
    again.load(tmp_path / "c.pt")
    assert again.stopped_early and again.best_step == best_step
    assert again.run(progress=False).step == history.step  # a stopped run stays stopped
    plain = Trainer(tiny_gpt(n_embd=32), TRAIN[:400], VAL,
                    dataclasses.replace(cfg, patience=None, max_iters=trainer.step))
    plain.run(progress=False)
    assert plain.evaluate()["val"] > best_val + 1e-3  # without patience: the last weights
    assert math.isclose(plain.history.val_loss[-1], history.val_loss[-1], rel_tol=1e-6)


def test_shipped_model_files_match_their_readme():
    """Sizes and SHA-256 of assets/models/ agree with the table in its README."""
    import hashlib
    import re

    from lmcore.data import assets_dir

    folder = assets_dir() / "models"
    table = re.findall(r"^\| `([^`]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|",
                       (folder / "README.md").read_text(encoding="utf-8"), re.MULTILINE)
    shipped = {p.name for p in folder.iterdir() if p.suffix != ".md"}
    assert {name for name, _, _ in table} == shipped  # every shipped file is recorded
    for name, size, digest in table:
        data = (folder / name).read_bytes()
        assert len(data) == int(size.replace(",", "")), name
        assert hashlib.sha256(data).hexdigest() == digest, name
