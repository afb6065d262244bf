"""Write the computed parts of the course page, course.md (tracks, assignments, learning
outcomes, instructor guide), from the chapters, the assignments and the README.

    python tools/build_course.py          # rewrite the generated blocks of course.md
    python tools/build_course.py --check  # exit 1 if a generated block is stale

Each generated block sits between ``<!-- generated:NAME ... -->`` and
``<!-- /generated:NAME -->`` in course.md; the prose around them is written by hand.
What is computed, and from where:

- a chapter's title, its learning goals (the bullets of its ``## Learning goals`` cell), its
  exercises (``{exercise}`` directives; *coding* ones have ``:class: coding``) and its
  common mistakes (the titles of its ``{admonition} Pitfall: ...`` boxes with
  ``:class: warning``): the notebook in ``chapters/``, in ``_toc.yml``'s order;
- the seconds a chapter takes to execute: README.md's chapter table, the committed record
  of what ``make test`` measured (``execution_seconds`` in ``_build/.jupyter_cache``);
- an assignment's title, the function students write, its chapters and its points (public
  and hidden tests): the master notebook in ``assignments/``.

What is decided here, by hand: which chapters and assignments each track puts in which
session or week (``TRACKS``), and which earlier chapters each chapter builds on
(``BUILDS_ON``). tests/test_course.py checks that every track accounts for every chapter,
that a chapter never comes before what it builds on, and that an assignment never comes
before its first chapter.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml
from booktoc import ROOT, chapter_notebooks

COURSE = ROOT / "course.md"
README = ROOT / "README.md"
ASSIGNMENTS = ROOT / "assignments"


# ---------------------------------------------------------------- decided by hand

@dataclass(frozen=True)
class Session:
    label: str  # "Week 3", "09:00–10:30"
    chapters: tuple[int, ...]
    assignments: tuple[int, ...] = ()  # assignment numbers, released in this session
    focus: str = ""


@dataclass(frozen=True)
class Track:
    key: str
    title: str
    unit: str  # what a session is: "session", "week"
    sessions: tuple[Session, ...]
    later: str  # what happens to the chapters the track leaves out


TRACKS = (
    Track("workshop", "One-day workshop", "session", (
        Session("09:00–10:30", (1,), (1,), "a layer, softmax and backpropagation by hand"),
        Session("10:45–12:15", (2,), (6,), "next-token probabilities, perplexity, BPE tokens"),
        Session("13:30–15:00", (4,), (2,), "attention weights, scaling and masks"),
        Session("15:15–16:45", (5, 7), (5,), "a Transformer block; decoding, sampling, KV cache"),
    ), "self-study after the day; the assignments not handed out make good take-home work"),
    Track("module", "Six-week module", "week", (
        Session("Week 1", (1,), (1,), "neurons, losses, gradients by hand"),
        Session("Week 2", (2,), (6,), "language models, perplexity, tokenization"),
        Session("Week 3", (3,), (3,), "recurrence, vanishing gradients, gates"),
        Session("Week 4", (4,), (2,), "attention, masks, multi-head attention"),
        Session("Week 5", (5, 6), (4,), "the Transformer, and training it (chapter 8 derives "
                "the gradients assignment 4 asks for)"),
        Session("Week 6", (7,), (5,), "generation, sampling, the KV cache"),
    ), "optional reading, or the topics of a final project"),
    Track("semester", "Semester course", "week", tuple(
        Session(f"Week {n}", (n,), a, f)
        for n, a, f in (
            (1, (1,), "neurons, losses, backpropagation"),
            (2, (6,), "n-grams, perplexity, byte-pair encoding"),
            (3, (3,), "RNN, LSTM and GRU; vanishing gradients"),
            (4, (2,), "attention and masks"),
            (5, (), "the Transformer, encoder and decoder"),
            (6, (), "training a GPT: optimiser, schedule, checkpoints"),
            (7, (5,), "decoding, sampling, the KV cache"),
            (8, (4,), "the math: every gradient derived and checked"),
            (9, (), "text classification done right"),
            (10, (), "convolutions, vision transformers, multimodal models"),
            (11, (), "the model as a computer: roofline, profiling"),
            (12, (), "programs written in words: tasks, heads, in-context learning"),
            (13, (), "quantization, pruning, distillation, LoRA"),
            (14, (), "memorisation, tokenizer cost, bias, calibration"),
        )), "every chapter has its week; a term of 15 or 16 weeks leaves room for a project"),
)

# Earlier chapters a chapter relies on (its explanations assume them).
BUILDS_ON = {
    1: (), 2: (1,), 3: (1, 2), 4: (1, 2), 5: (4,), 6: (5,), 7: (5,), 8: (1, 3, 4, 5),
    9: (3, 5, 6), 10: (1, 5, 6), 11: (5, 6, 7), 12: (5, 6), 13: (6, 7), 14: (2, 6),
}


# ---------------------------------------------------------------- computed

@dataclass
class Chapter:
    number: int
    stem: str
    title: str
    goals: list[str] = field(default_factory=list)
    pitfalls: list[str] = field(default_factory=list)
    exercises: int = 0
    coding: int = 0
    seconds: int | None = None


@dataclass
class Assignment:
    number: int
    stem: str
    title: str
    function: str
    chapters: list[int]
    public_points: float
    hidden_points: float

    @property
    def points(self) -> float:
        return self.public_points + self.hidden_points


_DIRECTIVE = re.compile(r"^(`{3,}|:{3,})\{(\w[\w-]*)\}[ \t]*(.*)$")


def _directives(markdown: str):
    """Yield (name, argument, options) of each MyST directive that opens a fence."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip())
        if not m:
            continue
        options = {}
        for opt in lines[i + 1:]:
            o = re.match(r"^:([\w-]+):\s*(.*)$", opt.strip())
            if not o:
                break
            options[o.group(1)] = o.group(2).strip()
        yield m.group(2), m.group(3).strip(), options


