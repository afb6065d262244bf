"""Two editions of the book from one source, and the chapter notebooks as downloads.

    python tools/editions.py student      # the student edition: _build/student/html
    python tools/editions.py notebooks --out _build/html/downloads
                                          # notebooks.zip and notebooks-student.zip

The **reader edition** (``make site``) shows each solution in a collapsed dropdown. The
**student edition** is the same book without them: it is built by ``jupyter-book build``
with a configuration made here from ``_config.yml`` (never a hand copy; written to
``_build/student/_config.yml``) that changes only what the student edition needs:

- sphinx-exercise's ``hide_solutions``: every ``{solution}`` directive is dropped;
- ``tools/sphinx/student_edition.py``: the code cells tagged ``solution`` are removed too
  (source and outputs), and a page's download button offers the student notebook;
- ``html_copy_source`` off (``_sources/`` would keep every solution), no Colab/Binder
  buttons (they open the repository's notebooks, solutions included);
- the title says "Student edition".

It reads the executed chapters from ``make test``'s cache (``_build/.jupyter_cache``, named
explicitly: Jupyter Book would look under its own output folder) and executes nothing: it
refuses to start when a chapter is missing from the cache, and stops the build if it ever
logs "Executing notebook". The log goes to ``_build/student/book.log``.

``student_notebook(nb)`` is the one definition of "without solutions" for a notebook: cells
tagged ``solution`` and every ``{solution}`` directive in markdown are removed, everything
else is kept as it is. The download zips and the student edition's notebooks use it.
"""
from __future__ import annotations

import argparse
import copy
import functools
import io
import os
import re
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

from booktoc import (
    CACHE,
    ROOT,
    BuildError,
    build_from_cache,
    cached_config,
    chapter_notebooks,
    load_toc,
    uncached_notebooks,
    without,
)

STUDENT_DIR = ROOT / "_build" / "student"
SOLUTION_TAG = "solution"
STUDENT_TITLE = "Student edition"
# Directives whose body is literal text: a "{solution}" line in them is an example, not one.
LITERAL_DIRECTIVES = {"code", "code-block", "code-cell", "sourcecode", "literalinclude",
                      "math", "raw", "eval-rst", "csv-table"}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same chapters give the same zip, byte for byte


# ---------------------------------------------------------------------------------------
# A notebook without its solutions

def is_solution_cell(cell) -> bool:
    """True for a cell tagged ``solution`` (the reference answer of an exercise)."""
    return SOLUTION_TAG in (cell.get("metadata", {}).get("tags") or [])


def cell_source(cell) -> str:
    """A cell's source as one string (a notebook file may store it as a list of lines)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


@functools.lru_cache(maxsize=1)
def _markdown_parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.colon_fence import colon_fence_plugin

    return MarkdownIt("commonmark").use(colon_fence_plugin)


def _directive(info: str) -> str | None:
    """The directive name of a fence's info string ("{solution} ex-04-3" -> "solution")."""
    match = re.match(r"\s*\{([^}\s]+)\}", info)
    return match.group(1) if match else None


