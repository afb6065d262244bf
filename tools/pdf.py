"""The whole book as one PDF, made offline from the executed chapters.

    python tools/pdf.py [--out _build/html/downloads/how-language-models-compute.pdf]

1. Sphinx's ``singlehtml`` builder writes the book as one HTML page into ``_build/pdf/``.
   It reads the executed chapters from myst-nb's cache ``_build/.jupyter_cache`` (``make
   test`` or ``make book`` fill it) and executes nothing: a chapter missing from the cache
   stops the script before the build, and a build log that says "Executing notebook" fails
   it. The configuration is ``_config.yml`` with the cache named explicitly; the table of
   contents is ``_toc.yml`` without the pages that only work on the website (``WEB_ONLY``).
2. Debian's chromium (``tests/localhost.py``) opens that page, served on 127.0.0.1 with
   every other host blocked, at the width of the printed page. It opens every solution
   dropdown and hidden cell (this is the reader edition: the PDF contains the solutions),
   waits until MathJax has typeset the formulas, plotly has drawn every figure and the
   widget manager every saved widget, and prints it: A4, printed backgrounds, page numbers
   in the footer.

A JavaScript error, a request to the site that fails, a formula MathJax rejects or a figure
that is not drawn fails the script: the PDF would lack it.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import booktoc
import yaml
from booktoc import CACHE, ROOT, toc_files, without

WORK = ROOT / "_build" / "pdf"  # the generated configuration, the log and the single page
HTML = WORK / "_build" / "singlehtml"
DEFAULT_OUT = ROOT / "_build" / "html" / "downloads" / "how-language-models-compute.pdf"
# Pages that only make sense on the website: the Playground runs a model in the browser,
# the course page links the site's downloads and slides.
WEB_ONLY = {"playground", "course"}
A4_WIDTH_PX = 794  # 210 mm at 96 CSS px per inch
MARGIN_MM = {"top": 15, "bottom": 18, "left": 14, "right": 14}
# Print only: code wraps instead of running off the page; a figure, an image or a cell's
# output is not cut in two by a page break when it fits on one page.
PRINT_CSS = """
@media print {
  pre, pre code { white-space: pre-wrap !important; overflow-wrap: anywhere; }
  /* the theme keeps each code block on one page: a long one leaves a page half empty */
  div.highlight, div[class*="highlight-"], pre { break-inside: auto !important; }
  pre { orphans: 4; widows: 4; }
  details.hide > summary { display: none !important; }  /* "Hide code cell content" */
  div.highlight pre { font-size: 0.72rem !important; }
  /* A shadow is printed as a large soft-masked image, two per exercise box: 7 MB and a
     third of the printing time. The theme's are !important: :not(#id) outranks them. */
  *:not(#lmcore-no-id) { box-shadow: none !important; text-shadow: none !important; }
  div.plotly-graph-div, .cell_output img, figure, .widget-subarea, .lmcore-playground,
  table { break-inside: avoid; }
  h1, h2, h3, h4, h5, h6, .admonition-title { break-after: avoid; }
  /* Each chapter (each document after the first) starts a page, under a chapter-size
     title; the break is on its anchor, so that the PDF's link to it lands on that page. */
  span[id^="document-"] { display: block; break-before: page; }
  span[id^="document-"] + section > :is(h2, h3) { font-size: 2rem; }
}
"""
FOOTER = ('<div style="width: 100%; font-size: 8px; color: #555; text-align: center;">'
          '<span class="title"></span> · <span class="pageNumber"></span> / '
          '<span class="totalPages"></span></div>')


class PdfError(RuntimeError):
    pass


def print_toc(toc: dict) -> dict:
    """The table of contents without the WEB_ONLY pages (and without parts left empty)."""
    return without(toc, WEB_ONLY)


def uncached_notebooks(files: list[str], cache_path: Path, root: Path = ROOT) -> list[str]:
    """The notebooks among ``files`` (paths under ``root`` without ``.ipynb``) for which the
    cache holds no execution of their code, as myst-nb matches them."""
    notebooks = {root / f"{f}.ipynb": f for f in files if (root / f"{f}.ipynb").exists()}
    return [notebooks[p] for p in booktoc.uncached_notebooks(list(notebooks), cache_path)]


def print_config(cache_path: Path) -> dict:
    """``_config.yml`` for the single-page build: the cache named explicitly (Jupyter Book
    would otherwise use one under the output folder), paths made absolute."""
    config = booktoc.cached_config(yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")),
                                   ROOT, cache_path)
    config["execute"]["execute_notebooks"] = "cache"
    sphinx = config["sphinx"]
    sphinx.setdefault("config", {})["nb_execution_cache_path"] = config["execute"]["cache"]
    sphinx["local_extensions"]["pdf"] = str(Path(__file__).resolve().parent)  # setup() below
    # The single page sits at the site's root, not one level below it as a chapter does.
    widgets_js = sphinx["config"].get("nb_ipywidgets_js") or {}
    for attributes in widgets_js.values():
        for name, value in list((attributes or {}).items()):
            if isinstance(value, str) and value.startswith("../_static/"):
                attributes[name] = value[len("../"):]
    # A link to a page left out (WEB_ONLY) becomes its plain text, without a warning.
    # (The regex form: nitpick_ignore wants tuples, and YAML gives lists.)
    sphinx["config"]["nitpick_ignore_regex"] = [[kind, re.escape(name)] for name in sorted(WEB_ONLY)
                                                for kind in ("myst", "doc")]
    return config


def build_single_page(log_path: Path) -> Path:
    """Run the singlehtml build; return the page. Raise PdfError if it would execute."""
    toc = print_toc(booktoc.load_toc())
    missing = uncached_notebooks(toc_files(toc), CACHE)
    if missing:
        raise PdfError(
            f"not in the execution cache {CACHE}: {', '.join(missing)}. "
            "tools/pdf.py never executes a chapter: run `make test` (or `make book`) first, "
            "which executes each chapter once and stores it there.")
    shutil.rmtree(HTML, ignore_errors=True)
    try:
        booktoc.build_from_cache(print_config(CACHE), toc, WORK, log_path, builder="singlehtml")
    except booktoc.BuildError as error:
        raise PdfError(f"the singlehtml build: {error}") from None
    page = HTML / f"{toc['root']}.html"
    if not page.exists():
        raise PdfError(f"the singlehtml build wrote no {page}")
    return page


# Runs in the page: open everything a reader would have to click, then wait for the
# renderers. Returns what is still missing (an empty list when the page is ready).
_OPEN_ALL = """() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  document.querySelectorAll('.toggle-button-hidden').forEach(e => e.classList.remove('toggle-button-hidden'));
  if (window.Plotly) {
    document.querySelectorAll('div.js-plotly-plot').forEach(gd => window.Plotly.Plots.resize(gd));
  }
}"""
_NOT_READY = """() => {
  const missing = [];
  const plots = document.querySelectorAll('div.plotly-graph-div');
  if (plots.length && !window.Plotly) missing.push('plotly.js');
  plots.forEach((gd, i) => { if (!gd.querySelector('.main-svg')) missing.push('plotly figure ' + i); });
  if (document.querySelector('.math') && !document.querySelector('mjx-container')) missing.push('MathJax');
  if (window.MathJax && MathJax.startup && MathJax.startup.document) {
    const pending = [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container'));
    if (pending.length) missing.push(pending.length + ' formulas not typeset');
  }
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]');
  views.forEach((s, i) => {
    const area = s.parentElement && s.parentElement.querySelector('.widget-subarea');
    if (!area || !area.children.length) missing.push('widget view ' + i);
  });
  const playgrounds = document.querySelectorAll('.lmcore-playground');
  if (playgrounds.length) {
    const api = window.lmcorePlayground;
    const stats = api ? api.stats : [];
    if (stats.length < playgrounds.length || stats.some(s => s.updates < 1))
      missing.push('live model (' + playgrounds.length + ' boxes)');
  }
  return missing.slice(0, 20);
}"""


def _cpu_seconds_of_descendants() -> float:
    """CPU time used so far by this process's live descendants (chromium and Playwright's
    driver), from /proc; 0 where there is no /proc."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
    mine, total = {os.getpid()}, 0.0
    for _ in range(10):  # a few generations deep
        new = {pid for pid, ppid in parent.items() if ppid in mine} - mine
        total += sum(cpu[pid] for pid in new)
        mine |= new
    return total


