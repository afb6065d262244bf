"""The book's table of contents (``_toc.yml``) and its executed chapters, read one way for
every tool that builds from them (editions.py, pdf.py, slides.py, build_course.py)."""
from __future__ import annotations

import copy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "_build" / ".jupyter_cache"  # where make test stores the executed chapters


def load_toc(root: Path = ROOT) -> dict:
    import yaml

    return yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))


def toc_files(entry) -> list[str]:
    """Every file a table of contents (or a part of it) names, the root first, in reading
    order, without suffixes."""
    if not isinstance(entry, dict):
        return []
    found = [entry["file"]] if "file" in entry else []
    for key in ("root", "parts", "chapters", "sections"):
        value = entry.get(key)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            for item in value:
                found.extend(toc_files(item))
    return found


def without(toc: dict, pages) -> dict:
    """The table of contents without ``pages`` (files without suffix), and without the
    parts that leaves empty."""
    toc = copy.deepcopy(toc)
    parts = []
    for part in toc.get("parts", []):
        part["chapters"] = [c for c in part.get("chapters", []) if c.get("file") not in pages]
        if part["chapters"]:
            parts.append(part)
    toc["parts"] = parts
    return toc


def source_files(root: Path = ROOT) -> list[Path]:
    """The source (``.ipynb`` or ``.md``) of each page, in reading order."""
    files = []
    for name in toc_files(load_toc(root)):
        found = [root / (name + s) for s in (".ipynb", ".md") if (root / (name + s)).is_file()]
        files.extend(found[:1])
    return files


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks of the table of contents, in reading order."""
    return [p for p in source_files(root) if p.suffix == ".ipynb"]


def uncached_notebooks(notebooks: list[Path], cache_path: Path = CACHE) -> list[Path]:
    """The notebooks that myst-nb would not find executed in the jupyter-cache at
    ``cache_path``: it matches a notebook by its code (``execute_notebooks: cache``)."""
    import nbformat

    if not (cache_path / "global.db").is_file():
        return list(notebooks)
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_path))
    missing = []
    for path in notebooks:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            missing.append(path)
    return missing
