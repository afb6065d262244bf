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
    match = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M)
    if not match:
        raise SystemExit("_config.yml has no repository.url")
    return match.group(1)


def colab_cell_source() -> str:
    url = repository_url()
    return f'''# In Colab: fetch the book and install lmcore (Colab's own torch is kept). Elsewhere: nothing.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/lmbook"):
        subprocess.run(["git", "clone", "--depth", "1", "{url}", "/content/lmbook"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/lmbook[book]"], check=True)
    sys.path.insert(0, "/content/lmbook")
    os.chdir("/content/lmbook/chapters")'''


def new_chapter(path: Path, title: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat the reader will be able to do after this chapter."),
        nbformat.v4.new_code_cell(colab_cell_source(), metadata={"tags": ["colab", "remove-cell"]}),
        nbformat.v4.new_code_cell("import torch\nimport lmcore\nfrom lmcore.notebook import setup, glue\n\ndevice = setup(seed=0)"),
        nbformat.v4.new_markdown_cell("## Learning goals\n\n- ..."),
        nbformat.v4.new_markdown_cell("## Key terms\n\n| English | 中文 | Meaning |\n|---|---|---|\n| term | 术语 | one line |"),
        nbformat.v4.new_markdown_cell("## Exercises"),
    ]
    if path.exists():
        raise SystemExit(f"{path} exists; not overwriting")
    nbformat.write(nb, path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    new_chapter(Path(sys.argv[1]), sys.argv[2])