# Runs in the page once it is ready: counts what was rendered, and says it on a last page
# (tests/test_pdf.py reads it back from the PDF); the document title becomes the PDF's.
_COLOPHON = """title => {
  const count = s => document.querySelectorAll(s).length;
  const stats = {
    formulas: count('mjx-container'),
    figures: [...document.querySelectorAll('div.plotly-graph-div')].filter(
      gd => gd.querySelector('.main-svg')).length,
    widgets: [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')]
      .filter(s => (s.parentElement.querySelector('.widget-subarea') || {}).childElementCount).length,
    images: count('img'),
    solutions: count('.solution') + count('.tag_solution'),
  };
  const box = document.createElement('section');
  box.id = 'lmcore-pdf-colophon';
  box.innerHTML = '<h2>About this PDF</h2><p>This is the reader edition of the website, ' +
    'printed offline by chromium (tools/pdf.py), with every solution and hidden cell open. ' +
    'Printed: ' + stats.formulas + ' formulas typeset by MathJax, ' + stats.figures +
    ' figures drawn by plotly, ' + stats.widgets + ' widgets drawn from their saved state, ' +
    stats.images + ' images, ' + stats.solutions + ' solutions. The figures are interactive ' +
    'on the website; here they show their first state.</p>';
  box.style.breakBefore = 'page';
  (document.querySelector('article.bd-article') || document.querySelector('main') ||
   document.body).append(box);
  document.title = title;
  return stats;
}"""


