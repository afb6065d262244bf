"""The cheapest guard for the GPU path, where CI has no GPU: a static check of lmcore/ and
the chapters for the mistakes that stop a chapter on CUDA (issue 9 found each of them).

- a random draw with a CPU ``torch.Generator()`` on a tensor that may live on the GPU
  ("Expected a 'cuda' device type for generator"): ``torch.randn(..., device=device,
  generator=g)``, ``torch.multinomial(probs, ..., generator=g)``, ``x.normal_(generator=g)``;
- ``.numpy()`` on a tensor that may live on the GPU without ``.cpu()`` first;
- ``.cuda()`` / ``.to("cuda")`` / ``device="cuda"`` (code must pick its device with
  ``lmcore.get_device()``);
- ``torch.bfloat16`` where nothing checks that the GPU has bf16 (a T4 has not).

"May live on the GPU": in a chapter, a value computed from ``device`` (``.to(device)``,
``device=device``, ``x.device``, a model moved to the device, and anything computed from
those); in lmcore, also every function argument, since the library serves every device.
``.cpu()``, ``.item()`` and ``.tolist()`` bring a value back. The check is cheap and
conservative: it follows simple names and attributes through one file or notebook.
``make gpu-check`` runs the real thing on a GPU.
"""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "lmcore").glob("*.py"))
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))

FACTORIES = {"randn", "rand", "randint", "randperm", "normal", "randn_like", "rand_like",
             "randint_like", "empty"}
ON_INPUT = {"multinomial", "bernoulli", "poisson"}  # draw on the device of their input
IN_PLACE = {"normal_", "uniform_", "random_", "exponential_", "bernoulli_", "cauchy_",
            "log_normal_", "geometric_"}
BACK_TO_CPU = {"cpu", "item", "tolist"}
# Calls whose result is never a GPU tensor (NumPy, math and Python's own containers/numbers).
CPU_CALLS = {"np", "numpy", "math", "list", "tuple", "dict", "set", "int", "float", "bool",
             "len", "range", "sorted", "str", "round"}
BF16_CHECKS = ("is_bf16_supported", "get_device_capability", "bf16_supported")


