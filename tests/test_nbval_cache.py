"""tools/nbval_cache.py: nbval's execution stored for the book is what the book build's own
execution (nbclient, through jupyter-cache as myst-nb calls it) would have stored.

A small notebook with the output kinds the chapters use (streams, rich displays, a
trailing semicolon, glue, clear_output, an ipywidgets slider, an Output widget written
to inside a cell, interact, an empty cell) is executed both ways; the stored notebook must
match the reference in every output and in the saved widget state (random ids aside), and
myst-nb's lookup must find it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

CELLS = [
    "import ipywidgets as widgets\nfrom IPython.display import HTML, clear_output, display",
    "print('hello')\nprint('world')",
    "display(HTML('<b>bold</b>'))\n41 + 1",
    "x = 3\nx + 1;",
    "",
    "for i in range(3):\n    clear_output(wait=True)\n    print('step', i)",
    "from myst_nb import glue\nglue('answer', 42)",
    "slider = widgets.IntSlider(value=7, description='n')\nslider",
    ("out = widgets.Output()\ndisplay(out)\nwith out:\n    print('inside the widget')\n"
     "    clear_output(wait=True)\n    print('replaced')"),
    "def f(k=2):\n    print('k squared', k * k)\n\nwidgets.interact(f, k=(0, 5))",
    "slider.value = 9\nprint(slider.value)",
]


def _notebook(path: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A test")] + [nbformat.v4.new_code_cell(c) for c in CELLS]
    nbformat.write(nb, path)
    return nb


IDS = re.compile(r"[0-9a-f]{32}")


def _outputs(nb):
    return [(c.execution_count, json.loads(IDS.sub("ID", json.dumps(c.outputs, sort_keys=True))))
            for c in nb.cells if c.cell_type == "code"]


def _widgets(nb):
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return sorted(IDS.sub("ID", json.dumps(v, sort_keys=True)) for v in state.get("state", {}).values())


def test_nbval_run_stores_what_the_book_build_would(tmp_path):
    from jupyter_cache import get_cache
    from jupyter_cache.executors.utils import single_nb_execution

    path = tmp_path / "probe.ipynb"
    _notebook(path)
    cache = tmp_path / "cache"
    env = {**os.environ, "LMCORE_EXECUTION_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "nbval_cache", "--nbval-lax", str(path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, stored = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(path, as_version=4))

    reference = nbformat.read(path, as_version=4)
    result = single_nb_execution(reference, cwd=str(tmp_path), timeout=120, allow_errors=False)
    assert result.err is None, result.exc_string

    assert _outputs(stored) == _outputs(reference)
    assert _widgets(stored) == _widgets(reference) and len(_widgets(reference)) > 5
    assert stored.metadata["language_info"] == reference.metadata["language_info"]


def test_failed_notebook_is_not_stored(tmp_path):
    from jupyter_cache import get_cache

    path = tmp_path / "broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("1 / 0")]
    nbformat.write(nb, path)
    cache = tmp_path / "cache"
    env = {**os.environ, "LMCORE_EXECUTION_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "nbval_cache", "--nbval-lax", str(path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert not (cache / "global.db").exists() or not get_cache(str(cache)).list_cache_records()


def test_cells_skipped_by_both_keep_the_notebook_cached(tmp_path):
    """A cell tagged skip-execution (nbclient) and nbval-skip (nbval) is stored unexecuted,
    as the book build would leave it; a cell only nbval skips makes the notebook uncached."""
    from jupyter_cache import get_cache

    env = {**os.environ, "LMCORE_EXECUTION_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tools"), os.environ.get("PYTHONPATH", "")])}
    for name, tags, stored in (("both", ["skip-execution", "nbval-skip"], True),
                               ("nbval_only", ["nbval-skip"], False)):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell("print(1)"),
                    nbformat.v4.new_code_cell("print('not run')", metadata={"tags": tags}),
                    nbformat.v4.new_code_cell("print(3)")]
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, path)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "nbval_cache", "--nbval-lax", str(path)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stdout[-2000:]
        try:
            _, got = get_cache(str(tmp_path / "cache")).merge_match_into_notebook(nb)
        except KeyError:
            got = None
        assert (got is not None) == stored, name
        if got is not None:
            assert [c.execution_count for c in got.cells] == [1, None, 2]
            assert got.cells[1].outputs == [] and got.cells[2].outputs[0].text == "3\n"
