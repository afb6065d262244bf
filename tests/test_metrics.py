"""lmcore.metrics against sklearn.metrics on random inputs (hypothesis), plus clear errors.

Counts must match exactly; rates and areas within 1e-12 (float64 throughout). The random
labels and scores are drawn from small sets so that ties, absent classes and "every score
equal" happen often.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmcore import metrics

skm = pytest.importorskip("sklearn.metrics")
sk_model_selection = pytest.importorskip("sklearn.model_selection")

TOL = 1e-12
FAST = settings(max_examples=150, deadline=None)


@st.composite
def label_pairs(draw, num_classes=5, min_size=1):
    """(y_true, y_pred) of equal length with labels in 0..num_classes-1."""
    n = draw(st.integers(min_size, 40))
    labels = st.integers(0, num_classes - 1)
    return draw(st.lists(labels, min_size=n, max_size=n)), draw(st.lists(labels, min_size=n, max_size=n))


@st.composite
def binary_with_scores(draw):
    """0/1 labels holding both classes, and scores from a few values (many ties)."""
    n = draw(st.integers(2, 40))
    y = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)))
    values = draw(st.sampled_from([[0.5], [0.0, 1.0], [-2.0, 0.1, 0.3, 7.0], list(np.linspace(-1, 1, 50))]))
    s = draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
    return y, s


@pytest.mark.filterwarnings("ignore:A single label was found")
@FAST
@given(label_pairs())
def test_confusion_matrix_matches_sklearn(pair):
    t, p = pair
    c = max(t + p) + 1
    ours = metrics.confusion_matrix(t, p)
    assert ours.dtype == np.int64 and ours.shape == (c, c)
    np.testing.assert_array_equal(ours, skm.confusion_matrix(t, p, labels=list(range(c))))
    assert ours.sum() == len(t) and np.trace(ours) == sum(a == b for a, b in zip(t, p))
    bigger = metrics.confusion_matrix(t, p, num_classes=c + 2)  # absent classes: zero rows/cols
    np.testing.assert_array_equal(bigger[:c, :c], ours)
    assert bigger[c:].sum() == bigger[:, c:].sum() == 0


@FAST
@given(label_pairs(num_classes=2))
def test_binary_precision_recall_f1_matches_sklearn(pair):
    t, p = pair  # often one class is absent, or nothing is predicted positive
    ours = metrics.precision_recall_f1(t, p, average="binary")
    ref = skm.precision_recall_fscore_support(t, p, average="binary", zero_division=0)[:3]
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    assert all(isinstance(v, float) for v in ours)


@FAST
@given(label_pairs(num_classes=4), st.sampled_from(["macro", "micro"]))
def test_multiclass_averages_match_sklearn(pair, average):
    t, p = pair
    ours = metrics.precision_recall_f1(t, p, average=average)
    ref = skm.precision_recall_fscore_support(t, p, average=average, zero_division=0)[:3]
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)
    if average == "micro":  # single-label data: micro P = R = F1 = accuracy
        np.testing.assert_allclose(ours, [metrics.accuracy(t, p)] * 3, atol=TOL, rtol=0)


def test_macro_averages_over_labels_in_either_input():
    # class 2 is only predicted, never true: it still counts (precision 0, recall 0/0 -> 0)
    p, r, f = metrics.precision_recall_f1([0, 0, 1], [0, 2, 1], average="macro")
    np.testing.assert_allclose([p, r, f], [2 / 3, 1 / 2, 5 / 9], atol=TOL, rtol=0)


def test_zero_division_value_is_used():
    # nothing predicted positive: precision is 0/0
    assert metrics.precision_recall_f1([1, 0], [0, 0], zero_division=1.0)[0] == 1.0
    assert metrics.precision_recall_f1([1, 0], [0, 0])[0] == 0.0


@FAST
@given(binary_with_scores())
def test_roc_curve_matches_sklearn(data):
    y, s = data
    fpr, tpr, thr = metrics.roc_curve(y, s)
    rfpr, rtpr, rthr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, rfpr, atol=TOL, rtol=0)
    np.testing.assert_allclose(tpr, rtpr, atol=TOL, rtol=0)
    np.testing.assert_array_equal(thr, rthr)
    assert len(thr) == len(set(s)) + 1  # one point per distinct score, plus (0, 0)


@FAST
@given(binary_with_scores())
def test_roc_auc_matches_sklearn_and_the_pairwise_probability(data):
    y, s = data
    auc = metrics.roc_auc(y, s)
    assert abs(auc - skm.roc_auc_score(y, s)) < TOL
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg]
    assert abs(auc - sum(pairs) / len(pairs)) < TOL


def test_roc_known_values():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, thr = metrics.roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert metrics.roc_auc(y, s) == 0.75
    assert metrics.roc_auc([0, 1, 0, 1], [3.0] * 4) == 0.5  # all scores equal: chance
    assert metrics.roc_auc([0, 1], [1.0, 0.0]) == 0.0  # perfectly wrong ranking


def test_lists_arrays_and_tensors_agree():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 50)
    p = rng.integers(0, 2, 50)
    s = rng.normal(size=50)
    forms = [
        (t.tolist(), p.tolist(), s.tolist()),
        (t, p, s),
        (torch.tensor(t), torch.tensor(p), torch.tensor(s, dtype=torch.float32)),
        (torch.tensor(t, dtype=torch.float32), torch.tensor(p).bool(), torch.tensor(s)),  # BCE-style targets
    ]
    ref = metrics.confusion_matrix(t, p), metrics.precision_recall_f1(t, p), metrics.roc_auc(t, s)
    for tt, pp, ss in forms:
        np.testing.assert_array_equal(metrics.confusion_matrix(tt, pp), ref[0])
        assert metrics.precision_recall_f1(tt, pp) == ref[1]
        assert abs(metrics.roc_auc(tt, ss) - ref[2]) < 1e-6  # float32 scores round slightly


def test_tensor_with_grad_is_accepted():
    s = torch.tensor([0.2, 0.9, 0.4], requires_grad=True)
    assert metrics.roc_auc([0, 1, 1], s * 2) == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "only class 1"),
    (lambda: metrics.roc_curve([0, 0], [0.1, 0.2]), "only class 0"),
    (lambda: metrics.roc_auc([], []), "y_true is empty"),
    (lambda: metrics.confusion_matrix([], []), "y_true is empty"),
    (lambda: metrics.precision_recall_f1([0, 1], []), "y_pred is empty"),
    (lambda: metrics.roc_auc([0, 1, 1], [0.1, float("nan"), 0.3]), "scores contains 1 NaN value.*index 1"),
    (lambda: metrics.roc_auc(torch.tensor([0, 1]), torch.tensor([0.5, float("nan")])), "NaN"),
    (lambda: metrics.roc_auc([0, 1, 1], [0.1, 0.2]), "y_true has 3 entries but scores has 2"),
    (lambda: metrics.confusion_matrix([0, 1], [1]), "y_true has 2 entries but y_pred has 1"),
    (lambda: metrics.accuracy([0, 1], [1, 1, 0]), "y_true has 2 entries but y_pred has 3"),
    (lambda: metrics.confusion_matrix([0, -1], [0, 0]), "y_true has label -1"),
    (lambda: metrics.confusion_matrix([0, 1.5], [0, 0]), "integer class labels"),
    (lambda: metrics.confusion_matrix([0, float("nan")], [0, 0]), "NaN"),
    (lambda: metrics.confusion_matrix([0, 3], [0, 0], num_classes=3), "num_classes=3.*label 3"),
    (lambda: metrics.precision_recall_f1([0, 2], [0, 1]), "y_true has label 2; expected 0 .negative. or 1"),
    (lambda: metrics.precision_recall_f1([0, 1], [0, 1], average="weighted"), "average='weighted'"),
    (lambda: metrics.roc_auc([0, 1], [[0.1], [0.2]]), "scores must be 1-D"),
    (lambda: metrics.roc_auc([0, 1, 2], [0.1, 0.2, 0.3]), "label 2"),
    (lambda: metrics.accuracy(["pos", "neg"], [0, 1]), "must hold numbers"),
])
def test_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@FAST
@given(st.integers(2, 60), st.integers(2, 10), st.integers(0, 2**31))
def test_kfold_covers_every_index_once_with_disjoint_train_and_val(n, k, seed):
    if k > n:
        return
    folds = list(metrics.kfold_indices(n, k, seed=seed))
    assert len(folds) == k
    vals = np.concatenate([v for _, v in folds])
    np.testing.assert_array_equal(np.sort(vals), np.arange(n))  # each index validated exactly once
    sizes = [len(v) for _, v in folds]
    assert sizes == [len(v) for _, v in sk_model_selection.KFold(k).split(np.zeros(n))]
    for train, val in folds:
        assert not set(train) & set(val)
        np.testing.assert_array_equal(np.sort(np.r_[train, val]), np.arange(n))
    again = list(metrics.kfold_indices(n, k, seed=seed))  # deterministic
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))


def test_kfold_seed_shuffles_and_none_is_sklearn_kfold():
    a = [v.tolist() for _, v in metrics.kfold_indices(100, 5, seed=0)]
    b = [v.tolist() for _, v in metrics.kfold_indices(100, 5, seed=1)]
    assert a != b and a[0] != list(range(20))
    for (tr, va), (rtr, rva) in zip(metrics.kfold_indices(23, 4, seed=None),
                                    sk_model_selection.KFold(4).split(np.zeros(23))):
        np.testing.assert_array_equal(tr, rtr)
        np.testing.assert_array_equal(va, rva)


@pytest.mark.parametrize("n, k, err", [(5, 1, ValueError), (3, 4, ValueError), (10, 2.0, TypeError),
                                       (True, 2, TypeError)])
def test_kfold_bad_arguments(n, k, err):
    with pytest.raises(err, match="k=|must be an int"):
        list(metrics.kfold_indices(n, k))
