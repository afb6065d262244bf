"""A stored-program (von Neumann) machine small enough to read, and the same job for a model.

One memory holds both the program and the data (von Neumann, 1945). A *program counter*
(``pc``) says which word to fetch next; every cycle **fetches** that instruction,
**decodes** it and **executes** it, and a branch sets ``pc`` to a value that depends on the
data. So how much work a program does depends on its input. A Transformer's forward pass
is the opposite: a fixed graph of matrix products whose cost depends only on the shapes.

* :class:`Machine`: registers ``r0..r7`` (``r0`` is always 0), 4-byte words, and nine
  instructions (``li lw sw add addi blt bge jmp halt``); it counts instructions, branches
  and the bytes it reads and writes. :data:`BUBBLE_SORT` is a program for it.
* :func:`count_bytecodes`: CPython is such a machine too; count the bytecode
  instructions it executes for a Python function.
* :func:`sorting_batch`: the same task (sort digits) as next-token training data.
"""
from __future__ import annotations

import dis
import sys
from collections import Counter
from typing import NamedTuple

import torch

from .layers import check_int

WORD = 4  # bytes per memory word: instructions and data alike
OPERANDS = {  # op -> operand kinds: r = register, i = integer (or symbol), l = label
    "li": "ri", "lw": "rri", "sw": "rri", "add": "rrr", "addi": "rri",
    "blt": "rrl", "bge": "rrl", "jmp": "l", "halt": "",
}

BUBBLE_SORT = """
        addi r5, r0, n      ; r5 = n
        addi r5, r5, -1     ; r5 = n - 1: the last index still unsorted
outer:  li   r2, 0          ; j = 0
inner:  lw   r3, r2, data   ; a = mem[data + j]
        lw   r4, r2, data+1 ; b = mem[data + j + 1]
        bge  r4, r3, keep   ; already in order: no swap
        sw   r4, r2, data   ; swap a and b
        sw   r3, r2, data+1
keep:   addi r2, r2, 1      ; j = j + 1
        blt  r2, r5, inner  ; while j < r5
        addi r5, r5, -1     ; the largest of the rest is now in place
        blt  r0, r5, outer  ; while r5 > 0
        halt
"""


class Instruction(NamedTuple):
    op: str
    args: tuple


def _operand(text: str, kind: str, symbols: dict, line: str) -> int:
    text = text.strip()
    if kind == "r":
        if not (text.startswith("r") and text[1:].isdigit() and int(text[1:]) < 8):
            raise ValueError(f"{text!r} is not a register r0..r7 in: {line.strip()}")
        return int(text[1:])
    name, plus, offset = text.partition("+")
    try:
        base = int(name) if name.lstrip("-").isdigit() else symbols[name.strip()]
        return base + (int(offset) if plus else 0)
    except (KeyError, ValueError):
        raise ValueError(f"unknown label or number {text!r} in: {line.strip()}") from None


