"""Labelled sentences for classification: the shipped movie-review set, words -> ids -> padded batches.

The data (``assets/data/movie_review_snippets.tsv``, provenance in ``assets/data/README.md``)
are 10,566 one-sentence movie-review snippets with the mean sentiment rating of human
raters (Hutto & Gilbert 2014), label 1 = positive, and a fixed train/val/test split::

    data = load_movie_reviews()                  # {"train": Sentences, "val": ..., "test": ...}
    vocab = WordVocab.build(data["train"].texts, min_count=2)
    ids, lengths = pad_batch([vocab.encode(t) for t in data["test"].texts])
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from .data import assets_dir

SNIPPETS = "movie_review_snippets.tsv"
SNIPPETS_SHA256 = "ef6e1760fde4304a287d1aee0a9187c95342dc8b85bf946503be7e6491d26707"
MINILM_CACHE = "movie_review_minilm.npy"
MINILM_CACHE_SHA256 = "174128b5dd6763a7831508ddc93986b09781e5e5019bfb06f3e57b780ad350d8"
SPLITS = ("train", "val", "test")


class Sentences(NamedTuple):
    """One split. texts[i] has label labels[i] (1 = positive) and mean human rating ratings[i]
    (-4 .. 4); ids[i] is its line number in the source file; rows[i] is its data row in the
    TSV (0-based), which is also its row in the MiniLM cache."""

    texts: list
    labels: list
    ratings: list
    ids: list
    rows: list


def _read_checked(name: str, sha256: str | None) -> bytes:
    path = assets_dir() / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; it ships with the book (see assets/data/README.md)")
    blob = path.read_bytes()
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError(f"{path} has SHA-256 {hashlib.sha256(blob).hexdigest()}, expected {sha256}: "
                         "the file was changed; restore it from the repository")
    return blob


def load_movie_reviews(split: str | None = None):
    """The shipped sentences: a dict ``{"train", "val", "test"} -> Sentences``, or one split."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS} or None (all)")
    lines = _read_checked(SNIPPETS, SNIPPETS_SHA256).decode("utf-8").splitlines()
    if lines[0] != "id\trating\tlabel\tsplit\ttext":
        raise ValueError(f"{SNIPPETS} has an unexpected header {lines[0]!r}")
    out = {s: Sentences([], [], [], [], []) for s in SPLITS}
    for row, line in enumerate(lines[1:]):
        source_id, rating, label, part, text = line.split("\t", 4)
        if int(label) != (float(rating) > 0) or part not in out:
            raise ValueError(f"{SNIPPETS} row {row}: label {label} / split {part!r} inconsistent")
        s = out[part]
        s.texts.append(text)
        s.labels.append(int(label))
        s.ratings.append(float(rating))
        s.ids.append(int(source_id))
        s.rows.append(row)
    return out if split is None else out[split]


# lower-case words (with an apostrophe part: "isn't", "film's"), numbers, or one symbol
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def words(text: str) -> list:
    """Split a sentence into lower-case word tokens: "Isn't it GREAT?" -> isn't it great ?"""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


class WordVocab:
    """Word <-> id. Id 0 is padding, id 1 stands for every word not in the vocabulary."""

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, tokens: Sequence[str]):
        self.itos = [self.PAD, self.UNK, *tokens]
        if len(set(self.itos)) != len(self.itos):
            raise ValueError("tokens must be distinct and must not contain <pad> or <unk>")
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.unk_id = 0, 1

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int = 2, max_size: int | None = None) -> WordVocab:
        """Keep the words seen at least ``min_count`` times in ``texts`` (most frequent first,
        ties alphabetical), at most ``max_size`` of them. Build it from the training split only."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of sentences, got one str")
        counts = Counter(w for t in texts for w in words(t))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list:
        return [self.stoi.get(w, self.unk_id) for w in words(text)]

    def decode(self, ids) -> list:
        return [self.itos[int(i)] for i in ids]


def pad_batch(seqs, pad_id: int = 0, max_len: int | None = None):
    """Right-pad lists of token ids into one tensor.

    seqs: B lists of ints (token ids, NOT raw strings: tokenize first).
    Returns ``(ids, lengths)``: ids (B, T) int64 with ``pad_id`` after each sequence's end,
    T = the longest length (cut to ``max_len`` if given, keeping the first tokens);
    lengths (B,) int64, the number of real tokens in each row (at least 1).
    """
    seqs = list(seqs)
    if not seqs:
        raise ValueError("seqs is empty; expected at least one sequence of token ids")
    for i, s in enumerate(seqs):
        if isinstance(s, str):
            raise TypeError(f"seqs[{i}] is the string {s[:30]!r}: pad token ids, not raw text "
                            "(encode each sentence with a tokenizer first)")
        if len(s) == 0:
            raise ValueError(f"seqs[{i}] is empty; every sequence needs at least one token")
    if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
    lengths = torch.tensor([len(s) if max_len is None else min(len(s), max_len) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, (s, n) in enumerate(zip(seqs, lengths.tolist())):
        ids[i, :n] = torch.as_tensor(list(s[:n]), dtype=torch.long)
    return ids, lengths


@torch.no_grad()
def minilm_embed(texts: Sequence[str], batch_size: int = 64, device=None) -> torch.Tensor:
    """Sentence embeddings of all-MiniLM-L6-v2: the mean of the last layer's token vectors
    over the real (non-padding) tokens, scaled to length 1 -- what sentence-transformers
    computes for this model. texts: N sentences -> (N, 384) float32 on the CPU."""
    from .pretrained import load_minilm

    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty list of sentences")
    model, tokenizer = load_minilm()
    device = device or next(model.parameters()).device
    model = model.to(device)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths, less padding
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=256,
                        return_tensors="pt").to(device)
        h = model(**enc).last_hidden_state                       # (B, T, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(h.dtype)   # (B, T, 1), 0 at padding
        mean = (h * mask).sum(1) / mask.sum(1)
        out[idx] = torch.nn.functional.normalize(mean, dim=-1).float().cpu()
    return out


def load_minilm_cache() -> torch.Tensor:
    """The shipped MiniLM embeddings of every TSV row: (10566, 384) float32 (stored as float16).
    Index it with ``Sentences.rows``. Made by :func:`minilm_embed` (see assets/data/README.md)."""
    import io

    array = np.load(io.BytesIO(_read_checked(MINILM_CACHE, MINILM_CACHE_SHA256)), allow_pickle=False)
    if array.ndim != 2 or array.shape[1] != 384:
        raise ValueError(f"{MINILM_CACHE} has shape {array.shape}, expected (rows, 384)")
    return torch.from_numpy(array.astype(np.float32))
