"""Create a chapter notebook with the fixed cells of the template (see CONTRIBUTING.md).

    python tools/new_chapter.py chapters/NN_slug.ipynb "Title"
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def repository_url() -> str:
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    match = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.MULTILINE)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(1)


def colab_cell_source() -> str:
    """The first code cell of every chapter (tools/sync_colab_cell.py rewrites it in each).

    In Colab it clones the book and installs lmcore with ``pip install -e ".[book]"``;
    pyproject.toml gives ranges, so Colab's own CUDA build of torch is kept. The clone's
    URL and folder can be overridden (``LMCORE_REPO_URL``, ``LMCORE_COLAB_DIR``): that is
    how tests/test_colab.py runs it against a local copy.
    """
    url = repository_url()
    return f'''# In Colab: fetch the book and install lmcore (Colab's own torch is kept).
# Elsewhere this cell does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    url = os.environ.get(
        "LMCORE_REPO_URL",
        "{url}")
    book = os.environ.get("LMCORE_COLAB_DIR", "/content/lmbook")
    if not os.path.isdir(book):
        subprocess.run(["git", "clone", "--depth", "1", url, book], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        "-e", book + "[book]"], check=True)
    sys.path.insert(0, book)
    os.chdir(os.path.join(book, "chapters"))'''


def exercise_source(number: str, k: int, coding: bool = False) -> str:
    """An exercise and its solution in the book's form (CONTRIBUTING.md, item 9)."""
    label = f"ex-{number}-{k}"
    kind = "\n:class: coding" if coding else ""
    heading = "## Exercises\n\n" if k == 1 else ""
    return (f"{heading}```{{exercise}} Title\n:label: {label}{kind}\n"
            "What to write and how it is checked.\n```\n"
            f"```{{solution}} {label}\n:class: dropdown\nThe idea of the answer.\n```")


def new_chapter(path: Path, title: str) -> None:
    number = path.stem[:2]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat the reader will be able to do after this chapter."),
        nbformat.v4.new_code_cell(colab_cell_source(), metadata={"tags": ["colab", "remove-cell"]}),
        nbformat.v4.new_code_cell("import torch\nimport lmcore\nfrom lmcore.notebook import setup, glue\n\ndevice = setup(seed=0)"),
        nbformat.v4.new_markdown_cell("## Learning goals\n\n- ..."),
        nbformat.v4.new_markdown_cell("## Key terms\n\n| English | 中文 | Meaning |\n|---|---|---|\n| term | 术语 | one line |"),
        nbformat.v4.new_markdown_cell(exercise_source(number, 1, coding=True)),
        nbformat.v4.new_code_cell("# the reference answer\nassert ...",
                                  metadata={"tags": ["hide-cell", "solution"]}),
    ]
    if path.exists():
        raise SystemExit(f"{path} exists; not overwriting")
    nbformat.write(nb, path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    new_chapter(Path(sys.argv[1]), sys.argv[2])