def _dotted(node):
    """``self.gen`` -> "self.gen"; None for anything that is not a plain name/attribute."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _is_cpu_literal(node):
    if isinstance(node, ast.Constant) and node.value == "cpu":
        return True
    return (isinstance(node, ast.Call) and _dotted(node.func) == "torch.device" and node.args
            and _is_cpu_literal(node.args[0]))


def _is_cuda_literal(node):
    return isinstance(node, ast.Constant) and isinstance(node.value, str) \
        and node.value.startswith("cuda")


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


class _Checker(ast.NodeVisitor):
    def __init__(self, library: bool):
        self.library = library  # function arguments may be on any device
        self.on_device = set()  # names whose value may live on the GPU
        self.on_cpu = set()  # names known to hold CPU tensors / CPU generators
        self.cpu_generators, self.device_generators = set(), set()
        self.problems = []  # (line, message)

    # --- what is where -------------------------------------------------------------------
    def may_be_on_device(self, node) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in BACK_TO_CPU:
            return False
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "to" and node.args and _is_cpu_literal(node.args[0]):
            return False
        if isinstance(node, ast.Call) and (_dotted(node.func) or "").split(".")[0] in CPU_CALLS:
            return False
        name = _dotted(node)
        if name is not None:
            if name in self.on_device or name.split(".")[0] in self.on_device:
                return True
            if name in self.on_cpu:
                return False
            return name == "device" or name.endswith(".device") or (
                self.library and name.split(".")[0] in self.arguments)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.keyword):
                if child.arg == "device" and not _is_cpu_literal(child.value):
                    return True
                continue
            if isinstance(child, (ast.expr_context, ast.Lambda)):
                continue
            if isinstance(child, ast.expr) and self.may_be_on_device(child):
                return True
        return False

    def generator_kind(self, node):
        """"cpu", "device" or None (not known) for an expression that is a generator."""
        if isinstance(node, ast.Call):
            if _dotted(node.func) == "torch.Generator":
                device = _keyword(node, "device") or (node.args[0] if node.args else None)
                return "cpu" if device is None or _is_cpu_literal(device) else "device"
            if isinstance(node.func, ast.Attribute) and node.func.attr == "manual_seed":
                return self.generator_kind(node.func.value)
        name = _dotted(node)
        if name in self.cpu_generators:
            return "cpu"
        if name in self.device_generators:
            return "device"
        return None

    # --- bookkeeping ---------------------------------------------------------------------
    arguments: set = frozenset()

    device_globals: set = frozenset()  # chapter names that hold device values (first pass)
    device_checked: set = frozenset()  # names whose .device the current function reads

    def visit_FunctionDef(self, node):
        saved = self.arguments, self.device_checked
        names = {a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]}
        # A library function may be handed tensors on any device; a chapter's helper, the
        # chapter's own model and tensors (a parameter named like one of them).
        names = names if self.library else names & set(self.device_globals)
        self.arguments = set(saved[0]) | names - {"self", "cls"}
        self.device_checked = {_dotted(n.value) for n in ast.walk(node)
                               if isinstance(n, ast.Attribute) and n.attr == "device"}
        self.generic_visit(node)
        self.arguments, self.device_checked = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def _bind(self, target, value):
        names = [_dotted(t) for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
        kind = self.generator_kind(value)
        device = self.may_be_on_device(value)
        for name in filter(None, names):
            for group in (self.on_device, self.on_cpu, self.cpu_generators, self.device_generators):
                group.discard(name)
            if kind == "cpu":
                self.cpu_generators.add(name)
            elif kind == "device":
                self.device_generators.add(name)
            elif device:
                self.on_device.add(name)
            else:
                self.on_cpu.add(name)

    def visit_Assign(self, node):
        self.generic_visit(node)
        for target in node.targets:
            self._bind(target, node.value)

    def visit_AnnAssign(self, node):
        self.generic_visit(node)
        if node.value is not None:
            self._bind(node.target, node.value)

    def visit_For(self, node):
        self.visit(node.iter)
        self._bind(node.target, node.iter)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    # --- the rules -----------------------------------------------------------------------
    def report(self, node, message):
        self.problems.append((node.lineno, message))

    def visit_Call(self, node):
        self.generic_visit(node)
        func = node.func
        attr = func.attr if isinstance(func, ast.Attribute) else None
        if attr == "cuda" or (attr == "to" and node.args and _is_cuda_literal(node.args[0])):
            self.report(node, "moves to CUDA by hand; use the device of lmcore.get_device()")
        device_kw = _keyword(node, "device")
        if device_kw is not None and _is_cuda_literal(device_kw):
            self.report(node, 'device="cuda" by hand; use lmcore.get_device()')
        if attr == "numpy" and self.may_be_on_device(func.value):
            self.report(node, ".numpy() on a tensor that may be on the GPU; call .cpu() first")
        generator = _keyword(node, "generator")
        if generator is None:
            return
        kind = self.generator_kind(generator)
        if kind is None and self.library and _dotted(generator) in self.arguments \
                and _dotted(generator) not in self.device_checked:
            kind = "cpu"  # a caller's generator may be a CPU one: nothing here checks its device
        if kind != "cpu":
            return
        name = _dotted(func) or ""
        short = name.rsplit(".", 1)[-1] if name else attr
        if name.startswith("torch.") and short in FACTORIES:
            if device_kw is not None and not _is_cpu_literal(device_kw):
                self.report(node, f"torch.{short}(device=..., generator=<CPU generator>): "
                            "create the generator on that device")
        elif short in ON_INPUT or short in IN_PLACE:
            tensor = node.args[0] if name.startswith("torch.") and node.args else \
                (func.value if isinstance(func, ast.Attribute) else None)
            if tensor is not None and self.may_be_on_device(tensor):
                self.report(node, f"{short}(..., generator=<CPU generator>) on a tensor that may "
                            "be on the GPU: draw on the generator's device "
                            "(lmcore.generate.draw) or use torch.Generator(device=x.device)")


def check_source(source: str, library: bool) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    first = _Checker(library)
    first.visit(tree)
    checker = _Checker(library)
    checker.device_globals = first.on_device
    checker.visit(tree)
    if "torch.bfloat16" in source and not any(c in source for c in BF16_CHECKS):
        line = next(i for i, text in enumerate(source.splitlines(), 1) if "torch.bfloat16" in text)
        message = "torch.bfloat16 with no check that the GPU has bf16 (capability >= 8.0)"
        checker.problems.append((line, message))
    return sorted(set(checker.problems))


def notebook_source(path: Path) -> tuple[str, list[int]]:
    """The code cells as one program (magics dropped), and the cell of each line."""
    lines, cells = [], []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            lines.append("" if line.lstrip().startswith(("%", "!")) else line)
            cells.append(index)
        lines.append("")
        cells.append(index)
    return "\n".join(lines), cells


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_library_is_safe_on_the_gpu(path):
    problems = check_source(path.read_text(encoding="utf-8"), library=True)
    assert not problems, "\n".join(f"{path.name}:{line}: {msg}" for line, msg in problems)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_safe_on_the_gpu(path):
    source, cells = notebook_source(path)
    problems = check_source(source, library=False)
    assert not problems, "\n".join(f"{path.name} cell {cells[line - 1]}: {msg}"
                                   for line, msg in problems)


# The guard itself: it must catch each mistake, and leave the right code alone.
BAD = {
    "randn on the device, CPU generator": """
