"""Two editions from one source: tools/editions.py and tools/sphinx/student_edition.py.

Plain tests:
- ``student_notebook`` on a small synthetic notebook (every directive form it must handle,
  and the ones it must leave alone) and on every chapter: no solution text is left, every
  exercise's text is kept, every other cell is kept as it is, and nothing left in the
  student notebook needs a name that only a removed solution cell defines;
- the student edition's configuration, made from ``_config.yml``;
- the Sphinx extension in a small Sphinx build, with ``hide_solutions`` and without (the
  control: the same check finds the solution there);
- the two notebook zips.

``@pytest.mark.executed`` (``make test`` builds both editions first): from every chapter
the meaningful lines (>= 25 characters) of each ``{solution}`` body, of each solution code
cell and of its printed output, that appear nowhere else in the book, must appear in the
reader edition ``_build/html`` (so the comparison is meaningful) and in no file at all of
``_build/student/html``; every exercise's text must be there; the search index must not
know a word that only solutions use; no chapter was executed for it; the zips in
``_build/html/downloads`` are those the chapters make now.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import zipfile
import zlib
from functools import cache, lru_cache
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import booktoc
import editions

READER = ROOT / "_build" / "html"
STUDENT = ROOT / "_build" / "student" / "html"
DOWNLOADS = READER / "downloads"
CHAPTERS = [p for p in editions.chapter_notebooks(ROOT) if p.suffix == ".ipynb"]
# every page of the book: the text that is not a solution
PAGES = [page for name in booktoc.toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
         for page in (ROOT / f"{name}.ipynb", ROOT / f"{name}.md", ROOT / name) if page.is_file()]
MIN_CHARS = 25  # a shorter line may well be written elsewhere too


# ---------------------------------------------------------------------------------------
# Text as the page shows it

SEP = "\x00"
# Sphinx's smartquotes turn quotes, -- and ... into typographic ones: compare without them.
TYPOGRAPHY = {"“": '"', "”": '"', "‘": "'", "’": "'", "–": "--", "—": "---", "…": "...",
              "\xa0": " "}
ROLE = re.compile(r"\{[\w:.-]+\}`[^`]*`")  # {numref}`ex-4-1`, {cite}`x`, {glue:text}`k`
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$")
LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# emphasis markers (a * or _ with spaces on both sides is shown as it is)
EMPHASIS = re.compile(r"(?<!\s)\*+|\*+(?!\s)|(?<!\w)_+(?!\s)|(?<!\s)_+(?!\w)")
ESCAPED = re.compile(r"\\([^\w\s])")
LINE_START = re.compile(r"^\s*(?:>\s*)*(?:[-*+]\s+|\d+[.)]\s+|#+\s+)?")
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})")
OPTION = re.compile(r"^\s*:[\w-]+:")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def normalize(text: str) -> str:
    for typographic, plain in TYPOGRAPHY.items():
        if typographic in text:
            text = text.replace(typographic, plain)
    return " ".join(text.split())


def _prose(text: str) -> str:
    text = MATH.sub(SEP, text)
    text = LINK.sub(r"\1", text)
    text = EMPHASIS.sub("", text)
    text = ESCAPED.sub(r"\1", text)
    for cut in "`$|<":  # half a code span or formula (cut by a line break), tables, raw HTML
        text = text.replace(cut, SEP)
    return text


def plain_runs(line: str) -> list[str]:
    """The pieces of a markdown line that the page shows as written (markup, math and
    roles cut out), normalized."""
    line = ROLE.sub(SEP, LINE_START.sub("", line))
    pieces, pos = [], 0
    for match in CODE_SPAN.finditer(line):
        pieces += [_prose(line[pos:match.start()]), match.group(2)]
        pos = match.end()
    pieces.append(_prose(line[pos:]))
    return [run for run in (normalize(r) for r in "".join(pieces).split(SEP)) if run]


def markdown_lines(lines: list[str]) -> list[str]:
    """Every run of shown text of markdown lines (code blocks kept whole, math dropped)."""
    runs, fence, math = [], None, False
    for line in lines:
        stripped = line.strip()
        if fence:
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
            elif stripped:
                runs.append(normalize(line))
            continue
        match = FENCE.match(line)
        if match:
            fence = match.group(1)
            continue
        if stripped.startswith("$$"):
            math = not (math or (stripped.endswith("$$") and len(stripped) > 2))
            continue
        if math or OPTION.match(line) or stripped.startswith("\\"):
            continue
        runs += plain_runs(line)
    return runs


def directive_bodies(markdown: str, name: str) -> list[tuple[str, list[str]]]:
    """(argument, body lines) of each {name} directive of markdown."""
    lines = markdown.split("\n")
    found = []
    for start, end in editions.directive_line_ranges(markdown, name):
        argument = re.sub(r"^\s*[`:]{3,}\{[^}]+\}", "", lines[start]).strip()
        found.append((argument, lines[start + 1:end - 1]))
    return found


def shown_text(output) -> str:
    """What a page shows of an output as text (as tests/test_chapters.py reads it)."""
    if output.get("output_type") == "stream":
        return output.get("text", "") if output.get("name") == "stdout" else ""
    data = output.get("data", {})
    rich = ("text/html", "image/", "application/", "text/latex", "text/markdown")
    if "text/plain" not in data or any(k.startswith(rich) for k in data) \
            or output.get("metadata", {}).get("scrapbook"):
        return ""
    return data["text/plain"]


@cache
def executed(path: Path):
    """The executed notebook make test stored for the book build, or None (do not change
    it: it is shared)."""
    return booktoc.executed_notebook(path, editions.CACHE)


def _long(runs) -> list[str]:
    return [r for r in runs if len(r) >= MIN_CHARS]


def solution_texts(nb) -> dict[str, list[str]]:
    """The shown text of a notebook's solutions: {"solution": directive bodies' runs,
    "code": solution cells' lines, "output": their printed output lines}."""
    texts = {"solution": [], "code": [], "output": []}
    for cell in nb["cells"]:
        source = editions.cell_source(cell)
        if editions.is_solution_cell(cell):
            texts["code"] += [normalize(line) for line in source.splitlines() if line.strip()]
            # the page joins consecutive stream pieces into one text (nb_merge_streams)
            shown, streaming = "", False
            for output in cell.get("outputs", []):
                stream = output.get("output_type") == "stream"
                shown += ("" if stream and streaming else "\n") + shown_text(output)
                streaming = stream
            texts["output"] += [normalize(line) for line in ANSI.sub("", shown).splitlines()]
        elif cell["cell_type"] == "markdown":
            for _, body in directive_bodies(source, "solution"):
                texts["solution"] += markdown_lines(body)
    return texts


