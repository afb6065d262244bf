"""The Playground page in a real browser with no network: the GPT runs in the page.

playground.html of the built site is served on 127.0.0.1 and opened in Debian's chromium
(Playwright) with every other host blocked, as in tests/test_site.py. Checks: the model
loads (ONNX Runtime Web, single-threaded WebAssembly, served from _static/vendor); the
page's probabilities, sampling distributions, window rule and attention weights agree with
the values lmcore computed at build time (tools/export_playground.py) to 1e-3; typing
changes the chart; empty, unknown and too-long input give a visible message and no console
error; "generate" appends characters. Prints the page weight, the time to the first
prediction and the update time per keystroke for 64 characters (budget: < 20 MB of runtime
and model, < 2 s, < 100 ms; printed, not asserted: a loaded machine is slower).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from localhost import chromium, serve

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(os.environ.get("LMCORE_SITE_DIR", ROOT / "_build" / "html"))
PAGE = SITE / "playground.html"
META = SITE / "_static" / "playground" / "model" / "shakespeare_char_gpt.json"
TOL = 1e-3

pytestmark = pytest.mark.browser

if not PAGE.exists():
    if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
        raise RuntimeError(f"no playground page at {PAGE}: run `make book` first")
    pytest.skip(f"no built playground at {PAGE} (run `make book`)", allow_module_level=True)


def _benign(text: str) -> bool:
    """As in tests/test_site.py: a failed request is checked separately (the "response"
    handler), and pydata-sphinx-theme logs its theme-mode reset as an error."""
    return "Failed to load resource" in text or text.startswith("Got invalid theme mode")



@pytest.fixture(scope="module")
def base_url():
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def meta():
    return json.loads(META.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(browser, base_url):
    """The playground, loaded once; .errors, .blocked and .loaded (URL -> bytes) on the side."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors, blocked, loaded = [], [], {}
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}")
            if msg.type == "error" and not _benign(msg.text) else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.on("requestfinished", lambda r: loaded.__setitem__(r.url, r.sizes()["responseBodySize"]))

    def route(r):
        host = urlparse(r.request.url).hostname
        if host in ("127.0.0.1", "localhost") or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            blocked.append((r.request.resource_type, r.request.url))
            r.abort()

    page.route("**/*", route)
    page.goto(base_url + "playground.html", wait_until="load", timeout=60_000)
    page.evaluate("() => window.lmcorePlayground.ready.then(() => true)")
    page.wait_for_function("() => window.lmcorePlayground.stats[0]?.updates >= 1")
    page.errors, page.blocked, page.loaded = errors, blocked, loaded
    yield page
    context.close()


def _updates(page) -> int:
    return page.evaluate("() => window.lmcorePlayground.stats[0].updates")


def _set_text(page, text: str) -> None:
    """Replace the text box's content as a reader would (one input event), wait for the update."""
    before = _updates(page)
    page.fill(".lmcore-pg-text", text)
    page.wait_for_function(f"() => window.lmcorePlayground.stats[0].updates > {before}")


def _bars(page):
    return page.evaluate("() => document.querySelector('.lmcore-pg-bars').data"
                         ".map(t => ({x: [...t.x], y: [...t.y]}))")


def test_loads_offline_within_budget(page, meta):
    timing = page.evaluate("() => window.lmcorePlayground.timing")
    first = timing["first"]
    sizes = {urlparse(u).path: n for u, n in page.loaded.items()}
    total = sum(sizes.values())
    runtime_model = sum(n for p, n in sizes.items() if "/onnxruntime-web/" in p
                        or "/playground/" in p)
    print(f"\nplayground page: {total / 1e6:.2f} MB loaded in all, {runtime_model / 1e6:.2f} MB "
          f"runtime + model + page script; first prediction {first:.0f} ms after navigation "
          f"(script started {timing['start']:.0f} ms, model ready {timing['session']:.0f} ms)")
    assert not page.blocked, f"requests to other hosts: {page.blocked}"
    assert not page.errors, page.errors
    assert any(p.endswith(".wasm") for p in sizes) and any(p.endswith(".onnx") for p in sizes)
    assert page.locator(".lmcore-pg-bars .main-svg").count() >= 1
    assert page.locator(".lmcore-pg-heat .main-svg").count() >= 1


