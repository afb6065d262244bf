"""Build step of the Playground page: the shipped character GPT as ONNX, for the browser.

Writes into site_static/playground/model/ (served as _static/playground/model/):

- ``shakespeare_char_gpt.onnx``: :func:`lmcore.export.to_onnx` of
  ``assets/models/shakespeare_char_gpt.pt`` (idx -> next-token logits, attention weights);
- ``shakespeare_char_gpt.json``: the character vocabulary, the config, the window rule of
  :func:`lmcore.generate.generate` (``keep``), the SHA-256 of the checkpoint and of the
  .onnx, and reference values computed by lmcore for a few prompts: next-character
  probabilities (through ``generate``'s own window), sampling distributions
  (``lmcore.sampling.next_token_probs``) and one attention map. The browser test compares
  the page with them.

The .onnx is made from the checkpoint at build time (not shipped), so it cannot drift from
it.

    python tools/export_playground.py [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmcore.checkpoint import load_model
from lmcore.export import to_onnx
from lmcore.generate import generate
from lmcore.sampling import next_token_probs
from lmcore.tokenize import CharTokenizer

CHECKPOINT = ROOT / "assets" / "models" / "shakespeare_char_gpt.pt"
OUT = ROOT / "site_static" / "playground" / "model"
NAME = "shakespeare_char_gpt"
PROMPTS = [  # short, typical, exactly the window, longer than the window (slides)
    "a",
    "ROMEO:\nWhat light",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:",
    ("KING RICHARD II:\nNo matter where; of comfort no man speak: Let's talk of graves,"
     " of worms, and epitaphs;"),
]
SAMPLING = [  # (prompt, temperature, top_k, top_p): the filters in lmcore.sampling's order
    ("ROMEO:\nWhat light", 0.7, None, None),
    ("ROMEO:\nWhat light", 1.3, 5, None),
    ("ROMEO:\nWhat light", 1.0, None, 0.9),
    ("ROMEO:\nWhat light", 0.8, 10, 0.5),
    ("ROMEO:\nWhat light", 1.0, 3, 1.0),
]
ATTENTION_PROMPT = "To be, or not"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def window_probs(model, ids: list[int]) -> tuple[list[float], int]:
    """The next-token distribution generate() samples from (temperature 1), and the first
    position the model sees (its window rule: past block_size, the last keep tokens)."""
    V = model.config.vocab_size
    _, steps = generate(model, ids, 1, greedy=True, return_steps=True, n_candidates=V)
    probs = torch.zeros(V, dtype=torch.float64)
    probs[steps[0].top_ids[0]] = steps[0].top_probs[0].double()
    return probs.tolist(), steps[0].window_start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model, extra = load_model(CHECKPOINT)
    tok = CharTokenizer.from_dict(extra["tokenizer"])
    c = model.config
    onnx_path = to_onnx(model, args.out / f"{NAME}.onnx")

    references = []
    for text in PROMPTS:
        probs, start = window_probs(model, tok.encode(text))
        references.append({"text": text, "window_start": start, "probs": probs})
    sampling = []
    with torch.no_grad():
        for text, tau, k, p in SAMPLING:
            ids = torch.tensor([tok.encode(text)])
            logits = model(ids).logits[:, -1]
            probs = next_token_probs(logits, temperature=tau, top_k=k, top_p=p)[0]
            sampling.append({"text": text, "temperature": tau, "top_k": k, "top_p": p,
                             "probs": probs.double().tolist()})
        ids = torch.tensor([tok.encode(ATTENTION_PROMPT)])
        weights = torch.stack(model(ids, need_weights=True).attentions)[:, 0]  # (L, H, T, T)
    meta = {
        "name": NAME,
        "onnx": onnx_path.name,
        "onnx_sha256": sha256(onnx_path),
        "checkpoint": CHECKPOINT.relative_to(ROOT).as_posix(),
        "checkpoint_sha256": sha256(CHECKPOINT),
        "chars": tok.itos,
        "config": {k: getattr(c, k) for k in ("vocab_size", "block_size", "n_layer",
                                              "n_head", "n_embd")},
        "keep": c.block_size // 2,  # lmcore.generate.generate's default window rule
        "val_loss": float(extra.get("val_loss", float("nan"))),
        "references": references,
        "sampling": sampling,
        "attention": {"text": ATTENTION_PROMPT, "weights": weights.double().tolist()},
    }
    tmp = args.out / f".{NAME}.json.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, args.out / f"{NAME}.json")
    size = onnx_path.stat().st_size
    print(f"wrote {onnx_path} ({size:,} bytes) and {NAME}.json into {args.out}")


if __name__ == "__main__":
    main()
