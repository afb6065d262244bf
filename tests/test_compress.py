"""Tests for lmcore.compress: pruning vs torch.nn.utils.prune, distillation loss, LoRA.

Tolerances: masks equal PyTorch's exactly; outputs of equivalent models agree to 1e-5
(float32); the distillation loss and its gradient agree with a hand computation to 1e-5.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lmcore.compress import (
    LoRALinear,
    add_lora,
    count_trainable,
    distillation_loss,
    head_importance,
    magnitude_mask,
    merge_lora,
    prune_heads,
    prune_neurons,
    prune_unstructured,
    sparsity_of,
    tokens_per_second,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(atol=1e-5, rtol=1e-5)


def ids(n=2, t=10, vocab=23, seed=4):
    return torch.randint(vocab, (n, t), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.37, 0.9])
def test_magnitude_mask_matches_torch_prune(sparsity):
    lin = nn.Linear(13, 7)
    ours = magnitude_mask(lin.weight, sparsity)
    prune.l1_unstructured(lin, "weight", amount=sparsity)
    assert torch.equal(ours, lin.weight_mask.bool())
    assert int((~ours).sum()) == round(sparsity * 91)


def test_prune_unstructured_model(make_tiny_gpt):
    model = make_tiny_gpt(n_embd=32, n_head=4)
    pruned = prune_unstructured(model, 0.5)
    assert abs(sparsity_of(pruned) - 0.5) < 1e-3 and sparsity_of(model) == 0.0
    assert pruned.lm_head.weight is pruned.wte.weight and not bool((pruned.wte.weight == 0).any())
    ref = model.blocks[1].attn.qkv
    prune.l1_unstructured(ref, "weight", amount=0.5)
    assert torch.equal(pruned.blocks[1].attn.qkv.weight, ref.weight)


def test_prune_neurons_equals_torch_structured_mask(make_tiny_gpt):
    model = make_tiny_gpt(n_embd=32, n_head=4)
    small = prune_neurons(model, 0.25)
    assert small.blocks[0].mlp.fc.out_features == 96 and small.blocks[0].mlp.proj.in_features == 96
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    ref = model  # the same neurons zeroed by PyTorch's structured pruning, shapes unchanged
    for block in ref.blocks:
        prune.ln_structured(block.mlp.fc, "weight", amount=0.25, n=2, dim=0)
        rows = block.mlp.fc.weight_mask[:, 0]
        prune.custom_from_mask(block.mlp.fc, "bias", rows)
        prune.custom_from_mask(block.mlp.proj, "weight", rows.expand_as(block.mlp.proj.weight))
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(small(x).logits, ref(x).logits, **TOL)


def test_prune_heads_silences_the_weakest_heads(make_tiny_gpt):
    model = make_tiny_gpt(n_embd=32, n_head=4)
    pruned = prune_heads(model, 0.5)
    x = ids()
    outputs = {}  # each layer's concatenated heads, captured at the input of proj
    hooks = [b.attn.proj.register_forward_pre_hook(
        lambda m, a, i=i: outputs.__setitem__(i, a[0].detach())) for i, b in enumerate(model.blocks)]
    masks = []
    for block in model.blocks:
        weakest = head_importance(block.attn).argsort()[:2]
        mask = torch.ones(4, 8)
        mask[weakest] = 0
        masks.append(mask.flatten())
    for h in hooks:
        h.remove()
    # reference: zero the same heads' outputs with a mask on proj's input columns
    for block, mask in zip(model.blocks, masks):
        prune.custom_from_mask(block.attn.proj, "weight", mask.expand_as(block.attn.proj.weight))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x).logits, model(x).logits, **TOL)
    qkv = pruned.blocks[0].attn.qkv.weight.view(3, 4, 8, 32)
    dead = masks[0].view(4, 8)[:, 0] == 0
    assert bool((qkv[:, dead] == 0).all()) and bool((qkv[:, ~dead] != 0).all())


@pytest.mark.parametrize("fn", [prune_unstructured, prune_neurons, prune_heads])
@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "half", True])
def test_pruning_rejects_bad_sparsity(fn, bad, tiny_gpt):
    with pytest.raises(ValueError, match="sparsity"):
        fn(tiny_gpt, bad)


# --------------------------------------------------------------------------- distillation
def test_distillation_loss_by_hand():
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(3, 4, 11, generator=g), torch.randn(3, 4, 11, generator=g) * 2
    y = torch.randint(11, (3, 4), generator=g)
    y[0, 1] = -100
    T, alpha = 3.0, 0.7
    keep = (y != -100).flatten()
    ps, pt = F.softmax(s.reshape(-1, 11)[keep] / T, -1), F.softmax(t.reshape(-1, 11)[keep] / T, -1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean()
    ce = -F.log_softmax(s.reshape(-1, 11)[keep], -1).gather(1, y.flatten()[keep, None]).mean()
    want = alpha * T * T * kl + (1 - alpha) * ce
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha), want, **TOL)
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha=0.0), ce, **TOL)


@pytest.mark.parametrize("T", [1.0, 2.0, 8.0])
def test_soft_gradient_is_T_times_probability_gap(T):
    """d(T^2 KL)/ds = T (p_s - p_t) / N: the T^2 keeps the gradient's size ~ independent of T."""
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(5, 9, generator=g).requires_grad_(), torch.randn(5, 9, generator=g)
    distillation_loss(s, t, temperature=T).backward()
    want = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1)) / 5
    torch.testing.assert_close(s.grad, want, **TOL)