def exercise_texts(nb) -> list[str]:
    """The shown text of a notebook's exercises (titles and bodies)."""
    runs = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for title, body in directive_bodies(editions.cell_source(cell), "exercise"):
                runs += plain_runs(title) + markdown_lines(body)
    return runs


def _markdown_texts(markdown: str) -> list[str]:
    """Lines as written, runs of shown text per line and per paragraph (a code span or a
    sentence may go on over a line break)."""
    lines = markdown.split("\n")
    paragraphs = [" ".join(p.split("\n")) for p in re.split(r"\n\s*\n", markdown)]
    return ([normalize(line) for line in lines] + markdown_lines(lines)
            + [run for p in paragraphs for run in plain_runs(p)])


LITERALINCLUDE = re.compile(r"^\s*[`:]{3,}\{literalinclude\}\s+(\S+)", re.MULTILINE)


def included(markdown: str, folder: Path) -> list[str]:
    """The text of each file that markdown shows with literalinclude (whole files)."""
    return [(folder / name).read_text(encoding="utf-8")
            for name in LITERALINCLUDE.findall(markdown)]


def _markdown_page_texts(markdown: str, folder: Path) -> list[str]:
    """The texts of a page's markdown, and of the files it shows."""
    return _markdown_texts(markdown) + [normalize(line) for shown in included(markdown, folder)
                                        for line in shown.split("\n")]


