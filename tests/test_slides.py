"""tools/slides.py: every chapter as reveal.js slides, from its cached execution, offline.

Plain tests: the MyST -> markdown conversion (admonitions, exercises, solutions, glue,
cite, numref, literalinclude, links), the splitting of cells, the slide types, a tiny
deck built end to end from a jupyter-cache made here, and the refusal to make a deck for
a chapter that is not in the cache.

`make slides` decks (``_build/slides``, ``LMCORE_SLIDES_DIR``) in headless chromium with
every host but 127.0.0.1 blocked: no JavaScript error, no failed request, reveal.js
initialised with many slides, a plotly figure drawn on its slide, math typeset by the local
MathJax, no raw MyST and no solution text in what the deck shows.
"""
from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import slides  # tools/ is not a package: imported from its folder

sys.path.remove(str(ROOT / "tools"))

SLIDES = Path(os.environ.get("LMCORE_SLIDES_DIR", ROOT / "_build" / "slides"))
SITE_SLIDES = Path(os.environ.get("LMCORE_SITE_DIR", ROOT / "_build" / "html")) / "slides"
RAW_MYST = ("```{", "{glue:", "{glue}", "{cite", "{numref}", "{exercise}", "{solution}",
            ":label:", ":pyobject:", "{admonition}")


def _ctx(**kw):
    base = dict(glue={"w": {"data": {"text/plain": "0.374431"}},
                      "name": {"data": {"text/plain": "'love'"}}},
                citations={"vaswani2017attention": "Vaswani et al., 2017",
                           "nair2010rectified": "Nair and Hinton, 2010"},
                exercises={"ex-04-1": 14, "ex-04-2": 15},
                chapters={"04_attention", "05_transformer"})
    base.update(kw)
    return slides.Context(**base)


# ------------------------------------------------------------------------------------------
# MyST -> markdown


def test_split_blocks_reads_directives_options_and_plain_fences():
    text = ("Intro.\n\n````{admonition} Pitfall: x\n:class: warning\n:name: p1\nBody with\n"
            "```python\nx = {glue:text}`w`\n```\n````\nAfter.\n```bash\nls {cite}`k`\n```")
    blocks = slides.split_blocks(text)
    assert [b.kind for b in blocks] == ["text", "directive", "text", "fence"]
    box = blocks[1]
    assert (box.name, box.arg, box.options) == ("admonition", "Pitfall: x",
                                                {"class": "warning", "name": "p1"})
    assert box.body.startswith("Body with\n```python") and box.body.endswith("```")
    assert blocks[3].text == "```bash\nls {cite}`k`\n```"


def test_admonition_and_exercise_become_titled_boxes_and_solutions_vanish():
    text = ("```{admonition} Pitfall: softmax twice\n:class: warning\nIt *flattens*.\n```\n"
            "```{exercise} Shift invariance\n:label: ex-04-2\n:class: coding\n"
            "Show that $s + c$ changes nothing.\n```\n"
            "```{solution} ex-04-2\n:class: dropdown\nThe SECRET answer: e^c cancels.\n```\n"
            "```{exercise} Unlabelled\nDo it.\n```")
    out = slides.myst_to_markdown(text, _ctx())
    assert '<div class="lmcore-box lmcore-warning">' in out
    assert "**Pitfall: softmax twice**\n\nIt *flattens*." in out
    assert '<div class="lmcore-box lmcore-exercise coding">' in out
    assert "**Exercise 15 (Shift invariance)**" in out and "$s + c$ changes nothing" in out
    assert "**Exercise (Unlabelled)**" in out
    assert "SECRET" not in out and "```" not in out and ":label:" not in out


def test_roles_glue_cite_numref_and_code_spans():
    text = ("weight {glue:text}`w:.3f`, word {glue:text}`name`, raw {glue:text}`w`; "
            "{cite}`vaswani2017attention` and {cite}`vaswani2017attention,nair2010rectified`"
            " and {cite:t}`nair2010rectified`; see {numref}`ex-04-1`, "
            "{numref}`Task {number} <ex-04-2>`. Write `{glue:text}`name`` literally.")
    out = slides.convert_inline(text, _ctx())
    assert "weight 0.374, word love, raw 0.374431;" in out
    assert "[Vaswani et al., 2017] and [Vaswani et al., 2017; Nair and Hinton, 2010]" in out
    assert "and Nair and Hinton [2010];" in out
    assert "see Exercise 14, Task 15." in out
    assert "`{glue:text}`name``" in out  # inline code is left as written


