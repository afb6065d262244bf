"""lmcore.opprofile: each operation's FLOPs against PyTorch's FlopCounterMode on random
shapes, its bytes against exact sums, and the profiler rows counting each product once."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from lmcore.opprofile import op_cost, profile_ops
from lmcore.roofline import Cost

pytestmark = pytest.mark.usefixtures("one_thread")


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 9), st.integers(1, 6),
       st.booleans())
def test_op_cost_of_products_matches_flop_counter(b, m, k, n, bias):
    x, w = torch.randn(b, m, k), torch.randn(n, k)
    bb = torch.randn(n) if bias else None
    cost = op_cost("aten::linear", [[b, m, k], [n, k], [n] if bias else []],
                   ["float", "float", "float" if bias else ""])
    assert cost.flops == counted_flops(lambda: F.linear(x, w, bb))
    assert cost.bytes == 4 * (b * m * k + n * k + (n if bias else 0) + b * m * n)
    y = torch.randn(b, k, n)
    assert op_cost("aten::bmm", [[b, m, k], [b, k, n]], ["float"] * 2).flops == \
        counted_flops(lambda: torch.bmm(x, y))
    assert op_cost("aten::matmul", [[b, m, k], [k, n]], ["float"] * 2).flops == \
        counted_flops(lambda: x @ y[0])
    assert op_cost("aten::addmm", [[n], [m, k], [k, n]], ["float"] * 3).flops == \
        counted_flops(lambda: torch.addmm(torch.zeros(n), x[0], y[0]))


def test_op_cost_of_other_ops():
    half = op_cost("aten::gelu", [[2, 3], []], ["c10::BFloat16", ""])
    assert half == Cost(8 * 6, 2 * 6 * 2)  # 16-bit: 2 bytes per value, read and written
    assert op_cost("aten::add", [[4, 1, 3], [5, 3], []], ["float", "float", "Scalar"]) == \
        Cost(60, 4 * (12 + 15 + 60))  # broadcast output (4, 5, 3)
    sdpa = op_cost("aten::scaled_dot_product_attention", [[1, 2, 3, 4], [1, 2, 5, 4],
                   [1, 2, 5, 4]], ["float"] * 3)
    assert sdpa.flops == 4 * 2 * 3 * 5 * 4  # q.k and weights.v, every score
    for name, shapes, dtypes in (("aten::view", [[2, 3], []], ["float", "ScalarList"]),
                                 ("aten::mul", [[2, 3], []], ["long int", "Scalar"]),
                                 ("aten::linear", [[], []], ["", ""])):
        assert op_cost(name, shapes, dtypes) is None


def test_profile_ops_counts_each_product_once():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 16))
    x = torch.randn(5, 16)
    with torch.no_grad():
        rows = profile_ops(lambda: mlp(x), repeat=2, threads=1)
        want = counted_flops(lambda: mlp(x))
    ops = {r["op"]: r for r in rows}
    assert set(ops) == {"linear", "gelu"}  # not also the addmm inside each linear
    assert sum(r["flops"] for r in rows if r["op"] == "linear") == want
    assert ops["gelu"]["calls"] == 1 and ops["gelu"]["intensity"] == 8 / (4 + 4)
    for r in rows:
        assert r["seconds"] > 0 and r["flops_per_s"] == pytest.approx(r["flops"] / r["seconds"])


def test_profile_ops_keeps_kinetos_markers_off_stderr():
    """Kineto's start/stop markers would land on the notebook page as stderr (ch. 11)."""
    import os
    import subprocess
    import sys

    code = ("import torch\nfrom lmcore.opprofile import profile_ops\n"
            "profile_ops(lambda: torch.ones(8, 8) @ torch.ones(8, 8), repeat=1)")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env=env, timeout=120)
    assert run.returncode == 0 and run.stderr == ""
    # and a user's own level still wins (that is how this test would see the markers)
    env["KINETO_LOG_LEVEL"] = "0"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         env=env, timeout=120)
    assert run.returncode == 0 and "Trace" in run.stderr