def page_texts(path: Path, nb=None) -> list[str]:
    """Every piece of text a page of the book shows, solutions excepted (nb: executed)."""
    if path.suffix != ".ipynb":
        return _markdown_page_texts(path.read_text(encoding="utf-8"), path.parent)
    nb = editions.student_notebook(nb if nb is not None else nbformat.read(path, as_version=4))
    runs = []
    for cell in nb.cells:
        lines = cell.source.split("\n")
        runs += _markdown_page_texts(cell.source, path.parent) if cell.cell_type == "markdown" \
            else [normalize(line) for line in lines]
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            runs += [normalize(line) for text in (output.get("text", ""),
                                                  data.get("text/plain", ""))
                     for line in ANSI.sub("", text).splitlines()]
    return runs


# ---------------------------------------------------------------------------------------
# student_notebook on a synthetic notebook

def _md(text):
    return nbformat.v4.new_markdown_cell(text)


def _code(text, tags=(), outputs=()):
    cell = nbformat.v4.new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    cell.outputs = list(outputs)
    return cell


def synthetic_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [
        _md("# A chapter\n\nIntro text that stays."),
        _code("x = 1", outputs=[nbformat.v4.new_output("stream", text="VISIBLE output\n")]),
        _md("## Exercises"),
        _md("```{exercise} First exercise title\n:label: ex-99-1\nEXERCISE ONE body.\n```\n"
            "```{solution} ex-99-1\n:class: dropdown\nSOLUTION ONE body.\n```"),
        _code("SOLUTION_CELL_ONE = 1", tags=["hide-cell", "solution"],
              outputs=[nbformat.v4.new_output("stream", text="SOLUTION OUTPUT\n")]),
        # a solution before the exercise text of the same cell, a 4-backtick solution with
        # a code block inside, and text after it
        _md("```{solution} ex-99-0\nSOLUTION ZERO.\n```\n\n"
            "```{exercise} Second\n:label: ex-99-2\nEXERCISE TWO body.\n```\n\n"
            "````{solution} ex-99-2\n:class: dropdown\nSOLUTION TWO:\n```python\n"
            "SOLUTION_TWO_CODE = 2\n```\n````\n\nText after the solution stays."),
        # a colon fence, alone in its cell: the cell goes
        _md(":::{solution} ex-99-3\nSOLUTION THREE.\n:::"),
        # a solution nested in another directive is removed too
        _md("````{admonition} Note\nNOTE text stays.\n```{solution} ex-99-4\n"
            "SOLUTION FOUR.\n```\n````"),
        # a {solution} fence shown inside a code block is an example, not a solution
        _md("````markdown\n```{solution} ex-99-5\nEXAMPLE of the syntax stays.\n```\n````"),
        _code("SOLUTION_CELL_TWO = 2", tags=["solution"]),
        _md("Closing text stays."),
    ]
    return nb


def _all_text(nb) -> str:
    return nbformat.writes(nbformat.from_dict(nb))


def test_student_notebook_removes_every_solution_and_keeps_the_rest():
    nb = synthetic_notebook()
    before = nbformat.writes(nb)
    student = editions.student_notebook(nb)
    assert nbformat.writes(nb) == before, "the input notebook must not change"
    text = _all_text(student)
    assert "SOLUTION" not in text and "{solution}" not in text.replace(
        "```{solution} ex-99-5", ""), text
    for kept in ("Intro text that stays.", "VISIBLE output", "EXERCISE ONE body.",
                 "First exercise title", "EXERCISE TWO body.", "Text after the solution stays.",
                 "NOTE text stays.", "EXAMPLE of the syntax stays.", "Closing text stays."):
        assert kept in text, kept
    sources = [c.source for c in student.cells]
    assert sources == [
        "# A chapter\n\nIntro text that stays.",
        "x = 1",
        "## Exercises",
        "```{exercise} First exercise title\n:label: ex-99-1\nEXERCISE ONE body.\n```",
        ("```{exercise} Second\n:label: ex-99-2\nEXERCISE TWO body.\n```\n\n"
         "Text after the solution stays."),
        "````{admonition} Note\nNOTE text stays.\n````",
        "````markdown\n```{solution} ex-99-5\nEXAMPLE of the syntax stays.\n```\n````",
        "Closing text stays.",
    ]
    # the cells that stay are the same cells (ids, metadata, outputs)
    kept = {c.id: c for c in nb.cells}
    for cell in student.cells:
        assert cell.metadata == kept[cell.id].metadata
        assert cell.get("outputs") == kept[cell.id].get("outputs")
    assert student.metadata == nb.metadata
    # a notebook without solutions is returned unchanged
    assert editions.student_notebook(student) == student


