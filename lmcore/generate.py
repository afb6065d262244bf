"""Autoregressive decoding: one forward pass per generated token, with a KV cache.

The loop (see :func:`generate`)::

    prefill:  logits = model(prompt)            # all prompt tokens at once, fills the cache
    decode:   repeat: token = sample(logits[:, -1]); logits = model(token, cache)

Choosing the next token from the logits ``(batch, vocab)``:

- greedy: ``argmax`` (ties go to the lowest token id);
- sampling: divide by a temperature ``tau > 0``, optionally keep only the ``top_k`` largest
  logits and/or the smallest "nucleus" whose probability reaches ``top_p``, then draw from
  ``softmax``. Temperature first, then top-k, then top-p.

All filters are pure functions on logits: a removed token gets logit ``-inf`` (probability 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- validation
def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; "
            f"for deterministic argmax decoding pass greedy=True instead of temperature=0"
        )
    return float(temperature)


def _check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (or None for no top-k), got {top_k!r}")
    return top_k


def _check_top_p(top_p) -> float:
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) \
            or not (0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no top-p), got {top_p!r}")
    return float(top_p)


def _check_sampling(temperature, top_k, top_p) -> None:
    _check_temperature(temperature)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)


def _check_logits(logits) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[-1] < 1:
        raise ValueError(
            f"logits must be a tensor of shape (batch, vocab), got "
            f"{type(logits).__name__} with shape {tuple(getattr(logits, 'shape', ()))}"
        )
    return logits


# --------------------------------------------------------------------------- filters
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``: tau < 1 sharpens the softmax, tau > 1 flattens it.

    logits: (batch, vocab). ``temperature`` must be > 0 (tau -> 0 approaches argmax).
    """
    return _check_logits(logits) / _check_temperature(temperature)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row, set the rest to ``-inf``.

    logits: (batch, vocab). Ties at the boundary go to the lower token id (stable sort),
    so exactly ``min(k, vocab)`` tokens survive even when several logits are equal.
    """
    logits = _check_logits(logits)
    k = min(_check_top_k(k), logits.shape[-1])
    order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order[:, :k], True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability is >= p.

    logits: (batch, vocab). Tokens are taken in order of decreasing probability (ties: lower
    id first) until their cumulative probability reaches ``p``; the most likely token is always
    kept, so at least one token survives. ``p = 1`` keeps every token with nonzero probability.
    """
    logits = _check_logits(logits)
    p = _check_top_p(p)
    probs, order = torch.sort(F.softmax(logits.float(), dim=-1), dim=-1, descending=True, stable=True)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above
    keep_sorted = mass_before < p  # first token: mass_before = 0 < p, always kept
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None) -> torch.Tensor:
    """The distribution sampling draws from: temperature, then top-k, then top-p, then softmax.

    logits: (batch, vocab) -> probabilities (batch, vocab), rows sum to 1.
    """
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return F.softmax(logits.float(), dim=-1)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None,
                greedy=False) -> torch.Tensor:
    """Choose one token per row. logits: (batch, vocab) -> (batch,) int64.

    ``greedy=True`` takes the argmax (first maximum on ties) and ignores the other arguments'
    effect (they are still validated). Otherwise draws from :func:`next_token_probs` with
    ``torch.multinomial``; pass a seeded ``torch.Generator`` for reproducible samples.
    """
    if greedy:  # validate the arguments all the same, so a typo is never silently ignored
        _check_logits(logits)
        _check_sampling(temperature, top_k, top_p)
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# --------------------------------------------------------------------------- the loop
@dataclass
class Step:
    """One decoding cycle, recorded by ``generate(..., return_steps=True)``.

    position: index of the chosen token in the output sequence; window_start: first token
    the model saw (> 0 once the context outgrew the window); prefilled: this cycle ran the
    whole visible context through the model (the prompt, or a re-prefill after the window
    slid) instead of one token; top_ids / top_probs: (batch, n) most likely candidates
    under the distribution actually sampled from; chosen: (batch,) the tokens taken.
    """

    position: int
    window_start: int
    prefilled: bool
    top_ids: torch.Tensor
    top_probs: torch.Tensor
    chosen: torch.Tensor


def _as_batch(prompt_ids, vocab_size: int, device) -> tuple[torch.Tensor, bool]:
    was_list = not isinstance(prompt_ids, torch.Tensor)
    if was_list:
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt_ids):
            raise ValueError("prompt_ids must be a list of ints or a (batch, seq) int64 tensor")
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    else:
        ids = prompt_ids
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(
                f"prompt_ids must be a (batch, seq) int64 tensor, got dtype {ids.dtype} "
                f"and shape {tuple(prompt_ids.shape)}"
            )
    if ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ValueError(f"prompt_ids is empty (shape {tuple(ids.shape)}): give at least one token")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(
            f"prompt_ids must be token ids in [0, {vocab_size - 1}] (the model's vocab_size is "
            f"{vocab_size}), got values from {int(ids.min())} to {int(ids.max())}"
        )
    return ids.to(device), was_list


