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
from collections.abc import Sequence
from numbers import Integral

UNK = "<unk>"
_UNKNOWN_MODES = ("error", "unk")


def _as_id_list(ids, vocab_size: int) -> list[int]:
    """Accept a list/tuple of ints or a 1-D integer tensor/array; check every id is in range."""
    if hasattr(ids, "ndim") and hasattr(ids, "dtype"):  # torch tensor or NumPy array
        if ids.ndim != 1 or "int" not in str(ids.dtype):
            raise ValueError(f"ids must be a 1-D integer tensor, got shape "
                             f"{tuple(ids.shape)} and dtype {ids.dtype}")
        ids = ids.tolist()
    elif isinstance(ids, (list, tuple, range)):
        ids = [int(i) if isinstance(i, Integral) and not isinstance(i, bool) else i
               for i in ids]
    else:
        raise TypeError(f"ids must be a list of ints or a 1-D integer tensor, "
                        f"got {type(ids).__name__}")
    not_int = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
    if not_int:
        raise TypeError(f"ids must be ints, got {len(not_int)} other value(s), e.g. "
                        f"{not_int[:3]!r} ({type(not_int[0]).__name__})")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"ids contains {len(bad)} value(s) outside 0..{vocab_size - 1} "
            f"(vocab_size={vocab_size}), e.g. {bad[:5]}"
        )
    return ids


def _check_dict(d, kind: str, cls: str, keys: tuple) -> None:
    if not isinstance(d, dict) or d.get("type") != kind:
        got = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"d must be a dict made by {cls}.to_dict() (type {kind!r}), got {got!r}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"d (a {cls} dict) lacks the key(s) {missing}")


def _check_text(text, utf8: bool = False) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if utf8:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"text contains a lone surrogate {text[err.start]!r} at index {err.start}, "
                "which has no UTF-8 bytes; expected valid Unicode text (e.g. decode "
                "bytes with errors='replace')") from None


class CharTokenizer:
    """One id per character; ids are positions in ``chars`` (plus ``<unk>`` last, if used).

    ``unknown="error"`` (default) makes :meth:`encode` raise on characters outside the
    vocabulary; ``unknown="unk"`` maps them to an extra ``<unk>`` id instead.
    """

    def __init__(self, chars: Sequence[str], unknown: str = "error"):
        if isinstance(chars, str):
            chars = list(chars)
        if not isinstance(chars, (list, tuple)):
            raise TypeError(f"chars must be a list of single characters, "
                            f"got {type(chars).__name__}")
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
    def from_text(cls, text: str, unknown: str = "error") -> CharTokenizer:
        """Vocabulary = the sorted set of characters in ``text``."""
        _check_text(text)
        if not text:
            raise ValueError("text is empty: a character vocabulary needs at least one character")
        return cls(sorted(set(text)), unknown=unknown)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """``text`` -> list of ``len(text)`` ids."""
        _check_text(text)
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
    def from_dict(cls, d: dict) -> CharTokenizer:
        _check_dict(d, "char", "CharTokenizer", ("chars",))
        return cls(d["chars"], unknown=d.get("unknown", "error"))

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unknown={self.unknown!r})"


# Pre-split text into chunks so that merges never cross them: an optional space plus a
# run of word characters (letters, digits, CJK...), an optional space plus a run of other
# symbols (punctuation, emoji), or whitespace. Every character matches one alternative,
# so the chunks concatenate back to the text exactly.
SPLIT_PATTERN = r" ?\w+| ?[^\w\s]+|\s+(?!\S)|\s+"
# The only pre-split patterns a tokenizer compiles, by name (or their exact string). A
# saved tokenizer (e.g. inside a checkpoint) is untrusted input, and some regexes take
# exponential time on some texts (``(a|aa)+$``), so no other regex is ever compiled.
PATTERNS = {"words": SPLIT_PATTERN}


def _known_pattern(pattern) -> str | None:
    if pattern is None or (isinstance(pattern, str) and pattern in PATTERNS.values()):
        return pattern
    if isinstance(pattern, str) and pattern in PATTERNS:
        return PATTERNS[pattern]
    raise ValueError(f"pattern must be None, a name in {sorted(PATTERNS)} or its exact "
                     f"regex, got {pattern!r:.60}; other regexes are refused (they may "
                     "come from an untrusted file and can take exponential time)")


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