def _bullets(markdown: str) -> list[str]:
    """The top-level "- " bullets of a markdown list, continuation lines joined."""
    items = []
    for line in markdown.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
    return items


def read_chapter(path: Path) -> Chapter:
    nb = nbformat.read(path, as_version=4)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    if not markdown or not markdown[0].startswith("# "):
        raise ValueError(f"{path.name}: the first markdown cell must start with '# Title'")
    chapter = Chapter(int(path.name[:2]), path.stem, markdown[0].splitlines()[0][2:].strip())
    for text in markdown:
        if text.lstrip().startswith("## Learning goals"):
            chapter.goals = _bullets(text)
        for name, argument, options in _directives(text):
            classes = options.get("class", "").split()
            if name == "admonition" and argument.startswith("Pitfall") and "warning" in classes:
                chapter.pitfalls.append(re.sub(r"^Pitfall:?\s*", "", argument))
            elif name == "exercise":
                chapter.exercises += 1
                chapter.coding += "coding" in classes
    if not chapter.goals:
        raise ValueError(f"{path.name}: no bullets under '## Learning goals'")
    return chapter


def readme_seconds() -> dict[str, int]:
    """notebook stem -> seconds, from README.md's table of chapters and execution times."""
    seconds = {}
    row = re.compile(r"^\|\s*\d+\s*\|[^|]*\|\s*`chapters/(\w+)\.ipynb`\s*\|\s*(\d+)\s*\|\s*$")
    for line in README.read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if m:
            seconds[m.group(1)] = int(m.group(2))
    return seconds


def toc_chapters() -> list[Path]:
    """The chapters' notebooks in reading order."""
    return [p for p in chapter_notebooks(ROOT) if p.parent == ROOT / "chapters"]


def chapters() -> list[Chapter]:
    seconds = readme_seconds()
    found = []
    for path in toc_chapters():
        chapter = read_chapter(path)
        if chapter.stem not in seconds:
            raise ValueError(f"README.md's chapter table has no row for chapters/{path.name}; "
                             "add its measured seconds there")
        chapter.seconds = seconds[chapter.stem]
        found.append(chapter)
    return found


def _chapter_numbers(text: str) -> list[int]:
    """The chapters a text refers to: "chapter 4", "chapters 1 and 8", "chapters 2, 3"."""
    numbers = set()
    for m in re.finditer(r"\b[Cc]hapters?\s+(\d+(?:\s*(?:,\s*and|,|and)\s*\d+)*)", text):
        numbers.update(int(n) for n in re.findall(r"\d+", m.group(1)))
    return sorted(numbers)


