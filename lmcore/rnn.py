"""Recurrent networks from scratch: RNN, LSTM and GRU cells and the layers that unroll them.

Parameters are laid out exactly as in ``torch.nn``: ``weight_ih`` is ``(gates*H, I)``,
``weight_hh`` is ``(gates*H, H)``, ``bias_ih`` and ``bias_hh`` are ``(gates*H,)``, with the
gates stacked in torch's order (LSTM: i, f, g, o; GRU: r, z, n). So ``from_torch`` is a copy
and the tests can demand equal outputs and gradients.

Speed: the input part ``x_t @ W_ih^T + b`` does not depend on the previous state, so the
layers compute it for all time steps in one matmul and loop over time only for ``h @ W_hh^T``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GATE_NAMES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _check_size(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class _Cell(nn.Module):
    """Shared parameters of one recurrent cell (one layer, one time step)."""

    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = GATES[self.kind] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(g)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(g)) if bias else None
        bound = 1.0 / math.sqrt(hidden_size)  # torch's default: U(-1/sqrt(H), 1/sqrt(H))
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., I) -> (..., gates*H). For RNN/LSTM both biases are folded in here."""
        if not self.bias:
            return F.linear(x, self.weight_ih)
        b = self.bias_ih if self.kind == "gru" else self.bias_ih + self.bias_hh
        return F.linear(x, self.weight_ih, b)

    def forward(self, x, h=None):
        """x: (batch, I) or (I,); h: same shape with H features, zeros if None -> h'.
        (LSTMCell overrides this: its state is a pair.)"""
        self._check(x, {"h": h})
        h = x.new_zeros(*x.shape[:-1], self.hidden_size) if h is None else h
        squeeze = x.dim() == 1
        x, h = (x[None], h[None]) if squeeze else (x, h)
        out = self.step(self.project_input(x), h)[0]
        return out[0] if squeeze else out

    def _check(self, x: torch.Tensor, states: dict) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"input must have shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(x.shape)}"
            )
        want = (*x.shape[:-1], self.hidden_size)
        for name, s in states.items():
            if s is not None and tuple(s.shape) != want:
                raise ValueError(f"{name} must have shape {want}, got {tuple(s.shape)}")


class RNNCell(_Cell):
    """Elman cell: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)  (or relu).

    x: (batch, I), h: (batch, H) -> h': (batch, H).
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def step(self, gi, h):
        """gi: (batch, H) precomputed input projection; h: (batch, H) -> (h', {})."""
        pre = torch.addmm(gi, h, self.weight_hh.t())
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)), {}



class LSTMCell(_Cell):
    """LSTM cell with torch's gate order i, f, g, o (input, forget, candidate, output).

        [i, f, g, o] = W_ih x + b_ih + W_hh h + b_hh
        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    x: (batch, I), state (h, c) each (batch, H) -> (h', c').
    """

    kind = "lstm"

    def step(self, gi, h, c):
        """gi: (batch, 4H) precomputed input projection -> (h', c', gates)."""
        pre = torch.addmm(gi, h, self.weight_hh.t())
        H = self.hidden_size
        s = torch.sigmoid(pre)  # one call for all gates; the g slice of s is simply unused
        i, f, o = s[:, :H], s[:, H : 2 * H], s[:, 3 * H :]
        g = torch.tanh(pre[:, 2 * H : 3 * H])
        c = torch.addcmul(f * c, i, g)
        h = o * torch.tanh(c)
        return h, c, {"i": i, "f": f, "g": g, "o": o, "c": c}

    def forward(self, x, state=None):
        h, c = (None, None) if state is None else state
        self._check(x, {"h": h, "c": c})
        zeros = x.new_zeros(*x.shape[:-1], self.hidden_size)
        h = zeros if h is None else h
        c = zeros if c is None else c
        squeeze = x.dim() == 1
        if squeeze:
            x, h, c = x[None], h[None], c[None]
        h, c, _ = self.step(self.project_input(x), h, c)
        return (h[0], c[0]) if squeeze else (h, c)


