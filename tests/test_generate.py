"""Tests for lmcore.generate: filters, sampling, and the decoding loop with/without KV cache.

Models are small randomly initialised GPTs (a few ms per forward pass on a CPU).
Cached vs uncached logits differ only by float32 rounding (~1e-6), far below the gaps
between the top logits of a random model, so greedy outputs must match token for token.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from lmcore.generate import (
    Step,
    apply_temperature,
    generate,
    generate_text,
    next_token_probs,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from lmcore.transformer import GPT, GPTConfig


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
    assert torch.allclose(apply_temperature(logits, 0.5), logits * 2)
    p1 = F.softmax(logits, -1)
    p_cold = next_token_probs(logits, temperature=0.5)
    p_hot = next_token_probs(logits, temperature=2.0)
    entropy = lambda p: float(-(p * p.log()).sum())  # noqa: E731
    assert p_cold[0, 0] > p1[0, 0] > p_hot[0, 0]  # top token gains mass when cold
    assert entropy(p_cold) < entropy(p1) < entropy(p_hot)
    # very hot -> uniform, very cold -> one-hot on the argmax
    assert torch.allclose(next_token_probs(logits, temperature=1e4), torch.full((1, 4), 0.25), atol=1e-3)
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
    assert set(sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(0)).tolist()) == {0, 3}


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


def test_bad_logits_shape():
    with pytest.raises(ValueError, match=r"logits must be a tensor of shape \(batch, vocab\)"):
        sample_next(torch.zeros(5))


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
    c = generate(model, [3, 4, 5], 30, generator=torch.Generator().manual_seed(3), use_cache=False, **kw)
    assert isinstance(a, list) and len(a) == 33 and a[:3] == [3, 4, 5]
    assert a == b == c


def test_next_token_logits_match_a_full_forward_pass():
    """Each cached step's distribution equals the uncached model's on the visible window."""
    model = tiny_gpt(2)
    ids, steps = generate(model, torch.tensor([[1, 2, 3]]), 25, greedy=True, return_steps=True,
                          n_candidates=3)
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
    assert len(text) == 12 and text == tok.decode(generate(model, tok.encode("abc"), 12, greedy=True)[3:])
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