def test_distillation_of_identical_logits_is_pure_cross_entropy():
    s = torch.randn(4, 7)
    y = torch.randint(7, (4,))
    assert float(distillation_loss(s, s.clone(), temperature=4.0)) == pytest.approx(0, abs=1e-6)
    torch.testing.assert_close(distillation_loss(s, s.clone(), y, 4.0, 0.5), 0.5 * F.cross_entropy(s, y))


@pytest.mark.parametrize("kw, match", [(dict(temperature=0), "temperature"), (dict(alpha=1.5), "alpha"),
                                       (dict(temperature=float("nan")), "temperature")])
def test_distillation_rejects_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(torch.randn(2, 3), torch.randn(2, 3), **kw)


def test_distillation_rejects_nan_and_shapes():
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="NaN"):
        distillation_loss(s, torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(s, torch.randn(2, 4))
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(s, s, torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- LoRA
def test_lora_starts_equal_and_merges_exactly():
    base = nn.Linear(12, 20)
    lora = LoRALinear(base, r=3, alpha=6.0)
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(lora(x), base(x))  # B = 0 at the start
    with torch.no_grad():
        lora.B.normal_()
    merged = lora.merge()
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), lora(x), **TOL)
    torch.testing.assert_close(merged.weight, base.weight + 2.0 * lora.B @ lora.A, **TOL)
    assert count_trainable(lora) == 3 * (12 + 20) and not base.weight.requires_grad


def test_lora_model_trains_only_adapters_and_merges(make_tiny_gpt):
    model = make_tiny_gpt(n_embd=32, n_head=4)
    lora = add_lora(model, r=2, alpha=4.0)
    wrapped = [m for m in lora.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 2 * 4  # per block: attn.qkv, attn.proj, mlp.fc, mlp.proj
    assert count_trainable(lora) == sum(2 * (m.base.in_features + m.base.out_features) for m in wrapped)
    frozen = {n: p.detach().clone() for n, p in lora.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1)
    x = ids()
    for _ in range(3):
        opt.zero_grad()
        lora(x, x).loss.backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in lora.named_parameters() if not p.requires_grad)
    assert torch.equal(lora.blocks[0].attn.qkv.base.weight, model.blocks[0].attn.qkv.weight)
    merged = merge_lora(lora)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, lora(x).logits, **TOL)
        assert not torch.allclose(merged(x).logits, model(x).logits, atol=1e-4)  # it did learn


@pytest.mark.parametrize("r", [0, 13, 2.0, True])
def test_lora_rejects_bad_rank(r):
    with pytest.raises(ValueError, match=f"r={r!r}"):
        LoRALinear(nn.Linear(12, 30), r=r)


def test_lora_rejects_bad_alpha_and_base():
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(nn.Linear(4, 4), r=2, alpha=-1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2)


def test_lora_parameter_count_formula():
    assert count_trainable(LoRALinear(nn.Linear(128, 384), r=4)) == 4 * (128 + 384)
    assert math.isclose(LoRALinear(nn.Linear(8, 8), r=4, alpha=8).scaling, 2.0)


def test_tokens_per_second_measures_every_model(make_tiny_gpt):
    import time

    models = {"a": make_tiny_gpt(), "b": make_tiny_gpt(seed=1)}
    for clock in (None, time.process_time):
        speed = tokens_per_second(models, tokens=4, repeats=1, clock=clock)
        assert set(speed) == {"a", "b"} and all(v > 0 for v in speed.values())
    with pytest.raises(ValueError, match="tokens=0"):
        tokens_per_second(models, tokens=0)