@pytest.mark.parametrize("text, message", [
    ("{glue:text}`missing:.2f`", "glue 'missing'"),
    ("{glue:text}`name:.2f`", "cannot format"),
    ("{cite}`nobody1999`", "nobody1999"),
])
def test_bad_references_stop_the_deck(text, message):
    with pytest.raises(slides.SlidesError, match=message):
        slides.convert_inline(text, _ctx())


def test_literalinclude_is_the_source_sphinx_includes():
    from lmcore.attention import scaled_dot_product_attention

    text = ("```{literalinclude} ../lmcore/attention.py\n:language: python\n"
            ":pyobject: scaled_dot_product_attention\n```")
    out = slides.myst_to_markdown(text, _ctx(base_dir=ROOT / "chapters"))
    source = inspect.getsource(scaled_dot_product_attention).rstrip()
    assert out == f"```python\n{source}\n```"
    with pytest.raises(slides.SlidesError, match="not found"):
        slides.myst_to_markdown(text.replace(":pyobject: scaled", ":pyobject: nope_scaled"),
                                _ctx(base_dir=ROOT / "chapters"))


def test_labels_links_and_raw_html():
    text = ("(sec-x)=\n## Masks\n% a MyST comment\nSee [the transformer](05_transformer.ipynb#x)"
            ", the [Playground](../playground.md), [PyTorch](https://pytorch.org).\n\n"
            "```{raw} html\n<script src=\"../_static/playground/playground.js\"></script>\n```")
    out = slides.myst_to_markdown(text, _ctx())
    assert out.startswith("## Masks\nSee [the transformer](05_transformer.slides.html),")
    assert "the *Playground*, [PyTorch](https://pytorch.org)." in out
    assert "(sec-x)=" not in out and "comment" not in out and "<script" not in out


def test_markdown_chunks_break_at_headings_and_paragraphs_only():
    text = ("## A\nOne\nstill one.\n\n$$\nx\n\ny\n$$\n\n### B\nTwo.\n"
            "```{admonition} T\n:class: tip\nP1.\n\nP2.\n```\nThree.")
    chunks = slides.markdown_chunks(text)
    assert chunks == ["## A", "One\nstill one.", "$$\nx\n\ny\n$$", "### B", "Two.",
                      "```{admonition} T\n:class: tip\nP1.\n\nP2.\n```", "Three."]


def test_citation_labels_from_bibtex(tmp_path):
    bib = tmp_path / "refs.bib"
    bib.write_text("""@article{a2001x, title={X}, author={Tram{\\`e}r, Florian}, year={2001}}
@article{b2002y, title={Y}, author={Nair, Vinod and Hinton, Geoffrey E.}, year={2002}}
@article{c2003z, title={Z}, author={Vaswani, A. and Shazeer, N. and Parmar, N.}, year={2003}}
""")
    assert slides.citation_labels(bib) == {"a2001x": "Tramèr, 2001",
                                           "b2002y": "Nair and Hinton, 2002",
                                           "c2003z": "Vaswani et al., 2003"}


def test_exercises_are_numbered_across_the_book(tmp_path):
    one, two = tmp_path / "one.md", tmp_path / "two.ipynb"
    one.write_text("```{exercise} A\n:label: ex-01-1\nx\n```\n```{exercise} B\n:nonumber:\n"
                   "y\n```\n```{exercise} C\n:label: ex-01-2\nz\n```")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("```{exercise} D\n:label: ex-02-1\nw\n```"),
        nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(nb, two)
    assert slides.exercise_numbers([one, two]) == {"ex-01-1": 1, "ex-01-2": 2, "ex-02-1": 3}
    # the book's own chapters: every label found, numbered 1, 2, ... in reading order
    numbers = slides.exercise_numbers(slides.toc_files())
    assert sorted(numbers.values()) == list(range(1, len(numbers) + 1))
    assert numbers and all(re.fullmatch(r"ex-\d\d-\d+", k) for k in numbers)


# ------------------------------------------------------------------------------------------
# Slide types


def _md(text, **meta):
    return nbformat.v4.new_markdown_cell(text, metadata=meta)


def _code(source="x = 1", outputs=(), **meta):
    cell = nbformat.v4.new_code_cell(source, metadata=meta)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


PLOT = {"output_type": "display_data", "metadata": {},
        "data": {"text/html": "<div id='p'></div><script>Plotly.newPlot('p', [])</script>"}}


def _types(cells):
    slides.assign_slide_types(cells)
    return [c.metadata["slideshow"]["slide_type"] for c in cells]