def test_student_notebook_accepts_a_plain_json_notebook():
    nb = json.loads(nbformat.writes(synthetic_notebook()))
    assert isinstance(nb["cells"][3]["source"], list)  # as stored: a list of lines
    student = editions.student_notebook(nb)
    assert "SOLUTION" not in json.dumps(student)
    assert "EXERCISE ONE body." in json.dumps(student)


@pytest.mark.parametrize("form", ["```{solution-start} ex-99-1\nX\n```",
                                  ":::{solution-end}\n:::"])
def test_student_notebook_rejects_the_gated_form(form):
    nb = synthetic_notebook()
    nb.cells.append(_md(form))
    with pytest.raises(ValueError, match=r"cell 11: line 1: the gated \{solution-"):
        editions.student_notebook(nb)


# ---------------------------------------------------------------------------------------
# student_notebook on every chapter

def _top_names(tree) -> tuple[set[str], set[str]]:
    """(names a cell binds, names it reads), anywhere in the cell."""
    import ast

    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, (ast.Store, ast.Del)) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, read


def _parse(source: str):
    import ast

    # IPython's magics and shell lines are not Python
    return ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line
                               for line in source.split("\n")))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_chapter_has_the_exercises_and_no_solutions(path):
    nb = nbformat.read(path, as_version=4)
    student = editions.student_notebook(nb)
    text = nbformat.writes(student)
    solutions = solution_texts(nb)
    assert solutions["solution"] or solutions["code"], f"{path.name}: no solutions to remove?"
    # the student edition's pages drop code cells only (myst-nb keeps no markdown cell tags)
    assert not [i for i, c in enumerate(nb.cells)
                if editions.is_solution_cell(c) and c.cell_type != "code"], \
        "only code cells may be tagged 'solution'; solution text goes in a {solution} directive"
    assert not [c for c in student.cells if editions.is_solution_cell(c)]
    assert not any(editions.directive_line_ranges(c.source, "solution")
                   for c in student.cells if c.cell_type == "markdown")
    # every exercise, exactly as written, in the same order
    exercises = [body for c in nb.cells if c.cell_type == "markdown"
                 for body in directive_bodies(c.source, "exercise")]
    assert exercises and [body for c in student.cells if c.cell_type == "markdown"
                          for body in directive_bodies(c.source, "exercise")] == exercises
    # every other cell as it was; markdown cells lose exactly their solution lines
    original = {c.id: c for c in nb.cells}
    assert [c.id for c in student.cells] == [
        c.id for c in nb.cells if not editions.is_solution_cell(c)
        and (c.cell_type != "markdown" or editions.strip_solution_directives(c.source).strip())]
    for cell in student.cells:
        before = original[cell.id]
        assert cell.metadata == before.metadata
        if cell.cell_type != "markdown" or cell.source == before.source:
            assert cell == before
        else:  # the same non-blank lines, in order, but those of its solutions
            lines = before.source.split("\n")
            dropped = {i for start, end in editions.solution_line_ranges(before.source)
                       for i in range(start, end)}
            assert [line for line in cell.source.split("\n") if line.strip()] == [
                line for i, line in enumerate(lines) if i not in dropped and line.strip()]
    # distinctive solution lines are gone from the whole notebook file
    rest = SEP.join(page_texts(path))
    gone = [t for t in _long(solutions["solution"] + solutions["code"]) if t not in rest]
    assert gone, f"{path.name}: no distinctive solution line to look for"
    left = [t for t in gone if t in normalize(_json_unescape(text))]
    assert not left, f"{path.name}: solution text left in the student notebook: {left}"


def needed_from_solutions(nb) -> list[str]:
    """Names that a cell reads and only an earlier solution cell defines."""
    defined, only_in_solutions, needs = set(), {}, []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        bound, read = _top_names(_parse(cell.source))
        if editions.is_solution_cell(cell):
            only_in_solutions.update({name: index for name in bound - defined})
            continue
        needs += [f"cell {index} reads {name!r}, defined by solution cell {only_in_solutions[name]}"
                  for name in sorted(read - bound) if name in only_in_solutions]
        defined |= bound
        for name in bound:
            only_in_solutions.pop(name, None)
    return needs


