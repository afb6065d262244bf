"""Tests for lmcore.generate: filters, sampling, and the decoding loop with/without KV cache.

Models are small randomly initialised GPTs (a few ms per forward pass on a CPU).
Cached vs uncached logits differ only by float32 rounding (~1e-6), far below the gaps
between the top logits of a random model, so greedy outputs must match token for token.
"""
import math
import types

import pytest
import torch
import torch.nn.functional as F

import lmcore.generate as generate_module
from lmcore.generate import (
    Step,
    apply_temperature,
    decode,
    draw,
    generate,
    generate_text,
    next_token_probs,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from lmcore.transformer import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_gpt(seed=0, block_size=16, vocab_size=23):
    """A random 2-layer GPT. Untied weights with std 0.3: a tied random model just repeats its
    input token, and larger weights give clear gaps between the top logits (so greedy
    choices are not decided by float rounding)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2,
                       n_embd=32, tie_weights=False)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
    return model


class CharTok:
    """A minimal tokenizer for generate_text (the real one lives in lmcore.tokenize)."""

    def __init__(self, chars):
        self.chars = chars

    def encode(self, s):
        for c in s:
            if c not in self.chars:
                raise ValueError(f"character {c!r} is not in the vocabulary")
        return [self.chars.index(c) for c in s]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


# ------------------------------------------------------------------ filters
def test_temperature_scales_logits_and_sharpens_or_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    # divided by tau after subtracting the row maximum (same softmax, no overflow)
    assert torch.allclose(apply_temperature(logits, 0.5), (logits - 2.0) * 2)
    p1 = F.softmax(logits, -1)
    p_cold = next_token_probs(logits, temperature=0.5)
    p_hot = next_token_probs(logits, temperature=2.0)
    def entropy(p):
        return float(-(p * p.log()).sum())

    assert p_cold[0, 0] > p1[0, 0] > p_hot[0, 0]  # top token gains mass when cold
    assert entropy(p_cold) < entropy(p1) < entropy(p_hot)
    # very hot -> uniform, very cold -> one-hot on the argmax
    assert torch.allclose(next_token_probs(logits, temperature=1e4), torch.full((1, 4), 0.25),
                          atol=1e-3)
    assert next_token_probs(logits, temperature=1e-3)[0, 0] > 1 - 1e-6


def test_top_k_keeps_exactly_k_and_ties_go_to_lower_ids():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    for k in (1, 3, 10, 50, 80):
        out = top_k_filter(logits, k)
        kept = torch.isfinite(out)
        assert (kept.sum(-1) == min(k, 50)).all()
        # the kept ones are the largest: min kept >= max dropped
        if k < 50:
            assert (out.masked_fill(~kept, float("inf")).min(-1).values
                    >= logits.masked_fill(kept, float("-inf")).max(-1).values).all()
        assert torch.equal(out[kept], logits[kept])  # survivors unchanged
    ties = torch.tensor([[1.0, 3.0, 2.0, 2.0, 2.0, 0.0]])
    kept = torch.isfinite(top_k_filter(ties, 3))[0].tolist()
    assert kept == [False, True, True, True, False, False]  # 3.0, then the first two 2.0s


def test_top_p_keeps_smallest_nucleus_hand_example():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25]])  # sorted: 0.5, 0.25, 0.15, 0.1
    logits = probs.log()
    expect = {0.3: [1], 0.6: [1, 3], 0.8: [1, 2, 3], 0.95: [0, 1, 2, 3], 1.0: [0, 1, 2, 3]}
    for p, ids in expect.items():
        kept = torch.isfinite(top_p_filter(logits, p))[0].nonzero().flatten().tolist()
        assert kept == ids, (p, kept)
    # the renormalised nucleus: 0.5 / 0.75 and 0.25 / 0.75
    q = next_token_probs(logits, top_p=0.6)
    assert torch.allclose(q, torch.tensor([[0.0, 2 / 3, 0.0, 1 / 3]]), atol=1e-6)
    # at least one token always survives, even for tiny p
    assert torch.isfinite(top_p_filter(torch.zeros(2, 7), 1e-9)).sum(-1).tolist() == [1, 1]


def test_filters_compose_temperature_then_top_k_then_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
    q = next_token_probs(logits, temperature=2.0, top_k=3, top_p=0.6)
    scaled = F.softmax(logits[:, :3] / 2.0, -1)[0]  # after temperature and top-k
    assert scaled[0] < 0.6 <= scaled[0] + scaled[1]  # so top-p keeps two tokens
    assert torch.allclose(q[0, :2], scaled[:2] / scaled[:2].sum(), atol=1e-6)
    assert q[0, 2:].sum() == 0


def test_seeded_sampling_is_reproducible_and_follows_the_distribution():
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]]).repeat(4000, 1)
    a = sample_next(logits, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, generator=torch.Generator().manual_seed(7))
    assert a.dtype == torch.long and a.shape == (4000,)
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=4).float() / 4000
    assert torch.allclose(freq, F.softmax(logits[0], -1), atol=0.03)
    assert sample_next(logits[:2], greedy=True).tolist() == [3, 3]
    two = sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(two.tolist()) == {0, 3}


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0), "temperature must be a finite number > 0"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), r"top_k must be an int >= 1"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=0.0), r"top_p must be a number in \(0, 1\]"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(torch.zeros(1, 5), **kwargs)
    with pytest.raises(ValueError, match=match):
        generate(tiny_gpt(), [1, 2], 3, **kwargs)


@pytest.mark.parametrize("logits", [torch.zeros(5), torch.zeros(2, 0), torch.zeros(2, 3, 4),
                                    torch.zeros(2, 5, dtype=torch.long), [[0.0, 1.0]]])
def test_bad_logits_shape(logits):
    with pytest.raises(ValueError, match=r"logits must be a floating-point tensor of shape "
                                         r"\(batch, vocab\)"):
        sample_next(logits)


# ------------------------------------------------------------------ the decoding loop
@pytest.mark.parametrize("prompt_len, new, keep", [
    (1, 10, None),     # stays inside the window
    (5, 11, None),     # fills the window exactly (5 + 11 = 16)
    (3, 40, None),     # crosses the 16-token window several times (keep = 8)
    (20, 12, None),    # prompt longer than the window
    (4, 30, 16),       # classic sliding window: re-prefill every cycle
    (4, 30, 1),        # keep only the newest token
])
def test_greedy_identical_with_and_without_cache(prompt_len, new, keep):
    model = tiny_gpt()
    g = torch.Generator().manual_seed(prompt_len)
    prompt = torch.randint(0, 23, (2, prompt_len), generator=g)
    a = generate(model, prompt, new, greedy=True, use_cache=True, keep=keep)
    b = generate(model, prompt, new, greedy=True, use_cache=False, keep=keep)
    assert a.shape == (2, prompt_len + new)
    assert torch.equal(a[:, :prompt_len], prompt)
    assert torch.equal(a, b)
    assert len(set(a[0, prompt_len:].tolist())) > 1  # not a degenerate constant output


def test_seeded_generation_reproducible_and_cache_matches_uncached():
    model = tiny_gpt(1)
    kw = dict(temperature=0.9, top_k=10, top_p=0.95)
    a = generate(model, [3, 4, 5], 30, generator=torch.Generator().manual_seed(3), **kw)
    b = generate(model, [3, 4, 5], 30, generator=torch.Generator().manual_seed(3), **kw)
    c = generate(model, [3, 4, 5], 30, generator=torch.Generator().manual_seed(3),
                 use_cache=False, **kw)
    assert isinstance(a, list) and len(a) == 33 and a[:3] == [3, 4, 5]
    assert a == b == c


def test_next_token_logits_match_a_full_forward_pass():
    """Each cached step's distribution equals the uncached model's on the visible window."""
    model = tiny_gpt(2)
    ids, steps = generate(model, torch.tensor([[1, 2, 3]]), 25, greedy=True,
                          return_steps=True, n_candidates=3)
    assert len(steps) == 25 and all(isinstance(s, Step) for s in steps)
    assert steps[0].prefilled and not steps[1].prefilled
    assert any(s.prefilled and s.window_start > 0 for s in steps)  # a re-prefill happened
    for s in steps:
        with torch.no_grad():
            logits = model(ids[:, s.window_start:s.position]).logits[:, -1]
        assert s.position - s.window_start <= 16
        probs = F.softmax(logits, -1)
        top = probs.topk(3)
        assert torch.equal(top.indices, s.top_ids)
        assert torch.allclose(top.values, s.top_probs, atol=1e-5)
        assert s.chosen.tolist() == [int(ids[0, s.position])] == [top.indices[0, 0].item()]


def test_stop_tokens_end_sequences():
    model = tiny_gpt(3)
    full = generate(model, [0, 1], 20, greedy=True)
    stop = full[6]  # the 5th generated token
    first = full.index(stop, 2)
    out = generate(model, [0, 1], 20, greedy=True, stop_tokens=[stop])
    assert out == full[: first + 1]
    # batch: a finished row is padded with its stop token; the loop ends when all stopped
    prompt = torch.tensor([[0, 1], [0, 1]])
    batch = generate(model, prompt, 20, greedy=True, stop_tokens=[stop])
    assert batch.shape[1] == first + 1 and (batch[:, -1] == stop).all()


def test_zero_new_tokens_and_model_mode_restored():
    model = tiny_gpt().train()
    assert generate(model, [1, 2, 3], 0) == [1, 2, 3]
    assert model.training  # generate switches to eval and back


@pytest.mark.parametrize("prompt, n, kw, match", [
    ([], 5, {}, "prompt_ids is empty"),
    (torch.zeros(2, 0, dtype=torch.long), 5, {}, "prompt_ids is empty"),
    ([1, 99], 5, {}, r"prompt_ids must be token ids in \[0, 22\]"),
    ([1, -1], 5, {}, "prompt_ids must be token ids"),
    (torch.zeros(1, 3), 5, {}, "int64 tensor"),
    ([1, 2], -1, {}, r"max_new_tokens must be an int >= 0"),
    ([1, 2], 5, dict(keep=0), r"keep must be an int in \[1, block_size=16\]"),
    ([1, 2], 5, dict(keep=17), "keep"),
])
def test_bad_generate_inputs(prompt, n, kw, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_gpt(), prompt, n, **kw)


def test_generate_text_and_unknown_characters():
    tok = CharTok("abcdefghijklmnopqrstuvw")  # 23 characters = vocab_size
    model = tiny_gpt(4)
    text = generate_text(model, tok, "abc", 12, greedy=True)
    direct = generate(model, tok.encode("abc"), 12, greedy=True)
    assert len(text) == 12 and text == tok.decode(direct[3:])
    with pytest.raises(ValueError, match="cannot be encoded by the tokenizer"):
        generate_text(model, tok, "xyz", 5)
    with pytest.raises(ValueError, match="prompt must be a non-empty str"):
        generate_text(model, tok, "", 5)
    with pytest.raises(ValueError, match="must encode to exactly one token"):
        generate_text(model, tok, "abc", 5, stop=["ab"])
    stopped = generate_text(model, tok, "abc", 12, greedy=True, stop=text[3])
    assert stopped == text[: text.index(text[3]) + 1]


def test_kv_cache_saves_work():
    """With the cache each decode step feeds one token; without, the whole window."""
    model = tiny_gpt()
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        generate(model, [1, 2, 3], 10, greedy=True, use_cache=True)
        cached, seen[:] = list(seen), []
        generate(model, [1, 2, 3], 10, greedy=True, use_cache=False)
        uncached = list(seen)
    finally:
        hook.remove()
    assert cached == [3] + [1] * 9
    assert uncached == list(range(3, 13))
    assert math.isclose(sum(uncached) / sum(cached), 75 / 12)


# ------------------------------------------------------------------ top-p at its boundaries
def test_top_p_one_keeps_every_token_with_nonzero_probability():
    logits = torch.tensor([[0.0, 20.0]])  # probabilities 2e-9 and 1 - 2e-9
    assert torch.isfinite(top_p_filter(logits, 1.0)).all()
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(1988, 30, generator=g) * torch.rand(1988, 1, generator=g) * 30
    kept = torch.isfinite(top_p_filter(rows, 1.0))
    assert torch.equal(kept, F.softmax(rows, -1) > 0)


def test_top_p_boundary_is_strict():
    """0.5 / 0.3 / 0.2 with p = 0.5: the first token already reaches p, so it alone is kept
    (a filter that compared `mass_before <= p` would keep two)."""
    logits = torch.tensor([[0.2, 0.5, 0.3]]).log()
    assert torch.isfinite(top_p_filter(logits, 0.5))[0].tolist() == [False, True, False]
    assert torch.isfinite(top_p_filter(logits, 0.5001))[0].tolist() == [False, True, True]
    assert torch.isfinite(top_p_filter(logits, 0.8001))[0].tolist() == [True, True, True]


# ------------------------------------------------------------------ temperature extremes
def test_tiny_temperature_is_the_argmax_limit_not_nan():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, -1.0]])
    for tau in (1e-300, 1e-30, 5e-324):
        probs = next_token_probs(logits, temperature=tau)
        assert torch.isfinite(probs).all()
        assert probs[0].tolist() == [0.0, 1.0, 0.0]
        assert probs[1].tolist() == [0.5, 0.5, 0.0]  # a tie shares the mass
        g = torch.Generator().manual_seed(0)
        assert sample_next(logits[:1], temperature=tau, generator=g).tolist() == [1]
    huge = next_token_probs(logits, temperature=1e300)
    assert torch.allclose(huge, torch.full_like(huge, 1 / 3))


# ------------------------------------------------------------------ NaN never passes silently
@pytest.mark.parametrize("row", [
    [float("nan")] * 4,
    [0.0, float("nan"), 1.0, 2.0],
    [0.0, float("inf"), 1.0, 2.0],
    [float("-inf")] * 4,
])
def test_broken_logits_are_refused(row):
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], row])
    for kw in ({}, {"greedy": True}, {"top_k": 2}, {"top_p": 0.9}):
        with pytest.raises(ValueError, match=r"logits rows \[1\] hold NaN or \+inf"):
            sample_next(logits, **kw)


def test_a_model_with_nan_weights_stops_generate():
    for greedy, use_cache in ((True, True), (False, False)):
        model = tiny_gpt()
        with torch.no_grad():
            model.lm_head.weight.fill_(float("nan"))
        with pytest.raises(ValueError, match="NaN or inf logits at cycle 0 .*position 2"):
            generate(model, [1, 2], 5, greedy=greedy, use_cache=use_cache,
                     generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ generators and devices
class StrictMultinomial:
    """torch.multinomial as CUDA behaves: the generator must live on the input's device.
    Records the devices; returns zeros on the CPU so the test can run anywhere."""

    def __init__(self):
        self.calls = []

    def __call__(self, probs, n, generator=None):
        self.calls.append((probs.device, None if generator is None else generator.device))
        if generator is not None and generator.device != probs.device:
            raise RuntimeError(f"Expected a '{probs.device.type}' device type for generator")
        return torch.zeros(probs.shape[0], n, dtype=torch.long)


def test_sampling_runs_on_the_generators_device(monkeypatch):
    """The GPU path, simulated: 'meta' stands in for the GPU. A raw torch.multinomial with
    a generator on another device fails (as on CUDA); draw() samples where the generator
    is, and every sampler goes through it."""
    strict = StrictMultinomial()
    monkeypatch.setattr(generate_module.torch, "multinomial", strict)
    probs = torch.full((2, 5), 0.2)
    elsewhere = types.SimpleNamespace(device=torch.device("meta"))  # a generator stand-in
    with pytest.raises(RuntimeError, match="Expected a 'cpu' device type for generator"):
        strict(probs, 1, generator=elsewhere)  # the failure the rule avoids
    strict.calls.clear()
    assert draw(probs, elsewhere).device == probs.device  # sampled on 'meta', back on cpu
    assert draw(probs.to("meta"), elsewhere).shape == (2,)  # already together
    assert strict.calls == [(torch.device("meta"), torch.device("meta"))] * 2
    strict.calls.clear()
    generate(tiny_gpt(), [1, 2, 3], 4, generator=torch.Generator().manual_seed(0))
    sample_next(torch.zeros(3, 4), top_p=0.9, generator=torch.Generator())
    assert len(strict.calls) == 5 and all(a == b for a, b in strict.calls)


def test_draw_with_a_seeded_cpu_generator_is_reproducible():
    probs = F.softmax(torch.randn(3, 10, generator=torch.Generator().manual_seed(1)), -1)
    a = draw(probs, torch.Generator().manual_seed(5))
    b = draw(probs, torch.Generator(device="cpu").manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3,) and a.dtype == torch.long
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        sample_next(torch.zeros(1, 3), generator=5)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        generate(tiny_gpt(), [1], 2, generator="seed 0")


# ------------------------------------------------------------------ stop tokens, bad models
@pytest.mark.parametrize("stop, error, match", [
    ("ab", TypeError, (r"stop_tokens must be token ids .* got 'ab'; to stop on text use "
                       r"generate_text")),
    (b"a", TypeError, "stop_tokens must be token ids"),
    (2.5, TypeError, "stop_tokens must be token ids"),
    ([99], ValueError, r"stop_tokens must be token ids in \[0, 22\], got \[99\]"),
    ([1, -1], ValueError, r"got \[-1\]"),
    ([1.0], ValueError, r"got \[1.0\]"),
    ([True], ValueError, r"got \[True\]"),
])
def test_bad_stop_tokens(stop, error, match):
    with pytest.raises(error, match=match):
        generate(tiny_gpt(), [1, 2], 5, stop_tokens=stop)


def test_stop_tokens_may_be_an_int_or_a_tensor():
    model = tiny_gpt(3)
    full = generate(model, [0, 1], 20, greedy=True)
    stop = full[6]
    expected = full[: full.index(stop, 2) + 1]
    assert generate(model, [0, 1], 20, greedy=True, stop_tokens=stop) == expected
    assert generate(model, [0, 1], 20, greedy=True,
                    stop_tokens=torch.tensor([stop])) == expected


class NoCache(torch.nn.Module):
    """A GPT without new_cache(): usable with use_cache=False only."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_gpt()
        self.config = self.inner.config

    def forward(self, idx, cache=None, validate=True):
        return self.inner(idx, validate=validate)


class PlainLogits(NoCache):
    def forward(self, idx, cache=None, validate=True):
        return self.inner(idx).logits  # a tensor, not an object with .logits


@pytest.mark.parametrize("model, kw, match", [
    (torch.nn.Linear(4, 4), {}, r"model.config.block_size is missing"),
    ("gpt", {}, "it is not a torch.nn.Module"),
    (NoCache(), {}, r"no new_cache\(\) method \(pass use_cache=False\)"),
    (PlainLogits(), {"use_cache": False}, "calling it failed: AttributeError"),
])
def test_a_model_that_is_not_gpt_like_gets_the_contract(model, kw, match):
    with pytest.raises(TypeError, match=rf"generate needs a GPT-like model.*{match}"):
        generate(model, [1, 2], 3, **kw)


def test_a_gpt_like_model_without_cache_works():
    model = NoCache()
    assert generate(model, [1, 2], 5, greedy=True, use_cache=False) == \
        generate(model.inner, [1, 2], 5, greedy=True)


@pytest.mark.parametrize("kw, match", [
    ({"n_candidates": 0}, "n_candidates must be an int >= 1"),
    ({"keep": 2.0}, "keep must be an int"),
    ({"keep": True}, "keep must be an int"),
])
def test_more_bad_generate_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        generate(tiny_gpt(), [1, 2], 3, **kw)
    for n in (-5, 2.0, True, None):
        with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
            generate(tiny_gpt(), [1, 2], n)
    for prompt in ("abc", [1, 2.0], [True], None):
        with pytest.raises((ValueError, TypeError), match="prompt_ids"):
            generate(tiny_gpt(), prompt, 3)


# ------------------------------------------------------------------ the decode loop itself
def test_decode_is_the_cycle_prefill_then_one_token_at_a_time():
    model = tiny_gpt()
    fed = []
    hook = model.register_forward_pre_hook(lambda m, args: fed.append(args[0].shape[1]))
    prompt = torch.tensor([[1, 2, 3]])
    try:
        for use_cache in (True, False):
            fed.clear()
            cycles = decode(model, prompt, lambda logits: logits.argmax(-1), use_cache)
            tokens = [int(token) for _, (_, token) in zip(range(6), cycles)]
            assert fed == ([3, 1, 1, 1, 1, 1] if use_cache else [3, 4, 5, 6, 7, 8])
            assert tokens == generate(model, [1, 2, 3], 6, greedy=True)[3:]
    finally:
        hook.remove()
