"""Tokenizers: text -> list of integer ids -> text.

Two kinds:

* :class:`CharTokenizer` -- one id per Unicode character (what char-level models use).
* :class:`BytePairTokenizer` -- byte-level BPE written from scratch: start from the 256
  byte values of UTF-8 and repeatedly merge the most frequent adjacent pair
  (Sennrich et al., 2016; the byte-level variant is the one GPT-2 uses).

Both round-trip exactly: ``decode(encode(text)) == text``.
"""
from __future__ import annotations

import heapq
import re
from collections import Counter
from numbers import Integral
from typing import Sequence

UNK = "<unk>"
_UNKNOWN_MODES = ("error", "unk")


def _as_id_list(ids, vocab_size: int) -> list[int]:
    """Accept a list/tuple of ints or a 1-D tensor/array; check every id is in range."""
    if getattr(ids, "ndim", 1) != 1:
        raise ValueError(f"ids must be a list or a 1-D tensor, got shape {tuple(ids.shape)}")
    ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) if isinstance(i, Integral) else i for i in ids]
    bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"ids contains {len(bad)} value(s) outside 0..{vocab_size - 1} "
            f"(vocab_size={vocab_size}), e.g. {bad[:5]}"
        )
    return ids


class CharTokenizer:
    """One id per character; ids are positions in ``chars`` (plus ``<unk>`` last, if used).

    ``unknown="error"`` (default) makes :meth:`encode` raise on characters outside the
    vocabulary; ``unknown="unk"`` maps them to an extra ``<unk>`` id instead.
    """

    def __init__(self, chars: Sequence[str], unknown: str = "error"):
        chars = list(chars)
        if unknown not in _UNKNOWN_MODES:
            raise ValueError(f"unknown must be one of {_UNKNOWN_MODES}, got {unknown!r}")
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars must be single-character strings, got {bad[:5]!r}")
        if len(set(chars)) != len(chars):
            dup = sorted(c for c, m in Counter(chars).items() if m > 1)
            raise ValueError(f"chars must not repeat, but {dup[:5]!r} appear more than once")
        if not chars and unknown == "error":
            raise ValueError("chars is empty: give at least one character (or unknown='unk')")
        self.chars = chars
        self.unknown = unknown
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.itos = list(chars) + ([UNK] if unknown == "unk" else [])
        self.unk_id = len(chars) if unknown == "unk" else None

    @classmethod
    def from_text(cls, text: str, unknown: str = "error") -> "CharTokenizer":
        """Vocabulary = the sorted set of characters in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text is empty: a character vocabulary needs at least one character")
        return cls(sorted(set(text)), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """``text`` -> list of ``len(text)`` ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        stoi = self.stoi
        if self.unk_id is not None:
            return [stoi.get(c, self.unk_id) for c in text]
        missing = set(text) - stoi.keys()
        if missing:
            shown = sorted(missing)[:5]
            raise ValueError(
                f"text contains {len(missing)} character(s) not in the vocabulary, e.g. "
                f"{shown!r}. Build the tokenizer from a text that contains them "
                f"(CharTokenizer.from_text(...)) or pass unknown='unk' to map them to {UNK!r}."
            )
        return [stoi[c] for c in text]

    def decode(self, ids) -> str:
        """List of ids (or a 1-D tensor) -> text; ``<unk>`` ids decode to ``'<unk>'``."""
        return "".join(self.itos[i] for i in _as_id_list(ids, self.vocab_size))

    def to_dict(self) -> dict:
        return {"type": "char", "chars": list(self.chars), "unknown": self.unknown}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if not isinstance(d, dict) or d.get("type") != "char":
            raise ValueError("d must be a dict made by CharTokenizer.to_dict() (type 'char')")
        return cls(d["chars"], unknown=d.get("unknown", "error"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


# Pre-split text into chunks so that merges never cross them: an optional space plus a
# run of word characters (letters, digits, CJK...), an optional space plus a run of other
# symbols (punctuation, emoji), or whitespace. Every character matches one alternative,
# so the chunks concatenate back to the text exactly.
SPLIT_PATTERN = r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+"


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` (left to right) by ``new_id``."""
    out, i, a, b = [], 0, pair[0], pair[1]
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _pairs(ids: list[int]) -> Counter:
    return Counter(zip(ids, ids[1:]))


class BytePairTokenizer:
    """Byte-level BPE. Ids 0..255 are the bytes; id ``256 + r`` is the r-th merge.

    ``merges[r] = (a, b)`` means "the pair of ids a, b becomes 256 + r". Encoding applies
    merges in the order they were learned, so training and encoding agree.
    """

    def __init__(self, merges: Sequence[Sequence[int]] = (), pattern: str | None = SPLIT_PATTERN):
        self.pattern = pattern
        self._regex = re.compile(pattern) if pattern else None
        self.merges: list[tuple[int, int]] = []
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]  # id -> its bytes
        for a, b in merges:
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)):
                raise ValueError(f"merge ({a}, {b}) uses an id not defined before it")
            self.merges.append((int(a), int(b)))
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._rank = {p: r for r, p in enumerate(self.merges)}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def _chunks(self, text: str) -> list[str]:
        return self._regex.findall(text) if self._regex else [text]

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "BytePairTokenizer":
        """Learn ``vocab_size - 256`` merges from ``text`` (stops early if no pair repeats).

        Ties between equally frequent pairs go to the smallest ``(a, b)``, so training is
        deterministic. Pair counts are updated incrementally: after a merge only the chunks
        containing the merged pair are re-counted.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the byte alphabet), got {vocab_size!r}")
        self.__init__((), self.pattern)  # start again from the bytes
        freq = Counter(self._chunks(text))
        words = [list(w.encode("utf-8")) for w in freq]
        counts = list(freq.values())
        pair_count: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = {}  # pair -> chunks containing it
        for i, w in enumerate(words):
            for p in zip(w, w[1:]):
                pair_count[p] += counts[i]
                where.setdefault(p, set()).add(i)
        heap = [(-c, p) for p, c in pair_count.items()]
        heapq.heapify(heap)
        while self.vocab_size < vocab_size and heap:
            neg, pair = heapq.heappop(heap)
            if pair_count.get(pair, 0) != -neg:
                continue  # stale entry: this pair's count changed since it was pushed
            if -neg < 2:
                break  # nothing repeats any more: further merges would not compress
            new_id = self.vocab_size
            self.merges.append(pair)
            self.vocab.append(self.vocab[pair[0]] + self.vocab[pair[1]])
            changed = set()
            for i in sorted(where.pop(pair)):
                old = words[i]
                new = _merge(old, pair, new_id)
                if len(new) == len(old):
                    continue  # this chunk lost the pair in an earlier merge
                delta = _pairs(new)
                delta.subtract(_pairs(old))
                for p, m in delta.items():
                    if m:
                        pair_count[p] += m * counts[i]
                        changed.add(p)
                        if m > 0:
                            where.setdefault(p, set()).add(i)
                words[i] = new
            for p in changed:
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], p))
                else:
                    del pair_count[p]
            if verbose:
                print(f"merge {len(self.merges)}: {pair} -> {new_id} {self.vocab[new_id]!r} (count {-neg})")
        self._rank = {p: r for r, p in enumerate(self.merges)}
        return self

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            # the pair learned earliest among those present is merged first
            pair = min(zip(ids, ids[1:]), key=lambda p: self._rank.get(p, float("inf")))
            if pair not in self._rank:
                break
            ids = _merge(ids, pair, 256 + self._rank[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """``text`` -> list of ids (each chunk is encoded once and cached)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        out: list[int] = []
        cache = self._cache
        for chunk in self._chunks(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = cache[chunk] = self._encode_chunk(chunk)
            out.extend(ids)
        return out

    def decode(self, ids, errors: str = "replace") -> str:
        """Ids -> text. Ids from :meth:`encode` decode exactly; an arbitrary id sequence
        (e.g. sampled from a model) may cut a character's UTF-8 bytes, shown as U+FFFD."""
        data = b"".join(self.vocab[i] for i in _as_id_list(ids, self.vocab_size))
        return data.decode("utf-8", errors=errors)

    def token_strings(self, ids) -> list[str]:
        """Each id's bytes shown as text (a partial UTF-8 character is shown as its bytes)."""
        out = []
        for i in _as_id_list(ids, self.vocab_size):
            try:
                out.append(self.vocab[i].decode("utf-8"))
            except UnicodeDecodeError:
                out.append(str(self.vocab[i])[2:-1])
        return out

    def to_dict(self) -> dict:
        return {"type": "bpe", "merges": [list(p) for p in self.merges], "pattern": self.pattern}

    @classmethod
    def from_dict(cls, d: dict) -> "BytePairTokenizer":
        if not isinstance(d, dict) or d.get("type") != "bpe":
            raise ValueError("d must be a dict made by BytePairTokenizer.to_dict() (type 'bpe')")
        return cls(d["merges"], pattern=d.get("pattern", SPLIT_PATTERN))

    def __repr__(self) -> str:
        return f"BytePairTokenizer(vocab_size={self.vocab_size})"