def test_needed_from_solutions_finds_a_name_only_a_solution_defines():
    nb = synthetic_notebook()
    assert needed_from_solutions(nb) == []
    nb.cells.append(_code("print(SOLUTION_CELL_ONE + x)"))
    assert needed_from_solutions(nb) == [
        "cell 11 reads 'SOLUTION_CELL_ONE', defined by solution cell 4"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_chapter_needs_no_solution_cell(path):
    """A name a later cell reads must not be defined only by a (removed) solution cell:
    the student notebook would stop there with a NameError."""
    needs = needed_from_solutions(nbformat.read(path, as_version=4))
    assert not needs, f"{path.name}: " + "; ".join(needs)


# ---------------------------------------------------------------------------------------
# The student edition's configuration

def test_student_config_is_made_from_the_readers():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    before = json.dumps(config, sort_keys=True)
    student = editions.student_config(config, ROOT, editions.CACHE)
    assert json.dumps(config, sort_keys=True) == before, "the reader's config must not change"
    assert "Student edition" in student["title"] and config["title"] in student["title"]
    settings = student["sphinx"]["config"]
    assert settings["hide_solutions"] is True and settings["html_copy_source"] is False
    assert "launch_buttons" not in student
    assert Path(student["execute"]["cache"]) == editions.CACHE.resolve()
    local = student["sphinx"]["local_extensions"]
    assert "student_edition" in local
    assert all(Path(p).is_absolute() and (Path(p) / f"{name}.py").is_file()
               for name, p in local.items())
    # everything else is the reader's
    for key in set(config) - {"title", "execute", "launch_buttons", "html", "sphinx"}:
        assert student[key] == config[key], key
    assert {k: v for k, v in settings.items() if k not in ("hide_solutions", "html_copy_source")} \
        == config["sphinx"]["config"]
    with pytest.raises(SystemExit, match="execute_notebooks: cache"):
        editions.student_config({**config, "execute": {"execute_notebooks": "force"}})


# ---------------------------------------------------------------------------------------
# The extension in a small Sphinx build

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
                       "gAF/QualIQAAAABJRU5ErkJggg==")
CONF = """\
import os, sys
sys.path.insert(0, {tools!r})
extensions = ["myst_nb", "sphinx_exercise", "student_edition"]
html_theme = "sphinx_book_theme"
nb_execution_mode = "off"
hide_solutions = os.environ["HIDE_SOLUTIONS"] == "1"
exclude_patterns = ["_build"]
"""


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory):
    """A one-notebook Sphinx project built with and without hide_solutions."""
    src = tmp_path_factory.mktemp("small")
    (src / "conf.py").write_text(CONF.format(tools=str(ROOT / "tools" / "sphinx")))
    nb = synthetic_notebook()
    solution = nb.cells[4]
    solution.outputs.append(nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "img"}))
    nbformat.write(nb, src / "index.ipynb")
    built = {}
    for hide in ("0", "1"):
        out = src / "_build" / f"hide{hide}"
        run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E",
                              str(src), str(out)], check=False, capture_output=True, text=True,
                             env={**os.environ, "HIDE_SOLUTIONS": hide}, timeout=300)
        assert run.returncode == 0, run.stderr
        built[hide == "1"] = out
    return built


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace")
                     for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_extension_removes_solution_cells_only_when_hiding(small_builds):
    reader, student = small_builds[False], small_builds[True]
    markers = ("SOLUTION ONE", "SOLUTION_CELL_ONE", "SOLUTION OUTPUT", "SOLUTION_CELL_TWO",
               "SOLUTION TWO", "SOLUTION_TWO_CODE")
    reader_text, student_text = _files_text(reader), _files_text(student)
    # the control: the same search finds every solution in the reader's build
    assert all(m in reader_text for m in markers)
    assert not [m for m in markers if m in student_text]
    for kept in ("EXERCISE ONE body.", "VISIBLE output", "Closing text stays."):
        assert kept in student_text
    # the solution cell's image is neither on the page nor copied
    assert list((reader / "_images").glob("*.png"))
    assert not list(student.glob("_images/*.png"))
    # _sources/ holds only the student notebook, which the download button offers
    assert [p.relative_to(student).as_posix() for p in student.rglob("_sources/**/*")
            if p.is_file()] == ["_sources/index.ipynb"]
    offered = nbformat.read(student / "_sources" / "index.ipynb", as_version=4)
    assert offered == editions.student_notebook(nbformat.read(
        student.parent.parent / "index.ipynb", as_version=4))
    page = (student / "index.html").read_text(encoding="utf-8")
    assert 'href="_sources/index.ipynb"' in page and "student edition: no solutions" in page


