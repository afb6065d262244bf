"""Programs written in words: a seeded suite of operations named in text, for one small GPT.

A prompt names an operation and gives its argument; the model writes the answer::

    reverse CABD → DBAC          sort then reverse CABD → DCBA
    count B in ABCAB → 2         add 37+45 → 82
    shift ABJ → BCA              (few-shot, no name)  AB → BA ; CDE → EDC ; FG →

Operations: ``copy``, ``reverse``, ``sort``, ``shift`` (Caesar shift by one inside the
ten-letter alphabet A..J, so J wraps to A), ``count`` (how often a letter occurs) and
``add`` (two decimal numbers), plus compositions ``"f then g"``. The reference programs
below are explicit loops (no ``sorted``/``[::-1]``), so counting their bytecodes with
:func:`lmcore.vonneumann.count_bytecodes` measures the work the CPU does.

Evaluation is exact match: with teacher forcing, the answer is exactly right iff the
argmax at every answer position is the target, which is what greedy decoding would write
(:func:`exact_match`, one forward pass per batch instead of one per token).
"""
from __future__ import annotations

import contextlib
import math
import random
from typing import NamedTuple

import torch

from .layers import check_int

LETTERS = "ABCDEFGHIJ"  # data in capitals, instruction words in lower case
DIGITS = "0123456789"
STRING_OPS = ("copy", "reverse", "sort", "shift")
OPS = (*STRING_OPS, "count", "add")
TRAIN_COMPOSITIONS = ("reverse then shift", "sort then shift", "shift then sort")
HELD_OUT_COMPOSITIONS = ("sort then reverse", "shift then reverse", "shift then shift")
NEW_WORDS = {"flip": "reverse"}  # in the vocabulary, never in a training prompt
TRAIN_LENGTHS = {"add": (1, 3), "few-shot": (2, 6)}  # others: (1, 8)
LONG_LENGTHS = {"add": (4, 5)}  # others: (9, 12)
ARROW, SEP, EOS, PAD = "→", ";", "<eos>", "<pad>"


# --------------------------------------------------------------- the reference programs
def copy(s: str) -> str:
    out = ""
    for c in s:
        out += c
    return out


def reverse(s: str) -> str:
    out = ""
    for c in s:
        out = c + out
    return out


def sort(s: str) -> str:
    """Insertion sort: about n^2/4 comparisons on random input."""
    out = []
    for c in s:
        i = len(out)
        while i > 0 and out[i - 1] > c:
            i -= 1
        out.insert(i, c)
    return "".join(out)


def shift(s: str) -> str:
    out = ""
    for c in s:
        out += LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)]
    return out


def count(letter: str, s: str) -> str:
    n = 0
    for c in s:
        if c == letter:
            n += 1
    return str(n)


def add(a: str, b: str) -> str:
    """Schoolbook addition, right to left, with a carry."""
    out, carry = "", 0
    a, b = a.zfill(len(b)), b.zfill(len(a))
    for i in range(len(a) - 1, -1, -1):
        d = int(a[i]) + int(b[i]) + carry
        out, carry = str(d % 10) + out, d // 10
    return str(carry) + out if carry else out


PROGRAMS = {"copy": copy, "reverse": reverse, "sort": sort, "shift": shift}


def steps(op: str) -> list[str]:
    """``"sort then reverse"`` -> ``["sort", "reverse"]``; new words mean their meaning."""
    if not isinstance(op, str):
        raise TypeError(f"op must be a str, got {type(op).__name__}")
    parts = [NEW_WORDS.get(p, p) for p in op.split(" then ")]
    if len(parts) > 1 and not all(p in STRING_OPS for p in parts):
        raise ValueError(f"op={op!r}: only {STRING_OPS} compose with 'then'")
    if parts[0] not in OPS:
        raise ValueError(f"op={op!r}; expected one of {OPS}, {list(NEW_WORDS)} or "
                         "'f then g' of string operations")
    return parts


def run_program(op: str, argument: str) -> str:
    """The exact answer: ``argument`` is ``"CABD"``, ``"B in ABCAB"`` (count) or ``"37+45"``."""
    parts = steps(op)
    if parts[0] == "count":
        letter, s = argument.split(" in ")
        return count(letter, s)
    if parts[0] == "add":
        return add(*argument.split("+"))
    for p in parts:
        argument = PROGRAMS[p](argument)
    return argument


# --------------------------------------------------------------- examples
class Example(NamedTuple):
    prompt: str  # ends with the arrow: "reverse CABD →"
    answer: str  # "DBAC"
    op: str
    length: int  # letters of the argument (digits of each number for add)

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.answer}"


