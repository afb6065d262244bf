"""Tensor parallelism: the Megatron-style MLP split over 2 processes (gloo, torchrun on
127.0.0.1) equals the whole MLP in one process, forward and backward.

Tolerance 1e-5: the split only changes the order in which float32 partial sums are added
(the all-reduce adds two half-width products instead of one full-width product)."""
import json

import pytest
import torch
import torch.distributed as dist
from localhost import run_torchrun

from lmcore.parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelMLP,
    pipeline_bubble,
    zero_bytes_per_device,
)


@pytest.mark.slow
def test_two_process_tensor_parallel_mlp_matches_whole():
    log = run_torchrun(["-m", "lmcore.parallel"])
    line = next(ln for ln in log.splitlines() if ln.startswith("{"))
    result = json.loads(line)
    assert result["world_size"] == 2
    assert result["uneven_split_refused"] is True
    for key in ("output", "input_grad", "fc_weight_grad", "proj_weight_grad",
                "proj_bias_grad", "max_diff_all_ranks"):
        assert result[key] <= 1e-5, (key, result)


def test_parallel_layers_need_a_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    with pytest.raises(RuntimeError, match="torchrun"):
        ColumnParallelLinear(4, 4)
    with pytest.raises(RuntimeError, match="process group"):
        RowParallelLinear(4, 4)


@pytest.fixture
def single_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_world_of_one_is_the_whole_layer(single_process_group):
    torch.manual_seed(0)
    fc, proj = torch.nn.Linear(6, 12), torch.nn.Linear(12, 6)
    x = torch.randn(3, 6)
    split = TensorParallelMLP.from_mlp(fc, proj)
    want = proj(torch.nn.functional.gelu(fc(x)))
    torch.testing.assert_close(split(x), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="proj.in_features"):
        TensorParallelMLP.from_mlp(fc, torch.nn.Linear(10, 6))


def test_pipeline_bubble():
    assert pipeline_bubble(1, 8) == 0.0
    assert pipeline_bubble(4, 1) == 3 / 4          # one micro-batch: a stage idles 3 of 4 steps
    assert abs(pipeline_bubble(4, 12) - 3 / 15) < 1e-12
    with pytest.raises(ValueError, match="micro_batches"):
        pipeline_bubble(4, 0)
    with pytest.raises(ValueError, match="stages"):
        pipeline_bubble(True, 4)


def test_zero_memory_matches_the_paper():
    # Rajbhandari et al. (2020), Figure 1: 7.5B parameters, 64 devices, K = 12.
    gb = [zero_bytes_per_device(7_500_000_000, 64, stage) / 1e9 for stage in range(4)]
    assert [round(g, 1) for g in gb] == [120.0, 31.4, 16.6, 1.9]
    assert zero_bytes_per_device(10, 1, 3) == zero_bytes_per_device(10, 1, 0) == 160
    with pytest.raises(ValueError, match="stage"):
        zero_bytes_per_device(10, 2, 4)
    with pytest.raises(ValueError, match="n_devices"):
        zero_bytes_per_device(10, 0)