def generate(model, prompt_ids, max_new_tokens: int, *, greedy=False, temperature=1.0,
             top_k=None, top_p=None, stop_tokens=None, use_cache=True, keep=None,
             generator=None, return_steps=False, n_candidates=5):
    """Append ``max_new_tokens`` tokens to ``prompt_ids``, one forward pass per token.

    prompt_ids: list[int] or (batch, seq) int64 tensor (1-D means batch 1). Returns a list
    for a list, else a (batch, seq + new) tensor; the prompt is included. The list is cut
    after the first stop token; in the tensor a row that emitted a stop token is padded with
    that token, and generation ends early once every row has stopped. With
    ``return_steps=True`` returns ``(ids, steps)``, a list of :class:`Step`.

    use_cache: prefill the prompt once, then feed only the newest token and reuse the keys
    and values stored in the model's KV cache. Without it, every cycle reruns the whole
    visible context.

    The window. The model sees at most ``block_size`` tokens. When the visible context
    would grow past that, it is cut to its last ``keep`` tokens (default ``block_size // 2``;
    1 <= keep <= block_size). With the cache this means a re-prefill: the cache is reset and
    the kept tokens are run through again, because every cached key depends on the tokens
    before it (through earlier layers) and on its absolute position, so dropping the oldest
    tokens invalidates all of it. ``keep = block_size`` is the classic sliding window (cut
    every cycle; with the cache that re-prefills every cycle); a smaller ``keep`` re-prefills
    once every ``block_size - keep + 1`` cycles. Both paths apply the same rule, so greedy
    output with and without the cache is identical.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    _check_sampling(temperature, top_k, top_p)
    block_size = model.config.block_size
    keep = block_size // 2 if keep is None else keep
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= block_size:
        raise ValueError(f"keep must be an int in [1, block_size={block_size}], got {keep!r}")
    stops = torch.tensor(sorted(set(stop_tokens or [])), dtype=torch.long)
    device = next(model.parameters()).device
    ids, was_list = _as_batch(prompt_ids, model.config.vocab_size, device)
    stops = stops.to(device)

    was_training = model.training
    model.eval()
    cache = model.new_cache() if use_cache else None
    start, cached_upto = 0, 0  # visible window is ids[:, start:]; cache holds ids[:, start:cached_upto]
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    steps = []
    # inference_mode is no_grad without autograd's bookkeeping (version counters, views).
    # The prompt was checked once above and every new id is one the model chose from its own
    # vocabulary, so the model may skip its per-call id check (validate=False): no sync per token.
    try:
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                if ids.shape[1] - start > block_size:  # the window is full: slide it
                    start = ids.shape[1] - keep
                    cached_upto = start  # the cached keys/values are no longer valid
                if use_cache:
                    prefilled = cached_upto == start  # first cycle, or the window slid
                    if prefilled:
                        cache.reset()
                    logits = model(ids[:, cached_upto:], cache=cache, validate=False).logits[:, -1]
                    cached_upto = ids.shape[1]
                else:
                    prefilled = True
                    logits = model(ids[:, start:], validate=False).logits[:, -1]
                nxt = sample_next(logits, temperature, top_k, top_p, generator, greedy=greedy)
                if return_steps:
                    probs = (F.softmax(logits.float(), -1) if greedy
                             else next_token_probs(logits, temperature, top_k, top_p))
                    top = probs.topk(min(n_candidates, probs.shape[-1]), dim=-1)
                    steps.append(Step(ids.shape[1], start, prefilled, top.indices.cpu(),
                                      top.values.cpu(), nxt.cpu()))
                if len(stops):  # finished rows repeat their stop token
                    nxt = torch.where(done, ids[:, -1], nxt)
                    done = done | torch.isin(nxt, stops)
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                if len(stops) and bool(done.all()):
                    break
    finally:
        model.train(was_training)

    # Tensors made under inference_mode refuse later autograd use: hand out normal copies.
    ids = ids.clone()
    for s in steps:
        s.top_ids, s.top_probs, s.chosen = s.top_ids.clone(), s.top_probs.clone(), s.chosen.clone()
    if was_list:
        out = ids[0].tolist()
        if len(stops):
            stop_set = set(stops.tolist())
            hits = [i for i in range(len(prompt_ids), len(out)) if out[i] in stop_set]
            out = out[: hits[0] + 1] if hits else out
        ids = out
    return (ids, steps) if return_steps else ids


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, *, stop=None, **kwargs) -> str:
    """Continue ``prompt`` by ``max_new_tokens`` tokens and return only the new text.

    tokenizer: anything with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``
    (e.g. ``lmcore.tokenize.CharTokenizer``). stop: strings that each encode to one token;
    generation ends after one of them is produced. Other keyword arguments go to
    :func:`generate`.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str, got {prompt!r}")
    try:
        prompt_ids = tokenizer.encode(prompt)
    except ValueError as err:
        raise ValueError(f"prompt {prompt!r} cannot be encoded by the tokenizer: {err}") from err
    stop_tokens = []
    for s in ([stop] if isinstance(stop, str) else (stop or [])):
        encoded = tokenizer.encode(s)
        if len(encoded) != 1:
            raise ValueError(f"stop string {s!r} must encode to exactly one token, got {encoded}")
        stop_tokens += encoded
    out = generate(model, prompt_ids, max_new_tokens, stop_tokens=stop_tokens, **kwargs)
    if kwargs.get("return_steps"):
        out = out[0]
    return tokenizer.decode(out[len(prompt_ids):])