def test_headings_start_slides_and_subslides():
    cells = [_md("# Title"), _md("Intro."), _md("## One"), _md("Text."), _md("### One.a"),
             _md("More."), _code(), _md("## Two")]
    assert _types(cells) == ["slide", "-", "slide", "-", "subslide", "-", "-", "slide"]


def test_a_full_subslide_continues_on_the_next():
    line = "word " * 19  # one line of prose
    cells = [_md("## S"), _md("\n".join([line] * 10)), _md("\n".join([line] * 6)),
             _md("\n".join([line] * 6)), _md("short")]
    assert _types(cells) == ["slide", "-", "-", "subslide", "-"]


def test_a_figure_gets_its_own_subslide_unless_only_its_heading_is_there():
    para = "\n".join(["word " * 19] * 6)  # six lines: too many to share a figure's slide
    cells = [_md("## S"), _code(outputs=[PLOT]), _md("A caption."), _code(outputs=[PLOT]),
             _md(para), _md("### T"), _code(outputs=[PLOT])]
    assert _types(cells) == ["slide", "-", "-", "subslide", "subslide", "subslide", "-"]


def test_a_cells_own_slide_type_wins():
    cells = [_md("# T"), _md("## S", slideshow={"slide_type": "fragment"}),
             _md("x", slideshow={"slide_type": "skip"}), _md("y")]
    assert _types(cells) == ["slide", "fragment", "skip", "-"]


def _glue_output(name, value):
    return {"output_type": "display_data",
            "metadata": {"scrapbook": {"name": name,
                                       "mime_prefix": "application/papermill.record/"}},
            "data": {"application/papermill.record/text/plain": repr(value)}}


def _chapter_notebook():
    stream = {"output_type": "stream", "name": "stdout", "text": "printed 42\n"}
    err = {"output_type": "stream", "name": "stderr", "text": "a warning\n"}
    return nbformat.v4.new_notebook(cells=[
        _md("# Tiny chapter\n\nWhat it does."),
        _code("# Colab\nimport os", tags=["colab", "remove-cell"]),
        _code("from lmcore.notebook import setup\ndevice = setup(seed=0)",
              outputs=[{"output_type": "stream", "name": "stdout", "text": "torch | cpu\n"}]),
        _md("## Numbers\n\nThe answer is {glue:text}`answer:.1f` "
            "{cite}`vaswani2017attention`.\n\n```{admonition} Pitfall: none\n:class: warning\n"
            "Careful.\n```"),
        _code("print('printed', 42)\nglue('answer', 42)",
              outputs=[stream, err, _glue_output("answer", 42)]),
        _code("\n".join(f"y{i} = {i}" for i in range(40)),
              outputs=[{"output_type": "execute_result", "execution_count": 3, "metadata": {},
                        "data": {"text/plain": "LONG-CELL-RESULT"}}]),
        _code("plot()", outputs=[PLOT]),
        _md("## Exercises\n```{exercise} Do it\n:label: ex-99-1\nCompute it.\n```\n"
            "```{solution} ex-99-1\n:class: dropdown\nHIDDEN-ANSWER\n```"),
        _code("assert 'HIDDEN-CODE'", tags=["hide-cell", "solution"]),
    ])


def test_slide_cells_of_a_chapter():
    nb = _chapter_notebook()
    ctx = _ctx()
    ctx.glue = slides.glue_data(nb)
    chapter = slides.Chapter(Path("99_tiny.ipynb"), 99)
    cells = slides.slide_cells(nb, ctx, "The Book", chapter)
    text = "\n".join(c.source for c in cells)
    assert chapter.title == "Tiny chapter"
    assert "The Book · chapter 99" in cells[0].source
    assert "Colab" not in text and "setup(seed" not in text  # the two fixed cells
    assert "The answer is 42.0 [Vaswani et al., 2017]." in text
    assert "HIDDEN" not in text and "{" not in text.replace("{i}", "")
    printed = next(c for c in cells if "print(" in c.source)
    assert [o.get("name") for o in printed.outputs] == ["stdout"]  # glue and stderr gone
    long = next(c for c in cells if c.source.startswith("y0"))
    assert slides.source_hidden(long) and long.outputs  # long code hidden, result kept
    kinds = [c.metadata["slideshow"]["slide_type"] for c in cells]
    plot = next(i for i, c in enumerate(cells) if slides.is_figure(c))
    assert kinds[0] == "slide" and kinds[plot] == "subslide"
    assert kinds[next(i for i, c in enumerate(cells) if "## Exercises" in c.source)] == "slide"


