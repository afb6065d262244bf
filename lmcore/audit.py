"""Measuring what a language model does besides predicting well: an audit toolkit.

* memorisation: :func:`verbatim_matches` (does greedy decoding from a training prefix
  reproduce the training text?) and the canary :func:`exposure` of Carlini et al. (2019);
* bias: the Word Embedding Association Test, :func:`weat_effect_size` and
  :func:`weat_p_value` (Caliskan, Bryson & Narayanan 2017);
* calibration: :func:`reliability_bins` and :func:`expected_calibration_error`
  (Guo et al. 2017), bins ``(lo, hi]`` as in sklearn's ``calibration_curve``;
* explanation: :func:`last_query_attention` against :func:`leave_one_out_effect`
  (Jain & Wallace 2019);
* cost: :func:`joules_per_million_tokens`.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F


def _int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r}; expected an int >= {low}")
    return int(value)


def _vector(name: str, x) -> np.ndarray:
    """A finite 1-D float64 NumPy copy of a list, array or tensor (on any device)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    return a


# ------------------------------------------------------------------ memorisation
@torch.no_grad()
def verbatim_matches(model, data: torch.Tensor, starts, prefix_lens,
                     suffix_len: int) -> torch.Tensor:
    """Does greedy decoding from a prefix of the text reproduce the text that follows?

    data: 1-D token ids; starts: n window starts; prefix_lens: k prefix lengths.
    Entry [i, j] of the returned (n, k) bool tensor (CPU) says whether greedy decoding
    from ``data[s : s+P]`` (s = starts[i], P = prefix_lens[j]) gives exactly the next
    ``suffix_len`` tokens of data. One forward pass per window answers every P: greedy
    decoding reproduces the suffix exactly when, reading the true text, the argmax at
    each suffix position is the true next token (until the first miss the decoded
    context *is* the true text), and a causal model's prediction at position t depends
    only on tokens 0..t.
    """
    lens = [_int("prefix_lens[i]", p) for p in np.atleast_1d(prefix_lens).tolist()]
    suffix_len = _int("suffix_len", suffix_len)
    starts = torch.as_tensor(starts, dtype=torch.long).flatten().cpu()
    if not isinstance(data, torch.Tensor) or data.dim() != 1:
        raise ValueError("data must be a 1-D tensor of token ids")
    end = max(lens) + suffix_len
    if end - 1 > model.config.block_size:
        raise ValueError(f"max(prefix_lens) + suffix_len - 1 = {end - 1} exceeds the "
                         f"model's block_size={model.config.block_size}")
    if starts.numel() == 0 or starts.min() < 0 or starts.max() + end > len(data):
        raise ValueError(f"starts must be non-empty and in [0, {len(data) - end}] so that "
                         f"prefix + suffix ({end} tokens) fit in data ({len(data)} tokens)")
    windows = data.cpu()[starts[:, None] + torch.arange(end)]  # (n, end)
    device = next(model.parameters()).device
    hit = model(windows[:, :-1].to(device)).logits.argmax(-1).cpu() == windows[:, 1:]
    return torch.stack([hit[:, p - 1:p - 1 + suffix_len].all(dim=1) for p in lens], dim=1)