# ---------------------------------------------------------------------------------------
# The zips

def _zip_files(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_notebook_zips(tmp_path):
    first = editions.write_notebook_zips(tmp_path / "a")
    second = editions.write_notebook_zips(tmp_path / "b")
    assert [p.name for p in first] == ["notebooks.zip", "notebooks-student.zip"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second], \
        "the same chapters must give the same zips"
    full, student = (_zip_files(p) for p in first)
    names = sorted(p.name for p in CHAPTERS if p.parent.name == "chapters") + ["README.txt"]
    assert sorted(Path(n).name for n in full) == sorted(names)
    assert sorted(Path(n).name for n in student) == sorted(names)
    assert len({Path(n).parent for n in full}) == 1 and len({Path(n).parent for n in student}) == 1
    for name, data in full.items():
        path = ROOT / "chapters" / Path(name).name
        if path.suffix == ".ipynb":
            assert data == path.read_bytes(), f"{name}: not the notebook as stored"
    for name, data in student.items():
        path = ROOT / "chapters" / Path(name).name
        if path.suffix != ".ipynb":
            continue
        nb = nbformat.reads(data.decode("utf-8"), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
        assert nb == editions.student_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
        assert "{solution}" not in data.decode("utf-8")
        assert not [c for c in nb.cells if editions.is_solution_cell(c)]
    readme = normalize(next(v for k, v in full.items() if k.endswith("README.txt")).decode())
    assert "first code cell clones the book's repository" in readme
    assert "with the exercises and their solutions" in readme and "rocket button" in readme
    readme = normalize(next(v for k, v in student.items() if k.endswith("README.txt")).decode())
    assert "first code cell clones the book's repository" in readme
    assert "without their solutions" in readme and "rocket" not in readme


# ---------------------------------------------------------------------------------------
# The built editions (make test builds them first)

def _require(path: Path, what: str):
    if not path.exists():
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"no {what} at {path}: make test builds it first")
        pytest.skip(f"no {what} at {path}")


TAG = re.compile(r"<[A-Za-z/!][^>]*>")
JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[nrtbf\"\\/])")
_JSON_CHARS = {"n": "\n", "r": " ", "t": " ", "b": " ", "f": " ", '"': '"', "\\": "\\", "/": "/"}


def _json_unescape(text: str) -> str:
    return JSON_ESCAPE.sub(lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "u"
                           else _JSON_CHARS[m.group(1)], text)


def _file_text(data: bytes, suffix: str) -> str:
    text = data.decode("utf-8", "replace")
    if suffix in (".html", ".htm", ".svg", ".xml"):
        text = TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    if "\\" not in text:
        return normalize(text)
    return normalize(text) + SEP + normalize(_json_unescape(text))


WORD = re.compile(r"\w+")
# (suffix, sha1) -> (text, its words): the editions share most files, read each once
_FILE_TEXTS: dict[tuple[str, bytes], tuple[str, frozenset]] = {}
# binary files that cannot hold the book's text: images, fonts, translations, the
# Playground's model and ONNX Runtime's WebAssembly
BINARY = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".eot", ".ttf", ".otf", ".woff",
          ".woff2", ".mo", ".onnx", ".wasm"}


def _is_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