def print_pdf(page_html: Path, out: Path, title: str, timeout_s: float = 120) -> dict:
    """Print the single page to ``out`` with chromium; return what was rendered."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from localhost import CHROMIUM, chromium, serve
    finally:
        sys.path.remove(str(ROOT / "tests"))
    try:
        import playwright.sync_api  # noqa: F401 (tests/localhost.py drives chromium with it)
    except ImportError as error:
        raise PdfError(f"playwright is not installed ({error}): pip install -r requirements.txt")
    if not Path(CHROMIUM).exists():
        raise PdfError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install "
                       "chromium), or name another with LMCORE_CHROMIUM")
    content_width = round(A4_WIDTH_PX - (MARGIN_MM["left"] + MARGIN_MM["right"]) * 96 / 25.4)
    errors, blocked = [], []
    with serve(page_html.parent) as base, chromium() as browser:
        context = browser.new_context(viewport={"width": content_width, "height": 1100})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"JavaScript error: {exc}"))
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)
        page.on("requestfailed", lambda r: errors.append(f"request failed ({r.failure}): {r.url}")
                if urlparse(r.url).hostname == "127.0.0.1" and "ERR_ABORTED" not in (r.failure or "")
                else None)

        def route(r):
            url = r.request.url
            if urlparse(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
                r.continue_()
            else:
                blocked.append(url)
                r.abort()

        page.route("**/*", route)
        t0 = time.perf_counter()
        page.goto(base + page_html.name, wait_until="load", timeout=timeout_s * 1000)
        t1 = time.perf_counter()
        page.evaluate(_OPEN_ALL)
        deadline = time.monotonic() + timeout_s
        while True:
            if errors:
                raise PdfError("the page did not load cleanly:\n" + "\n".join(errors))
            failed = page.evaluate("() => [...document.querySelectorAll("
                                   "'.lmcore-pg-message[data-kind=error]')].map(e => e.textContent)")
            if failed:
                raise PdfError(f"the live model did not start: {failed[0]}")
            missing = page.evaluate(_NOT_READY)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise PdfError(f"not rendered after {timeout_s:.0f} s: {missing}")
            page.wait_for_timeout(500)
        if page.evaluate("() => document.querySelectorAll('mjx-merror').length"):
            raise PdfError("MathJax reported a TeX error: " + page.evaluate(
                "() => [...document.querySelectorAll('mjx-merror')].map(e => e.textContent).slice(0, 5).join(' | ')"))
        page.add_style_tag(content=PRINT_CSS)
        page.evaluate(_OPEN_ALL)  # widgets and plots drawn late: resize to the page again
        page.wait_for_timeout(500)
        t2 = time.perf_counter()
        stats = page.evaluate(_COLOPHON, title)
        if errors or blocked:
            raise PdfError("the page did not load cleanly:\n" + "\n".join(
                errors + [f"blocked (not 127.0.0.1): {url}" for url in blocked]))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        page.pdf(path=str(tmp), format="A4", print_background=True,
                 margin={k: f"{v}mm" for k, v in MARGIN_MM.items()},
                 display_header_footer=True, header_template="<div></div>",
                 footer_template=FOOTER)
        tmp.replace(out)  # a half-written PDF never takes the place of a good one
        stats["seconds"] = {"load": t1 - t0, "render": t2 - t1, "print": time.perf_counter() - t2}
        stats["chromium_cpu"] = _cpu_seconds_of_descendants()
        context.close()
    return stats


def _html_handlers_for_singlehtml(app):
    """Extensions register how a node is written for "html"; Sphinx looks those up for the
    singlehtml builder only if nothing at all is registered for "singlehtml" (sphinx-exercise
    registers its nodes there). Give singlehtml every html handler it lacks: otherwise a
    node such as sphinx-jupyterbook-latex's HiddenCellNode is an "unknown node type"."""
    handlers = app.registry.translation_handlers
    single = handlers.setdefault("singlehtml", {})
    for node, visit_depart in handlers.get("html", {}).items():
        single.setdefault(node, visit_depart)