@torch.no_grad()
def sequence_nll(model, prefix, candidates: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in bits of each candidate continuation of ``prefix``.

    prefix: list/1-D tensor of ids; candidates: (n, L) ids. Returns (n,) on the CPU:
    ``-sum_t log2 p(candidates[i, t] | prefix, candidates[i, :t])`` (the log-perplexity
    of Carlini et al. 2019).
    """
    device = next(model.parameters()).device
    prefix = torch.as_tensor(prefix, dtype=torch.long).flatten().to(device)
    if candidates.dim() != 2 or len(prefix) == 0:
        raise ValueError("prefix must be non-empty and candidates a (n, L) tensor of ids")
    cand = candidates.long().to(device)
    n, length = cand.shape
    seq = torch.cat([prefix.expand(n, -1), cand], dim=1)[:, :-1]
    logp = F.log_softmax(model(seq).logits[:, -length:].float(), dim=-1)
    nats = -logp.gather(-1, cand[..., None]).squeeze(-1).sum(dim=1)
    return (nats / math.log(2)).cpu()


def exposure(nll, index: int) -> float:
    """Exposure (bits) of candidate ``index`` among all candidates of a secret space:
    ``log2 |R| - log2 rank``, rank 1 = the most likely (lowest ``nll``).

    Ties count against the canary (rank = number of candidates with nll <= its own), so
    a model that has learned nothing (all equal) gives exposure 0; the maximum is
    ``log2 |R|`` (the secret is the model's first guess).
    """
    nll = _vector("nll", nll)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
            or not 0 <= index < len(nll):
        raise ValueError(f"index={index!r}; expected an int in [0, {len(nll) - 1}]")
    rank = int((nll <= nll[index]).sum())
    return math.log2(len(nll)) - math.log2(rank)


# ------------------------------------------------------------------ bias (WEAT)
def _unit_rows(name: str, m) -> np.ndarray:
    m = np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float64)
    if m.ndim != 2 or len(m) < 2 or not np.isfinite(m).all():
        raise ValueError(f"{name} must be a finite (n >= 2, dim) array of word vectors, "
                         f"got shape {m.shape}")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has a zero vector (cosine undefined)")
    return m / norms


def weat_association(W, A, B) -> np.ndarray:
    """s(w, A, B) = mean cos(w, a) - mean cos(w, b) for each row w of W. Returns (n,)."""
    W, A, B = _unit_rows("W", W), _unit_rows("A", A), _unit_rows("B", B)
    if not W.shape[1] == A.shape[1] == B.shape[1]:
        raise ValueError(f"W, A, B must have the same dim, got {W.shape}, {A.shape}, {B.shape}")
    return (W @ A.T).mean(axis=1) - (W @ B.T).mean(axis=1)


def weat_effect_size(X, Y, A, B) -> float:
    """Caliskan et al.'s d: (mean_x s(x) - mean_y s(y)) / std_{w in X u Y} s(w).

    X, Y: target word vectors (nx, dim), (ny, dim); A, B: attribute word vectors.
    The standard deviation is the sample one (ddof=1). Range about [-2, 2].
    """
    sx, sy = weat_association(X, A, B), weat_association(Y, A, B)
    return float((sx.mean() - sy.mean()) / np.concatenate([sx, sy]).std(ddof=1))


def weat_p_value(X, Y, A, B, n_permutations: int | None = None, seed: int = 0,
                 max_exact: int = 200_000) -> float:
    """One-sided permutation p-value of the WEAT statistic sum_x s(x) - sum_y s(y).

    The null: the targets' labels are exchangeable. Over every split of X u Y into groups
    of sizes |X| and |Y| (exactly, when there are at most ``max_exact`` splits), or over
    ``n_permutations`` random splits (seeded), the p-value is the fraction of splits whose
    statistic is >= the observed one (the observed split counts, so p > 0).
    """
    s = np.concatenate([weat_association(X, A, B), weat_association(Y, A, B)])
    nx, total = len(X), float(s.sum())
    observed = 2 * s[:nx].sum() - total  # sum over X minus sum over Y
    tol = 1e-12 * max(1.0, float(np.abs(s).sum()))
    if n_permutations is None and math.comb(len(s), nx) <= max_exact:
        in_x = np.array(list(combinations(range(len(s)), nx)))  # every split, exactly
        stats = 2 * s[in_x].sum(axis=1) - total
        return float((stats >= observed - tol).mean())
    n = _int("n_permutations", n_permutations if n_permutations is not None else 100_000)
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(len(s)), (n, 1)), axis=1)[:, :nx]
    stats = 2 * s[perms].sum(axis=1) - total
    return float(((stats >= observed - tol).sum() + 1) / (n + 1))


# ------------------------------------------------------------------ calibration
def _calibration_inputs(confidence, correct, n_bins):
    conf, hit = _vector("confidence", confidence), _vector("correct", correct)
    if len(conf) != len(hit):
        raise ValueError(f"confidence has {len(conf)} entries but correct has {len(hit)}")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError(f"confidence must lie in [0, 1], got [{conf.min()}, {conf.max()}]")
    if not np.isin(hit, (0.0, 1.0)).all():
        raise ValueError("correct must hold 0/1 or booleans (was the prediction right?)")
    return conf, hit, _int("n_bins", n_bins)


def reliability_bins(confidence, correct, n_bins: int = 10):
    """Group predictions by confidence into ``n_bins`` equal-width bins (lo, hi]
    (the first is [0, hi]), as ``sklearn.calibration.calibration_curve`` does.

    Returns ``(count, accuracy, mean_confidence)``, arrays of length n_bins; accuracy and
    mean_confidence are NaN in empty bins (filter them with ``count > 0``).
    """
    conf, hit, n_bins = _calibration_inputs(confidence, correct, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")  # value on an edge: lower bin
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, hit, n_bins) / count
        mean_conf = np.bincount(which, conf, n_bins) / count
    return count, accuracy, mean_conf


def expected_calibration_error(confidence, correct, n_bins: int = 10) -> float:
    """ECE = sum over bins of (bin size / n) * |accuracy - mean confidence| (Guo et al.)."""
    count, accuracy, mean_conf = reliability_bins(confidence, correct, n_bins)
    full = count > 0
    return float((count[full] * np.abs(accuracy[full] - mean_conf[full])).sum() / count.sum())


# ------------------------------------------------------------------ explanation
@torch.no_grad()
def last_query_attention(model, ids: torch.Tensor, layer: int | None = -1) -> torch.Tensor:
    """Attention of the last position to every position, averaged over the heads.

    ids: (T,) token ids. Returns (T,) for one ``layer``, or (n_layer, T) for
    ``layer=None``; on the CPU; each row sums to 1.
    """
    ids = _context(model, ids)
    weights = model(ids[None], need_weights=True).attentions  # n_layer x (1, H, T, T)
    rows = torch.stack([w[0, :, -1].float().mean(dim=0) for w in weights]).cpu()
    return rows if layer is None else rows[layer]


@torch.no_grad()
def leave_one_out_effect(model, ids: torch.Tensor, replacement: int) -> torch.Tensor:
    """How much the next-token distribution moves when one input token is replaced.

    ids: (T,) token ids. For each position j, token j becomes ``replacement`` (positions
    stay where they are) and the effect is the total variation distance
    ``0.5 * sum |p - p_j|`` between the last position's next-token distributions.
    Returns (T,) on the CPU, values in [0, 1].
    """
    ids = _context(model, ids)
    replacement = _int("replacement", replacement, 0)
    if replacement >= model.config.vocab_size:
        raise ValueError(f"replacement={replacement} is not an id < {model.config.vocab_size}")
    T = len(ids)
    variants = ids.repeat(T + 1, 1)  # row j < T: token j replaced; last row: the original
    variants[torch.arange(T), torch.arange(T)] = replacement
    p = F.softmax(model(variants).logits[:, -1].float(), dim=-1)
    return (0.5 * (p[:T] - p[T]).abs().sum(dim=-1)).cpu()


def _context(model, ids) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1 or not 1 <= len(ids) <= model.config.block_size:
        raise ValueError(f"ids must be 1-D with 1..{model.config.block_size} tokens, "
                         f"got shape {tuple(ids.shape)}")
    return ids.to(device)


# ------------------------------------------------------------------ cost
def joules_per_million_tokens(tokens_per_second: float, watts: float) -> float:
    """Energy of one million tokens at a measured speed and an assumed power draw."""
    for name, v in (("tokens_per_second", tokens_per_second), ("watts", watts)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise ValueError(f"{name}={v!r}; expected a finite number > 0")
    return watts / tokens_per_second * 1e6


@torch.no_grad()
def minilm_embeddings(texts) -> torch.Tensor:
    """Sentence vectors from the pretrained MiniLM (:mod:`lmcore.pretrained`): the mean of
    the last layer's token vectors over the real tokens, scaled to length 1, as the
    sentence-transformers model all-MiniLM-L6-v2 does. texts: list of str -> (n, 384)."""
    from .pretrained import load_minilm

    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip()
                                                      for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings")
    model, tokenizer = load_minilm()
    enc = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    h = model(**enc).last_hidden_state  # (n, T, 384)
    real = enc["attention_mask"][..., None].to(h.dtype)
    return F.normalize((h * real).sum(1) / real.sum(1), dim=-1)
