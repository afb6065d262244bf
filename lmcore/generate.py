"""Autoregressive decoding: one forward pass per generated token, with a KV cache.

The cycle (:func:`decode`)::

    prefill:  logits = model(prompt)            # all prompt tokens at once, fills the cache
    decode:   repeat: token = choose(logits[:, -1]); logits = model(token, cache)

:func:`generate` wraps it with the checks, the context window, stop tokens and a record
of every cycle. Choosing the next token from the logits (greedy, temperature, top-k,
top-p, the draw) is in :mod:`lmcore.sampling`; its public functions are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sampling import (  # noqa: F401  (re-exported: lmcore.generate.top_p_filter etc.)
    _broken_rows,
    _check_sampling,
    _choose,
    _is_int,
    apply_temperature,
    draw,
    next_token_probs,
    sample_next,
    top_k_filter,
    top_p_filter,
)


# --------------------------------------------------------------------------- the loop
@torch.inference_mode()
def decode(model, ids, choose, use_cache=True):
    """The inference cycle: yields ``(logits, token)`` per cycle, while asked.

    ids: (B, T) prompt on the model's device; the caller stops before the
    context outgrows the model's window. ``choose(logits (B, V))`` returns
    the next tokens (B,). With the cache the prompt is read once (prefill)
    and each later cycle feeds only the newest token; without it, all again.
    """
    cache = model.new_cache() if use_cache else None
    unread = ids  # what the model has not seen yet: first the whole prompt
    while True:
        context = unread if use_cache else ids
        out = model(context, cache=cache, validate=False)
        logits = out.logits[:, -1]  # (B, V): the next-token scores
        token = choose(logits)
        yield logits, token
        ids = torch.cat([ids, token[:, None]], dim=1)
        unread = token[:, None]


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


_CONTRACT = (
    "generate needs a GPT-like model (as lmcore.transformer.GPT): a torch.nn.Module with "
    "model.config.block_size and model.config.vocab_size (ints), whose "
    "model(idx, cache=..., validate=False) returns an object with .logits of shape "
    "(batch, seq, vocab_size), and, for use_cache=True, a new_cache() method"
)


def _check_model(model, use_cache: bool):
    config = getattr(model, "config", None)
    problems = [] if isinstance(model, torch.nn.Module) else ["it is not a torch.nn.Module"]
    problems += [f"model.config.{name} is missing or not an int >= 1"
                 for name in ("block_size", "vocab_size")
                 if not _is_int(getattr(config, name, None)) or getattr(config, name) < 1]
    if use_cache and not callable(getattr(model, "new_cache", None)):
        problems.append("it has no new_cache() method (pass use_cache=False)")
    params = next(iter(model.parameters()), None) if not problems else None
    if not problems and params is None:
        problems.append("it has no parameters (so no device)")
    if problems:
        raise TypeError(f"{_CONTRACT}; got a {type(model).__name__}: {'; '.join(problems)}")
    return config.block_size, config.vocab_size, params.device


def _as_batch(prompt_ids, vocab_size: int, device) -> tuple[torch.Tensor, bool]:
    was_list = not isinstance(prompt_ids, torch.Tensor)
    if was_list:
        if not isinstance(prompt_ids, (list, tuple)) or not all(_is_int(t) for t in prompt_ids):
            raise ValueError(f"prompt_ids must be a list of ints or a (batch, seq) int64 "
                             f"tensor, got {prompt_ids!r:.80}")
        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
    else:
        ids = prompt_ids.unsqueeze(0) if prompt_ids.dim() == 1 else prompt_ids
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"prompt_ids must be a (batch, seq) int64 tensor, got dtype "
                             f"{ids.dtype} and shape {tuple(prompt_ids.shape)}")
    if ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ValueError(f"prompt_ids is empty (shape {tuple(ids.shape)}): give at least one "
                         "token")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(
            f"prompt_ids must be token ids in [0, {vocab_size - 1}] (the model's vocab_size "
            f"is {vocab_size}), got values from {int(ids.min())} to {int(ids.max())}"
        )
    return ids.to(device), was_list


def _stop_ids(stop_tokens, vocab_size: int, device) -> torch.Tensor:
    if isinstance(stop_tokens, torch.Tensor):
        stop_tokens = stop_tokens.flatten().tolist()
    elif _is_int(stop_tokens):
        stop_tokens = [stop_tokens]
    elif isinstance(stop_tokens, (str, bytes)) or not hasattr(stop_tokens or [], "__iter__"):
        raise TypeError(f"stop_tokens must be token ids (an int or a list of ints), got "
                        f"{stop_tokens!r}; to stop on text use generate_text(..., stop=...)")
    items = list(stop_tokens or [])
    bad = [t for t in items if not _is_int(t) or not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"stop_tokens must be token ids in [0, {vocab_size - 1}], got {bad}")
    return torch.tensor(sorted(set(items)), dtype=torch.long, device=device)


def _check_generate_args(max_new_tokens, keep, block_size, n_candidates) -> int:
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    keep = block_size // 2 if keep is None else keep
    if not _is_int(keep) or not 1 <= keep <= block_size:
        raise ValueError(f"keep must be an int in [1, block_size={block_size}], got {keep!r}")
    if not _is_int(n_candidates) or n_candidates < 1:
        raise ValueError(f"n_candidates must be an int >= 1, got {n_candidates!r}")
    return keep


def generate(model, prompt_ids, max_new_tokens: int, *, greedy=False, temperature=1.0,
             top_k=None, top_p=None, stop_tokens=None, use_cache=True, keep=None,
             generator=None, return_steps=False, n_candidates=5):
    """Append ``max_new_tokens`` tokens to ``prompt_ids``, one forward pass per token.

    prompt_ids: list[int] or (batch, seq) int64 tensor (1-D means batch 1). Returns a list
    for a list, else a (batch, seq + new) tensor; the prompt is included. ``stop_tokens``
    (token ids): the list is cut after the first one; in the tensor a row that emitted one
    is padded with it, and generation ends once every row has stopped. With
    ``return_steps=True`` returns ``(ids, steps)``, a list of :class:`Step`.

    What it needs of ``model`` (``lmcore.transformer.GPT`` has it): ``model.config.
    block_size`` and ``model.config.vocab_size``; parameters on one device;
    ``model(idx, cache=..., validate=False)`` returning ``.logits`` (batch, seq, vocab);
    for ``use_cache=True`` a ``model.new_cache()`` whose length sets the positions of new
    tokens. Logits with NaN or inf raise a ``ValueError`` naming the cycle.

    The window. The model sees at most ``block_size`` tokens. When the visible context
    would grow past that, it is cut to its last ``keep`` tokens (default
    ``block_size // 2``) and :func:`decode` restarts on them: with the cache that is a
    re-prefill, because every cached key depends on the tokens before it and on its
    absolute position. ``keep = block_size`` is the classic sliding window (a cut every
    cycle); a smaller ``keep`` re-prefills once every ``block_size - keep + 1`` cycles. Both
    paths apply the same rule, so greedy output with and without the cache is identical.
    """
    block_size, vocab_size, device = _check_model(model, use_cache)
    keep = _check_generate_args(max_new_tokens, keep, block_size, n_candidates)
    _check_sampling(temperature, top_k, top_p, generator)
    stops = _stop_ids(stop_tokens, vocab_size, device)
    ids, was_list = _as_batch(prompt_ids, vocab_size, device)

    def choose(logits):
        if logits.shape != (ids.shape[0], vocab_size):  # the model broke the contract
            raise TypeError(f"{_CONTRACT}; its logits[:, -1] have shape "
                            f"{tuple(logits.shape)}, expected {(ids.shape[0], vocab_size)}")
        return _choose(logits, greedy, temperature, top_k, top_p, generator)

    def record(logits, token, position, start, prefilled):
        probs = (F.softmax(logits.float(), -1) if greedy
                 else next_token_probs(logits, temperature, top_k, top_p))
        top = probs.topk(min(n_candidates, probs.shape[-1]), dim=-1)
        return Step(position, start, prefilled, top.indices.cpu().clone(),
                    top.values.cpu().clone(), token.cpu().clone())

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out, steps = _decode_windows(model, ids, max_new_tokens, choose, use_cache, keep,
                                         stops, record if return_steps else None)
    finally:
        model.train(was_training)
    out = out.clone()  # tensors made under inference_mode refuse later autograd use
    if was_list:
        out, stop_set = out[0].tolist(), set(stops.tolist())
        hits = [i for i in range(ids.shape[1], len(out)) if out[i] in stop_set]
        out = out[: hits[0] + 1] if hits else out
    return (out, steps) if return_steps else out


def _decode_windows(model, ids, max_new_tokens, choose, use_cache, keep, stops, record):
    """Run :func:`decode` window by window; pad finished rows; stop once all have stopped."""
    block_size, prompt_len, start = model.config.block_size, ids.shape[1], 0
    steps, broken = [], []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    while ids.shape[1] - prompt_len < max_new_tokens and not (len(stops) and bool(done.all())):
        if ids.shape[1] - start > block_size:  # the window is full: slide it
            start = ids.shape[1] - keep  # the model sees ids[:, start:]
        todo = min(max_new_tokens - (ids.shape[1] - prompt_len),
                   block_size - (ids.shape[1] - start) + 1)  # cycles before the next slide
        cycles = _checked(decode(model, ids[:, start:], choose, use_cache))
        for i, (logits, token) in zip(range(todo), cycles):
            broken.append(_broken_rows(logits).any())  # no sync here: checked at the end
            if record is not None:
                steps.append(record(logits, token, ids.shape[1], start, i == 0 or not use_cache))
            if len(stops):  # finished rows repeat their stop token
                token = torch.where(done, ids[:, -1], token)
                done = done | torch.isin(token, stops)
            ids = torch.cat([ids, token[:, None]], dim=1)
            if len(stops) and bool(done.all()):
                break
    _check_cycles(broken, prompt_len)
    return ids, steps


def _checked(cycles):
    """The cycles of :func:`decode`; a model that breaks the contract gets a clear TypeError."""
    try:
        first = next(cycles)
    except (AttributeError, TypeError) as err:
        if str(err).startswith(_CONTRACT):
            raise
        raise TypeError(f"{_CONTRACT}; calling it failed: {type(err).__name__}: {err}") from err
    yield first
    yield from cycles


def _check_cycles(broken: list, prompt_len: int) -> None:
    if broken and bool(torch.stack(broken).any()):
        first = int(torch.stack(broken).nonzero()[0, 0])
        raise ValueError(
            f"the model returned NaN or inf logits at cycle {first} (the token at position "
            f"{prompt_len + first}), so no token can be chosen; check its weights "
            "(torch.isfinite(p).all() for each parameter)"
        )


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, *, stop=None,
                  **kwargs) -> str:
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