class GRUCell(_Cell):
    """GRU cell with torch's gate order r, z, n (reset, update, new):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    x: (batch, I), h: (batch, H) -> h': (batch, H).
    """

    kind = "gru"

    def step(self, gi, h):
        """gi: (batch, 3H) precomputed input projection (with b_ih) -> (h', gates)."""
        H = self.hidden_size
        gh = h @ self.weight_hh.t() if self.bias_hh is None else torch.addmm(self.bias_hh, h, self.weight_hh.t())
        rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = n + z * (h - n)  # = (1 - z) * n + z * h, one op fewer
        return h, {"r": r, "z": z, "n": n}



CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class _Recurrent(nn.Module):
    """A stack of cells unrolled over time, with torch.nn.RNN/LSTM/GRU's interface.

    input: (batch, seq, I) if batch_first else (seq, batch, I); or (seq, I) unbatched.
    state: (num_layers, batch, H) (LSTM: a pair (h_0, c_0)); or (num_layers, H) unbatched.
    Returns (output, h_n) / (output, (h_n, c_n)) with output (batch, seq, H) if batch_first.
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, **cell_kw):
        super().__init__()
        _check_size("num_layers", num_layers)
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.bias = batch_first, bias
        cell = CELLS[self.kind]
        self.cells = nn.ModuleList(
            cell(input_size if k == 0 else hidden_size, hidden_size, bias, **cell_kw)
            for k in range(num_layers)
        )

    def _layout(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        names = "(batch, seq, input_size)" if self.batch_first else "(seq, batch, input_size)"
        if x.dim() not in (2, 3):
            raise ValueError(
                f"input must be 3-D {names} with batch_first={self.batch_first}, or 2-D "
                f"(seq, input_size) unbatched; got {x.dim()}-D shape {tuple(x.shape)}"
            )
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input's last dimension must be input_size={self.input_size}, got shape {tuple(x.shape)}"
            )
        unbatched = x.dim() == 2
        x = x[:, None] if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if x.shape[0] == 0:
            raise ValueError(f"input has an empty sequence: shape {tuple(x.shape)}")
        return x, unbatched  # x is now time-major: (seq, batch, I)

    def _state(self, s, name, x_tm, unbatched):
        L, B, H = self.num_layers, x_tm.shape[1], self.hidden_size
        if s is None:
            return x_tm.new_zeros(L, B, H)
        want = (L, H) if unbatched else (L, B, H)
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != want:
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            hint = ""
            if not unbatched and isinstance(s, torch.Tensor) and s.dim() == 3 and s.shape[1] == x_tm.shape[0]:
                hint = (f" (its batch size matches the input's sequence length: is batch_first="
                        f"{self.batch_first} the layout of your input?)")
            raise ValueError(f"{name} must have shape (num_layers, batch, hidden_size) = {want}, got {got}{hint}")
        return s[:, None] if unbatched else s

    def forward(self, input, hx=None, return_gates=False):
        """See the class docstring. ``return_gates=True`` also returns a list (one per layer)
        of dicts of gate activations, each (batch, seq, H) in the output's layout."""
        x, unbatched = self._layout(input)
        if self.kind == "lstm":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise ValueError("hx of an LSTM must be a pair (h_0, c_0), each (num_layers, batch, hidden_size)")
            h0, c0 = (None, None) if hx is None else hx
            h0, c0 = self._state(h0, "h_0", x, unbatched), self._state(c0, "c_0", x, unbatched)
        else:
            h0 = self._state(hx, "h_0", x, unbatched)
        h_n, c_n, all_gates = [], [], []
        for k, cell in enumerate(self.cells):
            gi = cell.project_input(x).unbind(0)  # all time steps at once: seq x (batch, G*H)
            h, outs, trace = h0[k], [], []
            c = c0[k] if self.kind == "lstm" else None
            for t in range(len(gi)):
                if self.kind == "lstm":
                    h, c, gates = cell.step(gi[t], h, c)
                else:
                    h, gates = cell.step(gi[t], h)
                outs.append(h)
                if return_gates:
                    trace.append(gates)
            x = torch.stack(outs)  # (seq, batch, H): the next layer's input
            h_n.append(h)
            c_n.append(c)
            if return_gates:
                all_gates.append({n: self._out(torch.stack([g[n] for g in trace]), unbatched)
                                  for n in (trace[0] if trace else {})})
        h_n = torch.stack(h_n)
        state = h_n[:, 0] if unbatched else h_n
        if self.kind == "lstm":
            c_n = torch.stack(c_n)
            state = (state, c_n[:, 0] if unbatched else c_n)
        out = self._out(x, unbatched)
        return (out, state, all_gates) if return_gates else (out, state)

    def _out(self, y, unbatched):
        return y[:, 0] if unbatched else (y.transpose(0, 1) if self.batch_first else y)

    @classmethod
    def from_torch(cls, module: nn.Module):
        """Copy the weights of a ``torch.nn.RNN/LSTM/GRU`` (any num_layers) into a new layer."""
        expected = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cls.kind]
        if type(module) is not expected:
            raise TypeError(f"module must be a torch.nn.{expected.__name__}, got {type(module).__name__}")
        if module.bidirectional or getattr(module, "proj_size", 0):
            raise ValueError("module must be unidirectional without proj_size: those are not implemented here")
        kw = {"nonlinearity": module.nonlinearity} if cls.kind == "rnn" else {}
        new = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first, **kw)
        new = new.to(dtype=module.weight_ih_l0.dtype, device=module.weight_ih_l0.device)
        with torch.no_grad():
            for k, cell in enumerate(new.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if getattr(cell, name) is not None:
                        getattr(cell, name).copy_(getattr(module, f"{name}_l{k}"))
        return new


class RNN(_Recurrent):
    """Elman RNN layer (tanh or relu), interface of ``torch.nn.RNN``; see :class:`_Recurrent`."""

    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, nonlinearity="tanh"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, nonlinearity=nonlinearity)


