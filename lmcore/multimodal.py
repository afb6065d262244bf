"""A question meets an image: an honest visual-question task, two fusions.

``DigitQA`` asks questions in words about a digit image ("is it even ?", "is
it greater than five ?", "what is it plus two ?") and computes every answer
from the true label. ``LateFusion`` concatenates one image vector with one
question vector; ``CrossAttentionFusion`` lets every question word attend to
the image patches, the way a decoder reads an encoder (Vaswani et al. 2017)
and Flamingo reads image features (Alayrac et al. 2022).
Shapes: B batch, L image patches, T question words, E = n_embd.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import LayerNorm, check_ids, check_int
from .vision import AttentionBlock

# ---------------------------------------------------------------- questions
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                "eight", "nine")


class DigitQA:
    """Questions about digit images, answers computed from the true label.

    Three question types: parity ("is it even ?", "is it odd ?"), comparison
    ("is it greater than five ?", "is it less than two ?") and addition ("what
    is it plus three ?"). Questions are word ids, padded with 0 to max_len;
    answers index ``answers``: "no", "yes", "0", ..., "18".
    """

    words = ("<pad>", "is", "it", "even", "odd", "greater", "less", "than",
             "what", "plus", "?", *NUMBER_WORDS)
    answers = ("no", "yes", *(str(k) for k in range(19)))
    types = ("parity", "compare", "add")
    max_len = 6

    @staticmethod
    def answer(question: str, digit: int) -> str:
        """The rule, in plain Python: what the model has to learn."""
        if question not in ALL_QUESTIONS or digit not in range(10):
            raise ValueError(f"question={question!r}, digit={digit!r}; "
                             f"expected one of the {len(ALL_QUESTIONS)} "
                             "questions of DigitQA and a digit 0-9")
        w = question.split()
        if w[2] in ("even", "odd"):
            return "yes" if (digit % 2 == 0) == (w[2] == "even") else "no"
        n = NUMBER_WORDS.index(w[-2])
        if w[2] == "greater":
            return "yes" if digit > n else "no"
        if w[2] == "less":
            return "yes" if digit < n else "no"
        return str(digit + n)                      # "what is it plus n ?"

    def encode(self, question: str) -> list[int]:
        """Word ids, padded with 0 to ``max_len``."""
        unknown = [w for w in question.split() if w not in self.words]
        if unknown or not 0 < len(question.split()) <= self.max_len:
            raise ValueError(f"question={question!r}: expected 1 to "
                             f"{self.max_len} words from DigitQA.words "
                             f"(unknown: {unknown})")
        ids = [self.words.index(w) for w in question.split()]
        return ids + [0] * (self.max_len - len(ids))

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in ids if i != 0)

    @staticmethod
    def question(kind: int, flip: int, n: int) -> str:
        """The question of type ``kind`` (0 parity, 1 compare, 2 add), variant
        ``flip`` (even/odd, greater/less) and number ``n``."""
        if kind == 0:
            return ("is it even ?", "is it odd ?")[flip]
        if kind == 1:
            return f"is it {('greater', 'less')[flip]} than {NUMBER_WORDS[n]} ?"
        return f"what is it plus {NUMBER_WORDS[n]} ?"

    def sample(self, labels, per_image: int, generator: torch.Generator,
               kind=None):
        """``per_image`` random questions about each image.

        labels: (N,) digits 0-9. kind: None draws each question's type
        uniformly; 0, 1 or 2 fixes it. generator: a CPU ``torch.Generator``.
        Returns image index (M,), question ids (M, max_len), answer ids (M,)
        and type ids (M,), with M = N * per_image, on the CPU.
        """
        labels = torch.as_tensor(labels).cpu()
        check_int("per_image", per_image)
        if labels.dim() != 1 or labels.is_floating_point() or len(labels) == 0 \
                or bool(((labels < 0) | (labels > 9)).any()):
            raise ValueError(f"labels must be a non-empty 1-D integer tensor "
                             f"of digits 0-9, got {labels.dtype} "
                             f"{tuple(labels.shape)}")
        if kind not in (None, 0, 1, 2):
            raise ValueError(f"kind={kind!r}; expected None, 0 (parity), "
                             "1 (compare) or 2 (add)")
        m = len(labels) * per_image
        image = torch.arange(len(labels)).repeat_interleave(per_image)
        kinds = (torch.randint(3, (m,), generator=generator) if kind is None
                 else torch.full((m,), kind))
        flip = torch.randint(2, (m,), generator=generator)
        num = torch.randint(10, (m,), generator=generator)
        texts = [self.question(*v)
                 for v in zip(kinds.tolist(), flip.tolist(), num.tolist())]
        questions = torch.tensor([self.encode(t) for t in texts])
        digits = labels[image].tolist()
        answers = torch.tensor([self.answers.index(self.answer(t, d))
                                for t, d in zip(texts, digits)])
        return image, questions, answers, kinds


ALL_QUESTIONS = tuple(dict.fromkeys(
    DigitQA.question(k, f, n) for k in range(3) for f in range(2)
    for n in range(10)))


# ------------------------------------------------------------------- fusion
@dataclass
class FusionConfig:
    n_patches: int = 16        # image tokens L (e.g. a 4x4 grid of features)
    patch_dim: int = 32        # features per image token
    vocab_size: int = len(DigitQA.words)
    max_len: int = DigitQA.max_len
    n_answers: int = len(DigitQA.answers)
    n_embd: int = 64
    n_head: int = 4
    hidden: int = 256          # the answer MLP

    def __post_init__(self):
        for name in ("n_patches", "patch_dim", "vocab_size", "max_len",
                     "n_answers", "n_embd", "n_head", "hidden"):
            check_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by "
                             f"n_head={self.n_head}")


class FusionInputs(nn.Module):
    """Both inputs as E-dimensional tokens.

    patches (B, L, patch_dim) -> (B, L, E): projected, plus a learned vector
    per place, normalised. question (B, T) ids -> (B, T, E) word + position
    vectors, and the padding mask (B, T), True at padding (id 0).
    """

    def __init__(self, c: FusionConfig):
        super().__init__()
        if not isinstance(c, FusionConfig):
            raise TypeError(f"config must be a FusionConfig, "
                            f"got {type(c).__name__}")
        self.c = c
        self.patch_proj = nn.Linear(c.patch_dim, c.n_embd)
        self.patch_pos = nn.Parameter(torch.randn(c.n_patches, c.n_embd) * .02)
        self.ln = LayerNorm(c.n_embd, fused=True)
        self.words = nn.Embedding(c.vocab_size, c.n_embd)
        self.word_pos = nn.Parameter(torch.randn(c.max_len, c.n_embd) * 0.02)

    def forward(self, patches, question):
        c = self.c
        if not isinstance(patches, torch.Tensor) or patches.dim() != 3 \
                or tuple(patches.shape[1:]) != (c.n_patches, c.patch_dim):
            got = tuple(getattr(patches, "shape", ()))
            raise ValueError(f"patches must be (B, {c.n_patches}, "
                             f"{c.patch_dim}), got {got}")
        check_ids("question", question, c.vocab_size)
        if question.shape != (len(patches), c.max_len):
            raise ValueError(f"question must be (B={len(patches)}, "
                             f"{c.max_len}) word ids, got "
                             f"{tuple(question.shape)}")
        image = self.ln(self.patch_proj(patches) + self.patch_pos)
        return image, self.words(question) + self.word_pos, question == 0


def masked_mean(x, pad):
    """Mean over the non-padding words: x (B, T, E), pad (B, T) -> (B, E)."""
    keep = (~pad).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1)


def answer_mlp(n_in: int, c: FusionConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, c.hidden), nn.ReLU(),
                         nn.Linear(c.hidden, c.n_answers))


class LateFusion(nn.Module):
    """Concatenate one image vector with one question vector, then an MLP.

    The image vector: all L patch vectors side by side (L * E numbers), mapped
    to E; the question vector: the mean of its word vectors.
    patches (B, L, patch_dim), question (B, T) -> answer logits (B, n_answers).
    """

    def __init__(self, c: FusionConfig):
        super().__init__()
        self.inputs = FusionInputs(c)
        self.image_vec = nn.Linear(c.n_patches * c.n_embd, c.n_embd)
        self.mlp = answer_mlp(2 * c.n_embd, c)

    def fuse(self, image_vec, question_vec):
        return torch.cat([image_vec, question_vec], dim=-1)   # (B, 2E)

    def forward(self, patches, question):
        image, words, pad = self.inputs(patches, question)
        image_vec = self.image_vec(image.flatten(1))           # (B, E)
        return self.mlp(self.fuse(image_vec, masked_mean(words, pad)))


class CrossAttentionFusion(nn.Module):
    """Each question word attends to the image patches, then an MLP answers.

    patches (B, L, patch_dim), question (B, T) -> answer logits (B, n_answers)
    and, with need_weights, the word-to-patch weights (B, H, T, L).
    """

    def __init__(self, c: FusionConfig):
        super().__init__()
        self.inputs = FusionInputs(c)
        self.cross = AttentionBlock(c.n_embd, c.n_head)
        self.ln = LayerNorm(c.n_embd, fused=True)
        self.mlp = answer_mlp(c.n_embd, c)

    def forward(self, patches, question, need_weights=False):
        image, words, pad = self.inputs(patches, question)
        words, w = self.cross(words, memory=image, need_weights=need_weights)
        return self.mlp(masked_mean(self.ln(words), pad)), w
