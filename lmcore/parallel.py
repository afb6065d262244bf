"""Tensor parallelism: one layer's weight matrices split across processes.

Data parallelism (``lmcore.ddp``) copies the whole model to every process. When one
layer no longer fits, Megatron-LM (Shoeybi et al., 2019) splits the matrices themselves:

* ``ColumnParallelLinear`` keeps a slice of the *output* features: rank r computes
  ``Y_r = X A_r`` with ``A = [A_0 | A_1 | ...]``. No communication in the forward pass.
* ``RowParallelLinear`` keeps a slice of the *input* features: rank r computes the partial
  product ``X_r B_r`` and an all-reduce adds the partial products: ``Y = sum_r X_r B_r``.
* ``TensorParallelMLP`` chains the two around GELU, which acts element-wise and so can be
  applied to each rank's slice: one all-reduce in the forward pass, one in the backward.

Two sizes on paper complete the picture: :func:`pipeline_bubble`, the idle fraction of a
GPipe pipeline, and :func:`zero_bytes_per_device`, the training state per device under
ZeRO's sharding stages.

Launch with ``torchrun`` (gloo on CPUs, NCCL on GPUs)::

    torchrun --standalone --nproc_per_node=2 -m lmcore.parallel

which checks the split MLP against the whole one on every rank and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _rank_and_world() -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "lmcore.parallel needs an initialised process group: launch the script with "
            "torchrun and call lmcore.ddp.init_distributed() (or "
            "torch.distributed.init_process_group) before building parallel layers")
    return dist.get_rank(), dist.get_world_size()


def _shard_size(size: int, world: int, name: str) -> int:
    if size % world:
        raise ValueError(f"{name}={size} cannot be split evenly over world_size={world}; "
                         f"expected a multiple of {world}")
    return size // world


class _CopyToRanks(torch.autograd.Function):
    """Identity forward; backward all-reduces: every rank's input gradient is partial."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _SumOverRanks(torch.autograd.Function):
    """All-reduce forward (adds the partial products); backward passes the gradient on."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad


class ColumnParallelLinear(nn.Module):
    """``x @ A_r.T + b_r``: this rank's ``out_features / world_size`` outputs.

    x: (..., in_features) -> (..., out_features // world_size).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.rank, self.world_size = _rank_and_world()
        shard = _shard_size(out_features, self.world_size, "out_features")
        self.weight = nn.Parameter(torch.empty(shard, in_features))
        self.bias = nn.Parameter(torch.zeros(shard)) if bias else None
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(_CopyToRanks.apply(x), self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> ColumnParallelLinear:
        """This rank's rows of a whole ``nn.Linear`` (the same on every rank)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        rows = slice(layer.rank * layer.weight.shape[0], (layer.rank + 1) * layer.weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(linear.weight[rows])
            if layer.bias is not None:
                layer.bias.copy_(linear.bias[rows])
        return layer.to(linear.weight.device)


class RowParallelLinear(nn.Module):
    """``sum_r x_r @ B_r.T + b``: this rank holds ``in_features / world_size`` inputs.

    x_r: (..., in_features // world_size) -> (..., out_features), the same on every rank.
    The bias is added once, after the sum.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.rank, self.world_size = _rank_and_world()
        shard = _shard_size(in_features, self.world_size, "in_features")
        self.weight = nn.Parameter(torch.empty(out_features, shard))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _SumOverRanks.apply(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> RowParallelLinear:
        """This rank's columns of a whole ``nn.Linear`` (the same on every rank)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None)
        cols = slice(layer.rank * layer.weight.shape[1], (layer.rank + 1) * layer.weight.shape[1])
        with torch.no_grad():
            layer.weight.copy_(linear.weight[:, cols])
            if layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer.to(linear.weight.device)


class TensorParallelMLP(nn.Module):
    """Megatron's MLP: ``GELU(x A) B`` with A split by columns and B by rows.

    x: (..., n_embd) -> (..., n_embd); each rank holds 1/world_size of both matrices.
    """

    def __init__(self, fc: ColumnParallelLinear, proj: RowParallelLinear):
        super().__init__()
        self.fc, self.act, self.proj = fc, nn.GELU(), proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))

    @classmethod
    def from_mlp(cls, fc: nn.Linear, proj: nn.Linear) -> TensorParallelMLP:
        """Split a whole ``Linear -> GELU -> Linear`` (e.g. ``FeedForward.fc``/``.proj``)."""
        if fc.out_features != proj.in_features:
            raise ValueError(f"fc.out_features={fc.out_features} must equal "
                             f"proj.in_features={proj.in_features}")
        return cls(ColumnParallelLinear.from_linear(fc), RowParallelLinear.from_linear(proj))


def pipeline_bubble(stages: int, micro_batches: int) -> float:
    """Idle fraction of a GPipe schedule: (p - 1) / (m + p - 1) for p stages, m micro-batches.

    Each stage waits p - 1 steps for the first micro-batch to arrive and p - 1 steps after
    its last one leaves (Huang et al., 2019).
    """
    for name, v in (("stages", stages), ("micro_batches", micro_batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r}; expected a positive int")
    return (stages - 1) / (micro_batches + stages - 1)


def zero_bytes_per_device(n_params: int, n_devices: int, stage: int = 0,
                          optimizer_bytes: int = 12) -> float:
    """Bytes of model state per device when training with mixed-precision Adam, as counted
    by ZeRO (Rajbhandari et al., 2020): per parameter 2 bytes of 16-bit weights, 2 of 16-bit
    gradients and ``optimizer_bytes`` (K = 12: float32 weights, momentum, variance).

    stage 0 replicates everything on every device (plain data parallelism); stage 1 shards
    the optimizer states over the ``n_devices``, stage 2 also the gradients, stage 3 also the
    weights. Activations and buffers are not included.
    """
    for name, v, low in (("n_params", n_params, 1), ("n_devices", n_devices, 1),
                         ("optimizer_bytes", optimizer_bytes, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name}={v!r}; expected an int >= {low}")
    if stage not in (0, 1, 2, 3) or isinstance(stage, bool):
        raise ValueError(f"stage={stage!r}; expected 0, 1, 2 or 3")

    def part(nbytes: int, sharded_from: int) -> float:
        return nbytes / n_devices if stage >= sharded_from else nbytes

    return n_params * (part(2, 3) + part(2, 2) + part(optimizer_bytes, 1))


def check_mlp(n_embd: int = 64, hidden: int = 256, tokens: int = 8, seed: int = 0,
              device: torch.device | str = "cpu") -> dict:
    """On every rank: the split MLP's output and gradients against the whole MLP's.

    Returns the largest absolute differences (output, input gradient, weight gradients).
    """
    rank, world = _rank_and_world()
    g = torch.Generator().manual_seed(seed)  # the same whole layer and input on every rank
    fc, proj = nn.Linear(n_embd, hidden), nn.Linear(hidden, n_embd)
    with torch.no_grad():
        for p in (*fc.parameters(), *proj.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    fc, proj = fc.to(device), proj.to(device)
    x = torch.randn(tokens, n_embd, generator=g).to(device)
    x_whole, x_split = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_whole = proj(F.gelu(fc(x_whole)))
    y_whole.square().sum().backward()
    split = TensorParallelMLP.from_mlp(fc, proj)
    y_split = split(x_split)
    y_split.square().sum().backward()
    rows = slice(rank * hidden // world, (rank + 1) * hidden // world)
    return {
        "world_size": world,
        "output": (y_split - y_whole).abs().max().item(),
        "input_grad": (x_split.grad - x_whole.grad).abs().max().item(),
        "fc_weight_grad": (split.fc.weight.grad - fc.weight.grad[rows]).abs().max().item(),
        "proj_weight_grad": (split.proj.weight.grad - proj.weight.grad[:, rows]).abs().max().item(),
        "proj_bias_grad": (split.proj.bias.grad - proj.bias.grad).abs().max().item(),
    }


def main(argv=None) -> None:
    from .ddp import init_distributed

    p = argparse.ArgumentParser(description="Check the tensor-parallel MLP (use torchrun).")
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    args = p.parse_args(argv)
    rank, world, device = init_distributed()
    try:
        result = check_mlp(args.n_embd, args.hidden, device=device)
        worst = torch.tensor(max(v for k, v in result.items() if k != "world_size"),
                             device=device)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        try:  # a size the ranks cannot share evenly must be refused, on every rank
            ColumnParallelLinear(8, world + 1)
            refused = False
        except ValueError:
            refused = True
        if rank == 0:
            print(json.dumps({**result, "max_diff_all_ranks": worst.item(),
                              "uneven_split_refused": refused}), flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
