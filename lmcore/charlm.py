"""A character language model: embedding -> recurrent layers -> a linear head to the vocab.

The recurrent layers come from ``torch.nn`` (fused kernels, cuDNN on a GPU) or from
``lmcore.rnn`` (the from-scratch layers chapter 3 builds); both give the same outputs.
"""
from __future__ import annotations

import torch
from torch import nn

from .rnn import GATES, GRU, LSTM, RNN, _check_size, _Recurrent


class CharLM(nn.Module):
    """Character language model: embedding -> recurrent layers -> linear head to the vocab.

    ``impl="torch"`` uses torch.nn.LSTM/GRU/RNN (fused kernels, cuDNN on a GPU) and
    ``impl="scratch"`` the layers above; ``CharLM.to_scratch()`` copies a torch one across.
    ids: (batch, seq) int64 -> logits (batch, seq, vocab_size), state.
    """

    def __init__(self, vocab_size, emb=48, hidden=128, num_layers=1, cell="lstm",
                 impl="torch", dropout=0.0):
        super().__init__()
        if cell not in GATES or impl not in ("torch", "scratch"):
            raise ValueError(f"cell must be one of {list(GATES)} and impl 'torch' or "
                             f"'scratch', got cell={cell!r}, impl={impl!r}")
        for name, v in (("vocab_size", vocab_size), ("emb", emb), ("hidden", hidden),
                        ("num_layers", num_layers)):
            _check_size(name, v)
        self.config = {"vocab_size": vocab_size, "emb": emb, "hidden": hidden,
                       "num_layers": num_layers, "cell": cell}
        self.embed = nn.Embedding(vocab_size, emb)
        layer = {"torch": {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU},
                 "scratch": {"rnn": RNN, "lstm": LSTM, "gru": GRU}}[impl][cell]
        self.rnn = layer(emb, hidden, num_layers=num_layers, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):
        """ids: (batch, seq) token ids -> logits (batch, seq, vocab_size), new state."""
        self._check_ids(ids)
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state

    def _check_ids(self, ids) -> None:
        V = self.config["vocab_size"]
        if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
            got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise TypeError(f"ids must be an int64 tensor (batch, seq) of token ids, got {got}")
        if ids.dim() != 2 or ids.numel() == 0:
            raise ValueError(f"ids must have shape (batch, seq) with seq >= 1, "
                             f"got {tuple(ids.shape)}")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"ids must be in 0..{V - 1} (vocab_size={V}), "
                             f"got values from {lo} to {hi}")

    def to_scratch(self) -> CharLM:
        """The same model (same weights, same outputs) with this module's scratch layers."""
        if isinstance(self.rnn, _Recurrent):
            return self
        new = CharLM(**self.config, impl="scratch").to(self.head.weight.device)
        new.load_state_dict({k: v for k, v in self.state_dict().items()
                             if not k.startswith("rnn.")}, strict=False)
        new.rnn = new.rnn.from_torch(self.rnn).to(self.head.weight.device)
        return new.eval()

    @torch.no_grad()
    def sample(self, prompt_ids, n, temperature=1.0, generator=None):
        """Continue ``prompt_ids`` (a non-empty list of ids) by ``n`` sampled ids, carrying
        the state. Samples on the generator's device (the model's if generator is None)."""
        from .generate import sample_next

        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0 (how many ids to sample), got {n!r}")
        if isinstance(prompt_ids, torch.Tensor):
            prompt_ids = prompt_ids.tolist()
        if not isinstance(prompt_ids, (list, tuple)) or not prompt_ids or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in prompt_ids):
            raise ValueError(f"prompt_ids must be a non-empty list of int ids, "
                             f"got {prompt_ids!r:.80}")
        device = self.head.weight.device
        where = device if generator is None else generator.device
        logits, state = self(torch.tensor([prompt_ids], device=device))
        out = []
        for _ in range(n):
            nxt = sample_next(logits[:, -1].float().to(where), temperature=temperature,
                              generator=generator)
            out.append(int(nxt))
            logits, state = self(nxt.view(1, 1).to(device), state)
        return out