def _texts(name: str, data: bytes):
    """(name, text) of a file, and of each file inside it if it is a zip."""
    if name.endswith(".inv"):  # Sphinx's inventory: 4 header lines, then zlib
        *header, body = data.split(b"\n", 4)
        yield from _texts(name + ".txt", b"\n".join(header) + b"\n" + zlib.decompress(body))
    elif name.endswith(".zip"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.infolist():
                yield from _texts(f"{name}/{member.filename}", archive.read(member))
    elif not _is_binary(data):
        suffix = Path(name).suffix
        key = (suffix, hashlib.sha1(data).digest())
        if key not in _FILE_TEXTS:
            text = _file_text(data, suffix)
            _FILE_TEXTS[key] = (text, frozenset(WORD.findall(text)))
        yield name, _FILE_TEXTS[key]


class SiteText:
    """The text of every file of a site (zips opened; images, fonts and such excepted), as
    a reader sees it: tags stripped from HTML, HTML entities and JSON string escapes
    decoded, normalized. ``line in site``: is it in one of the files?"""

    def __init__(self, site: Path):
        self.files = [text_words for path in sorted(p for p in site.rglob("*") if p.is_file())
                      for _, text_words in _texts(path.as_posix(), path.read_bytes())]

    def __contains__(self, line: str) -> bool:
        # A file can hold the line only if it has each of the line's whole words (all but
        # the first and last, which may be parts of longer words): the site is ~100 MB.
        inner = WORD.findall(line)[1:-1]
        return any(line in text for text, words in self.files
                   if all(word in words for word in inner))


@lru_cache(maxsize=2)
def site_text(site: Path) -> SiteText:
    return SiteText(site)


@lru_cache(maxsize=1)
def book_texts():
    """Per chapter: its solutions' distinctive lines and its exercises' lines."""
    executed_nbs = {p: executed(p) for p in CHAPTERS}
    rest = SEP.join(run for page in PAGES for run in page_texts(page, executed_nbs.get(page)))
    books = {}
    for path in CHAPTERS:
        nb = executed_nbs[path] or nbformat.read(path, as_version=4)
        texts = solution_texts(nb)
        books[path] = {
            "solutions": sorted({t for kind in texts.values() for t in _long(kind)
                                 if t not in rest}),
            "exercises": sorted(set(_long(exercise_texts(nb)))),
            "executed": executed_nbs[path] is not None,
        }
    return books


@pytest.mark.executed
def test_student_edition_has_no_solution_text():
    """One test for the whole book (the two sites' text is read once, ~200 MB)."""
    _require(STUDENT / "index.html", "student edition")
    _require(READER / "index.html", "reader edition")
    reader, student = site_text(READER), site_text(STUDENT)
    problems = []
    for path, texts in book_texts().items():
        if not texts["executed"] and os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            problems.append(f"{path.name} is not in {editions.CACHE}: its outputs cannot be "
                            "checked")
        solutions, exercises = texts["solutions"], texts["exercises"]
        if not solutions or not exercises:
            problems.append(f"{path.name}: no distinctive solution line or no exercise line "
                            "to look for")
        missing = [t for t in solutions if t not in reader]
        if missing:
            problems.append(f"{path.name}: solution lines not in the reader edition (a stale "
                            f"build, or this test reads the page wrongly): {missing}")
        leaked = [t for t in solutions if t in student]
        if leaked:
            problems.append(f"{path.name}: solution text in the student edition: {leaked}")
        lost = [t for t in exercises if t not in student]
        if lost:
            problems.append(f"{path.name}: exercise text missing from the student edition: "
                            f"{lost}")
    assert not problems, "\n".join(problems)


@pytest.mark.executed
def test_student_edition_has_only_files_the_check_can_read():
    """The text check reads every file, zips included; a binary file of another kind (a
    PDF, say) could hold solutions unseen."""
    _require(STUDENT / "index.html", "student edition")
    unread = [p.relative_to(STUDENT).as_posix() for p in STUDENT.rglob("*")
              if p.is_file() and p.suffix.lower() not in BINARY | {".zip", ".inv"}
              and _is_binary(p.read_bytes())]
    assert not unread, f"files the solution check cannot read: {unread}"


def _search_terms(site: Path) -> set[str]:
    text = (site / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1:text.rindex(")")])
    return set(index["terms"]) | set(index["titleterms"])


