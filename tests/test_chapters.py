"""Every chapter follows the template in CONTRIBUTING.md (checked statically here; the
chapters themselves are executed once per `make test`, by `pytest --nbval-lax chapters`,
and the book is built from those executions). The `executed` tests read the executed
notebooks that run leaves in the book's jupyter-cache."""
import ast
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import booktoc
import build_glossary
import new_chapter

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
WIDTH = 80  # characters the page shows of a code or output line without cutting it
CACHE = ROOT / "_build" / ".jupyter_cache"  # where make test leaves the executed chapters
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BIB_KEYS = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(encoding="utf-8"), re.MULTILINE))


def _source(nb, kind=None):
    return "\n".join(c.source for c in nb.cells if kind is None or c.cell_type == kind)


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    listed = re.findall(r"file:\s*(chapters/\S+)", toc)
    assert sorted(listed) == [f"chapters/{p.stem}" for p in CHAPTERS]


def test_glossary_is_current_and_consistent():
    text = build_glossary.build()  # raises if a term has two Chinese renderings
    assert (ROOT / "glossary.md").read_text(encoding="utf-8") == text, "run python tools/build_glossary.py"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_template(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    md = _source(nb, "markdown")
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    assert code[0].source == new_chapter.colab_cell_source(), "first code cell must be the Colab cell"
    assert "setup(" in code[1].source, "second code cell must call lmcore.notebook.setup()"
    for heading in ("## Learning goals", "## Key terms", "## Exercises"):
        assert heading in md, f"missing section {heading!r}"
    assert list(build_glossary.chapter_terms(path)), "Key terms table is empty"
    assert re.search(r":class:\s*warning", md) and "Pitfall" in md, "no pitfall box"
    code_src = _source(nb, "code")
    assert any(s in code_src for s in ("import plotly", "lmcore.viz", "from lmcore import viz")), \
        "no plotly figure"
    assert "ipywidgets" in _source(nb, "code") or "explorer" in _source(nb, "code"), "no widget explorer"
    assert any("assert " in c.source for c in code), "no cell asserts a number"
    assert ".cuda()" not in _source(nb, "code")


# sphinx-exercise blocks (CONTRIBUTING.md, "Exercises"): ```{exercise} Title / :label: ...
DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{(exercise|solution)\}[ \t]*(.*)\n((?::[\w-]+:.*\n)*)", re.MULTILINE)


def exercise_blocks(nb):
    """[(kind, argument, {option: value}, cell index)] of the notebook's exercise and
    solution directives, in order."""
    return [(m.group(2), m.group(3).strip(),
             dict(re.findall(r"^:([\w-]+):[ \t]*(.*)$", m.group(4), re.MULTILINE)), i)
            for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
            for m in DIRECTIVE.finditer(c.source)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exercises(path):
    """Numbered exercises (sphinx-exercise), >= 4 per chapter, >= 2 coding; each with one
    solution that a student edition can drop: a dropdown {solution} and, for a coding
    exercise, code cells tagged solution (+ hide-cell) that assert the answer."""
    nb = nbformat.read(path, as_version=4)
    number = path.stem[:2]
    blocks = exercise_blocks(nb)
    exercises = [b for b in blocks if b[0] == "exercise"]
    labels = [options.get("label") for _, _, options, _ in exercises]
    assert labels == [f"ex-{number}-{k}" for k in range(1, len(labels) + 1)], \
        f"exercise labels must be ex-{number}-1, ex-{number}-2, ... in order: {labels}"
    assert len(exercises) >= 4, f"{len(exercises)} exercises; the template asks for >= 4"
    assert all(title[:1].isupper() or not title[:1].isalpha() for _, title, _, _ in exercises)
    solutions = [(arg, options) for kind, arg, options, _ in blocks if kind == "solution"]
    assert sorted(arg for arg, _ in solutions) == sorted(labels), \
        "every exercise needs exactly one {solution} naming its label"
    assert all(options.get("class") == "dropdown" for _, options in solutions)
    md = _source(nb, "markdown")
    assert not re.search(r"\{admonition\}\s*(Exercise|Solution)", md), "use {exercise}/{solution}"
    assert not re.search(r"(?<![`{])\bExercise \d", md.replace("{exercise}", "")), \
        "refer to an exercise with {numref}`ex-NN-k`, numbers are sphinx-exercise's"
    start = exercises[0][3]
    ends = [i for *_, i in exercises[1:]] + [len(nb.cells)]
    coding = 0
    for (kind, title, options, first), end in zip(exercises, ends):
        cells = [c for c in nb.cells[first:end] if c.cell_type == "code"]
        solution_cells = [c for c in cells if "solution" in c.metadata.get("tags", [])]
        if options.get("class") == "coding":
            coding += 1
            assert solution_cells and any("assert" in c.source for c in solution_cells), \
                f"coding exercise {title!r}: no solution code cell (tag solution) that asserts"
    assert coding >= 2, f"{coding} coding exercises (:class: coding); the template asks for >= 2"
    for c in nb.cells[start:]:
        tags = set(c.metadata.get("tags", [])) if c.cell_type == "code" else set()
        assert ("hide-cell" in tags) == ("solution" in tags), \
            f"an exercise code cell is tagged {sorted(tags)}: solution cells are hide-cell + solution"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_notebooks_are_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs before committing"
    for c in nb.cells:
        if c.cell_type == "code" and c.source.strip():
            ast.parse("\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!"))))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_shown_code_exists_in_lmcore(path):
    """Every literalinclude points at a real file and a real object in it (so it cannot drift)."""
    md = _source(nbformat.read(path, as_version=4), "markdown")
    for target, options in re.findall(r"```\{literalinclude\}\s*(\S+)\s*\n((?::[^\n]*\n)*)", md):
        file = (path.parent / target).resolve()
        assert file.is_file(), f"{target} does not exist"
        obj = re.search(r":pyobject:\s*(\S+)", options)
        if obj and file.suffix == ".py":
            module = importlib.import_module(".".join(file.relative_to(ROOT).with_suffix("").parts))
            thing = module
            for part in obj.group(1).split("."):
                thing = getattr(thing, part)
            # Sphinx reads the object from that very file: a re-export would not do
            defined_in = Path(inspect.getsourcefile(inspect.unwrap(thing))).resolve()
            assert defined_in == file, f"{obj.group(1)} is defined in {defined_in}, not {target}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_citations_exist(path):
    md = _source(nbformat.read(path, as_version=4), "markdown")
    for group in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", md):
        for key in group.split(","):
            assert key.strip() in BIB_KEYS, f"{key.strip()} is not in references.bib"