def read_assignment(path: Path) -> Assignment:
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    first = nb.cells[0].source.splitlines()[0] if nb.cells else ""
    m = re.match(r"^# Assignment (\d+):\s*(.+)$", first)
    if not m:
        raise ValueError(f"{path.name}: the first cell must start with '# Assignment N: title'")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    functions = [f for f in re.findall(r"^def (\w+\(.*?\))\s*(?:->[^:]*)?:", code, re.MULTILINE)
                 if not f.startswith("test_")]
    if not functions:
        raise ValueError(f"{path.name}: no function for the student to write")
    public = hidden = 0.0
    for config in re.findall(r"BEGIN TEST CONFIG(.*?)END TEST CONFIG", code, re.DOTALL):
        # the YAML lines between the markers (the quotes around them are Python's)
        settings = yaml.safe_load("\n".join(
            line for line in config.splitlines() if re.match(r"^\s*[\w-]+\s*:", line))) or {}
        points = float(settings.get("points", 0))
        if settings.get("hidden", False):
            hidden += points
        else:
            public += points
    return Assignment(int(m.group(1)), path.stem, m.group(2).strip(), functions[0],
                      _chapter_numbers(markdown), public, hidden)


def assignments() -> list[Assignment]:
    found = [read_assignment(p) for p in sorted(ASSIGNMENTS.glob("[0-9][0-9]_*.ipynb"))]
    numbers = [a.number for a in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ValueError(f"assignments/ numbers its assignments {numbers}; expected 1, 2, ...")
    return found


# ---------------------------------------------------------------- rendering

def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def points(value: float) -> str:
    return f"{value:g}"


def chapter_link(c: Chapter) -> str:
    return f"{{doc}}`{c.number} · {c.title} <chapters/{c.stem}>`"


def slides_link(c: Chapter) -> str:
    # plain HTML: the decks are written into the built site after Sphinx has run
    return f'<a href="slides/{c.stem}.slides.html">slides</a>'


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def assignment_text(a: Assignment) -> str:
    return f"A{a.number} {capital(a.title)} ({points(a.points)} pts)"


def outcomes_link(c: Chapter) -> str:
    return f"{{ref}}`outcomes <course-outcomes-{c.number:02d}>`"


def scheduled(track: Track) -> set[int]:
    return {n for s in track.sessions for n in s.chapters}


def render_summary(chs: list[Chapter], asg: list[Assignment]) -> str:
    total = sum(c.seconds for c in chs)
    return (
        f"The book has **{len(chs)} chapters** with **{sum(c.exercises for c in chs)} "
        f"exercises** ({sum(c.coding for c in chs)} of them coding exercises, each with a "
        f"tested reference solution) and **{sum(len(c.pitfalls) for c in chs)} pitfall boxes**; "
        f"the course kit adds **{len(asg)} autograded assignments** "
        f"({points(sum(a.points for a in asg))} points in all). Every chapter notebook "
        f"executes from a fresh kernel on 2 CPU cores in {duration(min(c.seconds for c in chs))} "
        f"to {duration(max(c.seconds for c in chs))}, {duration(total)} for the whole book, "
        "as measured by `make test`.\n")


def render_tracks(chs: list[Chapter], asg: list[Assignment]) -> str:
    by_number = {c.number: c for c in chs}
    by_assignment = {a.number: a for a in asg}
    out = []
    for track in TRACKS:
        left = [by_number[n] for n in sorted(set(by_number) - scheduled(track))]
        seconds = sum(by_number[n].seconds for n in scheduled(track))
        n_asg = sum(len(s.assignments) for s in track.sessions)
        intro = (f"{len(track.sessions)} {track.unit}s, {len(scheduled(track))} chapters, "
                 f"{n_asg} assignments; running every notebook of the track once takes "
                 f"{duration(seconds)} on 2 CPU cores.")
        header = (f"| {track.unit} | chapters (and their outcomes) | focus | assignment | "
                  "notebooks run in · exercises |")
        out += [f"### {track.title}", "", intro, "", header, "|---|---|---|---|---|"]
        for s in track.sessions:
            cs = [by_number[n] for n in s.chapters]
            chapters_cell = "<br>".join(f"{chapter_link(c)} ({outcomes_link(c)})" for c in cs)
            assignment_cell = "<br>".join(assignment_text(by_assignment[a])
                                          for a in s.assignments) or "–"
            out.append(
                f"| {s.label} | {chapters_cell} | {s.focus} | {assignment_cell} | "
                f"{duration(sum(c.seconds for c in cs))} · {sum(c.exercises for c in cs)} "
                f"({sum(c.coding for c in cs)} coding) |")
        out.append("")
        if left:
            out += ["Not in the timetable: " + ", ".join(chapter_link(c) for c in left)
                    + f" — {track.later}.", ""]
        else:
            out += [f"{capital(track.later)}.", ""]
    return "\n".join(out)


def render_assignments(asg: list[Assignment]) -> str:
    when = {}
    for track in TRACKS:
        for s in track.sessions:
            for a in s.assignments:
                when.setdefault(a, {})[track.key] = s.label
    out = ["| # | assignment | students write | chapters | points (public + hidden) | "
           + " | ".join(t.title.lower() for t in TRACKS) + " |",
           "|---|---|---|---|---|" + "---|" * len(TRACKS)]
    for a in asg:
        out.append(
            f"| {a.number} | {capital(a.title)} (`{a.stem}.ipynb`) | `{a.function}` | "
            f"{', '.join(map(str, a.chapters))} | {points(a.points)} "
            f"({points(a.public_points)} + {points(a.hidden_points)}) | "
            + " | ".join(when.get(a.number, {}).get(t.key, "take-home") for t in TRACKS) + " |")
    return "\n".join(out) + "\n"


def render_outcomes(chs: list[Chapter]) -> str:
    by_number = {c.number: c for c in chs}
    out = []
    for c in chs:
        before = BUILDS_ON.get(c.number, ())
        builds = ("builds on " + ", ".join(chapter_link(by_number[n]) for n in before)
                  if before else "no earlier chapter needed")
        out += [f"(course-outcomes-{c.number:02d})=", f"### {c.number} · {c.title}", "",
                f"{chapter_link(c)} ({builds}). After it, students can:", ""]
        out += [f"- {goal}" for goal in c.goals]
        out.append("")
    return "\n".join(out)


def render_guide(chs: list[Chapter]) -> str:
    header = ("| chapter | notebook runs in | exercises (coding) | exercise numbers | "
              "pitfall boxes | slides |")
    out = [header, "|---|---|---|---|---|---|"]
    first = 1  # sphinx-exercise numbers the exercises through the book, in _toc.yml's order
    for c in chs:
        numbers = f"{first}–{first + c.exercises - 1}" if c.exercises else "–"
        first += c.exercises
        out.append(f"| {chapter_link(c)} | {c.seconds} s | {c.exercises} ({c.coding}) | "
                   f"{numbers} | {len(c.pitfalls)} | {slides_link(c)} |")
    total = (f"| **all {len(chs)} chapters** | **{duration(sum(c.seconds for c in chs))}** | "
             f"**{sum(c.exercises for c in chs)} ({sum(c.coding for c in chs)})** | | "
             f"**{sum(len(c.pitfalls) for c in chs)}** | "
             '<a href="slides/index.html">all decks</a> |')
    mistakes = "**Common student mistakes, chapter by chapter** (the titles of its pitfall boxes):"
    out += [total, "", mistakes, ""]
    for c in chs:
        listed = "; ".join(c.pitfalls) if c.pitfalls else "none"
        out.append(f"- {chapter_link(c)}: {listed}" + ("" if listed[-1] in ".?!" else "."))
    return "\n".join(out) + "\n"


def blocks() -> dict[str, str]:
    chs, asg = chapters(), assignments()
    return {"summary": render_summary(chs, asg), "tracks": render_tracks(chs, asg),
            "assignments": render_assignments(asg), "outcomes": render_outcomes(chs),
            "guide": render_guide(chs)}


def fill(text: str, generated: dict[str, str]) -> str:
    """``text`` with each generated block replaced; every block must have its markers."""
    for name, body in generated.items():
        pattern = re.compile(rf"(<!-- generated:{name}\b[^>]*-->\n)(.*?)(<!-- /generated:{name} -->)",
                             re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"course.md has no '<!-- generated:{name} ... -->' ... "
                             f"'<!-- /generated:{name} -->' block")
        text = pattern.sub(lambda m, body=body: m.group(1) + "\n" + body + "\n" + m.group(3),
                           text, count=1)
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = COURSE.read_text(encoding="utf-8")
    text = fill(current, blocks())
    if "--check" in argv:
        if text != current:
            print("course.md is stale: run python tools/build_course.py", file=sys.stderr)
            return 1
        return 0
    if text != current:
        COURSE.write_text(text, encoding="utf-8")
    print(f"wrote {COURSE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