def directive_line_ranges(markdown: str, name: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` line ranges of the ``{name}`` directives in markdown.

    Fences are found as MyST reads them (markdown-it: backtick and colon fences of any
    length; a fence inside a longer one is its content), also inside other directives'
    bodies; a fence inside a code block is literal text and is left alone.
    """
    parser = _markdown_parser()
    ranges = []

    def walk(text: str, offset: int):
        for token in parser.parse(text):
            if token.type not in ("fence", "colon_fence") or token.map is None:
                continue
            found = _directive(token.info)
            if name == "solution" and found in ("solution-start", "solution-end"):
                raise ValueError(
                    f"line {offset + token.map[0] + 1}: the gated {{{found}}} form is not "
                    "supported (sphinx-exercise's hide_solutions fails on it); write the "
                    "solution as one {solution} directive")
            if found == name:
                ranges.append((offset + token.map[0], offset + token.map[1]))
            elif found is not None and found not in LITERAL_DIRECTIVES:
                walk(token.content, offset + token.map[0] + 1)  # the body starts a line lower

    walk(markdown, 0)
    return sorted(ranges)


def solution_line_ranges(markdown: str) -> list[tuple[int, int]]:
    """The line ranges of the ``{solution}`` directives (see directive_line_ranges). Raises
    ValueError on the gated ``{solution-start}``/``{solution-end}`` form, which
    sphinx-exercise cannot hide."""
    return directive_line_ranges(markdown, "solution")


def strip_solution_directives(markdown: str) -> str:
    """markdown without its ``{solution}`` directives (and the blank line each leaves)."""
    ranges = solution_line_ranges(markdown)
    if not ranges:
        return markdown
    lines = markdown.split("\n")
    drop = set()
    for start, end in ranges:
        drop.update(range(start, end))
        # one blank line between the neighbours is enough
        before_blank = start == 0 or not lines[start - 1].strip()
        if before_blank and end < len(lines) and not lines[end].strip():
            drop.add(end)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    while kept and not kept[-1].strip():
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept) + ("\n" if kept and markdown.endswith("\n") else "")


def student_notebook(nb):
    """A copy of nb without solutions: no cell tagged ``solution``, no ``{solution}``
    directive in a markdown cell (a markdown cell left empty goes). Everything else (other
    cells, their ids, metadata and outputs, the notebook's metadata) is kept as it is.
    """
    nb = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(nb["cells"]):
        if is_solution_cell(cell):
            continue
        if cell.get("cell_type") == "markdown":
            source = cell_source(cell)
            try:
                stripped = strip_solution_directives(source)
            except ValueError as error:
                raise ValueError(f"cell {index}: {error}") from None
            if stripped != source:
                if not stripped.strip():
                    continue
                cell["source"] = stripped
        cells.append(cell)
    nb["cells"] = cells
    return nb


# ---------------------------------------------------------------------------------------
# The book's chapters

def _check_solution_tags(notebooks: list[Path]) -> None:
    """The student edition removes code cells tagged solution; any other cell so tagged
    would stay on its page (myst-nb keeps no tags of markdown cells)."""
    import nbformat

    wrong = [f"{p.relative_to(ROOT)} cell {i} ({c.cell_type})"
             for p in notebooks for i, c in enumerate(nbformat.read(p, as_version=4).cells)
             if is_solution_cell(c) and c.cell_type != "code"]
    if wrong:
        raise SystemExit("editions.py: only code cells may be tagged 'solution' (solution "
                         "text goes in a {solution} directive): " + ", ".join(wrong))


# ---------------------------------------------------------------------------------------
# The student edition

INSTRUCTOR_PAGES = ("course",)


def student_config(config: dict, root: Path = ROOT, cache_path: Path = CACHE) -> dict:
    """The student edition's Jupyter Book configuration, made from the reader's."""
    if config.get("execute", {}).get("execute_notebooks", "auto") != "cache":
        raise SystemExit("editions.py: _config.yml must read the executed chapters from the "
                         "cache (execute: execute_notebooks: cache)")
    config = cached_config(config, root, cache_path)
    config["title"] = f"{config.get('title') or 'The book'} — {STUDENT_TITLE}"
    # Colab/Binder buttons open the repository's notebooks, with their solutions.
    config.pop("launch_buttons", None)
    html = config.setdefault("html", {})
    html["announcement"] = (f"{STUDENT_TITLE}: the exercises without their solutions.")
    sphinx = config["sphinx"]
    if "sphinx_exercise" not in (sphinx.get("extra_extensions") or []):
        raise SystemExit("editions.py: sphinx_exercise is not in _config.yml's "
                         "sphinx: extra_extensions; the student edition needs it")
    sphinx["local_extensions"].setdefault("student_edition",
                                          str((root / "tools" / "sphinx").resolve()))
    settings = sphinx.setdefault("config", {})
    settings["hide_solutions"] = True
    settings["html_copy_source"] = False  # _sources/ would hand out every solution
    return config


def student_toc(toc: dict) -> dict:
    """The reader's table of contents without the instructors' pages (INSTRUCTOR_PAGES):
    the course page links the PDF and notebooks with solutions, which this edition lacks."""
    return without(toc, INSTRUCTOR_PAGES)


def build_student(root: Path = ROOT, out: Path = STUDENT_DIR, cache_path: Path = CACHE,
                  allow_warnings: bool = False) -> float:
    """Build the student edition into ``out/html``; return the build's seconds."""
    import yaml

    chapters = chapter_notebooks(root)
    _check_solution_tags(chapters)
    missing = uncached_notebooks(chapters, cache_path)
    if missing:
        raise SystemExit(
            f"editions.py: not executed in {cache_path} (make test stores them; the student "
            "edition never executes a chapter): "
            + ", ".join(str(p.relative_to(root)) for p in missing))

    config = student_config(yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")),
                            root, cache_path)
    toc = student_toc(load_toc(root))
    html = out / "html"
    staged = out / "_build" / "html"  # jupyter-book writes under <path-output>/_build
    for old in (html, staged):
        if old.exists():
            shutil.rmtree(old)
    log_path = out / "book.log"
    try:
        seconds = build_from_cache(config, toc, out, log_path, root=root, echo=True,
                                   env={"LMCORE_BOOK_BUILD": "1"},
                                   allow_warnings=allow_warnings)
    except BuildError as error:
        raise SystemExit(f"editions.py: the student edition: {error}") from None
    os.replace(staged, html)
    # what is left there (doctrees, executed notebooks with their solutions) is not needed
    shutil.rmtree(out / "_build", ignore_errors=True)
    where = html.relative_to(root) if html.is_relative_to(root) else html
    print(f"The student edition is in {where} (built in {seconds:.1f} s; log {log_path}).")
    return seconds


# ---------------------------------------------------------------------------------------
# The notebooks as downloads

def readme(student: bool, chapters: list[Path], repository: str) -> str:
    """The README.txt of a notebook zip."""
    def item(text: str) -> str:
        return textwrap.fill(text, 88, initial_indent="- ", subsequent_indent="  ")

    what = ("with the exercises and without their solutions: the solution text and the "
            "solution code cells are removed, everything else is as in the book"
            if student else "with the exercises and their solutions (in the solution "
            "dropdowns and in the hidden code cells tagged 'solution')")
    # the book's rocket button opens the repository's notebook, solutions included
    rocket = "" if student else " (or open it from the book's page with the rocket button)"
    return "\n".join([
        "How Language Models Compute: the chapter notebooks"
        + (" (student edition)" if student else ""), "",
        textwrap.fill(f"Every chapter as a Jupyter notebook, {what}:", 88),
        *(f"  {p.name}" for p in chapters), "",
        "Running them",
        item(f"Google Colab: File > Upload notebook{rocket}, then pick a GPU runtime. The "
             "first code cell clones the book's repository and installs its small package, "
             "lmcore (Colab's own PyTorch is kept), so a notebook needs nothing else from "
             "this zip. Colab needs internet access for that cell."),
        item("Your own computer: the notebooks import lmcore and read data from the "
             f"repository's assets/ folder, so run them inside a clone of the repository "
             f"({repository}): copy them into its chapters/ folder and run `make lab` there "
             "(it installs everything and opens JupyterLab)."), ""])


def _zip_notebooks(path: Path, folder: str, files: dict[str, bytes]) -> None:
    """Write files (name -> bytes) into the zip at path, under folder/, reproducibly."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)  # never a half-written zip


def write_notebook_zips(out: Path, root: Path = ROOT) -> list[Path]:
    """Write ``notebooks.zip`` (the chapters as stored) and ``notebooks-student.zip`` (the
    same through ``student_notebook``) into out; return their paths."""
    import nbformat
    import yaml

    chapters = [p for p in chapter_notebooks(root) if p.parent.name == "chapters"]
    if not chapters:
        raise SystemExit(f"editions.py: no chapter notebooks in {root / '_toc.yml'}")
    repository = (yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
                  .get("repository", {}).get("url", "the book's repository"))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for zip_name, folder, student in [
            ("notebooks.zip", "how-language-models-compute-notebooks", False),
            ("notebooks-student.zip", "how-language-models-compute-student-notebooks", True)]:
        files = {}
        for path in chapters:
            if student:
                nb = student_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
                files[path.name] = nbformat.writes(nb).encode("utf-8") + b"\n"
            else:
                files[path.name] = path.read_bytes()
        files["README.txt"] = readme(student, chapters, repository).encode("utf-8")
        target = out / zip_name
        _zip_notebooks(target, folder, files)
        written.append(target)
        print(f"wrote {target} ({len(chapters)} notebooks, {target.stat().st_size // 1024} KiB)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="build the student edition into "
                                  "_build/student/html from the executed chapters")
    student.add_argument("--allow-warnings", action="store_true",
                         help="do not fail on WARNING lines in the build log")
    notebooks = commands.add_parser("notebooks", help="write notebooks.zip and "
                                    "notebooks-student.zip")
    notebooks.add_argument("--out", type=Path, default=ROOT / "_build" / "html" / "downloads",
                           help="folder for the zips (default: _build/html/downloads)")
    args = parser.parse_args(argv)
    if args.command == "student":
        build_student(allow_warnings=args.allow_warnings)
    else:
        write_notebook_zips(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
