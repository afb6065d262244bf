"""Evaluating a classifier: confusion matrix, precision/recall/F1, ROC and AUC, k-fold splits.

Written from scratch and tested against ``sklearn.metrics`` (same conventions):

* labels are integers ``0 .. C-1``; for the binary metrics 1 is the positive class;
* ``confusion_matrix(...)[i, j]`` counts examples of true class i predicted as class j;
* a ratio with a zero denominator (e.g. precision when nothing is predicted positive) is
  ``zero_division`` (0.0 by default, sklearn's value).

Inputs may be Python lists, NumPy arrays or torch tensors (on any device). Empty inputs,
NaN, lengths that differ and ROC curves of one class only raise a ``ValueError`` that
names the argument.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def _as_array(name: str, x) -> np.ndarray:
    """A 1-D NumPy copy of a list, array or tensor (``.cpu()`` first: it may be on a GPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a list, NumPy array or tensor of numbers: {err}") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per example), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty; expected at least one example")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype} (e.g. {a[0]!r})")
    if a.dtype.kind == "f" and np.isnan(a).any():
        raise ValueError(f"{name} contains {int(np.isnan(a).sum())} NaN value(s) "
                         f"(first at index {int(np.flatnonzero(np.isnan(a))[0])})")
    return a


def _labels(name: str, y, binary: bool = False) -> np.ndarray:
    """Integer class labels >= 0 (floats such as 1.0 are accepted if they are whole)."""
    a = _as_array(name, y)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a) & (a == np.round(a))):
        bad = a[~(np.isfinite(a) & (a == np.round(a)))]
        raise ValueError(f"{name} must hold integer class labels, got {bad[:3]}")
    a = a.astype(np.int64)
    allowed = "0 (negative) or 1 (positive)" if binary else "0 .. num_classes-1"
    bad = a[(a < 0) | (a > 1)] if binary else a[a < 0]
    if bad.size:
        raise ValueError(f"{name} has label {int(bad[0])}; expected {allowed}")
    return a


def _same_length(*pairs) -> None:
    (n1, a), (n2, b) = pairs
    if len(a) != len(b):
        raise ValueError(f"{n1} has {len(a)} entries but {n2} has {len(b)}; expected one each per example")


def accuracy(y_true, y_pred) -> float:
    """Fraction of examples whose predicted label equals the true label."""
    t, p = _labels("y_true", y_true), _labels("y_pred", y_pred)
    _same_length(("y_true", t), ("y_pred", p))
    return float(np.mean(t == p))


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class.

    num_classes: C; by default the largest label seen plus one.
    """
    t, p = _labels("y_true", y_true), _labels("y_pred", y_pred)
    _same_length(("y_true", t), ("y_pred", p))
    largest = int(max(t.max(), p.max()))
    if num_classes is None:
        num_classes = largest + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= largest:
        raise ValueError(f"num_classes={num_classes!r}, but a label {largest} occurs; expected "
                         f"an int > {largest}")
    # one bincount over the pair index t*C + p fills the whole matrix at once
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray, zero_division: float) -> np.ndarray:
    out = np.full(num.shape, float(zero_division))
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(y_true, y_pred, average: str = "binary",
                        zero_division: float = 0.0) -> tuple[float, float, float]:
    """Return ``(precision, recall, f1)`` as floats.

    average: "binary" -- of class 1 (labels must be 0/1); "macro" -- unweighted mean over
    the classes that occur in y_true or y_pred; "micro" -- from the summed counts (for
    single-label data all three equal the accuracy).
    precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN).
    """
    if average not in ("binary", "macro", "micro"):
        raise ValueError(f"average={average!r}; expected 'binary', 'macro' or 'micro'")
    binary = average == "binary"
    t, p = _labels("y_true", y_true, binary), _labels("y_pred", y_pred, binary)
    _same_length(("y_true", t), ("y_pred", p))
    cm = confusion_matrix(t, p, num_classes=2 if binary else None)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp  # column minus diagonal, row minus diagonal
    if binary:
        tp, fp, fn = tp[1:], fp[1:], fn[1:]
    elif average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    else:
        present = np.union1d(t, p)  # sklearn's default: the labels that occur
        tp, fp, fn = tp[present], fp[present], fn[present]
    precision = _ratio(tp, tp + fp, zero_division)
    recall = _ratio(tp, tp + fn, zero_division)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, zero_division)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def _binary_scores(y_true, scores):
    t, s = _labels("y_true", y_true, binary=True), _as_array("scores", scores).astype(np.float64)
    _same_length(("y_true", t), ("scores", s))
    n_pos = int(t.sum())
    if n_pos in (0, len(t)):
        raise ValueError(f"y_true holds only class {int(t[0])} ({len(t)} examples); a ROC curve "
                         "needs both positives (1) and negatives (0)")
    return t, s


def roc_curve(y_true, scores):
    """ROC curve of a score (higher = more positive): ``(fpr, tpr, thresholds)``.

    Predicting "positive if score >= thresholds[i]" gives false-positive rate fpr[i] and
    true-positive rate tpr[i]. thresholds are the distinct scores, decreasing, after a first
    ``inf`` (nothing predicted positive: the point (0, 0)); tied scores form one point.
    (This is sklearn's ``roc_curve(..., drop_intermediate=False)``.)
    """
    t, s = _binary_scores(y_true, scores)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each run of ties
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(y_true, scores) -> float:
    """Area under the ROC curve (trapezoids). Equals the probability that a random positive
    scores higher than a random negative, ties counting one half."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def kfold_indices(n: int, k: int, seed: int | None = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, val_idx)`` for each of ``k`` folds of ``range(n)``.

    Every index is in exactly one validation fold; fold sizes differ by at most one (the
    first ``n % k`` folds are one larger, as in sklearn's ``KFold``). The indices are
    shuffled with ``numpy.random.default_rng(seed)``; ``seed=None`` keeps the order
    (contiguous folds, sklearn's ``KFold(k)``). Both arrays come back sorted.
    """
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not 2 <= k <= n:
        raise ValueError(f"k={k} folds of n={n} examples: expected 2 <= k <= n")
    perm = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    start = 0
    for size in sizes:
        val = np.sort(perm[start:start + size])
        train = np.sort(np.r_[perm[:start], perm[start + size:]])
        start += size
        yield train, val