g = torch.Generator().manual_seed(0)
x = torch.randn(3, device=device, generator=g)""",
    "multinomial on model output": """
model = GPT(cfg).to(device)
g = torch.Generator().manual_seed(0)
probs = model(idx).logits[:, -1].softmax(-1)
nxt = torch.multinomial(probs, 1, generator=g)""",
    "in-place draw": """
w = torch.empty(3, 3, device=device)
w.normal_(generator=torch.Generator().manual_seed(1))""",
    "numpy of device tensor": """
x = torch.ones(3).to(device)
y = (x * 2).detach()
plot(y.numpy())""",
    "library: derived from an argument": """
def f(logits):
    p = logits.softmax(-1)
    return p.numpy()""",
    "numpy in a loop": """
for h in model.to(device).hidden_states(x):
    print(h.numpy())""",
    "cuda by hand": "x = torch.ones(2).cuda()",
    "cuda string": 'x = torch.ones(2, device="cuda:0")',
    "bf16 without a check": "with torch.autocast('cuda', dtype=torch.bfloat16):\n    pass",
}
GOOD = {
    "generator on the device": """
g = torch.Generator(device=device).manual_seed(0)
x = torch.randn(3, device=device, generator=g)
nxt = torch.multinomial(model.to(device)(x), 1, generator=g)""",
    "CPU weights then moved": """
g = torch.Generator().manual_seed(0)
w = torch.randn(3, 3, generator=g).to(device)
probs = torch.tensor([0.5, 0.5])
torch.multinomial(probs, 4, generator=g)""",
    "cpu before numpy": """
x = torch.ones(3, device=device)
y = x.detach().cpu().numpy()
z = torch.linspace(0, 1, 5).numpy()
v = x.cpu()
v.numpy()""",
    "bf16 with a check": """
ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
dtype = torch.bfloat16 if ok else torch.float16""",
    "NumPy values and lists are on the CPU": """
def sample(self, context, generator):
    history = list(context)
    p = self.next_distribution(history)
    p = np.exp(np.log(p))
    return torch.multinomial(torch.as_tensor(p / p.sum()), 1, generator=torch.Generator())""",
    "cpu device literal": 'x = torch.randn(3, device="cpu", generator=torch.Generator())',
}


@pytest.mark.parametrize("name", BAD)
def test_guard_catches(name):
    assert check_source(BAD[name], library=name.startswith("library")), name


@pytest.mark.parametrize("name", GOOD)
def test_guard_leaves_alone(name):
    for library in (False, True):
        assert check_source(GOOD[name], library=library) == [], (name, library)


def test_generator_arguments_must_be_matched_to_the_device():
    """lmcore's sample_next before issue 9: a caller's CPU generator, CUDA probabilities."""
    bad = "def sample_next(probs, generator=None):\n" \
          "    return torch.multinomial(probs, 1, generator=generator)"
    good = "def draw(probs, generator=None):\n" \
           "    if generator is not None and generator.device != probs.device:\n" \
           "        probs = probs.to(generator.device)\n" \
           "    return torch.multinomial(probs, 1, generator=generator)"
    assert check_source(bad, library=True) and check_source(good, library=True) == []


def test_chapter_helpers_see_the_chapter_model():
    source = "model = GPT(cfg).to(device)\n" \
             "def show(model, x):\n    return model(x).numpy()\n" \
             "def other(net, x):\n    return net(x).numpy()\n"
    assert [line for line, _ in check_source(source, library=False)] == [3]


def test_library_arguments_count_as_device_tensors():
    source = "def f(probs, seed):\n    g = torch.Generator().manual_seed(seed)\n" \
             "    return torch.multinomial(probs, 1, generator=g), probs.numpy()"
    assert len(check_source(source, library=True)) == 2
    assert check_source(source, library=False) == []
