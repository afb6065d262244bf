"""Count-based n-gram language models.

An n-gram model predicts the next token from the previous ``n - 1`` tokens only:

    p(w_i | w_1 .. w_{i-1})  ~=  p(w_i | w_{i-n+1} .. w_{i-1})

and estimates that probability from counts in a training text. Smoothing moves a little
probability to n-grams the training text never showed, so unseen text never gets
probability zero (which would make the perplexity infinite):

* ``"add-k"``: ``p(w | h) = (c(h, w) + k) / (c(h) + k V)``; an unseen context gives 1/V.
* ``"interpolated"``: mix the orders, from the uniform distribution up to order n,
  ``p_j(w | h) = lam(h) p_ML(w | h) + (1 - lam(h)) p_{j-1}(w | shorter h)``, with the
  Witten-Bell weight ``lam(h) = c(h) / (c(h) + T(h))`` (``T(h)``: how many different
  tokens followed ``h``) or a fixed ``lam``. An unseen context keeps ``p_{j-1}``.
* ``"none"``: maximum likelihood ``c(h, w) / c(h)``, for showing why smoothing is needed.

Counting is vectorised with NumPy: the j-gram ending at each position gets a dense id
from ``np.unique`` over ``(id of its (j-1)-gram prefix) * V + token``, so keys stay below
``N * V`` for any n.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .device import check_seed

SMOOTHINGS = ("add-k", "interpolated", "none")


class NGramLM:
    """An n-gram model over any hashable tokens (characters, or integer token ids).

    Example::

        lm = NGramLM(3, smoothing="interpolated").fit(train_text)
        lm.perplexity(val_text)
        "".join(lm.sample(100, context="ROMEO:", seed=0))
    """

    def __init__(self, n: int, smoothing: str = "interpolated", k: float = 1.0,
                 lam: float | None = None):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an int >= 1 (1 = unigram, 2 = bigram, ...), got {n!r}")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
        if not _is_real(k) or not 0 < k < math.inf:
            raise ValueError(f"k must be a finite number > 0 (add-k pseudo-count), got {k!r}"
                             " (use smoothing='none' for no smoothing)")
        if lam is not None and not (_is_real(lam) and 0 < lam <= 1):
            raise ValueError(f"lam must be in (0, 1] or None (Witten-Bell weights), got {lam!r}")
        self.n, self.smoothing, self.k, self.lam = n, smoothing, float(k), lam
        self.vocab: list | None = None
        self._code_keys = self._code_ids = None

    # ---- fitting -------------------------------------------------------------------
    def _to_ids(self, tokens, name: str) -> np.ndarray:
        """Tokens -> vocabulary indices (vectorised for a str or an integer array/tensor)."""
        _check_tokens(tokens, name)
        codes = _codes(tokens)
        if codes is not None and self._code_keys is not None:
            pos = np.minimum(np.searchsorted(self._code_keys, codes), len(self._code_keys) - 1)
            if len(codes) == 0 or (self._code_keys[pos] == codes).all():
                return self._code_ids[pos]
        seq = tokens.tolist() if hasattr(tokens, "tolist") else list(tokens)
        try:
            return np.fromiter((self.index[t] for t in seq), dtype=np.int64, count=len(seq))
        except (KeyError, TypeError):
            missing = sorted({repr(t) for t in seq if not _in(t, self.index)})
            raise ValueError(
                f"{name} contains {len(missing)} token(s) not in the model's vocabulary, e.g. "
                f"{', '.join(missing[:5])}; pass vocab= (e.g. the set of the whole corpus) "
                "to fit()"
            ) from None

    def _set_vocab(self, tokens, vocab) -> None:
        """The vocabulary (default: sorted set of tokens), its index, and numeric keys."""
        if vocab is None:
            codes = _codes(tokens)
            if isinstance(tokens, str):
                vocab = sorted(set(tokens))
            elif codes is not None:
                vocab = np.unique(codes).tolist()
            else:
                vocab = sorted(set(tokens.tolist() if hasattr(tokens, "tolist") else tokens),
                               key=_sort_key)
        _check_tokens(vocab, "vocab")
        self.vocab = list(vocab)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab must not contain repeated tokens")
        self.index = {t: i for i, t in enumerate(self.vocab)}
        # numeric keys (code points / ints) of the vocabulary, for fast vectorised lookup
        self._code_keys = self._code_ids = None
        if all(isinstance(t, str) and len(t) == 1 for t in self.vocab):
            keys = np.array([ord(t) for t in self.vocab], dtype=np.int64)
        elif all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in self.vocab):
            keys = np.array(self.vocab, dtype=np.int64)
        else:
            return
        order = np.argsort(keys)
        self._code_keys, self._code_ids = keys[order], order.astype(np.int64)

    def fit(self, tokens, vocab: Sequence | None = None) -> NGramLM:
        """Count all j-grams, j = 1..n, in ``tokens`` (a str, a list, or a 1-D tensor).

        ``vocab`` (default: the sorted set of ``tokens``) is the set the probabilities
        range over; give the whole corpus's set so validation tokens are all in it.
        """
        _check_tokens(tokens, "tokens")
        if len(tokens) == 0:
            raise ValueError("tokens is empty: an n-gram model needs a training text to count")
        self._set_vocab(tokens, vocab)
        ids = self._to_ids(tokens, "tokens")
        V, N = len(self.vocab), len(ids)
        self.n_tokens = N
        # per order j (index j - 1): sorted keys of the seen j-grams, their counts, and per
        # (j-1)-gram prefix id: total count c(h) and number of distinct followers T(h)
        self.keys, self.counts, self.ctx_total, self.ctx_types = [], [], [], []
        prefix = np.zeros(N, dtype=np.int64)  # id of the (j-1)-gram ending at i-1; order 1: 0
        n_prefix = 1
        for j in range(1, self.n + 1):
            key = prefix * V + ids[j - 1:]  # the j-grams ending at positions j-1 .. N-1
            uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
            self.keys.append(uniq)
            self.counts.append(count)
            self.ctx_total.append(np.bincount(uniq // V, weights=count, minlength=n_prefix).astype(np.int64))
            self.ctx_types.append(np.bincount(uniq // V, minlength=n_prefix))
            # a j-gram ending at i is the prefix of the (j+1)-gram ending at i + 1
            prefix, n_prefix = inverse.reshape(-1)[:-1], len(uniq)
        return self

    def with_options(self, n: int | None = None, smoothing: str | None = None,
                     k: float | None = None, lam: float | None = None) -> NGramLM:
        """A model sharing this one's counts with a smaller ``n`` or other smoothing, so
        one ``fit`` with the largest n serves every n <= it (no recounting)."""
        self._check_fitted()
        n = self.n if n is None else n
        if not isinstance(n, int) or not 1 <= n <= self.n:
            raise ValueError(f"n must be an int in 1..{self.n} (the fitted n), got {n!r}")
        new = NGramLM(n, smoothing or self.smoothing, self.k if k is None else k, lam if lam is not None else self.lam)
        for attr in ("vocab", "index", "n_tokens", "_code_keys", "_code_ids"):
            setattr(new, attr, getattr(self, attr))
        for attr in ("keys", "counts", "ctx_total", "ctx_types"):
            setattr(new, attr, getattr(self, attr)[:n])
        return new

    # ---- looking up ----------------------------------------------------------------
    def _find(self, j: int, key: np.ndarray) -> np.ndarray:
        """Dense id of each j-gram key, or -1 if it never occurred in training (key < 0: -1)."""
        keys = self.keys[j - 1]
        key = np.asarray(key, dtype=np.int64)
        if len(keys) == 0:
            return np.full(key.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return np.where((key >= 0) & (keys[pos] == key), pos, -1)

    def _gram_ids(self, ids: np.ndarray, max_order: int) -> list[np.ndarray]:
        """``G[m][p]`` = id of the m-gram ``ids[p-m+1 .. p]`` for m = 1..max_order:
        -1 if it never occurred in training, -2 if p < m - 1 (the text is too short)."""
        V, M = len(self.vocab), len(ids)
        G = [None, self._find(1, ids)]
        for m in range(2, max_order + 1):
            g = np.full(M, -2, dtype=np.int64)
            prev = G[m - 1][m - 2:M - 1]  # (m-1)-gram ending just before p = m-1 .. M-1
            g[m - 1:] = np.where(prev >= 0, self._find(m, np.maximum(prev, 0) * V + ids[m - 1:]), -1)
            G.append(g)
        return G

    def _probs(self, ctx: list[np.ndarray], w: np.ndarray) -> np.ndarray:
        """p(w | h) for arrays of queries. ``ctx[j-1]`` is the id of the (j-1)-token context
        for the order-j estimate: >= 0 seen in training, -1 never seen, -2 not available
        (too close to the start of the text). ``w``: token ids. Implements the formulas above."""
        V = len(self.vocab)
        ctx = [np.broadcast_to(np.asarray(c, dtype=np.int64), w.shape) for c in ctx]

        def gather(table, idx):  # table[idx] as floats, 0 where idx < 0
            if len(table) == 0:
                return np.zeros(idx.shape)
            return np.where(idx >= 0, table[np.maximum(idx, 0)], 0).astype(float)

        def counts(j):  # c(h, w), c(h), T(h) for the order-j estimate
            h = ctx[j - 1]
            g = self._find(j, np.where(h >= 0, np.maximum(h, 0) * V + w, -1))
            return gather(self.counts[j - 1], g), gather(self.ctx_total[j - 1], h), gather(self.ctx_types[j - 1], h)

        if self.smoothing == "interpolated":
            p = np.full(w.shape, 1.0 / V)  # order 0: uniform
            for j in range(1, self.n + 1):
                c_hw, c_h, t_h = counts(j)
                seen = c_h > 0  # an unseen context gets weight 0: p_j = p_{j-1}
                if self.lam is None:  # Witten-Bell
                    lam = np.divide(c_h, c_h + t_h, out=np.zeros_like(c_h), where=seen)
                else:
                    lam = np.where(seen, self.lam, 0.0)
                ml = np.divide(c_hw, c_h, out=np.zeros_like(c_hw), where=seen)
                p = lam * ml + (1 - lam) * p
            return p
        # add-k / none: the longest available context decides (shorter near the start)
        use = sum((c != -2).astype(np.int64) for c in ctx)
        unseen = 1.0 / V if self.smoothing == "add-k" else 0.0
        p = np.zeros(w.shape)
        for j in range(1, self.n + 1):
            c_hw, c_h, _ = counts(j)
            if self.smoothing == "add-k":
                est = (c_hw + self.k) / (c_h + self.k * V)
            else:
                est = np.divide(c_hw, c_h, out=np.zeros_like(c_hw), where=c_h > 0)
            p = np.where(use == j, np.where(c_h > 0, est, unseen), p)
        return p

    def _check_fitted(self):
        if self.vocab is None:
            raise ValueError("this NGramLM has not been fitted: call fit(tokens) first")

    # ---- public API ----------------------------------------------------------------
    def next_distribution(self, context=()) -> np.ndarray:
        """Probabilities of every vocabulary token after ``context``: shape ``(V,)``, sums to 1
        (except with ``smoothing="none"`` after an unseen context: all zeros).
        Only the last ``n - 1`` tokens of ``context`` matter."""
        self._check_fitted()
        _check_tokens(context, "context")
        context = list(context)[-(self.n - 1):] if self.n > 1 else []
        ids = self._to_ids(context, "context")
        ctx = [0]
        for m in range(1, self.n):  # id of the last m tokens, or -2 if there are fewer
            ctx.append(int(self._gram_ids(ids[-m:], m)[m][-1]) if m <= len(ids) else -2)
        return self._probs(ctx, np.arange(len(self.vocab)))

    def prob(self, context, token) -> float:
        """p(token | context)."""
        return float(self.next_distribution(context)[self._to_ids([token], "token")[0]])

    def log_probs(self, tokens) -> np.ndarray:
        """Natural-log probability of each token given the up-to ``n - 1`` tokens before it
        (the first tokens of the text have shorter contexts). Shape ``(len(tokens),)``."""
        self._check_fitted()
        ids = self._to_ids(tokens, "tokens")
        M = len(ids)
        if M == 0:
            raise ValueError("tokens is empty: nothing to score")
        G = self._gram_ids(ids, self.n - 1)
        ctx = [np.zeros(M, dtype=np.int64)]
        for m in range(1, self.n):  # context of position i = the m-gram ending at i - 1
            c = np.full(M, -2, dtype=np.int64)
            c[1:] = G[m][:-1]
            ctx.append(c)
        with np.errstate(divide="ignore"):
            return np.log(self._probs(ctx, ids))

    def perplexity(self, tokens) -> float:
        """PPL = exp(-(1/N) sum_i log p(w_i | previous n-1 tokens)); inf if any p is 0."""
        return float(np.exp(-self.log_probs(tokens).mean()))

    def unseen_fraction(self, tokens) -> float:
        """Fraction of the n-grams in ``tokens`` that never occurred in the training text."""
        self._check_fitted()
        ids = self._to_ids(tokens, "tokens")
        if len(ids) < self.n:
            raise ValueError(f"tokens has {len(ids)} tokens; need at least n={self.n}")
        return float((self._gram_ids(ids, self.n)[self.n][self.n - 1:] == -1).mean())

    def sample(self, length: int, context=(), seed: int | None = None,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> list:
        """Draw ``length`` tokens one at a time, each from ``next_distribution`` of what came
        before (``context`` + tokens drawn so far). ``temperature`` < 1 sharpens, > 1 flattens
        (p ** (1 / temperature), renormalised). Returns the new tokens only. Randomness: a
        ``seed`` or a CPU ``generator`` makes the draw repeatable; with neither, torch's
        global generator is used (like ``torch.multinomial``), so each call differs."""
        self._check_fitted()
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise ValueError(f"length must be an int >= 0, got {length!r}")
        if not (_is_real(temperature) and 0 < temperature < math.inf):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if seed is not None:
            seed = check_seed(seed)  # an int in [0, 2**64), or a clear error
        if seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both")
        if generator is not None and (not isinstance(generator, torch.Generator)
                                      or generator.device.type != "cpu"):
            raise ValueError(f"generator must be a CPU torch.Generator (n-gram sampling runs "
                             f"on the CPU), got {generator!r}")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        _check_tokens(context, "context")
        history, out = list(context), []
        for _ in range(length):
            p = self.next_distribution(history[-(self.n - 1):] if self.n > 1 else [])
            if p.sum() <= 0:
                raise ValueError(f"no token has probability > 0 after context "
                                 f"{history[-(self.n - 1):]!r} (smoothing='none')")
            if temperature != 1.0:  # p ** (1/T) computed in log space, max first: no underflow
                with np.errstate(divide="ignore"):
                    logp = np.log(p)
                p = np.exp((logp - logp.max()) / temperature)
            i = int(torch.multinomial(torch.as_tensor(p / p.sum()), 1, generator=generator))
            history.append(self.vocab[i])
            out.append(self.vocab[i])
        return out

    def __repr__(self) -> str:
        fitted = f", V={len(self.vocab)}, N={self.n_tokens}" if self.vocab is not None else ""
        return f"NGramLM(n={self.n}, smoothing={self.smoothing!r}{fitted})"


def _codes(tokens) -> np.ndarray | None:
    """int64 codes of a str (its code points) or of an integer array/tensor, else None."""
    if isinstance(tokens, str):
        return np.frombuffer(tokens.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    if isinstance(tokens, np.ndarray) and tokens.ndim == 1 and np.issubdtype(tokens.dtype, np.integer):
        return tokens.astype(np.int64)
    return None


def _sort_key(t):
    return (type(t).__name__, t)


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _in(t, index: dict) -> bool:
    try:
        return t in index
    except TypeError:  # unhashable
        return False


def _check_tokens(tokens, name: str) -> None:
    """A str, a list/tuple/range of hashable tokens, or a 1-D integer tensor/array."""
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        dt = tokens.dtype
        integer = (np.issubdtype(dt, np.integer) if isinstance(tokens, np.ndarray) else
                   not (dt.is_floating_point or dt.is_complex or dt == torch.bool))
        if tokens.ndim != 1 or not integer:
            raise ValueError(f"{name} must be a 1-D integer tensor/array of token ids, got "
                             f"shape {tuple(tokens.shape)} and dtype {dt}")
        return
    if not isinstance(tokens, (str, list, tuple, range)):
        raise TypeError(f"{name} must be a str, a list of tokens or a 1-D tensor of ids, "
                        f"got {type(tokens).__name__}")
    if not isinstance(tokens, str):
        bad = next((t for t in tokens if getattr(t, "__hash__", None) is None), None)
        if bad is not None:
            raise TypeError(f"{name} must hold hashable tokens (characters, strings, "
                            f"ints), got {bad!r:.40} ({type(bad).__name__})")
