"""Properties and bad inputs for lmcore.generate, lmcore.train, lmcore.checkpoint, lmcore.ddp.

Two kinds of test, all deterministic (hypothesis with ``derandomize=True``):

* **properties** on random valid inputs: the sampling filters keep exactly what their
  definitions say (top-k: the k largest; top-p: the shortest prefix reaching p, every
  token with nonzero probability at p = 1), the sampling distribution is a distribution
  for any temperature from 1e-300 to 1e300, a draw never picks a removed token, the
  schedule stays between its bounds, plain checkpoint data round-trips exactly, and
  decoding with and without the KV cache agrees for any prompt length, window and stop;
* **bad inputs**, hand-picked and generated: each raises an error whose message names the
  argument (``refuses``), or, for a boundary that has a right answer (temperature 1e-300,
  top_p = 1, ``iters=0``), gives it (``handled``). Both count the case.

``LMCORE_BAD_INPUT_REPORT=path pytest tests/test_props_generate_train.py`` adds the number
of bad inputs tried, by module and outcome, to ``path`` (issue 10's closing note).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from badinputs import Ledger
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lmcore import ddp
from lmcore.checkpoint import (
    load_checkpoint,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from lmcore.generate import (
    apply_temperature,
    generate,
    generate_text,
    next_token_probs,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from lmcore.tokenize import CharTokenizer
from lmcore.train import TrainConfig, Trainer, char_gpt_recipe, lr_at
from lmcore.transformer import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.function_scoped_fixture])
SLOW = settings(PROPS, max_examples=15)
LEDGER = Ledger("test_props_generate_train")
TRIED = LEDGER.tried

TEXT = "to be or not to be, that is the question. " * 40
TOK = CharTokenizer.from_text(TEXT)
IDS = torch.tensor(TOK.encode(TEXT))
TRAIN, VAL = IDS[:1500], IDS[1500:]


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    LEDGER.write_report()


refuses = LEDGER.refuses


handled = LEDGER.handled


def tiny_gpt(seed=0, block_size=16, vocab_size=None):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size or TOK.vocab_size, block_size=block_size,
                         n_layer=1, n_head=2, n_embd=16)).eval()


def rows_of(seed, batch, vocab, scale):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vocab, generator=g) * scale


# ===================================================================== properties
@PROPS
@given(seed=st.integers(0, 10**6), batch=st.integers(1, 4), vocab=st.integers(1, 40),
       k=st.integers(1, 50), ties=st.booleans())
def test_top_k_keeps_exactly_the_k_largest(seed, batch, vocab, k, ties):
    logits = rows_of(seed, batch, vocab, 3.0)
    if ties:  # few distinct values: many ties at the boundary
        logits = logits.round()
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert (kept.sum(-1) == min(k, vocab)).all()
    assert torch.equal(out[kept], logits[kept])
    if k < vocab:
        lowest_kept = logits.masked_fill(~kept, math.inf).min(-1).values
        highest_dropped = logits.masked_fill(kept, -math.inf).max(-1).values
        assert (lowest_kept >= highest_dropped).all()


@PROPS
@given(seed=st.integers(0, 10**6), batch=st.integers(1, 4), vocab=st.integers(1, 40),
       scale=st.sampled_from([0.1, 1.0, 10.0, 60.0]), p=st.floats(1e-6, 1.0))
def test_top_p_keeps_the_shortest_prefix_reaching_p(seed, batch, vocab, scale, p):
    logits = rows_of(seed, batch, vocab, scale)
    kept = torch.isfinite(top_p_filter(logits, p))
    probs = F.softmax(logits, -1)
    for row in range(batch):
        order = torch.sort(probs[row], descending=True, stable=True).indices
        mass = probs[row][order].double().cumsum(0)
        if p == 1.0:
            assert torch.equal(kept[row], probs[row] > 0)
            continue
        m = int(kept[row].sum())
        assert kept[row][order[:m]].all()  # a prefix of the sorted order
        before = float(mass[m - 2]) if m >= 2 else 0.0
        assert before < p + 1e-6  # one token fewer does not reach p
        assert float(mass[m - 1]) >= p - 1e-5 or m == vocab  # m tokens do


@PROPS
@given(seed=st.integers(0, 10**6), vocab=st.integers(1, 30),
       log_tau=st.floats(-300, 300), k=st.none() | st.integers(1, 30),
       p=st.none() | st.floats(0.01, 1.0), scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_next_token_probs_is_a_distribution_for_any_temperature(seed, vocab, log_tau, k, p,
                                                                scale):
    logits = rows_of(seed, 3, vocab, scale)
    tau = 10.0**log_tau
    probs = next_token_probs(logits, temperature=tau, top_k=k, top_p=p)
    assert torch.isfinite(probs).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    shifted = apply_temperature(logits, tau)
    assert (shifted.amax(-1) == 0).all()  # the row maximum was subtracted
    likeliest = F.softmax(shifted, -1).argmax(-1)  # ties (huge tau): the lower id
    assert (probs.gather(1, likeliest[:, None]) > 0).all()  # always survives
    if tau <= 1:  # (a huge tau rounds every logit to 0: all tie)
        assert torch.equal(shifted.argmax(-1), logits.argmax(-1))


@PROPS
@given(seed=st.integers(0, 10**6), vocab=st.integers(2, 30), k=st.integers(1, 5),
       p=st.floats(0.05, 0.95))
def test_a_draw_never_picks_a_removed_token(seed, vocab, k, p):
    logits = rows_of(seed, 64, vocab, 3.0)
    allowed = torch.isfinite(top_p_filter(top_k_filter(apply_temperature(logits, 0.7), k), p))
    tokens = sample_next(logits, temperature=0.7, top_k=k, top_p=p,
                         generator=torch.Generator().manual_seed(seed))
    assert allowed.gather(1, tokens[:, None]).all()


@PROPS
@given(step=st.integers(0, 5000), lr=st.floats(1e-6, 10.0), frac=st.floats(0.0, 1.0),
       warmup=st.integers(0, 500), decay=st.integers(0, 4000))
def test_lr_schedule_stays_between_its_bounds(step, lr, frac, warmup, decay):
    min_lr = lr * frac
    value = lr_at(step, lr, min_lr, warmup, decay)
    assert 0 <= value <= lr * (1 + 1e-12)
    if step >= max(warmup, decay):
        assert value == min_lr
    if warmup <= step < decay:  # the cosine: between the floor and the peak, decreasing
        assert min_lr - 1e-15 <= value and value >= lr_at(step + 1, lr, min_lr, warmup, decay)


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(min_size=1, max_size=8)
    | st.builds(lambda n, s: torch.arange(n) * s, st.integers(0, 5), st.integers(-3, 3)),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=5) | st.integers(-9, 9), inner, max_size=4),
    max_leaves=12)


@SLOW
@given(value=PLAIN)
def test_plain_extra_round_trips_exactly(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("plain") / "c.pt"
    save_checkpoint(path, torch.nn.Linear(2, 2), extra={"v": value})
    assert repr(read_checkpoint(path)["extra"]["v"]) == repr(value)


POISON = st.sampled_from([np.float32(1.0), np.arange(2), TOK, len, range(2), frozenset([1]),
                          Ellipsis, object(), b""])


@SLOW
@given(value=PLAIN, poison=POISON, depth=st.integers(0, 3))
def test_extra_that_cannot_load_is_refused_wherever_it_hides(tmp_path_factory, value, poison,
                                                              depth):
    for _ in range(depth):
        value = {"inner": [value, poison]} if depth % 2 else [value, {"x": poison}]
    if depth == 0:
        value = poison
    folder = tmp_path_factory.mktemp("poison")
    refuses("checkpoint", ["checkpoint['extra']['v']", "weights_only=True"],
            lambda: save_checkpoint(folder / "c.pt", torch.nn.Linear(2, 2), extra={"v": value}))
    assert list(folder.iterdir()) == []  # nothing written, no temporary file left


@SLOW
@given(prompt_len=st.integers(1, 40), new=st.integers(0, 40), keep=st.integers(1, 16),
       batch=st.integers(1, 2), seed=st.integers(0, 1000), stop=st.booleans())
def test_cached_and_uncached_decoding_agree(prompt_len, new, keep, batch, seed, stop):
    model = tiny_gpt(seed % 3)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, TOK.vocab_size, (batch, prompt_len), generator=g)
    stops = [int(prompt[0, -1])] if stop else None
    a, steps = generate(model, prompt, new, greedy=True, keep=keep, stop_tokens=stops,
                        return_steps=True)
    b = generate(model, prompt, new, greedy=True, keep=keep, stop_tokens=stops,
                 use_cache=False)
    assert torch.equal(a, b) and torch.equal(a[:, :prompt_len], prompt)
    assert len(steps) == a.shape[1] - prompt_len <= new
    assert all(s.position - s.window_start <= 16 for s in steps)
    if not stop:
        assert a.shape[1] == prompt_len + new
    as_list = generate(model, prompt[0].tolist(), new, greedy=True, keep=keep,
                       stop_tokens=stops)
    row = a[0].tolist()
    if stop and stops[0] in row[prompt_len:]:
        row = row[: row.index(stops[0], prompt_len) + 1]
    assert as_list == row


# ===================================================================== bad inputs: generate
@pytest.mark.parametrize("kw, name", [
    ({"temperature": 0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"temperature": math.nan}, "temperature"), ({"temperature": math.inf}, "temperature"),
    ({"temperature": -math.inf}, "temperature"), ({"temperature": "1"}, "temperature"),
    ({"temperature": True}, "temperature"), ({"temperature": None}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"top_k": -1}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_k": True}, "top_k"), ({"top_k": "3"}, "top_k"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": -0.1}, "top_p"), ({"top_p": 1.5}, "top_p"),
    ({"top_p": math.nan}, "top_p"), ({"top_p": True}, "top_p"), ({"top_p": "0.5"}, "top_p"),
    ({"generator": 5}, "generator"), ({"generator": "seed"}, "generator"),
])
def test_bad_sampling_arguments_are_refused(kw, name):
    refuses("generate", name, lambda: sample_next(torch.zeros(2, 5), **kw))
    refuses("generate", name, lambda: generate(tiny_gpt(), [1, 2], 2, **kw))


@pytest.mark.parametrize("logits", [
    torch.zeros(5), torch.zeros(2, 3, 4), torch.zeros(2, 0), torch.zeros(2, 5, dtype=torch.long),
    [[0.0, 1.0]], None, torch.full((2, 3), math.nan), torch.tensor([[0.0, math.inf, 1.0]]),
    torch.full((1, 4), -math.inf), torch.tensor([[0.0, 1.0], [math.nan, 0.0]]),
])
def test_bad_logits_are_refused(logits):
    refuses("generate", "logits", lambda: sample_next(logits))


@pytest.mark.parametrize("tau", [1e-300, 5e-324, 1e-45, 1e300])
def test_extreme_temperatures_have_their_limits(tau):
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    probs = next_token_probs(logits, temperature=tau)
    limit = [0.0, 1.0, 0.0] if tau < 1 else [1 / 3] * 3
    assert torch.allclose(probs[0], torch.tensor(limit), atol=1e-6)
    text = generate(tiny_gpt(), [1, 2], 5, temperature=tau,
                    generator=torch.Generator().manual_seed(0))
    if tau < 1:
        assert text == generate(tiny_gpt(), [1, 2], 5, greedy=True)
    handled("generate")


def test_top_p_one_and_tiny_p_and_huge_k_have_their_limits():
    logits = rows_of(0, 50, 30, 40.0)
    assert torch.equal(torch.isfinite(top_p_filter(logits, 1.0)), F.softmax(logits, -1) > 0)
    assert (torch.isfinite(top_p_filter(logits, 1e-12)).sum(-1) == 1).all()
    assert torch.isfinite(top_k_filter(logits, 10**9)).all()
    for _ in range(3):
        handled("generate")


class Broken(torch.nn.Module):
    """Stand-ins for models that are not GPT-like."""

    def __init__(self, kind):
        super().__init__()
        self.inner = tiny_gpt()
        self.kind = kind
        if kind != "no config":
            self.config = self.inner.config

    def forward(self, idx, cache=None, validate=True):
        if self.kind == "tensor":
            return self.inner(idx).logits
        if self.kind == "flat logits":
            return type("Out", (), {"logits": self.inner(idx).logits[:, :, 0]})()
        return self.inner(idx, cache=cache, validate=validate)


@pytest.mark.parametrize("make, kw, name", [
    (lambda: tiny_gpt(), {"max_new_tokens": -5}, "max_new_tokens"),
    (lambda: tiny_gpt(), {"max_new_tokens": 2.0}, "max_new_tokens"),
    (lambda: tiny_gpt(), {"max_new_tokens": None}, "max_new_tokens"),
    (lambda: tiny_gpt(), {"max_new_tokens": True}, "max_new_tokens"),
    (lambda: tiny_gpt(), {"prompt_ids": []}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": "abc"}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": [1.5]}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": [True]}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": [-1]}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": [99]}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": None}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": torch.zeros(1, 3)}, "prompt_ids"),
    (lambda: tiny_gpt(), {"prompt_ids": torch.zeros(1, 1, 3, dtype=torch.long)}, "prompt_ids"),
    (lambda: tiny_gpt(), {"stop_tokens": "ab"}, "stop_tokens"),
    (lambda: tiny_gpt(), {"stop_tokens": b"a"}, "stop_tokens"),
    (lambda: tiny_gpt(), {"stop_tokens": 2.5}, "stop_tokens"),
    (lambda: tiny_gpt(), {"stop_tokens": [99]}, "stop_tokens"),
    (lambda: tiny_gpt(), {"stop_tokens": [-1]}, "stop_tokens"),
    (lambda: tiny_gpt(), {"stop_tokens": [True]}, "stop_tokens"),
    (lambda: tiny_gpt(), {"keep": 0}, "keep"),
    (lambda: tiny_gpt(), {"keep": 17}, "keep"),
    (lambda: tiny_gpt(), {"keep": 2.0}, "keep"),
    (lambda: tiny_gpt(), {"n_candidates": 0}, "n_candidates"),
    (lambda: torch.nn.Linear(4, 4), {}, "GPT-like"),
    (lambda: "gpt", {}, "GPT-like"),
    (lambda: None, {}, "GPT-like"),
    (lambda: Broken("no config"), {}, "model.config.block_size"),
    (lambda: Broken("tensor"), {"use_cache": False}, "GPT-like"),
    (lambda: Broken("flat logits"), {"use_cache": False}, "GPT-like"),
])
def test_bad_generate_inputs_are_refused(make, kw, name):
    args = {"prompt_ids": [1, 2], "max_new_tokens": 3, **kw}
    refuses("generate", name, lambda: generate(make(), **args))


def test_nan_weights_are_refused_naming_the_cycle():
    model = tiny_gpt()
    with torch.no_grad():
        model.lm_head.weight[3, 0] = math.nan  # one bad row of the output layer
    for kw in ({"greedy": True}, {"top_p": 0.9}, {"use_cache": False, "top_k": 3}):
        refuses("generate", "cycle", lambda kw=kw: generate(model, [1, 2], 4, **kw))


@pytest.mark.parametrize("prompt, stop, name", [
    ("", None, "prompt"), (5, None, "prompt"), ("to", "be", "stop string"),
    ("zz", None, "cannot be encoded"),
])
def test_bad_generate_text_inputs_are_refused(prompt, stop, name):
    refuses("generate", name, lambda: generate_text(tiny_gpt(), TOK, prompt, 3, stop=stop))


# ===================================================================== bad inputs: train
def tiny_config(**kw):
    base = {"max_iters": 20, "batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 4,
            "eval_interval": 10, "eval_iters": 2}
    return TrainConfig(**{**base, **kw})


REALS = ["lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"]
INTS = ["max_iters", "batch_size", "warmup_iters", "eval_interval", "eval_iters", "seed",
        "block_size", "lr_decay_iters", "patience"]


@PROPS
@given(name=st.sampled_from(REALS),
       value=st.floats(allow_nan=True, allow_infinity=True).filter(
           lambda v: not math.isfinite(v) or v < 0))
def test_non_finite_or_negative_settings_are_refused(name, value):
    refuses("train", name, lambda: tiny_config(**{name: value}))


@PROPS
@given(name=st.sampled_from(INTS),
       value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 0)
       | st.booleans() | st.text(max_size=3))
def test_non_int_or_too_small_counts_are_refused(name, value):
    assume(not (isinstance(value, int) and not isinstance(value, bool)
                and value == 0 and name in ("warmup_iters", "seed")))
    refuses("train", name, lambda: tiny_config(**{name: value}))


@pytest.mark.parametrize("make, name, exc", [
    (lambda: Trainer(tiny_gpt(), TRAIN.float(), VAL, tiny_config()), "train_data", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL[:5], tiny_config()), "val_data", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN + 99, VAL, tiny_config()), "train_data", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN.tolist(), VAL, tiny_config()), "train_data", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN[None], VAL, tiny_config()), "train_data", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, {"max_iters": 5}), "TrainConfig", TypeError),
    (lambda: Trainer(torch.nn.Identity(), TRAIN, VAL, tiny_config()), "model", TypeError),
    (lambda: Trainer(torch.nn.Linear(2, 2), TRAIN, VAL, tiny_config()), "block_size",
     TypeError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(batch_size=5), world_size=2),
     "world_size", ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), rank=-1, world_size=2), "rank",
     ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), world_size=0), "world_size",
     ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(), device="meta"), "device",
     ValueError),
    (lambda: Trainer(tiny_gpt(), TRAIN, VAL, tiny_config(block_size=17)), "block_size",
     ValueError),
    (lambda: lr_at(0, math.nan, 0.0, 10, 100), "lr", ValueError),
    (lambda: lr_at(0, 1e-3, -1.0, 10, 100), "min_lr", ValueError),
    (lambda: lr_at(0, 1e-3, 0.0, math.nan, 100), "warmup_iters", ValueError),
    (lambda: lr_at(-1, 1e-3, 0.0, 10, 100), "step", ValueError),
    (lambda: lr_at(0, 1e-3, 0.0, 10, math.inf), "decay_iters", ValueError),
    (lambda: char_gpt_recipe(0), "vocab_size", ValueError),
    (lambda: char_gpt_recipe("65"), "vocab_size", ValueError),
    (lambda: char_gpt_recipe(65, max_iters=-1), "max_iters", ValueError),
])
def test_bad_trainer_inputs_are_refused(make, name, exc):
    refuses("train", name, make, exc)


@pytest.mark.parametrize("iters", [-5, -1, 2.5, "3", True, math.nan])
def test_bad_run_lengths_are_refused(iters):
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config())
    refuses("train", "iters", lambda: trainer.run(iters=iters, progress=False))
    assert trainer.step == 0


def test_zero_steps_is_nothing_and_not_an_error():
    trainer = Trainer(tiny_gpt(), TRAIN, VAL, tiny_config())
    assert trainer.run(iters=0, progress=False).step == [] and trainer.step == 0
    handled("train")


@pytest.mark.parametrize("case", ["nan weight", "inf weight", "lr=1e6", "lr=1e4 no clip"])
def test_training_that_diverges_stops_with_the_step_and_cause(case):
    model = tiny_gpt()
    config = tiny_config()
    if case.endswith("weight"):
        with torch.no_grad():
            model.wte.weight[1, 1] = math.nan if case == "nan weight" else math.inf
    elif case == "lr=1e6":
        config = tiny_config(lr=1e6, min_lr=0.0, warmup_iters=0)
    else:
        config = tiny_config(lr=1e4, min_lr=0.0, warmup_iters=0, grad_clip=0.0, max_iters=200)
    trainer = Trainer(model, TRAIN, VAL, config)
    refuses("train", ["training stopped at step"], lambda: trainer.run(progress=False),
            FloatingPointError)
    assert trainer.step < config.max_iters


# ===================================================================== bad inputs: checkpoint
class Payload:
    """Any class: weights_only=True must refuse to build it."""


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, tiny_gpt(), generator=torch.Generator().manual_seed(0))
    return path


def rewrite(path, change):
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


DAMAGE = {
    "no model": (lambda c: c.pop("model"), "'model'"),
    "no rng": (lambda c: c.pop("rng"), "'rng'"),
    "no extra": (lambda c: c.pop("extra"), "'extra'"),
    "rng without numpy": (lambda c: c["rng"].pop("numpy"), "'rng'"),
    "model is a list": (lambda c: c.update(model=[1]), "state dict"),
    "version 2": (lambda c: c.update(version=2), "version"),
    "format": (lambda c: c.update(format="other"), "not an lmcore checkpoint"),
    "step is text": (lambda c: c.update(step="3"), "'step'"),
    "torch rng short": (lambda c: c["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)),
                        "RNG state"),
    "torch rng float": (lambda c: c["rng"].update(torch=torch.zeros(5056)), "RNG state"),
    "numpy keys short": (lambda c: c["rng"]["numpy"].update(keys=torch.zeros(3).long()),
                         "RNG state"),
    "python state": (lambda c: c["rng"].update(python=[3, [1], None]), "RNG state"),
    "data rng short": (lambda c: c["rng"].update(data=torch.zeros(2, dtype=torch.uint8)),
                       "RNG state"),
    "cuda state float": (lambda c: c["rng"].update(cuda=[torch.zeros(2)]), "RNG state"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoints_are_refused_and_change_nothing(saved, case):
    change, name = DAMAGE[case]
    rewrite(saved, change)
    model, gen = tiny_gpt(seed=5), torch.Generator().manual_seed(9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    refuses("checkpoint", name, lambda: load_checkpoint(saved, model, generator=gen))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(9).get_state())


CONFIGS = {
    "n_layer 100000": {"n_layer": 100_000},
    "n_embd 32": {"n_embd": 32},
    "vocab 1e9": {"vocab_size": 10**9},
    "block 10**7": {"block_size": 10**7},
    "untied": {"tie_weights": False},
    "unknown field": {"colour": "red"},
    "n_head 0": {"n_head": 0},
    "n_layer -1": {"n_layer": -1},
    "n_layer text": {"n_layer": "4"},
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_configs_that_do_not_fit_the_weights_fail_fast(saved, case):
    rewrite(saved, lambda c: c["model_config"].update(CONFIGS[case]))
    start = time.perf_counter()
    refuses("checkpoint", "model_config", lambda: load_model(saved))
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("target, name, exc", [
    ("missing", "does not exist", FileNotFoundError),
    ("dir", "is a directory", IsADirectoryError),
    ("empty", "empty (0 bytes)", ValueError),
    ("text", "could not be read", ValueError),
    ("half", "could not be read", ValueError),
    ("pickle", "could not be read", ValueError),
    ("foreign", "not an lmcore checkpoint", ValueError),
])
def test_unreadable_files_are_refused(saved, tmp_path, target, name, exc):
    path = tmp_path / target
    if target == "dir":
        path.mkdir()
    elif target == "empty":
        path.write_bytes(b"")
    elif target == "text":
        path.write_text("hello\n")
    elif target == "half":
        path.write_bytes(saved.read_bytes()[:3000])
    elif target == "pickle":  # unpickling would import and build a class
        torch.save({"f": Payload()}, path)
    elif target == "foreign":
        torch.save({"w": torch.ones(2)}, path)
    refuses("checkpoint", name, lambda: load_checkpoint(path), exc)


@pytest.mark.parametrize("kw, name, exc", [
    ({"map_location": "gpu"}, "map_location", ValueError),
    ({"map_location": 3}, "map_location", TypeError),
    ({"map_location": {"cpu": "cpu"}}, "map_location", TypeError),
    pytest.param({"map_location": "cuda"}, "map_location", ValueError,
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
    pytest.param({"map_location": "mps"}, "map_location", ValueError,
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has MPS")),
])
def test_devices_this_machine_lacks_are_refused(saved, kw, name, exc):
    refuses("checkpoint", name, lambda: load_checkpoint(saved, **kw), exc)


@pytest.mark.parametrize("kw, name, exc", [
    ({"model": "gpt"}, "model", TypeError),
    ({"step": -1}, "step", ValueError),
    ({"step": 2.0}, "step", ValueError),
    ({"step": True}, "step", ValueError),
    ({"extra": [1]}, "extra", TypeError),
    ({"extra": "text"}, "extra", TypeError),
])
def test_bad_save_arguments_are_refused(tmp_path, kw, name, exc):
    args = {"model": tiny_gpt(), **kw}
    refuses("checkpoint", name, lambda: save_checkpoint(tmp_path / "c.pt", **args), exc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_read_only_and_directory_targets_are_refused(saved, tmp_path):
    saved.chmod(0o444)
    try:
        refuses("checkpoint", "read-only", lambda: save_checkpoint(saved, tiny_gpt()),
                PermissionError)
    finally:
        saved.chmod(0o644)
    refuses("checkpoint", "is a directory", lambda: save_checkpoint(tmp_path, tiny_gpt()),
            IsADirectoryError)


# ===================================================================== bad inputs: ddp
@pytest.mark.parametrize("argv, name", [
    (["--iters", "0"], "max_iters"),
    (["--iters", "4", "--batch-size", "0"], "batch_size"),
    (["--iters", "4", "--lr", "nan"], "lr"),
])
def test_bad_ddp_settings_are_refused(argv, name):
    refuses("ddp", name, lambda: ddp.build(ddp.parse_args(argv), torch.device("cpu")))