def _argument(op: str, length: int, rng: random.Random) -> str:
    if op == "add":
        def number():
            first = rng.choice(DIGITS[1:]) if length > 1 else rng.choice(DIGITS)
            return first + "".join(rng.choice(DIGITS) for _ in range(length - 1))
        return f"{number()}+{number()}"
    s = "".join(rng.choice(LETTERS) for _ in range(length))
    return f"{rng.choice(LETTERS)} in {s}" if op == "count" else s


def make_example(op: str, length: int, rng: random.Random) -> Example:
    """One named example, e.g. ``make_example("sort", 4, random.Random(0))``."""
    check_int("length", length)
    arg = _argument(steps(op)[0], length, rng)
    return Example(f"{op} {arg} {ARROW}", run_program(op, arg), op, length)


def few_shot_example(op: str, shots: int, length: int, rng: random.Random) -> Example:
    """The operation shown, not named: ``shots`` solved examples, then the query.

    ``"AB → BA ; CDE → EDC ; FG →"``; example lengths are drawn from 2..``length``.
    """
    check_int("shots", shots, 0)
    if steps(op) != [op] or op not in STRING_OPS:
        raise ValueError(f"op={op!r}: few-shot prompts use one of {STRING_OPS}")
    parts = []
    for _ in range(shots):
        arg = _argument(op, rng.randint(2, length), rng)
        parts.append(f"{arg} {ARROW} {run_program(op, arg)} {SEP}")
    arg = _argument(op, length, rng)
    return Example(" ".join([*parts, f"{arg} {ARROW}"]), run_program(op, arg), op, length)


def eval_set(op: str, lengths, n: int, seed: int = 0, shots: int | None = None) -> list:
    """``n`` examples per length, seeded by (op, length, shots, seed): same set every run."""
    out = []
    for length in lengths:
        rng = random.Random(f"{seed}/{op}/{length}/{shots}")
        out += [make_example(op, length, rng) if shots is None
                else few_shot_example(op, shots, length, rng) for _ in range(n)]
    return out


def training_example(rng: random.Random) -> Example:
    """The training mix: 60% single named ops, 15% trained compositions, 25% few-shot."""
    r = rng.random()
    if r < 0.25:
        return few_shot_example(rng.choice(STRING_OPS), rng.randint(0, 3),
                                rng.randint(*TRAIN_LENGTHS["few-shot"]), rng)
    op = rng.choice(TRAIN_COMPOSITIONS) if r < 0.4 else rng.choice(OPS)
    return make_example(op, rng.randint(*TRAIN_LENGTHS.get(op, (1, 8))), rng)


# --------------------------------------------------------------- tokens
class TaskTokenizer:
    """Instruction words are single tokens; every other character is one token."""

    WORDS = (*OPS, "then", "in", *NEW_WORDS)

    def __init__(self):
        self.itos = [PAD, EOS, ARROW, SEP, "+", *LETTERS, *DIGITS, *self.WORDS]
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            pieces = [word] if word in self.stoi and len(word) > 1 else list(word)
            for p in pieces:
                if p not in self.stoi:
                    raise ValueError(f"text={text!r} holds {p!r}, which is not in the "
                                     f"vocabulary: words {self.WORDS}, letters {LETTERS}, "
                                     f"digits, '+', {ARROW!r}, {SEP!r}")
                ids.append(self.stoi[p])
        return ids

    def decode(self, ids) -> str:
        out = ""
        for i in ids:
            s = self.itos[int(i)]
            out += f" {s} " if s in self.WORDS or s in (ARROW, SEP, EOS, PAD) else s
        return " ".join(out.split())


def encode_batch(examples, tok: TaskTokenizer, all_answers: bool = False, device=None):
    """Right-padded ``(inputs, targets)``, both (B, T): only answer tokens are scored.

    Targets are -100 except the final answer and its ``<eos>`` (with ``all_answers``, the
    answers of the few-shot examples too). Padding at the right never changes what a
    causal model computes at the real positions.
    """
    seqs, masks = [], []
    for ex in examples:
        ids = tok.encode(ex.prompt)
        scored = [False] * len(ids)
        if all_answers:  # every token after an arrow, up to and including the ";"
            inside = False
            for i, t in enumerate(ids):
                scored[i] = inside
                inside = (inside and t != tok.stoi[SEP]) or t == tok.stoi[ARROW]
        answer = tok.encode(ex.answer) + [tok.stoi[EOS]]
        seqs.append(ids + answer)
        masks.append(scored + [True] * len(answer))
    T = max(map(len, seqs)) - 1
    inputs = torch.zeros(len(seqs), T, dtype=torch.long)
    targets = torch.full((len(seqs), T), -100, dtype=torch.long)
    for b, (ids, m) in enumerate(zip(seqs, masks)):
        ids_t = torch.tensor(ids)
        inputs[b, : len(ids) - 1] = ids_t[:-1]
        targets[b, : len(ids) - 1] = torch.where(torch.tensor(m[1:]), ids_t[1:], -100)
    return inputs.to(device), targets.to(device)