class LSTM(_Recurrent):
    """LSTM layer, interface of ``torch.nn.LSTM``; returns (output, (h_n, c_n))."""

    kind = "lstm"


class GRU(_Recurrent):
    """GRU layer, interface of ``torch.nn.GRU``; returns (output, h_n)."""

    kind = "gru"


class CharLM(nn.Module):
    """Character language model: embedding -> recurrent layers -> linear head to the vocab.

    ``impl="torch"`` uses torch.nn.LSTM/GRU/RNN (fused kernels, cuDNN on a GPU) and
    ``impl="scratch"`` the layers above; ``CharLM.to_scratch()`` copies a torch one across.
    ids: (batch, seq) int64 -> logits (batch, seq, vocab_size), state.
    """

    def __init__(self, vocab_size, emb=48, hidden=128, num_layers=1, cell="lstm", impl="torch", dropout=0.0):
        super().__init__()
        if cell not in GATES or impl not in ("torch", "scratch"):
            raise ValueError(f"cell must be one of {list(GATES)} and impl 'torch' or 'scratch', got {cell!r}, {impl!r}")
        _check_size("vocab_size", vocab_size)
        self.config = dict(vocab_size=vocab_size, emb=emb, hidden=hidden, num_layers=num_layers, cell=cell)
        self.embed = nn.Embedding(vocab_size, emb)
        layer = {"torch": {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU},
                 "scratch": {"rnn": RNN, "lstm": LSTM, "gru": GRU}}[impl][cell]
        self.rnn = layer(emb, hidden, num_layers=num_layers, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids, state=None):
        out, state = self.rnn(self.embed(ids), state)
        return self.head(self.drop(out)), state

    def to_scratch(self) -> "CharLM":
        """The same model (same weights, same outputs) with this module's scratch layers."""
        if isinstance(self.rnn, _Recurrent):
            return self
        new = CharLM(**self.config, impl="scratch").to(self.head.weight.device)
        new.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("rnn.")}, strict=False)
        new.rnn = new.rnn.from_torch(self.rnn).to(self.head.weight.device)
        return new.eval()

    @torch.no_grad()
    def sample(self, prompt_ids, n, temperature=1.0, generator=None):
        """Continue ``prompt_ids`` (list of ints) by ``n`` sampled ids, carrying the state."""
        from .generate import sample_next

        device = self.head.weight.device
        logits, state = self(torch.tensor([prompt_ids], device=device))
        out = []
        for _ in range(n):
            nxt = sample_next(logits[:, -1].float().cpu(), temperature=temperature, generator=generator)
            out.append(int(nxt))
            logits, state = self(nxt.view(1, 1).to(device), state)
        return out