def test_probabilities_match_lmcore(page, meta):
    worst = 0.0
    for ref in meta["references"]:
        got = page.evaluate("t => window.lmcorePlayground.nextTokenProbs(t)", ref["text"])
        assert got["tokens"] == meta["chars"]
        diff = max(abs(a - b) for a, b in zip(got["probs"], ref["probs"], strict=True))
        assert diff <= TOL, (ref["text"], diff)
        window = page.evaluate("t => window.lmcorePlayground.window(t)", ref["text"])
        assert window["start"] == ref["window_start"], ref["text"]  # lmcore.generate's rule
        worst = max(worst, diff)
    for ref in meta["sampling"]:
        settings = {"temperature": ref["temperature"], "topK": ref["top_k"], "topP": ref["top_p"]}
        got = page.evaluate("([t, s]) => window.lmcorePlayground.samplingProbs(t, s)",
                            [ref["text"], settings])
        diff = max(abs(a - b) for a, b in zip(got["probs"], ref["probs"], strict=True))
        assert diff <= TOL, (settings, diff)
        kept = [i for i, p in enumerate(ref["probs"]) if p > 0]  # the same tokens survive
        assert [i for i, p in enumerate(got["probs"]) if p > 0] == kept, settings
        worst = max(worst, diff)
    ref = meta["attention"]
    got = page.evaluate("t => window.lmcorePlayground.attention(t)", ref["text"])
    flat = lambda w: [x for layer in w for head in layer for row in head for x in row]
    diff = max(abs(a - b) for a, b in zip(flat(got), flat(ref["weights"]), strict=True))
    assert diff <= TOL
    print(f"\nmax |page - lmcore|: probabilities {worst:.2e}, attention {diff:.2e}")


def test_typing_updates_the_chart_fast_enough(page, meta):
    _set_text(page, "")
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSp"
            )[: meta["config"]["block_size"]]
    assert len(text) == 64
    page.click(".lmcore-pg-text")
    start = len(page.evaluate("() => window.lmcorePlayground.stats[0].timings"))
    start_phases = len(page.evaluate("() => window.lmcorePlayground.stats[0].phases"))
    charts = []
    for i, ch in enumerate(text):
        before = _updates(page)
        page.keyboard.press("Enter" if ch == "\n" else ch)
        page.wait_for_function(f"() => window.lmcorePlayground.stats[0].updates > {before}")
        if i in (0, 30, 63):
            charts.append(_bars(page))
    assert page.input_value(".lmcore-pg-text") == text
    assert charts[0] != charts[1] != charts[2], "typing did not change the chart"
    timings = page.evaluate("() => window.lmcorePlayground.stats[0].timings")[start:]
    phases = page.evaluate("() => window.lmcorePlayground.stats[0].phases")[start_phases:]
    median = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"\nper keystroke ({len(timings)} updates for {len(text)} characters): median "
          f"{median(timings):.1f} ms, max {max(timings):.1f} ms; of which the model "
          f"{median([p['model'] for p in phases]):.1f} ms, drawing "
          f"{median([p['draw'] for p in phases]):.1f} ms (medians)")
    assert not page.errors, page.errors


def test_bad_input_shows_a_message(page, meta):
    message = page.locator(".lmcore-pg-message")
    _set_text(page, "")
    assert message.is_visible() and "at least one character" in message.inner_text()
    assert "no prediction" in page.locator(".lmcore-pg-bars").inner_text()
    _set_text(page, "Romeo said: ¿qué?")
    assert message.is_visible() and '"¿"' in message.inner_text() and '"é"' in message.inner_text()
    assert message.get_attribute("data-kind") == "error"
    err = page.evaluate("() => window.lmcorePlayground.nextTokenProbs('')"
                        ".then(() => 'resolved', e => e.message)")
    assert "at least one character" in err
    long = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    block, keep = meta["config"]["block_size"], meta["keep"]
    assert len(long) > block
    _set_text(page, long)
    assert message.is_visible() and message.get_attribute("data-kind") == "note"
    assert page.locator(".lmcore-pg-inside").inner_text() == long[-keep:]
    _set_text(page, "ROMEO:")
    assert not message.is_visible()
    assert page.locator(".lmcore-pg-heat .main-svg").count() >= 1
    assert not page.errors, page.errors


def test_generate_follows_the_window_rule(page, meta):
    block, keep = meta["config"]["block_size"], meta["keep"]
    prompt = "KING HENRY:\nOnce more unto the breach, dear friends, once more;"  # 56 < 64
    _set_text(page, prompt)
    before = _updates(page)
    page.click("text=generate 1 character")
    page.wait_for_function(f"() => window.lmcorePlayground.stats[0].updates >= {before + 1}")
    page.wait_for_function(f"() => document.querySelector('.lmcore-pg-text').value.length"
                           f" === {len(prompt) + 1}")
    page.click("text=generate 20")
    n = len(prompt) + 21
    page.wait_for_function(f"() => document.querySelector('.lmcore-pg-text').value.length === {n}",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('.lmcore-pg-log').textContent"
                           ".includes('window was full')")
    # generate's rule: the window slid once, when the text reached block_size + 1
    # characters, to its last keep characters, and grew from there.
    slid_at = block + 1
    start = slid_at - keep
    assert page.locator(".lmcore-pg-outside").inner_text() == page.input_value(
        ".lmcore-pg-text")[:start]
    assert not page.errors, page.errors
