"""The book's table of contents (``_toc.yml``) and its executed chapters, read one way for
every tool that builds from them (editions.py, pdf.py, slides.py, build_course.py), and the
one way to build the book again from those executions (student edition, single page)."""
from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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


def executed_notebook(path: Path, cache_path: Path = CACHE):
    """The notebook as stored (its prose) with the outputs of its execution in the cache,
    or None when the cache holds no execution of its current code."""
    import nbformat

    if not (cache_path / "global.db").is_file():
        return None
    from jupyter_cache import get_cache

    try:
        return get_cache(str(cache_path)).merge_match_into_notebook(
            nbformat.read(path, as_version=4))[1]
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------
# Other builds of the book from the same executions (student edition, single page for PDF)

class BuildError(RuntimeError):
    pass


ALLOWED_WARNING = "[IPKernelApp] WARNING"  # the kernel's, not the book's
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cached_config(config: dict, root: Path = ROOT, cache_path: Path = CACHE) -> dict:
    """A copy of the book's configuration (``_config.yml``, loaded) for a build whose
    configuration file is written elsewhere: the executed chapters read from
    ``cache_path`` (Jupyter Book would otherwise use a cache under the new output folder)
    and the local extensions' paths made absolute (they are found relative to the file)."""
    config = copy.deepcopy(config)
    config.setdefault("execute", {})["cache"] = str(Path(cache_path).absolute())
    sphinx = config.setdefault("sphinx", {})
    sphinx["local_extensions"] = {name: str((root / path).resolve())
                                  for name, path in (sphinx.get("local_extensions") or {}).items()}
    return config


def build_from_cache(config: dict, toc: dict, out: Path, log_path: Path, *, root: Path = ROOT,
                     builder: str = "html", env: dict | None = None, echo: bool = False,
                     allow_warnings: bool = False) -> float:
    """``jupyter-book build`` of ``root`` with ``config`` and ``toc`` (written into ``out``,
    the output under ``out/_build/<builder>``); return its seconds. BuildError if it fails,
    logs a warning (unless allowed) or starts executing a chapter: then it is stopped at
    once, since every chapter must come from the cache."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    config_path, toc_path = out / "_config.yml", out / "_toc.yml"
    for path, data in ((config_path, config), (toc_path, toc)):
        path.write_text("# Made from the book's own file by tools/; do not edit.\n"
                        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                        encoding="utf-8")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book if jupyter_book.exists() else shutil.which("jupyter-book")),
               "build", str(root), "--all", "--builder", builder, "--config",
               str(config_path), "--toc", str(toc_path), "--path-output", str(out)]
    start, executed = time.perf_counter(), None
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=root, env={**os.environ, **(env or {})},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1, start_new_session=True)
        for line in process.stdout:
            log.write(line)
            if echo:
                sys.stdout.write(line)
            if "Executing notebook" in line:
                executed = ANSI.sub("", line).strip()
                _stop(process)
                break
        process.stdout.close()
        code = process.wait()
    seconds = time.perf_counter() - start
    if executed:
        raise BuildError(f"the build started executing a chapter ({executed}); it must read "
                         f"every chapter from {config['execute']['cache']}. Stopped; log: "
                         f"{log_path}")
    if code != 0:
        raise BuildError(f"jupyter-book failed (exit {code}); log: {log_path}")
    warnings = [ANSI.sub("", line).rstrip()
                for line in log_path.read_text(encoding="utf-8").splitlines()
                if "WARNING" in line and ALLOWED_WARNING not in line]
    if warnings and not allow_warnings:
        raise BuildError(f"the build logged warnings (the book builds without; log {log_path})"
                         ":\n  " + "\n  ".join(warnings))
    return seconds


def _stop(process: subprocess.Popen) -> None:
    """End the build and the kernel it started (its own process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
