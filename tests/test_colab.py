"""Each chapter's first cell, run as Colab runs it (issue 9: it had never run anywhere).

Colab's runtime is imitated: a fresh virtual environment whose preinstalled packages
(torch first of all) are this project's environment, seen read-only and without lmcore; a
stand-in ``google.colab`` module imported before the cell, as Colab's kernel does; the
repository URL pointed at a local git repository holding the current tree
(``LMCORE_REPO_URL``), cloned into a temporary folder instead of /content
(``LMCORE_COLAB_DIR``). pip gets no index, so installing anything that is not already
there fails instead of downloading. Checks: the cell clones and installs lmcore; torch is
the same file and version afterwards (nothing replaced it); lmcore is imported from the
clone; and every import statement of the chapter works after the cell.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
pytestmark = pytest.mark.slow


def _chapter_imports(nb) -> str:
    """Every top-level import statement in the chapter's code cells (after the first)."""
    lines = []
    for cell in [c for c in nb.cells if c.cell_type == "code"][1:]:
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        lines += [ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "\n".join(dict.fromkeys(lines))


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """(python, env, clone folder, torch's version and file) of an imitated Colab runtime."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to run the Colab cell (it clones the book)")
    tmp = tmp_path_factory.mktemp("colab")
    # 1. The repository, as a commit of the current tree (tracked and new, not ignored, files).
    remote = tmp / "remote.git"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (remote / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, remote / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c",
           "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run([*git, *args], cwd=remote, check=True, capture_output=True)
    # 2. A fresh venv that already has this environment's packages (torch...) but not lmcore.
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    preinstalled = tmp / "preinstalled"
    preinstalled.mkdir()
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name.startswith(("lmcore", "__editable__")) or entry.suffix == ".pth" \
                or entry.name == "__pycache__":
            continue
        (preinstalled / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "colab_preinstalled.pth").write_text(f"{preinstalled}\n")
    # 3. google.colab, as far as the chapters need it.
    standin = tmp / "standin" / "google" / "colab"
    standin.mkdir(parents=True)
    (standin / "__init__.py").write_text(
        '"""Stand-in for Colab\'s module (tests/test_colab.py)."""\n'
        "import types\n\noutput = types.SimpleNamespace(enable_custom_widget_manager=lambda: None)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "LMCORE_"))}
    env.update(
        PYTHONPATH=str(tmp / "standin"), LMCORE_REPO_URL=remote.as_uri(),
        LMCORE_COLAB_DIR=str(tmp / "content" / "lmbook"), PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
        # Colab builds lmcore in an isolated environment with setuptools from PyPI; with no
        # index here, the preinstalled setuptools builds it.
        PIP_NO_BUILD_ISOLATION="0", MPLBACKEND="Agg")
    (tmp / "content").mkdir()
    (torch_before,) = _run(python, env, tmp / "content", "-c", TORCH)
    assert Path(torch_before["torch"][1]).is_relative_to(preinstalled), torch_before
    return python, env, tmp / "content" / "lmbook", torch_before


# One process runs every chapter's cell and imports in turn (a process per chapter would
# import torch and transformers nine times over); each chapter is reported on its own.
RUN = textwrap.dedent("""
    import json, os, sys, traceback
    import google.colab  # Colab's kernel has imported it before any cell runs
    for name, cell, imports in json.loads(sys.argv[1]):
        result = {"chapter": name}
        try:
            exec(compile(cell, name + ": Colab cell", "exec"), {})
            exec(compile(imports, name + ": imports", "exec"), {})
            import lmcore, torch
            result.update(lmcore=lmcore.__file__, cwd=os.getcwd(),
                          torch=[torch.__version__, torch.__file__])
        except BaseException:
            result["error"] = traceback.format_exc()
        print(json.dumps(result), flush=True)
""")
TORCH = 'import json, torch; print(json.dumps({"torch": [torch.__version__, torch.__file__]}))'


def _run(python, env, cwd, *args):
    proc = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert proc.returncode == 0, f"failed in the imitated Colab runtime:\n{proc.stderr[-4000:]}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def results(colab):
    python, env, book, _ = colab
    jobs = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code")
        if "LMCORE_REPO_URL" in cell.source:  # else it would clone the real repository
            jobs.append((path.stem, cell.source, _chapter_imports(nb)))
    return {r["chapter"]: r for r in _run(python, env, book.parent, "-c", RUN, json.dumps(jobs))}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_colab_first_cell(colab, results, path):
    _, _, book, torch_before = colab
    assert path.stem in results, \
        "the Colab cell is not the template's (run python tools/sync_colab_cell.py)"
    result = results[path.stem]
    assert "error" not in result, result.get("error")
    assert Path(result["lmcore"]).is_relative_to(book), f"lmcore imported from {result['lmcore']}"
    assert Path(result["cwd"]) == book / "chapters"
    assert result["torch"] == torch_before["torch"], "installing lmcore replaced torch"


def test_colab_install_adds_only_lmcore(colab, results):
    python, env, book, torch_before = colab
    assert results, "no chapter has the template's Colab cell"
    (purelib,) = _run(python, env, book.parent, "-c",
                      "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))")
    installed = sorted(p.name.split("-")[0] for p in Path(purelib["purelib"]).glob("*.dist-info"))
    assert installed == ["lmcore"], f"pip installed more than lmcore into the runtime: {installed}"
    assert _run(python, env, book.parent, "-c", TORCH) == [torch_before]


def _declared_distributions() -> set[str]:
    """Every distribution `pip install -e ".[book]"` brings: pyproject's dependencies and
    the book extra, with what they require in turn (as installed here)."""
    from importlib import metadata

    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["book"]]]
    seen = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            needs = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: its own imports are then missing and fail elsewhere
        todo += [r for r in map(Requirement, needs) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_imports_come_with_lmcore_book(path):
    """Each module a chapter imports is in the standard library or installed by
    `pip install -e ".[book]"`, the Colab cell's install: nothing is there by luck
    (because this machine, or Colab today, happens to have it)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    declared = _declared_distributions()
    providers = metadata.packages_distributions()
    tree = ast.parse(_chapter_imports(nbformat.read(path, as_version=4)))
    modules = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    missing = sorted(m for m in modules - {"lmcore"} if m not in sys.stdlib_module_names
                     and not any(canonicalize_name(d) in declared for d in providers.get(m, [])))
    assert not missing, (f"{path.name} imports {missing}, which pyproject.toml does not install "
                         "(add a range to the book extra)")
