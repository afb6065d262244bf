"""The built website in a real browser with no network: Debian's chromium driven by Playwright.

Every page of `_build/html` is served on 127.0.0.1 and opened with every other host blocked.
Checks: no JavaScript errors; no response with status 4xx/5xx (a missing font or script);
no blocked script or stylesheet (nothing from a CDN); every plotly figure drawn; clicking a
slider (or dropdown) changes its figure; math typeset by the local MathJax; saved ipywidget
state drawn; bertviz views drawn; on a phone's 390 px screen every figure fits, its panels
are stacked rather than squeezed and no title, menu, slider or legend overlaps another.
Screenshots of every page go to `_build/screenshots/` (a build artefact).

`make test` builds the site first and sets LMCORE_REQUIRE_SITE=1, so a missing site fails
the run there; a bare `pytest` without a built site skips these tests.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from localhost import chromium, serve

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("LMCORE_SITE_DIR", ROOT / "_build" / "html"))
SHOTS = ROOT / "_build" / "screenshots"
PAGES = sorted(
    p.relative_to(SITE).as_posix()
    for p in [*SITE.glob("*.html"), *SITE.glob("chapters/*.html")]
    if p.name not in ("genindex.html", "search.html")
) if SITE.is_dir() else []

pytestmark = pytest.mark.browser

if not (SITE / "index.html").exists():
    if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
        raise RuntimeError(f"no built site at {SITE}: run `make book` first")
    pytest.skip(f"no built site at {SITE} (run `make book`)", allow_module_level=True)



@pytest.fixture(scope="module")
def base_url():
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _benign(text: str) -> bool:
    """Console errors that do not come from the book: a blocked request is checked
    separately (see `blocked`); pydata-sphinx-theme logs its theme-mode reset as an error."""
    return "Failed to load resource" in text or text.startswith("Got invalid theme mode")


def open_page(browser, url, width=1280, height=900):
    """Open url with only 127.0.0.1 reachable; return (page, errors, blocked_requests).

    errors: JavaScript errors, and every response with status 4xx/5xx or failed request
    to the site itself (a missing font is a missing icon)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors, blocked = [], []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.error: {msg.text}")
            if msg.type == "error" and not _benign(msg.text) else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.on("requestfailed", lambda r: errors.append(f"request failed ({r.failure}): {r.url}")
            if urlparse(r.url).hostname in ("127.0.0.1", "localhost")
            and "ERR_ABORTED" not in (r.failure or "") else None)

    def route(r):
        host = urlparse(r.request.url).hostname
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append((r.request.resource_type, r.request.url))
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="load", timeout=60_000)
    page.wait_for_timeout(300)  # deferred scripts (MathJax, widget manager) start after load
    return page, errors, blocked


@pytest.mark.parametrize("name", PAGES)
def test_page_works_offline(browser, base_url, name):
    page, errors, blocked = open_page(browser, base_url + name)
    try:
        html = page.content()
        # Plotly: every figure drawn by the locally served plotly.js.
        n_plots = page.locator("div.plotly-graph-div").count()
        if n_plots:
            page.wait_for_function(
                "n => document.querySelectorAll('div.plotly-graph-div .main-svg').length >= n",
                arg=n_plots, timeout=30_000)
        # Math: MathJax (served locally) typeset every math element.
        n_math = page.locator(".math").count()
        if n_math:
            page.wait_for_function(
                "() => document.querySelectorAll('mjx-container').length > 0", timeout=30_000)
            assert page.locator("mjx-container").count() >= 1
            assert page.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"
        # Widgets: the saved ipywidget state is drawn by the local html-manager.
        if "application/vnd.jupyter.widget-view+json" in html:
            page.wait_for_function(
                "() => document.querySelectorAll('.jupyter-widgets, .widget-inline-hbox, .widget-vbox').length > 0",
                timeout=30_000)
        # bertviz: its views draw SVG into their container.
        if 'id="bertviz' in html:
            page.wait_for_function(
                "() => [...document.querySelectorAll('[id^=bertviz]')].some(e => e.querySelector('svg'))",
                timeout=30_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / (name.replace("/", "__") + ".png")), full_page=True)
        bad = [(kind, url) for kind, url in blocked if kind in ("script", "stylesheet", "xhr", "fetch")]
        assert not bad, f"{name} asks the network for: {bad}"
        assert not errors, f"{name}: JavaScript errors or failed requests: {errors}"
    finally:
        page.context.close()


