"""Tests for lmcore.ngram: count-based n-gram language models."""
import itertools
import math
import random

import numpy as np
import pytest
import torch

from lmcore.ngram import NGramLM

SETTINGS = [("add-k", {"k": 1.0}), ("add-k", {"k": 0.1}), ("interpolated", {}), ("interpolated", {"lam": 0.6})]


def random_text(seed, length, alphabet="abcd"):
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize("smoothing,kw", SETTINGS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_distribution_sums_to_one_for_every_context(n, smoothing, kw):
    # vocabulary "abcde": "e" never occurs in training, so many contexts are unseen
    lm = NGramLM(n, smoothing=smoothing, **kw).fit(random_text(0, 200), vocab="abcde")
    for m in range(n):
        for context in itertools.product("abcde", repeat=m):
            p = lm.next_distribution(context)
            assert p.shape == (5,) and (p > 0).all()
            assert abs(p.sum() - 1) < 1e-12, (context, p.sum())


def test_hand_computed_bigram_add_one():
    # "abcab": bigrams ab x2, bc, ca; as contexts a:2, b:1, c:1; V = 3
    lm = NGramLM(2, smoothing="add-k", k=1).fit("abcab")
    assert lm.prob("a", "b") == pytest.approx((2 + 1) / (2 + 3))
    assert lm.prob("a", "a") == pytest.approx((0 + 1) / (2 + 3))
    assert lm.prob("b", "c") == pytest.approx((1 + 1) / (1 + 3))
    assert lm.prob("b", "a") == pytest.approx(1 / 4)
    # first token has no context: the add-1 unigram (2 + 1) / (5 + 3)
    ppl = lm.perplexity("abc")
    assert ppl == pytest.approx((3 / 8 * 3 / 5 * 1 / 2) ** (-1 / 3))


def test_hand_computed_bigram_witten_bell():
    lm = NGramLM(2, smoothing="interpolated").fit("abcab")
    # order 1: lam = N/(N+T) = 5/8, p_ML(b) = 2/5 -> 5/8*2/5 + 3/8*1/3 = 3/8
    # order 2 after "a": c=2, T=1 -> lam = 2/3, p_ML(b|a) = 1 -> 2/3 + 1/3 * 3/8 = 19/24
    assert lm.prob("a", "b") == pytest.approx(19 / 24)
    assert lm.prob("", "b") == pytest.approx(3 / 8)


def test_unsmoothed_zero_gives_infinite_perplexity():
    lm = NGramLM(2, smoothing="none").fit("abcab")
    assert lm.prob("a", "b") == pytest.approx(1.0)
    assert lm.prob("a", "a") == 0.0
    assert math.isinf(lm.perplexity("aa"))
    assert math.isfinite(NGramLM(2, smoothing="add-k").fit("abcab").perplexity("aa"))


@pytest.mark.parametrize("smoothing", ["add-k", "interpolated"])
def test_uniform_model_perplexity_is_vocab_size(smoothing):
    tokens = list(range(7)) * 5  # every token equally often: the unigram model is uniform
    lm = NGramLM(1, smoothing=smoothing).fit(tokens)
    assert lm.perplexity([3, 1, 4, 1, 5, 6, 0]) == pytest.approx(7.0)
    # add-k after a context never seen in training is uniform too (the first token has
    # no context and uses the add-k unigram, so it is left out)
    lm2 = NGramLM(2, smoothing="add-k").fit([0, 1], vocab=range(7))
    assert math.exp(-lm2.log_probs([5, 6, 5, 6])[1:].mean()) == pytest.approx(7.0)


@pytest.mark.parametrize("smoothing,kw", SETTINGS + [("none", {})])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_vectorised_log_probs_match_one_at_a_time(n, smoothing, kw):
    lm = NGramLM(n, smoothing=smoothing, **kw).fit(random_text(1, 300), vocab="abcde")
    held_out = random_text(2, 40, "abcde")
    with np.errstate(divide="ignore"):
        slow = [math.log(p) if (p := lm.prob(held_out[max(0, i - n + 1):i], w)) > 0 else -math.inf
                for i, w in enumerate(held_out)]
    np.testing.assert_allclose(lm.log_probs(held_out), slow, rtol=1e-12)


def test_with_options_matches_a_fresh_fit():
    text, held = random_text(3, 500), random_text(4, 100)
    big = NGramLM(5).fit(text)
    for n in range(1, 6):
        for smoothing in ("add-k", "interpolated"):
            fresh = NGramLM(n, smoothing=smoothing).fit(text)
            assert big.with_options(n=n, smoothing=smoothing).perplexity(held) == pytest.approx(fresh.perplexity(held))
    with pytest.raises(ValueError, match=r"n must be an int in 1\.\.5"):
        big.with_options(n=6)


def test_int_tokens_and_tensors():
    ids = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5])
    lm = NGramLM(2).fit(ids)
    assert lm.vocab == [1, 2, 3, 4, 5, 6, 9]
    assert lm.perplexity(ids) == pytest.approx(lm.perplexity(ids.tolist()))
    assert lm.perplexity(np.array([1, 4])) == pytest.approx(lm.perplexity([1, 4]))