@pytest.mark.executed
def test_student_search_index_has_no_solution_words():
    _require(STUDENT / "searchindex.js", "student edition")
    _require(READER / "searchindex.js", "reader edition")
    from sphinx.search.en import SearchEnglish

    english = SearchEnglish({})

    def stems(text: str, shortest: int = 1) -> set[str]:
        words = {w for w in english.split(text) if len(w) >= shortest and w.isalpha()}
        return {english.stem(w).lower() for w in words if english.word_filter(w.lower())}

    solution_words, other_words = set(), set()
    for path in CHAPTERS:
        nb = executed(path) or nbformat.read(path, as_version=4)
        texts = solution_texts(nb)
        solution_words |= stems(" ".join(texts["solution"] + texts["code"]), shortest=4)
    for page in PAGES:
        nb = executed(page) if page.suffix == ".ipynb" else None
        other_words |= stems(" ".join(page_texts(page, nb)))
    for other in ("references.bib", "_toc.yml", "_config.yml"):  # the bibliography, captions
        other_words |= stems((ROOT / other).read_text(encoding="utf-8"))
    only_in_solutions = solution_words - other_words
    assert len(only_in_solutions) >= len(CHAPTERS), f"too few words to check: {only_in_solutions}"
    reader, student = _search_terms(READER), _search_terms(STUDENT)
    assert only_in_solutions <= reader, f"not indexed in the reader edition: " \
                                        f"{sorted(only_in_solutions - reader)}"
    assert not only_in_solutions & student, f"solution words in the student edition's search " \
                                            f"index: {sorted(only_in_solutions & student)}"


@pytest.mark.executed
def test_student_edition_offers_no_solutions_elsewhere():
    _require(STUDENT / "index.html", "student edition")
    pages = sorted(STUDENT.rglob("*.html"))
    assert "Student edition" in (STUDENT / "intro.html").read_text(encoding="utf-8")
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "colab.research.google.com" not in text and "mybinder.org" not in text, page
    # _sources/ holds the student notebooks only, and each chapter's page offers its own
    sources = sorted(p.relative_to(STUDENT / "_sources").as_posix()
                     for p in (STUDENT / "_sources").rglob("*") if p.is_file())
    assert sources == sorted(p.relative_to(ROOT).as_posix() for p in CHAPTERS)
    for path in CHAPTERS:
        relative = path.relative_to(ROOT)
        offered = (STUDENT / "_sources" / relative).read_text(encoding="utf-8")
        assert offered == nbformat.writes(editions.student_notebook(
            nbformat.read(path, as_version=nbformat.NO_CONVERT))) + "\n"
        page = (STUDENT / relative.with_suffix(".html")).read_text(encoding="utf-8")
        assert f'href="{"../" * (len(relative.parts) - 1)}_sources/{relative.as_posix()}"' in page


@pytest.mark.executed
def test_student_build_executed_nothing():
    log = STUDENT.parent / "book.log"
    _require(log, "student build log")
    text = log.read_text(encoding="utf-8")
    assert "Executing notebook" not in text
    used = set(re.findall(r"(\S+\.ipynb): Using cached notebook", text))
    assert {Path(p).name for p in used} == {p.name for p in CHAPTERS}


@pytest.mark.executed
def test_download_zips_are_up_to_date(tmp_path):
    _require(DOWNLOADS / "notebooks.zip", "notebooks.zip")
    fresh = editions.write_notebook_zips(tmp_path)
    for path in fresh:
        assert (DOWNLOADS / path.name).read_bytes() == path.read_bytes(), \
            f"{DOWNLOADS / path.name} is not what the chapters make now"


def test_student_toc_leaves_out_the_instructors_pages_only():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    student = editions.student_toc(toc)
    assert "course" in booktoc.toc_files(toc)  # the reader edition has the course page
    assert booktoc.toc_files(student) == [f for f in booktoc.toc_files(toc) if f != "course"]
    assert "Teach with it" not in [p["caption"] for p in student["parts"]]  # no empty part


@pytest.mark.executed
def test_student_edition_has_no_course_page():
    """The course page links the PDF and the notebooks with solutions."""
    site = ROOT / "_build" / "student" / "html"
    if not site.is_dir():
        pytest.skip("no student edition (make test builds it)")
    assert not (site / "course.html").exists()
    assert "course.html" not in (site / "index.html").read_text(encoding="utf-8")