def _long_lines(text, width=WIDTH):
    """(line number, "length: start of the line") of each line longer than width."""
    return [(i, f"{len(line.expandtabs(8))} characters: {line[:50]!r}...")
            for i, line in enumerate(text.splitlines(), 1) if len(line.expandtabs(8)) > width]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_lines_fit_the_page(path):
    """The page cuts code lines longer than 80 characters at the right edge."""
    nb = nbformat.read(path, as_version=4)
    long = [f"cell {i} line {n}: {what}" for i, c in enumerate(nb.cells)
            if c.cell_type == "code" for n, what in _long_lines(c.source)]
    assert not long, f"code lines over {WIDTH} characters:\n" + "\n".join(long)


# What the page shows of an output as text (richer types are drawn by the browser).
RICH = ("text/html", "image/", "application/vnd.jupyter.widget-view+json", "text/latex",
        "text/markdown", "application/vnd.plotly", "application/javascript", "image/svg+xml")


def _shown_text(output):
    if output.output_type == "stream":
        return output.text if output.name == "stdout" else ""  # stderr: removed from the page
    if output.output_type == "error":
        return "\n".join(output.traceback)
    data = output.get("data", {})
    if "text/plain" not in data or any(k.startswith(RICH) for k in data) \
            or output.get("metadata", {}).get("scrapbook"):  # glue: not shown where it is made
        return ""
    return data["text/plain"]


def executed(path):
    """The executed notebook make test stored for the book build, or None."""
    return booktoc.executed_notebook(path, CACHE)


@pytest.mark.executed
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_output_lines_fit_the_page(path):
    """Printed output lines of the executed chapter are at most 80 characters too."""
    nb = executed(path)
    if nb is None:
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"{path.name} is not in {CACHE}: the chapter did not pass its run")
        pytest.skip("no executed notebook (make test stores them)")
    # Consecutive stdout pieces are one text on the page (nb_merge_streams in _config.yml).
    long = [f"cell {i} output line {n}: {what}" for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
            for text in re.split("\x00", "".join(_shown_text(o) if o.output_type == "stream"
                                                   else "\x00" + _shown_text(o) + "\x00"
                                                   for o in c.outputs))
            for n, what in _long_lines(ANSI.sub("", text))]
    assert not long, f"output lines over {WIDTH} characters:\n" + "\n".join(long)
