"""Recurrent networks from scratch: RNN, LSTM and GRU cells and the layers that unroll them.

Parameters are laid out exactly as in ``torch.nn``: ``weight_ih`` is ``(gates*H, I)``,
``weight_hh`` is ``(gates*H, H)``, ``bias_ih`` and ``bias_hh`` are ``(gates*H,)``, with the
gates stacked in torch's order (LSTM: i, f, g, o; GRU: r, z, n). The layers take torch's
arguments with torch's defaults and meaning (``batch_first=False``, ``dropout`` between
layers), so ``from_torch`` is a copy and the tests can demand equal outputs and gradients.

Speed: the input part ``x_t @ W_ih^T + b`` does not depend on the previous state, so the
layers compute it for all time steps in one matmul and loop over time only for ``h @ W_hh^T``.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check_size(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_like(name: str, x, weight: torch.Tensor) -> None:
    """``x`` must be a float tensor with the weights' dtype and device."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != weight.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the weights are {weight.dtype}; "
                        f"convert it with .to({weight.dtype}) (or the layer with .to(dtype))")
    if x.device != weight.device:
        raise ValueError(f"{name} is on {x.device} but the weights are on {weight.device}; "
                         "move one of them with .to(device)")


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

    def forward(self, x, hx=None):
        """x: (batch, I) or (I,); hx: same shape with H features (zeros if None) -> h'.
        LSTMCell takes and returns a pair (h, c)."""
        states = self._check(x, hx)
        squeeze = x.dim() == 1
        if squeeze:
            x, states = x[None], [s[None] for s in states]
        out = self.step(self.project_input(x), *states)
        out = out[:2] if self.kind == "lstm" else out[:1]
        out = tuple(s[0] for s in out) if squeeze else out
        return out if self.kind == "lstm" else out[0]

    def _check(self, x, hx) -> list:
        _check_like("input", x, self.weight_ih)
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"input must have shape (batch, {self.input_size}) or "
                             f"({self.input_size},), got {tuple(x.shape)}")
        names = ("h", "c") if self.kind == "lstm" else ("h",)
        if self.kind == "lstm" and hx is not None and not (isinstance(hx, (tuple, list))
                                                           and len(hx) == 2):
            raise ValueError("hx of an LSTMCell must be a pair (h, c) or None")
        hx = (None,) * len(names) if hx is None else (hx if self.kind == "lstm" else (hx,))
        want, states = (*x.shape[:-1], self.hidden_size), []
        for name, s in zip(names, hx):
            if s is not None:
                _check_like(name, s, self.weight_ih)
                if tuple(s.shape) != want:
                    raise ValueError(f"{name} must have shape {want}, got {tuple(s.shape)}")
            states.append(x.new_zeros(want) if s is None else s)
        return states


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
        gh = F.linear(h, self.weight_hh, self.bias_hh)  # b_hn stays inside r * (...)
        rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
        r, z = rz[:, :H], rz[:, H:]
        n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
        h = n + z * (h - n)  # = (1 - z) * n + z * h, one op fewer
        return h, {"r": r, "z": z, "n": n}


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class _Recurrent(nn.Module):
    """A stack of cells unrolled over time, with torch.nn.RNN/LSTM/GRU's interface.

    input: (seq, batch, I), or (batch, seq, I) if batch_first; or (seq, I) unbatched.
    state: (num_layers, batch, H) (LSTM: a pair (h_0, c_0)); or (num_layers, H) unbatched.
    Returns (output, h_n) / (output, (h_n, c_n)) with output in the input's layout.
    dropout: probability of zeroing each output of every layer but the last, in training.
    """

    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, **cell_kw):
        super().__init__()
        for name, v in (("num_layers", num_layers), ("input_size", input_size),
                        ("hidden_size", hidden_size)):
            _check_size(name, v)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between layers only (as in torch.nn): "
                          "with num_layers=1 it does nothing", stacklevel=2)
        if bidirectional or proj_size:
            raise ValueError(f"bidirectional={bidirectional!r}, proj_size={proj_size!r}: "
                             "lmcore.rnn reads one direction without projection; expected "
                             "bidirectional=False and proj_size=0 (use torch.nn for those)")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.batch_first, self.bias, self.dropout = batch_first, bias, float(dropout)
        self.cells = nn.ModuleList(
            CELLS[self.kind](input_size if k == 0 else hidden_size, hidden_size, bias, **cell_kw)
            for k in range(num_layers)
        )

    def forward(self, input, hx=None, return_gates=False):
        """See the class docstring. ``return_gates=True`` also returns a list (one per layer)
        of dicts of gate activations, each (batch, seq, H) in the output's layout."""
        x, h0, c0, unbatched = self._prepare(input, hx)  # x: (seq, batch, I)
        h_n, c_n, all_gates = [], [], []
        for k, cell in enumerate(self.cells):
            if k > 0 and self.training and self.dropout > 0:  # between layers, like torch
                x = F.dropout(x, self.dropout)
            gi = cell.project_input(x).unbind(0)  # all time steps at once: seq x (batch, G*H)
            h, c, outs, trace = h0[k], c0[k], [], []
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
                                  for n in trace[0]})
        state = self._out(torch.stack(h_n), unbatched, time_major=False)
        if self.kind == "lstm":
            state = (state, self._out(torch.stack(c_n), unbatched, time_major=False))
        out = self._out(x, unbatched)
        return (out, state, all_gates) if return_gates else (out, state)

    def _out(self, y, unbatched, time_major=True):
        if unbatched:
            return y[:, 0]
        return y.transpose(0, 1) if self.batch_first and time_major else y

    def _prepare(self, x, hx):
        """Check input and state; return time-major x, per-layer h_0 and c_0, unbatched."""
        _check_like("input", x, self.cells[0].weight_ih)
        layout = "(batch, seq, input_size)" if self.batch_first else "(seq, batch, input_size)"
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            raise ValueError(f"input must be 3-D {layout} with batch_first={self.batch_first}"
                             f", or 2-D (seq, input_size) unbatched, with input_size="
                             f"{self.input_size}; got shape {tuple(x.shape)}")
        unbatched = x.dim() == 2
        x = x[:, None] if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        if x.shape[0] == 0:
            raise ValueError(f"input has an empty sequence: shape {tuple(x.shape)}")
        if self.kind == "lstm":
            if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise ValueError("hx of an LSTM must be a pair (h_0, c_0), each "
                                 "(num_layers, batch, hidden_size), or None")
            h0, c0 = (None, None) if hx is None else hx
            return x, self._state(h0, "h_0", x, unbatched), self._state(c0, "c_0", x,
                                                                           unbatched), unbatched
        return x, self._state(hx, "h_0", x, unbatched), [None] * self.num_layers, unbatched

    def _state(self, s, name, x_tm, unbatched):
        L, B, H = self.num_layers, x_tm.shape[1], self.hidden_size
        if s is None:
            return x_tm.new_zeros(L, B, H)
        want = (L, H) if unbatched else (L, B, H)
        if isinstance(s, torch.Tensor) and tuple(s.shape) != want:
            hint = ""
            if s.dim() == 3 and s.shape[1] == x_tm.shape[0] and not unbatched:
                hint = (f" (its batch size matches the input's sequence length: is "
                        f"batch_first={self.batch_first} the layout of your input?)")
            raise ValueError(f"{name} must have shape (num_layers, batch, hidden_size) = "
                             f"{want}, got {tuple(s.shape)}{hint}")
        _check_like(name, s, self.cells[0].weight_ih)
        return s[:, None] if unbatched else s

    @classmethod
    def from_torch(cls, module: nn.Module):
        """A new layer with the weights and settings of a ``torch.nn.RNN/LSTM/GRU``."""
        expected = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cls.kind]
        if type(module) is not expected:
            raise TypeError(f"module must be a torch.nn.{expected.__name__}, "
                            f"got {type(module).__name__}")
        kw = {"nonlinearity": module.nonlinearity} if cls.kind == "rnn" else {}
        new = cls(module.input_size, module.hidden_size, module.num_layers, bias=module.bias,
                  batch_first=module.batch_first, dropout=module.dropout,
                  bidirectional=module.bidirectional, **kw,
                  **({"proj_size": module.proj_size} if cls.kind == "lstm" else {}))
        new = new.to(dtype=module.weight_ih_l0.dtype, device=module.weight_ih_l0.device)
        with torch.no_grad():
            for k, cell in enumerate(new.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    if getattr(cell, name) is not None:
                        getattr(cell, name).copy_(getattr(module, f"{name}_l{k}"))
        return new.train(module.training)


class RNN(_Recurrent):
    """Elman RNN layer (tanh or relu), interface of ``torch.nn.RNN``; see :class:`_Recurrent`."""

    kind = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, nonlinearity=nonlinearity)


class LSTM(_Recurrent):
    """LSTM layer, interface of ``torch.nn.LSTM``; returns (output, (h_n, c_n))."""

    kind = "lstm"


class GRU(_Recurrent):
    """GRU layer, interface of ``torch.nn.GRU``; returns (output, h_n)."""

    kind = "gru"