def _figure_state(page, index):
    """A fingerprint of what figure `index` shows: trace visibility, some data, titles."""
    return page.evaluate(
        """i => { const gd = document.querySelectorAll('div.plotly-graph-div')[i];
                  const head = a => a ? Array.from(a).slice(0, 6).map(v => (v && v.length !== undefined && typeof v !== 'string') ? Array.from(v).slice(0, 6) : v) : null;
                  return JSON.stringify([gd.data.map(t => [t.visible, t.opacity, head(t.x), head(t.y), head(t.z), head(t.text)]),
                                         gd.layout.title, gd.layout.annotations,
                                         gd.layout.xaxis && gd.layout.xaxis.range, gd.layout.yaxis && gd.layout.yaxis.range]); }""",
        index)


def _click_centre(page, locator):
    """A real mouse click in the middle of an SVG element (plotly listens on the group)."""
    box = locator.bounding_box()
    assert box, "control not drawn"
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def _pages_with(marker):
    return [name for name in PAGES if marker in (SITE / name).read_text(encoding="utf-8")]


@pytest.mark.parametrize("name", [n for n in _pages_with("plotly-graph-div") if n.startswith("chapters/")])
def test_every_plot_control_changes_its_figure(browser, base_url, name):
    """Every slider and dropdown of every plotly figure on a chapter page, clicked with the
    mouse, changes what its figure shows (e.g. the attention heatmap switches layer or head)."""
    page, errors, _ = open_page(browser, base_url + name)
    try:
        n = page.locator("div.plotly-graph-div").count()
        page.wait_for_function(
            "n => document.querySelectorAll('div.plotly-graph-div .main-svg').length >= n", arg=n, timeout=30_000)
        controlled = page.evaluate(
            """() => [...document.querySelectorAll('div.plotly-graph-div')].map((gd, i) =>
                   [i, (gd.layout.sliders || []).length, (gd.layout.updatemenus || []).length])""")
        controlled = [c for c in controlled if c[1] or c[2]]
        assert controlled, f"{name}: no plotly figure has a slider or dropdown"
        for index, n_sliders, n_menus in controlled:
            gd = page.locator("div.plotly-graph-div").nth(index)
            gd.scroll_into_view_if_needed()
            for s in range(n_sliders):
                before = _figure_state(page, index)
                box = gd.locator("rect.slider-rail-rect").nth(s).bounding_box()
                assert box, f"{name}: figure {index} slider {s} not drawn"
                page.mouse.click(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
                page.wait_for_timeout(400)
                assert _figure_state(page, index) != before, f"{name}: figure {index} slider {s} changed nothing"
            if n_menus:
                before = _figure_state(page, index)
                header = gd.locator("g.updatemenu-header rect")
                if header.count():  # a dropdown: open it, then pick its last item
                    _click_centre(page, header.first)
                    items = gd.locator("g.updatemenu-dropdown-button rect")
                else:  # a row of buttons
                    items = gd.locator("g.updatemenu-button rect")
                items.last.wait_for(state="attached", timeout=5_000)
                _click_centre(page, items.last)
                page.wait_for_timeout(400)
                assert _figure_state(page, index) != before, f"{name}: figure {index} menu changed nothing"
        assert not errors, errors
    finally:
        page.context.close()


PHONE = {"width": 390, "height": 844}  # a common phone's CSS pixels
_PHONE_LAYOUT = """() => {
  const box = e => { const r = e.getBoundingClientRect();
                     return [r.left, r.top, r.right, r.bottom].map(v => Math.round(v)); };
  return [...document.querySelectorAll('div.plotly-graph-div')].map((gd, index) => {
    if (!gd.offsetParent || !gd._fullLayout) return null;  // hidden (e.g. in a closed dropdown)
    const fl = gd._fullLayout;
    const panels = (fl._subplots.cartesian || []).map(id => {
      const m = /^(x\\d*)(y\\d*)$/.exec(id);
      const xa = fl['xaxis' + m[1].slice(1)], ya = fl['yaxis' + m[2].slice(1)];
      return {id, overlay: !!(xa.overlaying || ya.overlaying), x: xa._offset, y: ya._offset,
              w: xa._length, h: ya._length};
    });
    const labels = [];
    const add = (what, e) => { const b = box(e); if (b[2] > b[0] && b[3] > b[1]) labels.push([what, b]); };
    gd.querySelectorAll('.g-gtitle .gtitle').forEach(e => add('title', e));
    gd.querySelectorAll('.infolayer > g[class^="g-x"], .infolayer > g[class^="g-y"]').forEach(
      e => add('axis title ' + e.getAttribute('class'), e));
    gd.querySelectorAll('.xaxislayer-above').forEach((e, k) => add('x tick labels ' + k, e));
    gd.querySelectorAll('.annotation').forEach((e, k) => {
      const a = (fl.annotations || [])[k];
      if (a && a.xref === 'paper' && a.yref === 'paper') add('annotation "' + a.text + '"', e);
    });
    gd.querySelectorAll('.updatemenu-header-group, .updatemenu-button').forEach((e, k) => add('menu ' + k, e));
    gd.querySelectorAll('.slider-group').forEach((e, k) => add('slider ' + k, e));
    gd.querySelectorAll('.legend').forEach(e => add('legend', e));
    const scrolled = [...gd.querySelectorAll('.legend .scrollbar')].some(e => e.getBoundingClientRect().height > 0);
    gd.querySelectorAll('.colorbar').forEach((e, k) => add('colour bar ' + k, e));
    return {index, layout: gd.getAttribute('data-lmcore-layout'), figure: box(gd),
            svg: box(gd.querySelector('.main-svg')), container: box(gd.parentElement), panels, labels,
            scrolled};
  });
}"""


def _overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize("name", [n for n in _pages_with("plotly-graph-div") if n.startswith("chapters/")])
def test_figures_fit_a_phone(browser, base_url, name):
    """On a 390 px screen (site_static/narrow_figures.js): every figure fits the screen and
    its container; side-by-side panels are stacked, and every panel is at least 40 % of the
    figure wide;
    panels do not overlap; titles, subplot titles, menus, sliders, legends and colour bars
    neither overlap one another nor stick out of the figure."""
    page, errors, _ = open_page(browser, base_url + name, **PHONE)
    try:
        n = page.locator("div.plotly-graph-div").count()
        page.wait_for_function(
            "n => document.querySelectorAll('div.plotly-graph-div .main-svg').length >= n", arg=n, timeout=30_000)
        try:
            page.wait_for_function(
                """() => [...document.querySelectorAll('div.plotly-graph-div')].every(
                       gd => !gd.offsetParent || gd.hasAttribute('data-lmcore-layout'))""", timeout=30_000)
        except Exception:  # noqa: BLE001 (the assertion below says what is wrong)
            pytest.fail(f"{name}: site_static/narrow_figures.js did not lay out every figure")
        page.wait_for_timeout(500)
        problems = []
        for fig in filter(None, page.evaluate(_PHONE_LAYOUT)):
            where = f"figure {fig['index']}"
            if fig["layout"] == "error":
                problems.append(f"{where}: narrow_figures.js failed")
            left, _, right, _ = fig["figure"]
            if left < -1 or right > PHONE["width"] + 1 or right > fig["container"][2] + 1:
                problems.append(f"{where} is {right - left} px wide at x={left}: it does not fit")
            if fig["svg"][3] > min(fig["figure"][3], fig["container"][3]) + 1:
                problems.append(f"{where} is drawn {fig['svg'][3] - fig['figure'][3]} px below "
                                "its box: it runs into the text under it")
            panels = [p for p in fig["panels"] if not p["overlay"]]
            for p in panels:
                if p["w"] < 0.4 * (right - left):
                    problems.append(f"{where} panel {p['id']} squeezed to {p['w']:.0f} px")
            for i, p in enumerate(panels):
                for q in panels[i + 1:]:
                    a = [p["x"], p["y"], p["x"] + p["w"], p["y"] + p["h"]]
                    b = [q["x"], q["y"], q["x"] + q["w"], q["y"] + q["h"]]
                    if _overlap(a, b) > 4:
                        problems.append(f"{where}: panels {p['id']} and {q['id']} overlap")
            labels = fig["labels"]
            if fig["scrolled"]:
                problems.append(f"{where}: the legend does not fit and scrolls")
            svg = fig["svg"]
            for what, b in labels:
                if b[0] < svg[0] - 2 or b[2] > svg[2] + 2 or b[1] < svg[1] - 2 or b[3] > svg[3] + 2:
                    problems.append(f"{where}: {what} at {b} is cut off by the figure's edge {svg}")
            for i, (what, a) in enumerate(labels):
                for other, b in labels[i + 1:]:
                    if _overlap(a, b) > 4:
                        problems.append(f"{where}: {what} overlaps {other}")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / ("phone__" + name.replace("/", "__") + ".png")), full_page=True)
        # Turned to landscape on a wide screen: each figure gets its own layout back.
        page.set_viewport_size({"width": 1280, "height": 900})
        page.wait_for_function(
            """() => [...document.querySelectorAll('div.plotly-graph-div')].every(
                   gd => !gd.offsetParent || gd.getAttribute('data-lmcore-layout') === 'wide')""",
            timeout=30_000)
        page.wait_for_timeout(500)
        for index, width, drawn in page.evaluate(
                """() => [...document.querySelectorAll('div.plotly-graph-div')].filter(gd => gd.offsetParent)
                       .map((gd, i) => [i, gd.getBoundingClientRect().width, gd._fullLayout.width])"""):
            if abs(width - drawn) > 2:
                problems.append(f"figure {index}: drawn {drawn} px wide in a {width} px box after "
                                "the screen widened")
        assert not problems, f"{name} at {PHONE['width']} px:\n" + "\n".join(problems)
        assert not errors, errors
    finally:
        page.context.close()
