"""lmcore.roofline: FLOP and byte counts checked against PyTorch's FlopCounterMode and exact
sums; the roofline's arithmetic; timing helpers on their contracts. Speeds themselves are
not asserted here (the chapter measures them side by side)."""
import math
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmcore.roofline import (
    Cost,
    Roofline,
    best_time,
    cache_bytes,
    copy_bandwidth,
    cpu_threads,
    free_cores,
    gpt_forward_cost,
    linear_cost,
    matmul_flops,
    processor_name,
)
from lmcore.transformer import GPT, GPTConfig, kv_cache_bytes

pytestmark = pytest.mark.usefixtures("one_thread")


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_linear_cost_intensity_is_about_half_the_tokens():
    one = linear_cost(4096, 4096, 1, bias=False)
    assert one.flops == 2 * 4096**2 and one.bytes == 4 * (4096**2 + 2 * 4096)
    assert 0.49 < one.intensity < 0.5
    assert 31 < linear_cost(4096, 4096, 64, bias=False).intensity < 32  # T/2 as T << 4096
    assert linear_cost(8, 8, 1, bytes_per_value=2).bytes == 2 * (64 + 16 + 8)
    with pytest.raises(ValueError, match="tokens"):
        linear_cost(8, 8, 0)


@pytest.mark.parametrize("tokens,context,batch", [(7, 0, 1), (1, 6, 3), (3, 4, 2)])
def test_gpt_forward_cost_flops_match_flop_counter(tokens, context, batch):
    cfg = GPTConfig(vocab_size=19, block_size=12, n_layer=2, n_head=2, n_embd=8)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    ids = torch.randint(0, 19, (batch, context + tokens))
    cache = model.new_cache()
    with torch.no_grad():
        if context:
            model(ids[:, :context], cache=cache)
        # need_weights routes attention through explicit products the counter can see
        got = counted_flops(lambda: model(ids[:, context:], cache=cache, need_weights=True))
    cost = gpt_forward_cost(cfg, tokens, context, batch)
    assert cost.flops == got
    assert cost.bytes == 4 * model.num_params() + kv_cache_bytes(2, 8, context + tokens, batch)


def test_gpt_forward_cost_batching_raises_decode_intensity():
    cfg = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    one, many = (gpt_forward_cost(cfg, 1, 100, b, bytes_per_value=2) for b in (1, 32))
    assert one.intensity < 1.1  # one token: about 1 FLOP per 16-bit weight byte
    assert 20 * one.intensity < many.intensity < 32 * one.intensity
    with pytest.raises(ValueError, match="block_size"):
        gpt_forward_cost(cfg, 1, 1024)
    with pytest.raises(TypeError, match="GPTConfig"):
        gpt_forward_cost({"n_layer": 1}, 1)


def test_roofline():
    r = Roofline(peak_flops=100e9, bandwidth=10e9)
    assert r.ridge == 10
    assert r.attainable(0.5) == 5e9 and r.attainable(50) == 100e9
    assert r.bound(0.5) == "memory" and r.bound(50) == "compute"
    assert r.seconds(Cost(100e9, 1e9)) == 1.0 and r.seconds(Cost(1e9, 100e9)) == 10.0
    for bad in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="bandwidth"):
            Roofline(1e9, bad)


def test_best_time_counts_calls_and_waits():
    calls = []
    t = best_time(lambda: (calls.append(1), time.sleep(0.002)), repeat=2, threads=1)
    assert t >= 0.002
    assert len(calls) == 2 + 2  # warm-up, calibration, then one call per repeat (>= 1 ms)
    quick = []
    best_time(lambda: quick.append(1), repeat=3, min_seconds=1e-3, threads=1)
    assert len(quick) > 2 + 3  # fast calls are repeated to fill min_seconds
    with pytest.raises(ValueError, match="repeat"):
        best_time(lambda: None, repeat=0)
    with pytest.raises(TypeError, match="callable"):
        best_time(3)


def test_cpu_threads_restores_and_free_cores_leaves_busy_cores_alone(monkeypatch):
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), cpu_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (1.0, 0.0, 0.0))  # only us
    assert free_cores() == 4
    monkeypatch.setattr("os.getloadavg", lambda: (3.1, 0.0, 0.0))  # two others
    assert free_cores() == 2
    monkeypatch.setattr("os.getloadavg", lambda: (40.0, 0.0, 0.0))
    assert free_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert free_cores() == 3  # an explicit setting wins
    with pytest.raises(ValueError, match="threads"), cpu_threads(0):
        pass


def test_measurements_are_positive_and_check_arguments():
    assert 0 < matmul_flops(32, repeat=1, threads=1) < math.inf
    assert 0 < copy_bandwidth(2**16, repeat=1, threads=1) < math.inf
    size = cache_bytes()
    assert size is None or (isinstance(size, int) and size > 0)
    with pytest.raises(ValueError, match="n_bytes"):
        copy_bandwidth(2)
    with pytest.raises(ValueError, match="n"):
        matmul_flops(0)


def test_processor_name_is_text():
    name = processor_name("cpu")
    assert isinstance(name, str) and name.strip()
