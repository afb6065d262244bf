"""lmcore.rnn against torch.nn.RNN/LSTM/GRU (and their cells).

Tolerance: float32, outputs, final states and all gradients within atol = rtol = 1e-5.
Gradients are of a random linear functional of the outputs and final states, so every
output element and state gets a different weight.
"""
import pytest
import torch

from lmcore import rnn
from lmcore.charlm import CharLM

ATOL = RTOL = 1e-5
LAYERS = {"rnn": (rnn.RNN, torch.nn.RNN), "lstm": (rnn.LSTM, torch.nn.LSTM), "gru": (rnn.GRU, torch.nn.GRU)}
CELLS = {"rnn": (rnn.RNNCell, torch.nn.RNNCell), "lstm": (rnn.LSTMCell, torch.nn.LSTMCell),
         "gru": (rnn.GRUCell, torch.nn.GRUCell)}

# (kind, batch, seq, input, hidden, layers, batch_first, with_state, extra)
CASES = [
    ("lstm", 3, 5, 4, 6, 1, True, False, {}),
    ("lstm", 1, 1, 7, 3, 2, True, True, {}),        # seq 1, batch 1, hidden != input
    ("lstm", 2, 6, 5, 5, 2, False, True, {}),       # time-major layout
    ("lstm", 4, 3, 3, 8, 3, True, True, {"bias": False}),
    ("gru", 3, 5, 4, 6, 1, True, True, {}),
    ("gru", 1, 1, 6, 2, 2, False, False, {}),
    ("gru", 2, 7, 3, 9, 2, True, False, {"bias": False}),
    ("rnn", 3, 5, 4, 6, 1, True, True, {}),
    ("rnn", 1, 1, 2, 5, 2, False, True, {"nonlinearity": "relu"}),
    ("rnn", 2, 8, 5, 3, 2, True, False, {"nonlinearity": "relu"}),
]


def _loss(out, state, weights):
    flat = [out] + (list(state) if isinstance(state, tuple) else [state])
    return sum((t * w).sum() for t, w in zip(flat, weights))


@pytest.mark.parametrize("kind,B,T,I,H,L,batch_first,with_state,extra", CASES)
def test_layer_matches_torch(kind, B, T, I, H, L, batch_first, with_state, extra):
    gen = torch.Generator().manual_seed(1000 * B + 100 * T + 10 * I + H + len(kind))  # deterministic
    ours_cls, ref_cls = LAYERS[kind]
    torch.manual_seed(B * 100 + T)
    ref = ref_cls(I, H, num_layers=L, batch_first=batch_first, **extra)
    ours = ours_cls.from_torch(ref)
    shape = (B, T, I) if batch_first else (T, B, I)
    x1 = torch.randn(shape, generator=gen).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    n_state = 2 if kind == "lstm" else 1
    states1 = [torch.randn(L, B, H, generator=gen).requires_grad_() for _ in range(n_state)] if with_state else []
    states2 = [s.detach().clone().requires_grad_() for s in states1]
    pack = (lambda s: tuple(s) if kind == "lstm" else s[0]) if with_state else (lambda s: None)
    out1, st1 = ref(x1, pack(states1))
    out2, st2 = ours(x2, pack(states2))
    assert out2.shape == out1.shape
    torch.testing.assert_close(out2, out1, atol=ATOL, rtol=RTOL)
    for a, b in zip(st2 if kind == "lstm" else [st2], st1 if kind == "lstm" else [st1]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    weights = [torch.randn(out1.shape, generator=gen)] + [torch.randn(L, B, H, generator=gen) for _ in range(n_state)]
    _loss(out1, st1, weights).backward()
    _loss(out2, st2, weights).backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=ATOL, rtol=RTOL)
    for s2, s1 in zip(states2, states1):
        torch.testing.assert_close(s2.grad, s1.grad, atol=ATOL, rtol=RTOL)
    for k, cell in enumerate(ours.cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            p = getattr(cell, name)
            if p is None:
                assert not hasattr(ref, f"{name}_l{k}") or getattr(ref, f"{name}_l{k}") is None
                continue
            where = f"layer {k} {name}"
            torch.testing.assert_close(p.grad, getattr(ref, f"{name}_l{k}").grad, atol=ATOL,
                                       rtol=RTOL, msg=lambda m, where=where: f"{where}: {m}")


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_unbatched_input_matches_torch(kind):
    ours_cls, ref_cls = LAYERS[kind]
    torch.manual_seed(1)
    ref = ref_cls(3, 4, num_layers=2)
    ours = ours_cls.from_torch(ref)
    x = torch.randn(5, 3)  # (seq, input) without a batch dimension
    out1, st1 = ref(x)
    out2, st2 = ours(x)
    torch.testing.assert_close(out2, out1, atol=ATOL, rtol=RTOL)
    for a, b in zip(st2 if kind == "lstm" else [st2], st1 if kind == "lstm" else [st1]):
        assert a.shape == b.shape == (2, 4)
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_cell_matches_torch(kind):
    ours_cls, ref_cls = CELLS[kind]
    torch.manual_seed(2)
    ref = ref_cls(5, 3)
    ours = ours_cls(5, 3)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ours, name).copy_(getattr(ref, name))
    x = torch.randn(4, 5)
    state = (torch.randn(4, 3), torch.randn(4, 3)) if kind == "lstm" else torch.randn(4, 3)
    a, b = ref(x, state), ours(x, state)
    for u, v in zip(a if kind == "lstm" else [a], b if kind == "lstm" else [b]):
        torch.testing.assert_close(v, u, atol=ATOL, rtol=RTOL)