@torch.no_grad()
def exact_match(model, examples, tok: TaskTokenizer, batch_size: int = 256) -> torch.Tensor:
    """(len(examples),) bool: greedy decoding would write exactly the answer and ``<eos>``."""
    device = next(model.parameters()).device
    was_training, out = model.training, []
    model.eval()
    for i in range(0, len(examples), batch_size):
        x, y = encode_batch(examples[i: i + batch_size], tok, device=device)
        right = (model(x).logits.argmax(-1) == y) | (y == -100)
        out.append(right.all(dim=1).cpu())
    model.train(was_training)
    return torch.cat(out)


def accuracy(model, examples, tok: TaskTokenizer) -> float:
    return exact_match(model, examples, tok).float().mean().item()


def answer(model, tok: TaskTokenizer, prompt: str, max_new_tokens: int = 16) -> str:
    """Greedy answer to a typed prompt (the arrow is added if missing)."""
    from .generate import generate

    prompt = prompt.strip()
    prompt = prompt if prompt.endswith(ARROW) else f"{prompt} {ARROW}"
    ids = tok.encode(prompt)
    room = model.config.block_size - len(ids)
    if room < 1:
        raise ValueError(f"prompt={prompt!r} has {len(ids)} tokens; the model reads at most "
                         f"{model.config.block_size - 1} before its answer")
    out = generate(model, ids, min(max_new_tokens, room), greedy=True,
                   stop_tokens=[tok.stoi[EOS]])
    return tok.decode(t for t in out[len(ids):] if t != tok.stoi[EOS])


# --------------------------------------------------------------- training and surgery
def train_tasks(model, tok: TaskTokenizer, steps: int, sample=training_example,
                batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                log_every: int = 0, log=None) -> list[float]:
    """AdamW on freshly sampled batches (every answer scored), warm-up then cosine decay.

    ``sample(rng) -> Example`` draws one training example; ``log(step, loss)`` is called
    every ``log_every`` steps. Returns the loss per step; a NaN loss stops with an error.
    """
    from .train import TrainConfig, configure_optimizer, lr_at

    check_int("steps", steps)
    check_int("batch_size", batch_size)
    device = next(model.parameters()).device
    rng, losses = random.Random(seed), []
    opt = configure_optimizer(model, TrainConfig(lr=lr, weight_decay=0.01))
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, lr / 10, min(100, steps // 10), steps)
        x, y = encode_batch([sample(rng) for _ in range(batch_size)], tok, True, device)
        loss = model(x, y).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower lr={lr}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log is not None and log_every and (step + 1) % log_every == 0:
            log(step + 1, sum(losses[-log_every:]) / log_every)
    model.eval()
    return losses


@contextlib.contextmanager
def ablate_heads(model, heads):
    """Inside the block, the listed ``(layer, head)`` outputs are zero (before ``proj``)."""
    c = model.config
    for layer, head in heads:
        if not (0 <= layer < c.n_layer and 0 <= head < c.n_head):
            raise ValueError(f"head ({layer}, {head}) is not in a model with n_layer="
                             f"{c.n_layer}, n_head={c.n_head}")
    D, hooks = c.n_embd // c.n_head, []

    def zero(cols):
        def hook(module, args):
            x = args[0].clone()
            x[..., cols] = 0.0
            return (x,)
        return hook

    for layer in {h[0] for h in heads}:
        cols = [i for lh, h in heads if lh == layer for i in range(h * D, (h + 1) * D)]
        proj = model.blocks[layer].attn.proj
        hooks.append(proj.register_forward_pre_hook(zero(cols)))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()


def load_tasks_gpt(path, map_location=None):
    """The shipped model and its tokenizer: ``(model, tok)``, model in ``eval()`` mode."""
    from .checkpoint import load_model

    model, extra = load_model(path, map_location)
    tok = TaskTokenizer()
    if extra.get("tokenizer") != tok.itos:
        raise ValueError(f"checkpoint path={str(path)!r} was trained with the vocabulary "
                         f"{extra.get('tokenizer')}, but lmcore.tasks has {tok.itos}")
    return model, tok