def assemble(source: str, symbols: dict | None = None) -> list[Instruction]:
    """Text -> instructions. ``name:`` defines a label; ``;`` starts a comment.

    ``data`` is the address right after the program (where :class:`Machine` puts the data).
    """
    lines = [ln.split(";")[0] for ln in source.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    symbols = {**(symbols or {}), "data": len(lines)}
    for pc, line in enumerate(lines):
        if ":" in line:
            symbols[line.split(":")[0].strip()] = pc
    program = []
    for line in lines:
        op, _, rest = line.split(":")[-1].strip().partition(" ")
        if op not in OPERANDS:
            raise ValueError(f"unknown instruction {op!r}; expected one of {sorted(OPERANDS)}")
        parts = [p for p in rest.split(",") if p.strip()]
        if len(parts) != len(OPERANDS[op]):
            raise ValueError(f"{op} takes {len(OPERANDS[op])} operands, got {len(parts)} "
                             f"in: {line.strip()}")
        program.append(Instruction(op, tuple(_operand(p, k, symbols, line)
                                             for p, k in zip(parts, OPERANDS[op]))))
    return program


class Machine:
    """Program and data in one memory; run it with :meth:`run`, one :meth:`step` per cycle."""

    def __init__(self, source: str, data, registers: int = 8):
        data = [int(v) for v in data]
        self.program = assemble(source, {"n": len(data)})
        self.memory = [*self.program, *data]  # the stored program: one memory for both
        self.data_start = len(self.program)
        self.reg, self.pc = [0] * registers, 0
        self.counts = Counter()  # instructions per op, branches, taken, bytes read/written

    @property
    def data(self) -> list[int]:
        return self.memory[self.data_start:]

    def load(self, address: int) -> int:
        if not self.data_start <= address < len(self.memory):
            raise IndexError(f"load from address {address}: outside the data "
                             f"[{self.data_start}, {len(self.memory)})")
        self.counts["bytes_read"] += WORD
        return self.memory[address]

    def store(self, address: int, value: int) -> None:
        if not self.data_start <= address < len(self.memory):
            raise IndexError(f"store to address {address}: outside the data "
                             f"[{self.data_start}, {len(self.memory)})")
        self.counts["bytes_written"] += WORD
        self.memory[address] = value

    def step(self) -> bool:
        """One cycle: fetch, decode, execute. Returns False after ``halt``."""
        if not 0 <= self.pc < self.data_start:
            raise RuntimeError(f"pc={self.pc} is outside the program [0, {self.data_start})")
        op, a = self.memory[self.pc]  # fetch the word at pc and decode it
        self.counts[op] += 1
        self.counts["bytes_read"] += WORD  # the instruction itself comes from memory
        self.pc += 1
        r = self.reg
        if op == "li":
            r[a[0]] = a[1]
        elif op == "lw":
            r[a[0]] = self.load(r[a[1]] + a[2])
        elif op == "sw":
            self.store(r[a[1]] + a[2], r[a[0]])
        elif op == "add":
            r[a[0]] = r[a[1]] + r[a[2]]
        elif op == "addi":
            r[a[0]] = r[a[1]] + a[2]
        elif op in ("blt", "bge", "jmp"):
            taken = (op == "jmp" or (op == "blt" and r[a[0]] < r[a[1]])
                     or (op == "bge" and r[a[0]] >= r[a[1]]))
            self.counts["branches"] += 1
            if taken:  # the data decide which instruction comes next
                self.counts["taken"] += 1
                self.pc = a[-1]
        r[0] = 0  # r0 is wired to zero
        return op != "halt"

    def run(self, max_steps: int = 1_000_000) -> Counter:
        """Cycle until ``halt``; returns the counts (``instructions`` = cycles run)."""
        check_int("max_steps", max_steps)
        for cycle in range(1, max_steps + 1):
            if not self.step():
                self.counts["instructions"] = cycle
                return self.counts
        raise RuntimeError(f"no halt after max_steps={max_steps} instructions")


def count_bytecodes(fn, *args) -> tuple[object, Counter]:
    """Run ``fn(*args)``; return its result and the CPython bytecode instructions executed
    in ``fn``'s own frame, by name (counted with ``sys.settrace`` opcode events)."""
    if not hasattr(fn, "__code__"):
        raise TypeError(f"fn must be a Python function, got {type(fn).__name__}")
    code, counts = fn.__code__, Counter()

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            counts[dis.opname[code.co_code[frame.f_lasti]]] += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = fn(*args)
    finally:
        sys.settrace(previous)
    return result, counts


def sorting_batch(batch: int, n_digits: int = 8, generator: torch.Generator | None = None,
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorting as next-token prediction: ``digits SEP sorted_digits`` (SEP = token 10).

    Returns ``(inputs, targets)``, both (batch, 2 * n_digits): the sequence without its last
    token, and shifted by one with the unsorted half (and SEP's own target) set to -100, so
    that only the sorted digits are scored.
    """
    check_int("batch", batch)
    check_int("n_digits", n_digits)
    g_device = generator.device if generator is not None else device
    x = torch.randint(0, 10, (batch, n_digits), generator=generator, device=g_device)
    seq = torch.cat([x, torch.full_like(x[:, :1], 10), x.sort(dim=1).values], dim=1)
    targets = seq[:, 1:].clone()
    targets[:, :n_digits] = -100
    return seq[:, :-1].to(device or g_device), targets.to(device or g_device)
