"""The course page, course.md, and its generator tools/build_course.py.

Plain tests: every generated block of course.md is what the generator makes from today's
chapters, assignments and README (so a number on the page cannot drift), and a stale block
is caught; the page names every chapter and every assignment; every track accounts for all
the chapters, never teaches a chapter before what it builds on nor hands out an assignment
before its first chapter; the six-week module and the semester hand out every assignment;
the parsers (directives, learning goals, pitfalls, exercises, assignment masters) read what
the chapters and masters write; the page links the downloads and slides the other tools
write, by the names they write them under.

``@pytest.mark.browser``: the built course page (``_build/html/course.html``) in chromium
with every host but 127.0.0.1 blocked; every link on it must resolve to a file of the built
site (the downloads, the slides, the chapters; anchors included). It passes only once the
site, the slides, the PDF and the downloads are built (``make test`` builds them first), and
names each link that does not resolve.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_course as bc  # tools/ is not a package: imported from its folder

sys.path.remove(str(ROOT / "tools"))

SITE = Path(os.environ.get("LMCORE_SITE_DIR", ROOT / "_build" / "html"))
PAGE = (ROOT / "course.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def chapters():
    return bc.chapters()


@pytest.fixture(scope="module")
def assignments():
    return bc.assignments()


# ------------------------------------------------------------------------ generated blocks

def test_generated_blocks_are_current(capsys):
    assert bc.main(["--check"]) == 0, (
        "course.md is stale: run `python tools/build_course.py` and commit course.md")


def test_a_stale_block_is_caught(tmp_path, monkeypatch, capsys):
    stale = re.sub(r"\*\*(\d+) exercises\*\*", lambda m: f"**{int(m.group(1)) + 1} exercises**",
                   PAGE, count=1)
    assert stale != PAGE
    course = tmp_path / "course.md"
    course.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(bc, "COURSE", course)
    assert bc.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert course.read_text(encoding="utf-8") == stale  # --check writes nothing
    assert bc.main([]) == 0 and course.read_text(encoding="utf-8") == PAGE


def test_fill_needs_the_markers_and_keeps_the_prose():
    with pytest.raises(ValueError, match="generated:tracks"):
        bc.fill("# Course\n\nno markers\n", {"tracks": "x"})
    text = ("Before.\n<!-- generated:a (tools) -->\nold\n<!-- /generated:a -->\nBetween.\n"
            "<!-- generated:b -->\n<!-- /generated:b -->\nAfter.\n")
    filled = bc.fill(text, {"a": "new A\n", "b": "new B\n"})
    assert filled == ("Before.\n<!-- generated:a (tools) -->\n\nnew A\n\n<!-- /generated:a -->\n"
                      "Between.\n<!-- generated:b -->\n\nnew B\n\n<!-- /generated:b -->\nAfter.\n")
    assert bc.fill(filled, {"a": "new A\n", "b": "new B\n"}) == filled  # idempotent


def test_the_page_is_in_the_table_of_contents():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [c.get("file") for part in toc.get("parts", []) for c in part.get("chapters", [])]
    assert "course" in files, "_toc.yml does not list course.md (part 'Teach with it')"


# ------------------------------------------------------------------------ what the page says

def test_the_page_names_every_chapter_and_assignment(chapters, assignments):
    assert len(chapters) == 14
    for c in chapters:
        assert f"<chapters/{c.stem}>" in PAGE and c.title in PAGE, c.stem
        assert f"(course-outcomes-{c.number:02d})=" in PAGE, c.stem
        assert all(goal in PAGE for goal in c.goals), c.stem
    assert len(assignments) == 6
    for a in assignments:
        assert f"`{a.stem}.ipynb`" in PAGE and bc.capital(a.title) in PAGE, a.stem
        assert f"`{a.function}`" in PAGE, a.stem


def test_every_track_accounts_for_every_chapter(chapters):
    numbers = {c.number for c in chapters}
    blocks = bc.blocks()
    for track in bc.TRACKS:
        taught = [n for s in track.sessions for n in s.chapters]
        assert len(taught) == len(set(taught)), f"{track.title}: a chapter taught twice"
        assert set(taught) <= numbers, f"{track.title}: no chapter {set(taught) - numbers}"
        section = blocks["tracks"].split(f"### {track.title}\n")[1].split("\n### ")[0]
        for c in chapters:  # in the timetable, or named as not in it
            assert f"<chapters/{c.stem}>" in section, f"{track.title} leaves out chapter {c.number}"
        if set(taught) != numbers:
            assert "Not in the timetable:" in section
    semester = next(t for t in bc.TRACKS if t.key == "semester")
    assert [n for s in semester.sessions for n in s.chapters] == sorted(numbers)
    module = next(t for t in bc.TRACKS if t.key == "module")
    assert len(module.sessions) == 6 and module.title.startswith("Six-week")


def test_no_track_teaches_a_chapter_before_what_it_builds_on():
    for track in bc.TRACKS:
        when = {n: i for i, s in enumerate(track.sessions) for n in s.chapters}
        for n, i in when.items():
            late = [b for b in bc.BUILDS_ON[n] if when.get(b, i + 1) > i]
            assert not late, f"{track.title}: chapter {n} comes before chapters {late}"


def test_builds_on_names_earlier_chapters_only(chapters):
    assert set(bc.BUILDS_ON) == {c.number for c in chapters}
    for n, before in bc.BUILDS_ON.items():
        assert all(b < n for b in before), (n, before)


def test_assignments_come_after_their_first_chapter(assignments):
    by_number = {a.number: a for a in assignments}
    for track in bc.TRACKS:
        when = {n: i for i, s in enumerate(track.sessions) for n in s.chapters}
        handed = [a for s in track.sessions for a in s.assignments]
        assert len(handed) == len(set(handed)), f"{track.title}: an assignment handed out twice"
        for i, session in enumerate(track.sessions):
            for number in session.assignments:
                assert number in by_number, f"{track.title}: no assignment {number}"
                first = min(by_number[number].chapters)
                assert when.get(first, len(track.sessions)) <= i, (
                    f"{track.title}: assignment {number} in {session.label}, before chapter {first}")
        if track.key in ("module", "semester"):
            assert sorted(handed) == sorted(by_number), f"{track.title} misses an assignment"


def test_the_page_links_the_files_the_other_tools_write():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import pdf

        import assignments as assignment_tool
    finally:
        sys.path.remove(str(ROOT / "tools"))
    hrefs = set(re.findall(r'<a href="([^"]+)"', PAGE))
    expected = {
        "downloads/" + pdf.DEFAULT_OUT.name,
        "downloads/" + assignment_tool.ZIP.name,
        "downloads/notebooks.zip", "downloads/notebooks-student.zip",  # tools/editions.py
        "slides/index.html",
    } | {f"slides/{p.stem}.slides.html" for p in bc.toc_chapters()}  # tools/slides.py
    assert hrefs == expected, (sorted(hrefs - expected), sorted(expected - hrefs))
    # the site folders they are written into
    assert pdf.DEFAULT_OUT.parent == ROOT / "_build" / "html" / "downloads"
    assert assignment_tool.ZIP.parent == ROOT / "_build" / "html" / "downloads"


def test_timings_are_the_readme_record(chapters):
    seconds = bc.readme_seconds()
    assert {c.stem: c.seconds for c in chapters} == {c.stem: seconds[c.stem] for c in chapters}
    total = bc.duration(sum(c.seconds for c in chapters))
    assert f"**{total}**" in PAGE


# ------------------------------------------------------------------------ parsers

def _nb(*cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(c) if isinstance(c, str) else c for c in cells]
    return nb


def test_read_chapter_counts_what_the_chapter_writes(tmp_path):
    path = tmp_path / "07_x.ipynb"
    nbformat.write(_nb(
        "# A title\n\nIntro.",
        "## Learning goals\n\n- First goal, on\n  two lines.\n- Second $x^2$ goal.\n\n"
        "Not a goal.",
        "```{admonition} Pitfall: a real one\n:class: warning\nText.\n```\n"
        "```{admonition} Pitfall: not a warning\n:class: tip\nText.\n```\n"
        "````{admonition} Pitfall: in a longer fence\n:name: p\n:class: dropdown warning\n````",
        "```{exercise} Conceptual\n:label: ex-07-1\nText.\n```\n"
        "```{solution} ex-07-1\n:class: dropdown\nAnswer.\n```\n"
        "```{exercise} Code, class first\n:class: coding\n:label: ex-07-2\nWrite f.\n```\n"
        "```{exercise} Code, label first\n:label: ex-07-3\n:class: coding\nWrite g.\n```"),
        path)
    c = bc.read_chapter(path)
    assert (c.number, c.stem, c.title) == (7, "07_x", "A title")
    assert c.goals == ["First goal, on two lines.", "Second $x^2$ goal."]
    assert c.pitfalls == ["a real one", "in a longer fence"]
    assert (c.exercises, c.coding) == (3, 2)


def test_read_chapter_refuses_a_chapter_without_goals(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_nb("# T", "## Learning goals\n\nnone listed"), path)
    with pytest.raises(ValueError, match="Learning goals"):
        bc.read_chapter(path)


def test_read_assignment_sums_public_and_hidden_points(tmp_path):
    path = tmp_path / "03_thing.ipynb"
    code = nbformat.v4.new_code_cell
    nbformat.write(_nb(
        "# Assignment 3: one thing\n\nSee chapter 2, and chapters 4 and 5.",
        code("def thing(x, y=1):\n    return x"),
        code('""" # BEGIN TEST CONFIG\npoints: 2\n""" # END TEST CONFIG\ndef test_a(thing):\n    pass'),
        code('""" # BEGIN TEST CONFIG\npoints: 3\nhidden: true\n""" # END TEST CONFIG\n'
             'def test_b(thing):\n    pass')), path)
    a = bc.read_assignment(path)
    assert (a.number, a.stem, a.title, a.function) == (3, "03_thing", "one thing", "thing(x, y=1)")
    assert a.chapters == [2, 4, 5]
    assert (a.public_points, a.hidden_points, a.points) == (2, 3, 5)