# ------------------------------------------------------------------------------------------
# End to end, from a jupyter-cache made here


def _cache(tmp_path, nb, path):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = tmp_path / "cache"
    get_cache(str(cache)).cache_notebook_bundle(CacheBundleIn(nb, str(path)),
                                                check_validity=False, overwrite=True)
    return cache


def test_a_deck_from_the_cache_is_offline_and_readable(tmp_path):
    nb = _chapter_notebook()
    source = tmp_path / "chapters" / "99_tiny.ipynb"
    source.parent.mkdir()
    stored = nbformat.from_dict(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(c.source) if c.cell_type == "markdown"
        else nbformat.v4.new_code_cell(c.source, metadata=c.metadata) for c in nb.cells]))
    nbformat.write(stored, source)  # as the chapters are stored: without outputs
    cache = _cache(tmp_path, nb, source)
    out, site = tmp_path / "slides", tmp_path / "html" / "slides"
    written = slides.build([source], out, cache, also_into=site, log=lambda *a: None)
    assert [p.name for p in written] == ["99_tiny.slides.html"] * 2
    deck = (out / "99_tiny.slides.html").read_text(encoding="utf-8")
    visible = re.sub(r"<(script|style)[\s\S]*?</\1>", "", deck)
    assert "The answer is 42.0 [Vaswani et al., 2017]." in visible
    assert "Pitfall: none" in visible and "Exercise (Do it)" in visible
    assert not [m for m in RAW_MYST if m in visible]
    assert "HIDDEN" not in deck and "LONG-CELL-RESULT" in deck and "y39 = 39" not in deck
    assert not re.findall(r"""(?:src|href)=["']https?://|@import url\(["']?https?://""", deck)
    for ref in re.findall(r"""(?:src|href)=["']([^"'#]+)["']""", deck):
        assert (out / ref).exists(), f"the deck loads {ref}, which is not beside it"
    assert (out / "index.html").read_text().count("99_tiny.slides.html") == 1
    # no built site beside html/slides: the copy there brings its own _static
    assert (site / "_static" / "vendor" / "reveal.js" / "dist" / "reveal.js").is_file()


def test_a_chapter_missing_from_the_cache_stops_the_run(tmp_path, capsys):
    source = tmp_path / "99_tiny.ipynb"
    nbformat.write(_chapter_notebook(), source)
    cache = _cache(tmp_path, nbformat.v4.new_notebook(cells=[_code("other = 1")]), source)
    assert slides.main(["--out", str(tmp_path / "out"), "--cache", str(cache),
                        str(source)]) == 1
    message = capsys.readouterr().err
    assert "no execution in" in message and "never execute" in message
    assert "1 execution(s) of an older version" in message
    assert not (tmp_path / "out").exists()
    assert slides.main(["--cache", str(tmp_path / "none"), str(source)]) == 1
    assert "no execution cache" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# The decks that `make slides` wrote, in a browser


def _decks(folder):
    return sorted(p.name for p in folder.glob("*.slides.html")) if folder.is_dir() else []


def _require(folder):
    if not (folder / "index.html").is_file():
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"no slides in {folder}: run `make slides` first")
        pytest.skip(f"no slides in {folder} (make slides)")


def _solution_snippets(chapter: Path) -> list[str]:
    """Distinctive lines of a chapter's solutions: the prose of its {solution} blocks and the
    code of its cells tagged solution (no math or markup, which the deck renders)."""
    nb = nbformat.read(chapter, as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "solution" in cell.metadata.get("tags", []):
            lines += cell.source.splitlines()
        elif cell.cell_type == "markdown":
            for block in slides._directives(slides.split_blocks(cell.source)):
                if block.name == "solution":
                    lines += block.body.splitlines()
    plain = [" ".join(line.split()) for line in lines
             if not re.search(r"[$`*\\{}_\[\]<>|]", line)]
    return [line for line in plain if len(line) >= 25]


@pytest.mark.executed
def test_every_chapter_has_a_deck_without_solutions():
    _require(SLIDES)
    chapters = [p for p in slides.toc_files() if p.parent == ROOT / "chapters"]
    missing = [p.stem for p in chapters if not (SLIDES / f"{p.stem}.slides.html").is_file()]
    assert not missing, f"no deck for {missing} in {SLIDES}"
    index = (SLIDES / "index.html").read_text(encoding="utf-8")
    plots = 0
    for chapter in chapters:
        assert f'href="{chapter.stem}.slides.html"' in index
        deck = (SLIDES / f"{chapter.stem}.slides.html").read_text(encoding="utf-8")
        text = " ".join(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[\s\S]*?</\1>", "",
                                                        deck)).split())
        text = text.replace("&quot;", '"').replace("&#39;", "'").replace("&amp;", "&")
        leaked = [s for s in _solution_snippets(chapter) if s in text]
        assert not leaked, f"{chapter.name}: solution text in the deck: {leaked[:3]}"
        assert not re.findall(r"""(?:src|href)=["']https?://""", deck), chapter.name
        plots += deck.count('class="plotly-graph-div"')
    assert plots, "no deck has a plotly figure"


