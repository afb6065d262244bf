"""Rewrite the Colab cell (the first code cell) of every chapter from the template.

    python tools/sync_colab_cell.py            rewrite the chapters whose cell differs
    python tools/sync_colab_cell.py --check    list them and exit 1, changing nothing

The template is ``new_chapter.colab_cell_source()``; tests/test_chapters.py checks that
each chapter's first code cell equals it. The cell keeps its tags and id; nothing else in
the notebook changes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from new_chapter import ROOT, colab_cell_source


def sync(paths, check: bool = False) -> list[Path]:
    source = colab_cell_source()
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        cell = next((c for c in nb.cells if c.cell_type == "code"), None)
        if cell is None or "colab" not in cell.metadata.get("tags", []):
            raise SystemExit(f"{path}: the first code cell is not tagged 'colab'")
        if cell.source != source:
            changed.append(path)
            if not check:
                cell.source = source
                nbformat.write(nb, path)
    return changed


def main(argv) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "chapters").glob("*.ipynb"))
    changed = sync(paths, check)
    for path in changed:
        print(f"{'differs' if check else 'rewrote'}: {path}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