@pytest.mark.parametrize("text, numbers", [
    ("chapter 4", [4]), ("chapters 1 and 8", [1, 8]), ("Chapters 2, 3 and 9", [2, 3, 9]),
    ("chapter 1, and the weights of chapter 4", [1, 4]), ("no chapters here", [])])
def test_chapter_numbers(text, numbers):
    assert bc._chapter_numbers(text) == numbers


def test_duration():
    assert [bc.duration(s) for s in (5, 59.6, 60, 288)] == ["5 s", "1 min", "1 min", "4 min 48 s"]


# ------------------------------------------------------------------------ the built page

def _local_target(url: str, base: str) -> tuple[Path, str] | None:
    """The file under SITE a link on the page points to, and its #fragment; None if the
    link leaves the site."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not url.startswith(base):
        return None
    path = SITE / unquote(parsed.path.lstrip("/"))
    if parsed.path.endswith("/") or path.is_dir():
        path = path / "index.html"
    return path, parsed.fragment


@pytest.mark.browser
def test_every_link_on_the_course_page_resolves():
    page_file = SITE / "course.html"
    if not page_file.exists():
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"no {page_file}: is course.md in _toc.yml, and was the site built?")
        pytest.skip(f"no built course page at {page_file} (make book)")
    from localhost import chromium, serve

    with serve(SITE) as base, chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.route("**/*", lambda r: r.continue_() if urlparse(r.request.url).hostname == "127.0.0.1"
                   else r.abort())
        page.goto(base + "course.html", wait_until="load", timeout=60_000)
        links = page.eval_on_selector_all(
            "a[href]", "els => els.map(e => [e.getAttribute('href'), e.href])")
        context.close()
    missing, checked, ids = [], 0, {}
    for written, url in links:
        target = _local_target(url, base)
        if target is None:
            continue
        path, fragment = target
        checked += 1
        if not path.is_file():
            missing.append(f"{written!r} -> {path.relative_to(SITE)} does not exist")
        elif fragment and path.suffix == ".html":
            if path not in ids:
                ids[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(encoding="utf-8")))
            if unquote(fragment) not in ids[path]:
                missing.append(f"{written!r} -> no id {fragment!r} in {path.relative_to(SITE)}")
    assert checked >= 40, f"only {checked} links on the course page point into the site"
    assert not missing, ("links on the course page that do not resolve under "
                         f"{SITE}:\n" + "\n".join(sorted(set(missing))))


@pytest.mark.browser
def test_exercise_numbers_are_those_of_the_built_book(chapters):
    """The guide's "exercise numbers" column against sphinx-exercise's numbering in the
    built chapters (the first exercise of each chapter)."""
    pages = {c.stem: SITE / "chapters" / f"{c.stem}.html" for c in chapters}
    if not all(p.exists() for p in pages.values()):
        if os.environ.get("LMCORE_REQUIRE_SITE") == "1":
            pytest.fail(f"no built chapters in {SITE / 'chapters'}")
        pytest.skip(f"no built site at {SITE} (make book)")
    rows = re.findall(r"^\| \{doc\}`\d+ · .*?<chapters/(\w+)>` \| [^|]+\| [^|]+\| (\d+)–\d+ \|",
                      bc.blocks()["guide"], re.MULTILINE)
    assert len(rows) == sum(1 for c in chapters if c.exercises)
    wrong = []
    for stem, first in rows:
        html = pages[stem].read_text(encoding="utf-8")
        m = re.search(rf'id="ex-{stem[:2]}-1".*?Exercise (\d+)', html, re.DOTALL)
        if not m or m.group(1) != first:
            wrong.append(f"{stem}: the page says exercise {first}, the book "
                         f"{m.group(1) if m else 'has no ex-' + stem[:2] + '-1'}")
    assert not wrong, "\n".join(wrong)
