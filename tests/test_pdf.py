"""tools/pdf.py: the whole book as one PDF, printed offline by chromium (``make pdf``).

Plain tests: the table of contents without the web-only pages, the configuration of the
single-page build (the execution cache named explicitly, paths absolute, the widget
manager's path from the site's root), the refusal to build when a chapter is not in the
cache (it never executes one), the Sphinx handlers the single page needs.

``@pytest.mark.executed`` (``make test`` prints the PDF before it runs them): the PDF
exists and is a PDF with many pages; each chapter's title is on the page that the PDF's
contents link for that chapter points to; the first pages of every chapter show no raw TeX
or MyST (MathJax typeset the formulas, Sphinx rendered the directives); the colophon the
script prints on the last page counts every formula of the single page, every plotly
figure and every saved widget view of the executed chapters; the build executed nothing.
"""
from __future__ import annotations

import os
import re
import sys
import types
import unicodedata
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import booktoc
import pdf  # tools/ is not a package: imported from its folder

sys.path.remove(str(ROOT / "tools"))

PDF = Path(os.environ.get("LMCORE_PDF", pdf.DEFAULT_OUT))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
CHAPTERS = [f for f in pdf.toc_files(TOC) if f.startswith("chapters/")]
# What must not survive into the printed text: TeX that MathJax did not typeset, MyST
# that Sphinx did not render.
RAW = re.compile(r"\$\$|\\frac|\\sqrt|\\mathrm|\\begin\{|\\\(|\\\[|\{exercise\}|\{solution\}"
                 r"|\{admonition\}|\{glue|\{numref\}|\{cite|:label:|```")


# ------------------------------------------------------------------------------ plain

def test_print_toc_leaves_out_the_web_only_pages_and_empty_parts():
    toc = {"format": "jb-book", "root": "intro", "parts": [
        {"caption": "A", "chapters": [{"file": "chapters/01_x"}, {"file": "course"}]},
        {"caption": "Play", "chapters": [{"file": "playground"}]},
        {"caption": "Ref", "chapters": [{"file": "glossary"}]}]}
    printed = pdf.print_toc(toc)
    assert pdf.toc_files(printed) == ["intro", "chapters/01_x", "glossary"]
    assert [p["caption"] for p in printed["parts"]] == ["A", "Ref"]
    assert pdf.toc_files(toc)[-1] == "glossary" and "course" in pdf.toc_files(toc)  # a copy


def test_the_real_toc_keeps_every_chapter():
    printed = pdf.toc_files(pdf.print_toc(TOC))
    assert CHAPTERS and all(c in printed for c in CHAPTERS)
    assert not set(printed) & pdf.WEB_ONLY


def test_print_config_names_the_cache_and_makes_paths_absolute(tmp_path):
    config = pdf.print_config(tmp_path / "cache")
    assert config["execute"]["execute_notebooks"] == "cache"
    assert config["execute"]["cache"] == str(tmp_path / "cache")
    sphinx = config["sphinx"]
    assert sphinx["config"]["nb_execution_cache_path"] == str(tmp_path / "cache")
    assert sphinx["local_extensions"]["pdf"] == str(ROOT / "tools")
    for name, path in sphinx["local_extensions"].items():
        assert Path(path).is_absolute() and Path(path).is_dir(), (name, path)
    # the single page is at the root: the widget manager's modules are under _static/
    cdn = [v for attrs in sphinx["config"]["nb_ipywidgets_js"].values() for v in (attrs or {}).values()
           if isinstance(v, str) and "_static/" in v]
    assert cdn and all(v.startswith("_static/") for v in cdn)
    ignored = {tuple(x) for x in sphinx["config"]["nitpick_ignore_regex"]}
    assert ("myst", "playground") in ignored
    # the real configuration is left alone
    real = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert "pdf" not in real["sphinx"]["local_extensions"]