def test_lstm_gates_recompute_the_state():
    """The traced gates obey the LSTM equations, so the chapter's heatmaps show real values."""
    torch.manual_seed(3)
    model = rnn.LSTM(4, 6, batch_first=True)
    x = torch.randn(2, 5, 4)
    out, _, gates = model(x, return_gates=True)
    g = gates[0]
    assert set(g) == {"i", "f", "g", "o", "c"} and g["i"].shape == (2, 5, 6)
    c_prev = torch.zeros(2, 6)
    for t in range(5):
        c_t = g["f"][:, t] * c_prev + g["i"][:, t] * g["g"][:, t]
        torch.testing.assert_close(c_t, g["c"][:, t])
        torch.testing.assert_close(g["o"][:, t] * torch.tanh(c_t), out[:, t])
        c_prev = c_t
    assert 0 < g["f"].min() and g["f"].max() < 1


def test_gru_gates_returned():
    model = rnn.GRU(3, 4, num_layers=2, batch_first=False)
    _, _, gates = model(torch.randn(6, 2, 3), return_gates=True)
    assert len(gates) == 2 and set(gates[1]) == {"r", "z", "n"} and gates[1]["z"].shape == (6, 2, 4)


def test_bad_inputs_raise_clear_errors():
    lstm = rnn.LSTM(4, 6, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match=r"input must be 3-D \(batch, seq, input_size\)"):
        lstm(torch.randn(2, 3, 4, 1))
    with pytest.raises(ValueError, match=r"input_size=4.*got shape \(2, 3, 5\)"):
        lstm(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"h_0 must have shape .* = \(2, 2, 6\), got \(1, 2, 6\)"):
        lstm(torch.randn(2, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(2, 2, 6)))
    with pytest.raises(ValueError, match=r"c_0 must have shape .* = \(2, 2, 6\), got \(2, 2, 5\)"):
        lstm(torch.randn(2, 3, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 2, 5)))
    with pytest.raises(ValueError, match=r"pair \(h_0, c_0\)"):
        lstm(torch.randn(2, 3, 4), torch.zeros(2, 2, 6))
    # a time-major tensor passed to a batch_first layer: the state's batch is the input's seq
    with pytest.raises(ValueError, match=r"batch_first=True"):
        lstm(torch.randn(3, 2, 4), (torch.zeros(2, 2, 6), torch.zeros(2, 2, 6)))
    gru = rnn.GRU(4, 6, batch_first=False)
    with pytest.raises(ValueError, match=r"\(seq, batch, input_size\)"):
        gru(torch.randn(4))
    with pytest.raises(ValueError, match=r"empty sequence"):
        gru(torch.randn(0, 2, 4))
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor"):
        gru([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"hidden_size must be a positive int"):
        rnn.RNN(3, 0)
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu'"):
        rnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"h must have shape \(2, 6\)"):
        rnn.GRUCell(4, 6)(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"input must have shape \(batch, 4\)"):
        rnn.LSTMCell(4, 6)(torch.randn(2, 3))
    with pytest.raises(TypeError, match=r"torch.nn.LSTM"):
        rnn.LSTM.from_torch(torch.nn.GRU(2, 3))
    with pytest.raises(ValueError, match=r"bidirectional=True.*expected bidirectional=False"):
        rnn.LSTM.from_torch(torch.nn.LSTM(2, 3, bidirectional=True))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_lm_to_scratch_gives_same_logits_and_samples(cell):
    torch.manual_seed(7)
    model = CharLM(11, emb=5, hidden=6, num_layers=2, cell=cell).eval()
    scratch = model.to_scratch()
    assert isinstance(scratch.rnn, rnn._Recurrent) and scratch.to_scratch() is scratch
    ids = torch.randint(0, 11, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(scratch(ids)[0], model(ids)[0], atol=ATOL, rtol=RTOL)
    a = model.sample([1, 2], 12, generator=torch.Generator().manual_seed(0))
    b = scratch.sample([1, 2], 12, generator=torch.Generator().manual_seed(0))
    assert a == b and len(a) == 12 and all(0 <= i < 11 for i in a)
    with pytest.raises(ValueError, match=r"cell must be one of"):
        CharLM(11, cell="transformer")


# ---- same names, same meaning as torch.nn (issue 9 §3) -------------------------------
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_defaults_are_torch_defaults_time_major(kind):
    """Same weights, same (seq, batch, input) tensor, both with default arguments."""
    ours_cls, ref_cls = LAYERS[kind]
    torch.manual_seed(11)
    ref = ref_cls(3, 5, 2)
    ours = ours_cls(3, 5, 2)
    ours.load_state_dict({f"cells.{k}.{n}": getattr(ref, f"{n}_l{k}") for k in range(2)
                          for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    assert ours.batch_first is False and ours.dropout == 0.0
    x = torch.randn(7, 4, 3)  # (seq, batch, input)
    out_ref, st_ref = ref(x)
    out, st = ours(x)
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    for a, b in zip(st if kind == "lstm" else [st], st_ref if kind == "lstm" else [st_ref]):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_positional_arguments_follow_torch():
    """torch.nn.RNN(I, H, num_layers, nonlinearity, bias, batch_first, dropout);
    LSTM/GRU(I, H, num_layers, bias, batch_first, dropout)."""
    r = rnn.RNN(3, 4, 2, "relu", False, True, 0.25)
    t = torch.nn.RNN(3, 4, 2, "relu", False, True, 0.25)
    assert (r.cells[0].nonlinearity, r.bias, r.batch_first, r.dropout) == \
        (t.nonlinearity, t.bias, t.batch_first, t.dropout)
    for ours_cls, ref_cls in (LAYERS["lstm"], LAYERS["gru"]):
        o, t = ours_cls(3, 4, 2, False, True, 0.25), ref_cls(3, 4, 2, False, True, 0.25)
        assert (o.bias, o.batch_first, o.dropout) == (t.bias, t.batch_first, t.dropout)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_dropout_between_layers_matches_torch(kind):
    """from_torch keeps dropout; in training mode the same seed drops the same units
    (torch's CPU kernel and F.dropout draw the same Bernoulli mask), eval mode drops none."""
    ours_cls, ref_cls = LAYERS[kind]
    torch.manual_seed(12)
    ref = ref_cls(4, 6, num_layers=3, dropout=0.5, batch_first=True)
    ours = ours_cls.from_torch(ref)
    assert ours.dropout == 0.5 and ours.training
    x = torch.randn(2, 9, 4)
    torch.manual_seed(0)
    out_ref = ref(x)[0]
    torch.manual_seed(0)
    out = ours(x)[0]
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=RTOL)
    torch.manual_seed(1)
    assert (ours(x)[0] - out).abs().max() > 1e-3  # another mask: another output
    ref.eval()
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=ATOL, rtol=RTOL)
    # without dropout the training-mode output would equal the eval one
    assert (out - ours(x)[0]).abs().max() > 1e-3
    with pytest.warns(UserWarning, match="between layers only"):
        ours_cls(4, 6, dropout=0.2)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\], got 1.5"):
        ours_cls(4, 6, 2, dropout=1.5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bidirectional_is_a_clear_error(kind):
    ours_cls, ref_cls = LAYERS[kind]
    with pytest.raises(ValueError, match=r"bidirectional=True.*expected bidirectional=False"):
        ours_cls(2, 3, bidirectional=True)
    with pytest.raises(ValueError, match=r"bidirectional=True"):
        ours_cls.from_torch(ref_cls(2, 3, bidirectional=True))
    if kind == "lstm":
        with pytest.raises(ValueError, match=r"proj_size=2"):
            rnn.LSTM.from_torch(torch.nn.LSTM(2, 3, proj_size=2))


def test_from_torch_keeps_eval_mode_and_dtype():
    ref = torch.nn.GRU(2, 3, 2, dropout=0.3).double().eval()
    ours = rnn.GRU.from_torch(ref)
    assert not ours.training and ours.cells[0].weight_ih.dtype == torch.float64
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