def _open(browser, url):
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    errors, blocked = [], []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda m: errors.append(f"console.error: {m.text}")
            if m.type == "error" and "Failed to load resource" not in m.text else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.on("requestfailed", lambda r: errors.append(f"failed ({r.failure}): {r.url}")
            if urlparse(r.url).hostname == "127.0.0.1"
            and "ERR_ABORTED" not in (r.failure or "") else None)

    def route(r):
        if urlparse(r.request.url).hostname == "127.0.0.1" or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load", timeout=60_000)
    page.wait_for_function("() => window.Reveal && Reveal.isReady()", timeout=30_000)
    return page, errors, blocked


def _wait(page, script, what, name, errors):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(script, timeout=30_000)
    except PlaywrightTimeout:
        pytest.fail(f"{name}: {what} not seen within 30 s; errors: {errors[:5]}")


def _check_deck(browser, url, name):
    """Open one deck; returns how many plotly figures it has."""
    page, errors, blocked = _open(browser, url)
    try:
        assert not blocked, f"{name} asks the network for: {blocked[:5]}"
        assert page.evaluate("Reveal.getTotalSlides()") > 20, f"{name}: too few slides"
        text = page.evaluate("document.querySelector('.reveal .slides').innerText")
        raw = [m for m in RAW_MYST if m in text]
        assert not raw, f"{name}: raw MyST on the slides: {raw}"
        n_plots = page.locator("div.plotly-graph-div").count()
        if n_plots:  # the first plotly figure, shown on its slide, drawn by local plotly.js
            page.evaluate("""() => { const gd = document.querySelector('div.plotly-graph-div');
                                     const i = Reveal.getIndices(gd.closest('section'));
                                     Reveal.slide(i.h, i.v); }""")
            _wait(page, """() => { const s = Reveal.getCurrentSlide().querySelector('svg.main-svg');
                                   return s && s.getBoundingClientRect().width > 200; }""",
                  "a drawn plotly figure", name, errors)
        _wait(page, "() => document.querySelectorAll('mjx-container').length > 0",
              "math typeset by MathJax", name, errors)
        assert page.locator("mjx-merror").count() == 0, f"{name}: a TeX error"
        # every saved widget view drawn by the local ipywidgets manager
        _wait(page, """() => [...document.querySelectorAll(
                             "script[type='application/vnd.jupyter.widget-view+json']")]
                         .every(s => s.parentElement.querySelector('.lm-Widget'))""",
              "every saved widget drawn", name, errors)
        page.wait_for_timeout(200)
        assert not blocked, f"{name} asks the network for: {blocked[:5]}"
        assert not errors, f"{name}: JavaScript errors or failed requests: {errors[:5]}"
        return n_plots
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def browser():
    from localhost import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def slides_url():
    from localhost import serve

    _require(SLIDES)
    with serve(SLIDES) as url:
        yield url


@pytest.mark.executed
@pytest.mark.browser
@pytest.mark.parametrize("name", _decks(SLIDES) or ["(no decks)"])
def test_a_deck_works_offline_in_a_browser(browser, slides_url, name):
    _check_deck(browser, slides_url + name, name)


@pytest.mark.executed
@pytest.mark.browser
def test_the_decks_inside_the_site_use_its_static_files(browser):
    from localhost import serve

    _require(SITE_SLIDES)
    decks = _decks(SITE_SLIDES)
    assert decks == _decks(SLIDES)
    deck = (SITE_SLIDES / decks[0]).read_text(encoding="utf-8")
    if (SITE_SLIDES.parent / "_static" / "vendor" / "reveal.js").is_dir():
        assert 'src="../_static/vendor/reveal.js/dist/reveal.js"' in deck  # no second copy
    with serve(SITE_SLIDES.parent) as base:
        _check_deck(browser, base + "slides/" + decks[0], "site: " + decks[0])