def test_more_context_fits_training_text_better():
    text = random_text(5, 2000, "abc") + "the cat sat on the mat " * 50
    ppl = [NGramLM(n).fit(text).perplexity(text) for n in (1, 2, 3, 4)]
    assert ppl[0] > ppl[1] > ppl[2] > ppl[3]


def test_sample_is_seeded_and_uses_the_vocabulary():
    lm = NGramLM(3).fit("to be or not to be, that is the question " * 5)
    a = lm.sample(50, context="to ", seed=1)
    assert a == lm.sample(50, context="to ", seed=1) and len(a) == 50
    assert set(a) <= set(lm.vocab)
    g = torch.Generator().manual_seed(1)
    assert lm.sample(50, context="to ", generator=g) == a
    # a very low temperature picks the most likely token
    best = lm.vocab[int(lm.next_distribution("to").argmax())]
    assert lm.sample(1, context="to", temperature=1e-3)[0] == best
    flat = NGramLM(1).fit("abcdefghij" * 3 + "a")  # max p ~ 0.13: p ** 1000 would underflow
    assert flat.sample(3, temperature=1e-3) == ["a", "a", "a"]


def test_sample_without_seed_differs_between_calls_and_follows_torch_seed():
    """No seed, no generator: torch's global generator, like torch.multinomial. So two
    calls differ, and torch.manual_seed makes a whole run repeatable."""
    lm = NGramLM(2).fit("abcdefghij" * 20)
    a, b = lm.sample(40), lm.sample(40)
    assert a != b  # a fixed default seed would make them equal
    torch.manual_seed(3)
    c = lm.sample(40)
    torch.manual_seed(3)
    assert lm.sample(40) == c
    assert lm.sample(40, seed=5) == lm.sample(40, seed=5) != lm.sample(40, seed=6)


def test_unknown_and_unseen_tokens_after_vocab():
    lm = NGramLM(2).fit("abab")
    with pytest.raises(ValueError, match=r"tokens contains 1 token\(s\) not in the model's vocabulary.*'z'.*vocab="):
        lm.perplexity("abz")
    lm = NGramLM(2).fit("abab", vocab="abz")
    assert math.isfinite(lm.perplexity("abz"))


def test_bad_inputs():
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        NGramLM(0)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        NGramLM(2.0)
    with pytest.raises(ValueError, match="smoothing must be one of"):
        NGramLM(2, smoothing="kneser-ney")
    with pytest.raises(ValueError, match="k must be a finite number > 0"):
        NGramLM(2, smoothing="add-k", k=0)
    with pytest.raises(ValueError, match="lam must be in"):
        NGramLM(2, lam=1.5)
    with pytest.raises(ValueError, match="tokens is empty"):
        NGramLM(2).fit("")
    with pytest.raises(ValueError, match="not been fitted"):
        NGramLM(2).perplexity("ab")
    lm = NGramLM(2).fit("abab")
    with pytest.raises(ValueError, match="tokens is empty"):
        lm.perplexity("")
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        lm.sample(5, temperature=0)
    with pytest.raises(ValueError, match="length must be an int >= 0"):
        lm.sample(-1)
    with pytest.raises(ValueError, match="vocab must not contain repeated"):
        NGramLM(2).fit("ab", vocab="aab")


def test_text_shorter_than_n():
    lm = NGramLM(4).fit("ab")  # no 3- or 4-grams at all: the model falls back to shorter orders
    for smoothing in ("add-k", "interpolated"):
        m = lm.with_options(smoothing=smoothing)
        assert abs(m.next_distribution("aba").sum() - 1) < 1e-12
        assert math.isfinite(m.perplexity("abba"))
    with pytest.raises(ValueError, match="need at least n=4"):
        lm.unseen_fraction("ab")