def _check_merges(merges) -> list[tuple[int, int]]:
    if not isinstance(merges, (list, tuple)):
        raise TypeError(f"merges must be a list of (a, b) id pairs, got {type(merges).__name__}")
    out, seen = [], {}
    for r, m in enumerate(merges):
        if not (isinstance(m, (list, tuple)) and len(m) == 2 and all(
                isinstance(t, Integral) and not isinstance(t, bool) for t in m)):
            raise ValueError(f"merges[{r}] must be a pair of int ids, got {m!r:.60}")
        a, b = int(m[0]), int(m[1])
        if not (0 <= a < 256 + r and 0 <= b < 256 + r):
            raise ValueError(f"merges[{r}] = ({a}, {b}) uses an id not defined before it "
                             f"(ids 0..{255 + r} exist at that point)")
        if (a, b) in seen:
            raise ValueError(f"merges[{r}] = ({a}, {b}) repeats merges[{seen[a, b]}]")
        seen[a, b] = r
        out.append((a, b))
    return out


class BytePairTokenizer:
    """Byte-level BPE. Ids 0..255 are the bytes; id ``256 + r`` is the r-th merge.

    ``merges[r] = (a, b)`` means "the pair of ids a, b becomes 256 + r". Encoding applies
    merges in the order they were learned, so training and encoding agree. ``pattern``:
    how text is pre-split into chunks that merges never cross (a name in ``PATTERNS`` or
    None for no split).
    """

    def __init__(self, merges: Sequence[Sequence[int]] = (), pattern: str | None = "words"):
        self.pattern = _known_pattern(pattern)
        self._regex = re.compile(self.pattern) if self.pattern else None
        self.merges: list[tuple[int, int]] = _check_merges(merges)
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]  # id -> its bytes
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._rank = {p: r for r, p in enumerate(self.merges)}
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.merges)

    def _chunks(self, text: str) -> list[str]:
        return self._regex.findall(text) if self._regex else [text]

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> BytePairTokenizer:
        """Learn ``vocab_size - 256`` merges from ``text`` (stops early if no pair repeats).

        Ties between equally frequent pairs go to the smallest ``(a, b)``, so training is
        deterministic. Pair counts are updated incrementally: after a merge only the chunks
        containing the merged pair are re-counted.
        """
        _check_text(text, utf8=True)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
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
        """Merge the pair learned earliest first, all its occurrences left to right, until
        no learned pair is left. A heap of (rank, position) over a linked list of tokens
        finds the next merge in O(log L), so a chunk of L bytes costs O(L log L)."""
        ids, rank = list(chunk.encode("utf-8")), self._rank
        n = len(ids)
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))  # neighbours of each token
        heap = [(rank[p], i) for i, p in enumerate(zip(ids, ids[1:])) if p in rank]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            if ids[i] is None or j >= n or rank.get((ids[i], ids[j])) != r:
                continue  # stale: a neighbour was merged since this entry was pushed
            ids[i], ids[j], nxt[i] = 256 + r, None, nxt[j]  # token j joins token i
            if nxt[i] < n:
                prv[nxt[i]] = i
            for a in (prv[i], i):  # the new token's pairs with its two neighbours
                if a >= 0 and nxt[a] < n and (ids[a], ids[nxt[a]]) in rank:
                    heapq.heappush(heap, (rank[ids[a], ids[nxt[a]]], a))
        return [t for t in ids if t is not None]

    def encode(self, text: str) -> list[int]:
        """``text`` -> list of ids. Short chunks are cached: a text repeats its words."""
        _check_text(text, utf8=True)
        out: list[int] = []
        cache = self._cache
        for chunk in self._chunks(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(chunk) <= 32 and len(cache) < 200_000:
                    cache[chunk] = ids
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
    def from_dict(cls, d: dict) -> BytePairTokenizer:
        """Rebuild from :meth:`to_dict`; only known patterns and well-formed merges pass."""
        _check_dict(d, "bpe", "BytePairTokenizer", ("merges",))
        return cls(d["merges"], pattern=d.get("pattern", SPLIT_PATTERN))

    def __repr__(self) -> str:
        return f"BytePairTokenizer(vocab_size={self.vocab_size})"