def _notebook(code: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_uncached_notebooks_matches_by_code_as_myst_nb_does(tmp_path):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    (tmp_path / "chapters").mkdir()
    path = tmp_path / "chapters" / "01_x.ipynb"
    nbformat.write(_notebook("x = 1"), path)
    cache_path = tmp_path / "cache"
    assert pdf.uncached_notebooks(["intro", "chapters/01_x"], cache_path, tmp_path) == ["chapters/01_x"]
    executed = _notebook("x = 1")
    executed.cells[1].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    get_cache(str(cache_path)).cache_notebook_bundle(
        CacheBundleIn(executed, str(path), data={"execution_seconds": 1.0}), check_validity=False)
    assert pdf.uncached_notebooks(["intro", "chapters/01_x"], cache_path, tmp_path) == []
    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = "# T, reworded"  # prose does not count
    nbformat.write(nb, path)
    assert pdf.uncached_notebooks(["chapters/01_x"], cache_path, tmp_path) == []
    nb.cells[1].source = "x = 2"  # code does
    nbformat.write(nb, path)
    assert pdf.uncached_notebooks(["chapters/01_x"], cache_path, tmp_path) == ["chapters/01_x"]


def test_refuses_to_build_when_a_chapter_is_not_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pdf, "CACHE", tmp_path / "empty-cache")
    monkeypatch.setattr(pdf, "WORK", tmp_path / "work")
    out = tmp_path / "book.pdf"
    assert pdf.main(["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "never executes a chapter" in err and CHAPTERS[0] in err
    assert not out.exists() and not (tmp_path / "work").exists()  # stopped before building


@pytest.mark.parametrize("text, raw", [
    (r"close to $$\ln 10$$ the loss", True), (r"where \frac{1}{2} is", True),
    ("```{exercise} A title", True), ("see {numref}`ex-04-1`", True), (r"\(x\)", True),
    ("close to , the loss of guessing (10 classes, 2.303)", False),
    ("costs $5 and $6", False)])
def test_raw_tex_and_myst_are_recognised(text, raw):
    assert bool(RAW.search(text)) is raw


def test_singlehtml_gets_the_html_handlers_it_lacks():
    a, b = type("A", (), {}), type("B", (), {})
    handlers = {"html": {a: ("visit_a", None), b: ("visit_b", None)},
                "singlehtml": {b: ("visit_b_single", None)}}
    app = types.SimpleNamespace(registry=types.SimpleNamespace(translation_handlers=handlers))
    pdf._html_handlers_for_singlehtml(app)
    assert handlers["singlehtml"] == {a: ("visit_a", None), b: ("visit_b_single", None)}


# ------------------------------------------------------------------------------ the PDF

def _require_pdf():
    if not PDF.exists():
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"no PDF at {PDF}: make test prints it first (make pdf)")
        pytest.skip(f"no PDF at {PDF} (make pdf)")


@pytest.fixture(scope="module")
def reader():
    _require_pdf()
    from pypdf import PdfReader

    return PdfReader(str(PDF))


def _norm(text: str) -> str:
    """Text compared without whitespace or ligatures (pypdf reads "ff" as one glyph)."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


def _title(chapter: str) -> str:
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    first = next(c.source for c in nb.cells if c.cell_type == "markdown")
    return first.splitlines()[0].lstrip("# ").strip()


@pytest.fixture(scope="module")
def chapter_pages(reader):
    """chapter -> the number of the page its link in the PDF's contents points to."""
    dests = reader.named_destinations
    pages = {}
    for chapter in CHAPTERS:
        dest = dests.get(f"/document-{chapter}")
        assert dest is not None, f"the PDF has no destination for {chapter}: is it in the book?"
        pages[chapter] = reader.get_destination_page_number(dest)
    return pages


@pytest.mark.executed
def test_the_pdf_is_a_whole_book(reader):
    data = PDF.read_bytes()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]
    # 14 chapters with code, figures and solutions do not fit in fewer pages
    assert len(reader.pages) >= 10 * len(CHAPTERS), len(reader.pages)
    assert (reader.metadata or {}).get("/Title") == yaml.safe_load(
        (ROOT / "_config.yml").read_text(encoding="utf-8"))["title"]


@pytest.mark.executed
def test_each_chapter_starts_on_the_page_its_link_points_to(reader, chapter_pages):
    order = [chapter_pages[c] for c in CHAPTERS]
    assert order == sorted(order) and len(set(order)) == len(order), chapter_pages
    missing = [f"{c}: {_title(c)!r} not on page {chapter_pages[c] + 1}" for c in CHAPTERS
               if _norm(_title(c)) not in _norm(reader.pages[chapter_pages[c]].extract_text())]
    assert not missing, "\n".join(missing)


@pytest.mark.executed
def test_no_raw_tex_or_myst_in_the_printed_text(reader, chapter_pages):
    """The first three pages of every chapter (the title, the learning goals with their
    formulas, the key terms) and the glossary's first page."""
    pages = sorted({p + k for p in chapter_pages.values() for k in range(3)
                    if p + k < len(reader.pages)})
    found = []
    for number in pages:
        text = reader.pages[number].extract_text()
        found += [f"page {number + 1}: {m.group(0)!r} in ...{text[max(0, m.start() - 40):m.end() + 40]!r}"
                  for m in RAW.finditer(text)]
    assert not found, "\n".join(found[:10])


def _cached_outputs() -> dict:
    """Counts over the executed chapters in the cache: plotly figures, widget views."""
    counts = {"figures": 0, "widgets": 0}
    for chapter in CHAPTERS:
        nb = booktoc.executed_notebook(ROOT / f"{chapter}.ipynb", pdf.CACHE)
        if nb is None:
            message = f"{chapter} is not in the execution cache {pdf.CACHE} (make test fills it)"
            if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
                pytest.fail(message)
            pytest.skip(message)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                counts["figures"] += ("plotly-graph-div" in data.get("text/html", "")
                                      or "application/vnd.plotly.v1+json" in data)
                counts["widgets"] += "application/vnd.jupyter.widget-view+json" in data
    return counts


@pytest.mark.executed
def test_the_colophon_counts_every_formula_figure_and_widget(reader):
    text = " ".join(unicodedata.normalize("NFKC", reader.pages[-1].extract_text()).split())
    m = re.search(r"Printed: (\d+) formulas typeset by MathJax, (\d+) figures drawn by plotly, "
                  r"(\d+) widgets drawn from their saved state", text)
    assert m, f"no colophon on the last page: {text[:300]!r}"
    formulas, figures, widgets = map(int, m.groups())
    page = pdf.HTML / f"{TOC['root']}.html"
    if page.exists():  # the single page that was printed: every formula in it typeset
        assert formulas == page.read_text(encoding="utf-8").count('class="math notranslate')
    assert formulas >= 10 * len(CHAPTERS)
    cached = _cached_outputs()
    assert figures >= cached["figures"] > 0, (figures, cached)
    assert widgets == cached["widgets"], (widgets, cached)


@pytest.mark.executed
def test_the_pdf_build_executed_nothing():
    _require_pdf()
    log = (pdf.WORK / "build.log").read_text(encoding="utf-8")
    assert "Using cached notebook" in log
    assert "Executing notebook" not in log
