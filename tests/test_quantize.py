"""Tests for lmcore.quantize: round-trip error, agreement with PyTorch, QuantLinear in a GPT.

Tolerances: the round-trip error is at most half a step (``scale / 2``) per element, up to
float32 rounding (4 ulps of the element's magnitude). Integers and qparams must equal PyTorch's
exactly (``torch.quantize_per_tensor`` / ``torch.quantize_per_channel`` and the min/max
observers of ``torch.ao.quantization``).
"""
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lmcore.quantize import (
    QuantLinear,
    dequantize,
    pack_int4,
    qrange,
    quantize,
    quantize_model,
    state_dict_bytes,
    unpack_int4,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _step(scale, axis, ndim):
    if axis is None:
        return scale
    shape = [1] * ndim
    shape[axis] = -1
    return scale.reshape(shape)


def assert_half_step(w, bits, axis, symmetric):
    q, scale, zp = quantize(w, bits, axis, symmetric)
    qmin, qmax = qrange(bits)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    err = (dequantize(q, scale, zp, axis) - w).abs()
    step = _step(scale, axis, w.dim())
    rounding = 4 * torch.finfo(torch.float32).eps * (w.abs() + step)  # float32 arithmetic
    assert bool((err <= step / 2 + rounding).all()), float((err - step / 2).max())
    if symmetric:
        assert bool((zp == 0).all())
    return q, scale, zp


def special_tensors():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 10, generator=g)
    w[1] = 3.25  # a constant row
    w[2] = 0.0  # a zero row
    w[3, 4] = 80.0  # an outlier
    w[4] = -torch.rand(10, generator=g)  # all negative
    w[5] = torch.rand(10, generator=g) + 5  # all positive, far from zero
    return w


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("symmetric", [True, False])
def test_half_step_on_special_rows(bits, axis, symmetric):
    w = special_tensors()
    q, scale, zp = assert_half_step(w, bits, axis, symmetric)
    assert bool((dequantize(q, scale, zp, axis)[2] == 0).all()) or axis == 1  # 0.0 is exact


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 8), cols=st.integers(1, 12), bits=st.sampled_from([2, 4, 5, 8]),
       axis=st.sampled_from([None, 0, 1]), symmetric=st.booleans(),
       log_scale=st.floats(-20, 20), seed=st.integers(0, 2**16))
def test_half_step_property(rows, cols, bits, axis, symmetric, log_scale, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 2.0 ** log_scale
    assert_half_step(w, bits, axis, symmetric)


def test_all_zeros_and_scalars():
    q, scale, zp = quantize(torch.zeros(3, 4), 8, 0)
    assert bool((q == 0).all()) and bool((scale > 0).all())
    q, scale, zp = quantize(torch.tensor(2.5), 8, None, symmetric=False)
    assert abs(float(dequantize(q, scale, zp)) - 2.5) <= float(scale) / 2


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0, 1, 2])
def test_matches_torch_quantize(axis, symmetric):
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    w = torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(1)) * 4 + 0.5
    q, scale, zp = quantize(w, 8, axis, symmetric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized dtypes are deprecated, still the reference
        if axis is None:
            scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
            obs = MinMaxObserver(dtype=torch.qint8, qscheme=scheme)
            ref = torch.quantize_per_tensor(w, float(scale), int(zp), torch.qint8)
        else:
            scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
            obs = PerChannelMinMaxObserver(ch_axis=axis, dtype=torch.qint8, qscheme=scheme)
            ref = torch.quantize_per_channel(w, scale, zp, axis, torch.qint8)
        obs(w)
        ref_scale, ref_zp = obs.calculate_qparams()
    torch.testing.assert_close(scale.reshape(-1), ref_scale.reshape(-1), rtol=0, atol=0)
    assert torch.equal(zp.reshape(-1), ref_zp.reshape(-1).long())
    assert torch.equal(q, ref.int_repr())
    torch.testing.assert_close(dequantize(q, scale, zp, axis), ref.dequantize(), rtol=0, atol=0)


def test_per_channel_beats_per_tensor_with_an_outlier_row():
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(2))
    w[0] *= 50  # one loud row sets the per-tensor step for all
    errs = {}
    for axis in (None, 0):
        q, s, z = quantize(w, 4, axis)
        errs[axis] = float((dequantize(q, s, z, axis) - w)[1:].pow(2).mean())
    assert errs[0] * 100 < errs[None]


@pytest.mark.parametrize("bad, err, match", [
    (dict(bits=1), ValueError, "bits=1"), (dict(bits=16), ValueError, "bits=16"),
    (dict(bits=8.0), ValueError, "bits=8.0"), (dict(axis=2), ValueError, "axis=2"),
    (dict(axis=-3), ValueError, "axis=-3"),
])
def test_bad_arguments(bad, err, match):
    with pytest.raises(err, match=match):
        quantize(torch.randn(3, 4), **bad)


def test_bad_tensors():
    with pytest.raises(TypeError, match="floating-point"):
        quantize(torch.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        quantize(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize(torch.tensor([1.0, float("inf")]))
    q, s, z = quantize(torch.randn(3, 4), axis=0)
    with pytest.raises(ValueError, match="scale has shape"):
        dequantize(q, s, z, axis=1)
    with pytest.raises(TypeError, match="integer"):
        dequantize(q.float(), s, z, axis=0)


def test_pack_int4_round_trip():
    q = torch.randint(-8, 8, (5, 12), generator=torch.Generator().manual_seed(3), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 6)
    assert torch.equal(unpack_int4(packed), q)
    with pytest.raises(ValueError, match="4 bits hold"):
        pack_int4(torch.full((2, 2), 9, dtype=torch.int8))


@pytest.mark.parametrize("bits, axis", [(8, 0), (8, None), (4, 0), (4, None)])
def test_quant_linear_matches_fake_quantized_linear(bits, axis):
    lin = nn.Linear(12, 6)
    ql = QuantLinear(lin, bits, axis)
    q, s, z = quantize(lin.weight, bits, axis)
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(ql(x), nn.functional.linear(x, dequantize(q, s, z, axis), lin.bias))
    assert ql.qweight.numel() == lin.weight.numel() * bits // 8


def test_quantize_model_in_a_gpt(make_tiny_gpt):
    model = make_tiny_gpt(n_embd=32, n_head=4)
    x = torch.randint(23, (2, 10), generator=torch.Generator().manual_seed(4))
    ref = model(x).logits
    errors = {}
    for bits in (8, 4):
        qm = quantize_model(model, bits)
        linears = [m for m in qm.modules() if isinstance(m, nn.Linear)]
        assert [type(m) for m in linears] == [nn.Linear]  # only the tied lm_head stays float
        assert qm.lm_head.weight is qm.wte.weight
        with torch.no_grad():
            errors[bits] = float((qm(x).logits - ref).abs().max())
        assert state_dict_bytes(qm) < state_dict_bytes(model) * (0.5 if bits == 8 else 0.4)
    assert errors[8] < 0.02 and errors[8] < errors[4] / 4
    assert isinstance(model.blocks[0].mlp.fc, nn.Linear)  # the original is untouched


def test_quant_linear_rejects_bad_input():
    with pytest.raises(ValueError, match="bits=3"):
        QuantLinear(nn.Linear(4, 4), bits=3)
    with pytest.raises(ValueError, match="even in_features"):
        QuantLinear(nn.Linear(5, 4), bits=4)
    with pytest.raises(TypeError, match="nn.Linear"):
        QuantLinear(nn.Conv1d(4, 4, 1))