def _every_notebooks_scripts(app, pagename, templatename, context, doctree):
    """myst-nb adds a notebook's scripts (its saved widget state, the widget manager) to the
    notebook's own page; the single page is the root document, so it would have none of the
    chapters'. Add every document's: one widget-state script per chapter (the manager reads
    each and draws the views whose models it holds), the loaders once."""
    if app.builder.name != "singlehtml":
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    states, loaders = [], {}
    for docname in sorted(app.env.all_docs):
        if docname == pagename:  # myst-nb adds these itself
            continue
        for uri, kwargs in NbMetadataCollector.get_js_files(app.env, docname).values():
            if uri is None:
                states.append(kwargs)
            else:
                loaders.setdefault(uri, kwargs)
    for kwargs in states:
        app.add_js_file(None, **kwargs)
    for uri, kwargs in loaders.items():
        app.add_js_file(uri, **kwargs)


def _no_search_index(app, exception):
    """The theme loads searchindex.js on every page; singlehtml writes none (a printed book
    has no search box). An empty one instead of a 404."""
    if exception is None and app.builder.name == "singlehtml":
        (Path(app.outdir) / "searchindex.js").write_text(
            "// tools/pdf.py: the single page printed as the PDF has no search index\n",
            encoding="utf-8")


def setup(app):
    """The Sphinx extension that the single-page build loads (see print_config)."""
    app.connect("builder-inited", _html_handlers_for_singlehtml)
    app.connect("html-page-context", _every_notebooks_scripts)
    app.connect("build-finished", _no_search_index)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def count_pages(path: Path) -> int:
    from pypdf import PdfReader

    return len(PdfReader(str(path)).pages)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PDF to write")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    start = time.perf_counter()
    try:
        page = build_single_page(WORK / "build.log")
        built = time.perf_counter()
        build_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        build_cpu = build_cpu.ru_utime + build_cpu.ru_stime
        title = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["title"]
        stats = print_pdf(page, out, title)
    except PdfError as error:
        print(f"tools/pdf.py: {error}", file=sys.stderr)
        return 1
    done = time.perf_counter()
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB, {count_pages(out)} pages; {stats['formulas']} "
          f"formulas, {stats['figures']} plotly figures, {stats['widgets']} widgets, "
          f"{stats['images']} images, {stats['solutions']} solutions) in {done - start:.0f} s: "
          "singlehtml build "
          f"{built - start:.0f} s, chromium {done - built:.0f} s (" + ", ".join(
              f"{k} {v:.0f} s" for k, v in stats["seconds"].items()) + "); CPU time: build "
          f"{build_cpu:.0f} s, chromium {stats['chromium_cpu']:.0f} s, this script "
          f"{time.process_time():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
