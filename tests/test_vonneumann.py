"""lmcore.vonneumann: the toy stored-program machine sorts correctly, its counts follow
from the program (data-dependent work), the assembler refuses bad programs, and the
bytecode counter and the sorting data do what they say."""
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmcore.vonneumann import (
    BUBBLE_SORT,
    WORD,
    Machine,
    assemble,
    count_bytecodes,
    sorting_batch,
)


def inversions(xs):
    return sum(a > b for i, a in enumerate(xs) for b in xs[i + 1:])


@given(st.lists(st.integers(-50, 50), min_size=2, max_size=12))
def test_bubble_sort_program_sorts_and_counts(xs):
    m = Machine(BUBBLE_SORT, xs)
    counts = m.run()
    assert m.data == sorted(xs)
    n = len(xs)
    pairs = n * (n - 1) // 2  # comparisons of a bubble sort without early exit
    assert counts["lw"] == 2 * pairs and counts["bge"] == pairs
    assert counts["sw"] == 2 * inversions(xs)  # one swap per inversion
    assert counts["bytes_written"] == WORD * counts["sw"]
    assert counts["bytes_read"] == WORD * (counts["instructions"] + counts["lw"])
    assert counts["instructions"] == sum(counts[op] for op in
                                         ("li", "lw", "sw", "add", "addi", "blt", "bge", "jmp", "halt"))


def test_work_depends_on_the_data():
    ordered = Machine(BUBBLE_SORT, range(8)).run()
    reverse = Machine(BUBBLE_SORT, range(7, -1, -1)).run()
    assert reverse["instructions"] - ordered["instructions"] == 2 * 28  # 28 swaps, 2 stores each
    assert ordered["taken"] > reverse["taken"]  # in order: the "keep" branch is taken


def test_assembler_and_machine_refuse_bad_programs():
    with pytest.raises(ValueError, match="unknown instruction"):
        assemble("mul r1, r2, r3")
    with pytest.raises(ValueError, match="operands"):
        assemble("li r1")
    with pytest.raises(ValueError, match="register"):
        assemble("li r9, 1")
    with pytest.raises(ValueError, match="label"):
        assemble("jmp nowhere")
    with pytest.raises(RuntimeError, match="max_steps"):
        Machine("loop: jmp loop", [1]).run(max_steps=50)
    with pytest.raises(RuntimeError, match="outside the program"):
        Machine("li r1, 1", [1]).run()  # no halt: the pc runs into the data
    with pytest.raises(IndexError, match="outside the data"):
        Machine("lw r1, r0, 0\nhalt", [1]).run()  # address 0 holds the program
    m = Machine("li r0, 5\naddi r1, r0, 2\nsw r1, r0, data\nhalt", [0])
    m.run()
    assert m.data == [2]  # r0 stays 0


def test_count_bytecodes_grows_with_the_work():
    def loop(n):
        total = 0
        for i in range(n):
            total += i
        return total

    before = sys.gettrace()
    (r10, c10), (r20, c20) = count_bytecodes(loop, 10), count_bytecodes(loop, 20)
    assert (r10, r20) == (45, 190)
    assert sys.gettrace() is before
    per_step = (sum(c20.values()) - sum(c10.values())) / 10
    assert per_step >= 3 and per_step == int(per_step)  # the same instructions each turn
    assert c20["FOR_ITER"] == 21
    with pytest.raises(TypeError, match="Python function"):
        count_bytecodes(len, [1])


def test_sorting_batch():
    x, y = sorting_batch(4, 5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 10)
    assert (x[:, 5] == 10).all() and (y[:, :5] == -100).all()
    assert torch.equal(y[:, 5:], x[:, :5].sort(1).values)
    assert torch.equal(x[:, 6:], y[:, 5:9])  # inputs are the targets shifted by one
    with pytest.raises(ValueError, match="batch"):
        sorting_batch(0)
