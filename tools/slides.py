"""Every chapter as reveal.js slides, from its execution in myst-nb's cache, offline.

    python tools/slides.py [--out _build/slides] [--also-into _build/html/slides] [chapters...]

chapters: notebook paths or numbers (``4``, ``04``); default: every chapter of ``_toc.yml``.

1. **Executed, never executing.** Each chapter notebook is matched to its execution in the
   jupyter-cache (``_build/.jupyter_cache``, filled by ``make test``: tools/nbval_cache.py)
   by the hash of its code, as myst-nb matches it: the prose is the notebook's, the outputs
   and widget state the cache's. A chapter with no match stops the run before any deck is
   written; this tool never runs a chapter.
2. **MyST made readable.** nbconvert's markdown knows no MyST: admonitions and exercises
   become boxes with their title (book-wide exercise numbers, as sphinx-exercise numbers
   them), solutions are dropped, ``{glue:text}`` becomes the glued value, ``{cite}`` the
   author-year label from references.bib, ``{numref}`` "Exercise N", ``literalinclude`` the
   source Sphinx would include, links to chapters the sibling deck.
3. **Slides assigned at build time** (no slide metadata kept in the notebooks; a cell's own
   ``metadata.slideshow.slide_type`` wins): the title and each ``##`` heading start a slide,
   ``###`` a subslide; prose and code fill a subslide up to about ``BUDGET`` lines, then the
   next one starts; a figure (plotly, image, widget, bertviz) gets a subslide of its own;
   long code is hidden (its output stays); the Colab and set-up cells, solution cells and
   ``remove-cell``/``hide-cell`` cells are left out.
4. **Offline.** nbconvert's SlidesExporter with tools/slides_template (no CDN, mermaid,
   jQuery or web fonts); reveal.js 5, plotly.js, MathJax 3, require.js and the ipywidgets
   manager are the copies tools/vendor_js.py puts in site_static/vendor, served from the
   decks' own ``_static/`` (or the site's ``../_static/`` for ``--also-into`` inside a built
   site). ``index.html`` lists the decks.
"""
from __future__ import annotations

import argparse
import copy
import html
import math
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import booktoc
from booktoc import CACHE, ROOT

OUT = ROOT / "_build" / "slides"
SITE_STATIC = ROOT / "site_static"  # the site's _static/ (vendor/ filled by tools/vendor_js.py)
TEMPLATE = ROOT / "tools" / "slides_template"
STATIC = "@LMCORE_STATIC@/"  # placeholder for the URL of _static/ until a deck is written

# What the decks load from _static/ (relative to site_static/): all of it is checked, copied
# beside the decks, and the browser test fails on any 404.
STATIC_FILES = [
    "vendor/reveal.js", "vendor/plotly.min.js", "vendor/require.min.js", "vendor/d3.min.js",
    "vendor/jquery.min.js", "vendor/npm/@jupyter-widgets/html-manager/dist",
    "vendor/mathjax/tex-chtml.js", "vendor/mathjax/input/tex/extensions",
    "vendor/mathjax/output/chtml/fonts/woff-v2", "vendor/mathjax/ui", "vendor/mathjax/a11y",
    "vendor/mathjax/adaptors", "vendor/licenses", "widgets_require_paths.js", "mathjax2_shim.js",
]

# The packing of a 1280x720 slide, in lines of prose (25 px; code and printed output are
# 18 px: CODE lines of prose each). Measured on the decks' screenshots.
BUDGET = 19.0
CHARS_PER_LINE = 100  # characters of prose per line
CODE = 0.7  # a line of code or printed output, in lines of prose
CODE_MAX_LINES = 16  # longer code is hidden; its output stays
FIGURE = 0.75 * BUDGET  # a figure fills most of a slide
SKIP_TAGS = {"remove-cell", "hide-cell", "solution", "colab"}
ADMONITIONS = {"admonition", "note", "warning", "tip", "important", "hint", "caution",
               "attention", "danger", "error", "seealso"}


class SlidesError(Exception):
    """Something a deck cannot be made from; the message names the chapter and the cause."""


@dataclass
class Context:
    """What the MyST conversion needs from outside the markdown text."""

    base_dir: Path = ROOT / "chapters"  # literalinclude paths are relative to the chapter
    glue: dict = field(default_factory=dict)  # glue name -> output (data["text/plain"])
    citations: dict = field(default_factory=dict)  # bibtex key -> "Vaswani et al., 2017"
    exercises: dict = field(default_factory=dict)  # exercise label -> book-wide number
    chapters: set = field(default_factory=set)  # chapter stems that have a deck
    warnings: list = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# MyST -> markdown that nbconvert renders


_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[^}\s]+)\}\s*(?P<arg>.*?)\s*$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")
_ROLE_OR_CODE = re.compile(
    r"\{(?P<role>[a-zA-Z][\w:.-]*)\}`(?P<body>[^`]*)`"  # a role: {name}`body`
    r"|(?P<ticks>`+).+?(?P=ticks)",  # an inline code span: left alone
    re.DOTALL)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<url>[^)\s]+)\)")
_LABEL = re.compile(r"^\([\w.:-]+\)=\s*$")  # a MyST target line: (label)=


@dataclass
class Block:
    """A top-level piece of a markdown cell: text, a code fence or a directive."""

    kind: str  # "text", "fence" or "directive"
    text: str = ""  # text: the lines; fence: the whole fence
    name: str = ""  # directive
    arg: str = ""
    options: dict = field(default_factory=dict)
    body: str = ""


def split_blocks(text: str) -> list[Block]:
    """Split MyST markdown into text, plain code fences and directives (with options)."""
    lines, blocks, prose = text.splitlines(), [], []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        fence = opening["fence"]
        end = i + 1
        while end < len(lines):  # the closing fence: same character, at least as long
            stripped = lines[end].strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            end += 1
        if prose:
            blocks.append(Block("text", "\n".join(prose)))
            prose = []
        inner = lines[i + 1:end]
        directive = _DIRECTIVE.match(opening["info"].strip())
        if directive:
            options = {}
            while inner and _OPTION.match(inner[0]):
                option = _OPTION.match(inner[0])
                options[option["key"]] = option["value"]
                inner = inner[1:]
            blocks.append(Block("directive", name=directive["name"], arg=directive["arg"],
                                options=options, body="\n".join(inner).strip("\n")))
        else:
            blocks.append(Block("fence", "\n".join(lines[i:end + 1])))
        i = end + 1
    if prose:
        blocks.append(Block("text", "\n".join(prose)))
    return blocks


def format_glue(name_spec: str, ctx: Context) -> str:
    """``{glue:text}`name:.4f``` -> the glued value, formatted as myst-nb formats it."""
    from myst_nb.core.variables import format_plain_text

    name, _, spec = name_spec.rpartition(":") if ":" in name_spec else (name_spec, "", "s")
    if name not in ctx.glue:
        raise SlidesError(f"glue {name!r} is used in the prose but no cell glues it")
    try:
        return format_plain_text(ctx.glue[name]["data"]["text/plain"], spec)
    except (KeyError, ValueError, TypeError) as exc:
        raise SlidesError(f"glue {name!r}: cannot format it with {spec!r} ({exc})") from None


def format_cite(role: str, body: str, ctx: Context) -> str:
    """``{cite}`a,b``` -> "[A et al., 2017; B and C, 2019]"; ``{cite:t}`` -> "A et al. [2017]"."""
    labels = []
    for key in (k.strip() for k in body.split(",")):
        if key not in ctx.citations:
            raise SlidesError(f"{{cite}}`{key}` is not in references.bib")
        labels.append(ctx.citations[key])
    if role == "cite:t":
        return "; ".join(f"{a} [{y}]" for a, y in (lab.rsplit(", ", 1) for lab in labels))
    return "[" + "; ".join(labels) + "]"


def format_ref(role: str, body: str, ctx: Context) -> str:
    """``{numref}`ex-04-3``` -> "Exercise 15" (its book-wide number); other refs -> text."""
    explicit = re.match(r"^(?P<text>.*?)\s*<(?P<label>[^>]+)>$", body, re.DOTALL)
    text, label = (explicit["text"], explicit["label"]) if explicit else (None, body.strip())
    number = ctx.exercises.get(label)
    if role == "numref" and number is not None:
        return (text or "Exercise {number}").replace("{number}", str(number)).replace(
            "%s", str(number))
    return text or label


def convert_inline(text: str, ctx: Context) -> str:
    """The roles of a piece of prose, and its links to other pages; code spans untouched."""

    def role(match):
        name, body = match["role"], match["body"]
        if name is None:
            return match.group(0)  # inline code
        if name in ("glue", "glue:text"):
            return format_glue(body, ctx)
        if name.startswith("cite"):
            return format_cite(name, body, ctx)
        if name in ("numref", "ref", "doc", "eq", "term"):
            return format_ref(name, body, ctx)
        if name == "math":
            return f"${body}$"
        ctx.warnings.append(f"role {{{name}}} shown as its text")
        return body

    def link(match):
        url = match["url"]
        target = url.split("#")[0]
        if "://" in url or url.startswith(("#", "mailto:")) or not target.endswith(
                (".md", ".ipynb")):
            return match.group(0)
        stem = Path(target).stem
        if stem in ctx.chapters:  # another chapter: its deck, beside this one
            return f"[{match['text']}]({stem}.slides.html)"
        return f"*{match['text']}*"  # a book page that has no deck: the words only

    text = _ROLE_OR_CODE.sub(role, text)
    return _LINK.sub(link, text)


def _box(kind: str, title: str, body: str) -> str:
    # blank lines around the body: CommonMark then renders it as markdown inside the div
    return (f'<div class="lmcore-box lmcore-{kind}">\n\n**{title}**\n\n'
            f"{body.strip()}\n\n</div>")


def include_source(arg: str, options: dict, ctx: Context) -> str:
    """A literalinclude as Sphinx reads it (pyobject, lines, start-after, ...)."""
    from sphinx.config import Config
    from sphinx.directives.code import LiteralIncludeReader

    path = (ctx.base_dir / arg).resolve()
    if not path.is_file():
        raise SlidesError(f"literalinclude {arg}: no such file ({path})")
    shown = {"language", "caption", "linenos", "lineno-start", "lineno-match",
             "emphasize-lines", "name", "class", "force"}
    read = {k: v for k, v in options.items() if k not in shown}
    if "dedent" in read:
        read["dedent"] = int(read["dedent"]) if read["dedent"] else None
    try:
        text, _ = LiteralIncludeReader(str(path), read, Config()).read()
    except (ValueError, OSError) as exc:
        raise SlidesError(f"literalinclude {arg} {options}: {exc}") from None
    language = options.get("language", "python" if path.suffix == ".py" else "")
    fence = "````" if "```" in text else "```"
    caption = f"*{options['caption']}*\n\n" if options.get("caption") else ""
    return f"{caption}{fence}{language}\n{text.rstrip()}\n{fence}"


def convert_directive(block: Block, ctx: Context) -> str:
    name, body = block.name, block.body
    if name == "solution":
        return ""  # slides show the exercises, not their answers
    if name == "exercise":
        label = block.options.get("label")
        number = ctx.exercises.get(label)
        title = f"Exercise {number}" if number is not None else "Exercise"
        if block.arg:
            title += f" ({block.arg})"
        kind = "exercise coding" if "coding" in block.options.get("class", "") else "exercise"
        return _box(kind, convert_inline(title, ctx), myst_to_markdown(body, ctx))
    if name in ADMONITIONS:
        title = block.arg if name == "admonition" and block.arg else name.capitalize()
        kind = (block.options.get("class", "").split() or [name])[0]
        return _box(kind, convert_inline(title, ctx), myst_to_markdown(body, ctx))
    if name == "literalinclude":
        return include_source(block.arg, block.options, ctx)
    if name in ("code-block", "code", "sourcecode", "code-cell"):
        fence = "````" if "```" in body else "```"
        return f"{fence}{block.arg}\n{body}\n{fence}"
    if name == "math":
        return f"$$\n{body}\n$$"
    if name == "raw":  # the live Playground box of the web page: it needs the site's scripts
        return "*(An interactive element of the book's web page.)*"
    ctx.warnings.append(f"directive {{{name}}} shown as a box")
    return _box(name, convert_inline(block.arg or name.capitalize(), ctx),
                myst_to_markdown(body, ctx))


def convert_text(text: str, ctx: Context) -> str:
    kept = [line for line in text.splitlines()
            if not _LABEL.match(line) and not line.startswith("%")]  # targets, comments
    return convert_inline("\n".join(kept), ctx)


def convert_block(block: Block, ctx: Context) -> str:
    if block.kind == "fence":
        return block.text
    if block.kind == "directive":
        return convert_directive(block, ctx)
    return convert_text(block.text, ctx)


def myst_to_markdown(text: str, ctx: Context) -> str:
    """A MyST markdown cell as CommonMark (+ HTML boxes, + $math$) that nbconvert renders."""
    parts = (convert_block(b, ctx) for b in split_blocks(text))
    return "\n\n".join(p.strip("\n") for p in parts if p.strip())


def markdown_chunks(text: str) -> list[str]:
    """Split a MyST cell where a slide may break: before each heading and between
    paragraphs (never inside a fence, a directive or a $$ block)."""
    chunks = []
    for block in split_blocks(text):
        if block.kind != "text":
            raw = block.text if block.kind == "fence" else _directive_source(block)
            chunks.append(raw)
            continue
        paragraph = []
        for line in block.text.splitlines() + [""]:
            heading = line.startswith("#")
            if (not line.strip() or heading) and paragraph and \
                    "\n".join(paragraph).count("$$") % 2 == 0:
                chunks.append("\n".join(paragraph))
                paragraph = []
            if heading:
                chunks.append(line)
            elif line.strip() or paragraph:
                paragraph.append(line)
    return [c for c in chunks if c.strip()]


def _directive_source(block: Block) -> str:
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`{3,}", block.body)),
                                 default=0))
    options = "".join(f":{k}: {v}\n" for k, v in block.options.items())
    return f"{fence}{{{block.name}}} {block.arg}\n{options}{block.body}\n{fence}"


# ------------------------------------------------------------------------------------------
# Slide types


def heading_level(cell) -> int:
    """1 for "# Title", 2 for "## Section", ...; 0 when the cell does not start with one."""
    if cell.get("cell_type") != "markdown":
        return 0
    match = re.match(r"^(#{1,6})\s", cell.get("source", "").lstrip("\n"))
    return len(match.group(1)) if match else 0


def text_weight(text: str, code: bool = False) -> float:
    """About how many lines of prose a piece of markdown (or of printed text) takes."""
    weight, in_fence = 0.0, code
    for line in text.splitlines():
        stripped = line.strip()
        if not code and stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
            weight += 0.5
        elif in_fence:
            weight += CODE * max(1, math.ceil(len(line) / (1.4 * CHARS_PER_LINE)))
        elif not stripped:
            weight += 0.3
        elif stripped.startswith("#"):
            weight += 2.5
        elif stripped.startswith(("<div", "</div")):
            weight += 0.3
        elif stripped.startswith("|"):  # a table row (0.8 em)
            weight += 0.9 * max(1, math.ceil(len(stripped) / (1.2 * CHARS_PER_LINE)))
        else:
            weight += max(1, math.ceil(len(stripped) / CHARS_PER_LINE))
    return weight


def is_figure_output(output) -> bool:
    data = output.get("data", {})
    if any(k.startswith("image/") for k in data) or \
            "application/vnd.jupyter.widget-view+json" in data:
        return True
    page = data.get("text/html", "")
    return "Plotly.newPlot" in page or "bertviz" in page


def output_weight(output) -> float:
    if is_figure_output(output):
        return FIGURE
    if output.get("output_type") == "stream":
        return text_weight(output.get("text", ""), code=True)
    data = output.get("data", {})
    page = data.get("text/html")
    if page is not None:
        rows = page.count("<tr")
        return 0.9 * (rows + 1) if rows else text_weight(re.sub(r"<[^>]+>", "", page))
    if "text/markdown" in data:
        return text_weight(data["text/markdown"])
    return text_weight(data.get("text/plain", ""), code=True)


def source_hidden(cell) -> bool:
    return bool(cell.get("metadata", {}).get("transient", {}).get("remove_source"))


def cell_weight(cell) -> float:
    if cell.get("cell_type") == "markdown":
        return text_weight(cell.get("source", ""))
    code = 0.0 if source_hidden(cell) else text_weight(cell.get("source", ""), code=True) + 0.5
    return code + sum(output_weight(o) for o in cell.get("outputs", []))


def is_figure(cell) -> bool:
    return any(is_figure_output(o) for o in cell.get("outputs", []))


def assign_slide_types(cells, budget: float = BUDGET) -> None:
    """Set ``metadata.slideshow.slide_type`` of every cell that has none.

    The first cell and each ``#``/``##`` heading start a slide, ``###`` and deeper a
    subslide (below it). Other cells fill the current subslide while they fit in ``budget``
    lines, else start the next one. A figure starts a subslide of its own, unless the
    subslide holds only its heading.
    """
    used, only_heading = 0.0, False
    for index, cell in enumerate(cells):
        show = cell.setdefault("metadata", {}).setdefault("slideshow", {})
        weight, level, figure = cell_weight(cell), heading_level(cell), is_figure(cell)
        kind = show.get("slide_type")
        if kind is None:
            if index == 0 or level in (1, 2):
                kind = "slide"
            elif level:
                kind = "subslide"
            elif figure:
                kind = "-" if only_heading and used + weight <= budget else "subslide"
            elif used and used + weight > budget:
                kind = "subslide"
            else:
                kind = "-"
            show["slide_type"] = kind
        if kind in ("slide", "subslide"):
            used = 0.0
        if kind not in ("skip", "notes"):
            only_heading = bool(level) and (kind in ("slide", "subslide") or only_heading)
            used += weight


# ------------------------------------------------------------------------------------------
# One chapter: executed notebook -> cells for the deck


@dataclass
class Chapter:
    path: Path
    number: int
    title: str = ""


def executed_notebook(path: Path, cache_path: Path):
    """The chapter as stored (prose) with the outputs of its execution in the cache."""
    from jupyter_cache import get_cache

    path = Path(path).resolve()
    if not (cache_path / "global.db").is_file():
        raise SlidesError(f"no execution cache at {cache_path}: run `make test` first (it "
                          "executes every chapter once and stores it there)")
    nb = booktoc.executed_notebook(path, cache_path)
    if nb is None:
        older = [r for r in get_cache(str(cache_path)).list_cache_records()
                 if Path(r.uri).resolve() == path]
        hint = (f"; the cache holds {len(older)} execution(s) of an older version of it"
                if older else "")
        raise SlidesError(
            f"{_rel(path)}: no execution in {_rel(cache_path)} matches its current code{hint}."
            " Run `make test` (or `make book`), which executes each chapter once and stores it"
            " there; the slides never execute a chapter.")
    return nb


def glue_data(nb) -> dict:
    """Take the glued values out of the code cells' outputs (myst-nb's own extraction)."""
    from myst_nb.ext.glue import extract_glue_data_cell

    data = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            data.update(dict(extract_glue_data_cell(cell)))
    return data


def _setup_cell_index(cells) -> int | None:
    """The chapter template's set-up cell: the first code cell that is not the Colab cell."""
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and "colab" not in cell.metadata.get("tags", []):
            return index if "setup(" in cell.source else None
    return None


def slide_cells(nb, ctx: Context, book_title: str, chapter: Chapter) -> list:
    """The cells of the deck, MyST converted, each with its slide type."""
    import nbformat

    setup = _setup_cell_index(nb.cells)
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = set(cell.metadata.get("tags", []))
        if index == setup or tags & SKIP_TAGS or cell.cell_type == "raw":
            continue
        given = cell.metadata.get("slideshow", {}).get("slide_type")
        if cell.cell_type == "markdown":
            pieces = [cell.source] if given else markdown_chunks(cell.source)
            for n, piece in enumerate(pieces):
                text = myst_to_markdown(piece, ctx)
                if not text.strip():
                    continue
                if text.startswith("# ") and not chapter.title:  # the title slide
                    chapter.title = text.splitlines()[0][2:].strip()
                    heading, _, rest = text.partition("\n")
                    text = (f'{heading}\n\n<p class="lmcore-subtitle">'
                            f"{html.escape(book_title)} · chapter {chapter.number}</p>\n\n"
                            f"{rest}").rstrip()
                new = nbformat.v4.new_markdown_cell(text)
                if given and n == 0:
                    new.metadata["slideshow"] = copy.deepcopy(cell.metadata["slideshow"])
                cells.append(new)
            continue
        cells.extend(_code_cells(cell, tags, given))
    assign_slide_types(cells)
    return cells


def _code_cells(cell, tags: set, given) -> list:
    cell = copy.deepcopy(cell)
    cell.outputs = [o for o in cell.get("outputs", [])
                    if not (o.output_type == "stream" and o.name == "stderr")
                    and o.output_type != "error"]
    if tags & {"remove-output", "hide-output"}:
        cell.outputs = []
    hide = (tags & {"remove-input", "hide-input"}
            or len(cell.source.splitlines()) > CODE_MAX_LINES or not cell.source.strip())
    if hide:
        cell.metadata["transient"] = {"remove_source": True}
        if not cell.outputs:
            return []
    if given or hide or not cell.outputs or cell_weight(cell) <= BUDGET:
        return [cell]
    # code and outputs too tall for one slide: the outputs go on the next subslide
    shown = copy.deepcopy(cell)
    shown.id = uuid.uuid4().hex[:8]
    shown.metadata["transient"] = {"remove_source": True}
    cell.outputs = []
    return [cell, shown]


# ------------------------------------------------------------------------------------------
# The book: chapters, exercise numbers, citations


def toc_files() -> list[Path]:
    """The book's source files in reading order (_toc.yml)."""
    return booktoc.source_files(ROOT)


def exercise_numbers(files: list[Path]) -> dict:
    """Label -> number of every exercise, counted across the book in reading order as
    sphinx-exercise numbers them (an exercise with ``:nonumber:`` gets none)."""
    import nbformat

    numbers, count = {}, 0
    for path in files:
        texts = ([c.source for c in nbformat.read(path, as_version=4).cells
                  if c.cell_type == "markdown"] if path.suffix == ".ipynb"
                 else [path.read_text(encoding="utf-8")])
        for text in texts:
            for block in _directives(split_blocks(text)):
                if block.name == "exercise" and "nonumber" not in block.options:
                    count += 1
                    if "label" in block.options:
                        numbers[block.options["label"]] = count
    return numbers


def _directives(blocks):
    for block in blocks:
        if block.kind == "directive":
            yield block
            yield from _directives(split_blocks(block.body))


def citation_labels(bibfile: Path) -> dict:
    """BibTeX key -> "Vaswani et al., 2017" (the author-year label the site shows)."""
    from pybtex.backends.plaintext import Backend
    from pybtex.database import parse_file
    from pybtex.richtext import Text

    text = Backend()  # LaTeX accents -> Unicode ({\'e} -> é); once: looking it up is slow
    labels = {}
    for key, entry in parse_file(str(bibfile)).entries.items():
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [Text.from_latex(" ".join(p.last_names)).render(text) for p in people]
        if not names:
            who = "Anonymous"
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2 and "others" not in names:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        labels[key] = f"{who}, {entry.fields.get('year', 'n.d.')}"
    return labels


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------
# Decks


def make_exporter():
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE.parent)], template_name=TEMPLATE.name,
        exclude_input_prompt=True, exclude_output_prompt=True)


def render_deck(exporter, chapter: Chapter, nb, ctx_base: Context,
                book_title: str) -> tuple[str, Context]:
    """The deck's HTML (with the STATIC placeholder) and the context it was made with.

    nb: the chapter's executed notebook (``executed_notebook``)."""
    import nbformat

    sys.path.insert(0, str(ROOT / "tools" / "sphinx"))  # the site's CDN -> vendored copy
    try:
        from offline_site import vendor_urls
    finally:
        sys.path.remove(str(ROOT / "tools" / "sphinx"))
    nb = copy.deepcopy(nb)
    ctx = copy.copy(ctx_base)
    ctx.base_dir, ctx.glue, ctx.warnings = chapter.path.parent, glue_data(nb), []
    try:
        cells = slide_cells(nb, ctx, book_title, chapter)
    except SlidesError as exc:
        raise SlidesError(f"{_rel(chapter.path)}: {exc}") from None
    deck = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(nb.metadata))
    deck.metadata["title"] = f"{chapter.number}. {chapter.title}" if chapter.title \
        else chapter.path.stem
    body, _ = exporter.from_notebook_node(
        deck, resources={"metadata": {"name": chapter.path.stem}, "lmcore_static": STATIC,
                         "lmcore_widgets": "widgets" in deck.metadata})
    try:
        body = vendor_urls(body, STATIC)
    except ValueError as exc:
        raise SlidesError(f"{_rel(chapter.path)}: {exc}") from None
    return body, ctx


def copy_static(dest: Path) -> None:
    """The files the decks load, from site_static/ (vendor/ made by tools/vendor_js.py)."""
    missing = [name for name in STATIC_FILES if not (SITE_STATIC / name).exists()]
    if missing:
        raise SlidesError(f"site_static/ lacks {missing}: run `python tools/vendor_js.py` "
                          "(after `npm ci --ignore-scripts`; make does both)")
    for name in STATIC_FILES:
        src, target = SITE_STATIC / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("*.map"))
        else:
            shutil.copyfile(src, target)


def site_has_static(site_static: Path) -> bool:
    return all((site_static / name).exists() for name in STATIC_FILES)


def write_index(folder: Path, decks: list[tuple[str, str]], book_title: str) -> None:
    items = "\n".join(f'  <li><a href="{html.escape(href)}">{html.escape(title)}</a></li>'
                      for href, title in decks)
    folder.joinpath("index.html").write_text(f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(book_title)}: slides</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto;
       padding: 0 1rem; line-height: 1.5; color: #222; }}
li {{ margin: 0.3rem 0; }}
</style>
</head>
<body>
<h1>{html.escape(book_title)}: slides</h1>
<p>One reveal.js deck per chapter, made from the chapter as the book executed it. Keys:
arrows or space to move (down for the details of a section), <kbd>Esc</kbd> for the
overview, <kbd>S</kbd> for the speaker view, <kbd>F</kbd> for full screen. Everything is
served from this folder: no network needed.</p>
<ol>
{items}
</ol>
</body>
</html>
""", encoding="utf-8")


def resolve_chapters(args: list[str]) -> list[Path]:
    chapters = [p for p in toc_files() if p.parent == ROOT / "chapters" and p.suffix == ".ipynb"]
    if not args:
        return chapters
    chosen = []
    for arg in args:
        if re.fullmatch(r"\d{1,2}", arg):
            found = [p for p in chapters if p.name.startswith(f"{int(arg):02d}_")]
            if not found:
                raise SlidesError(f"no chapter {arg} in _toc.yml")
            chosen.extend(found)
        elif Path(arg).is_file() and Path(arg).suffix == ".ipynb":
            chosen.append(Path(arg).resolve())
        else:
            raise SlidesError(f"{arg!r}: not a chapter number or notebook")
    return chosen


def chapter_number(path: Path) -> int:
    match = re.match(r"(\d+)_", path.name)
    return int(match.group(1)) if match else 0


def build(paths: list[Path], out: Path, cache_path: Path, also_into: Path | None = None,
          log=print) -> list[Path]:
    """Write one deck per chapter into out (and also_into); returns the decks written."""
    import yaml

    cache_path = cache_path.resolve()
    if not (cache_path / "global.db").is_file():
        raise SlidesError(f"no execution cache at {cache_path}: run `make test` first (it "
                          "executes every chapter once and stores it there)")
    book_title = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["title"]
    files = toc_files()
    ctx = Context(citations=citation_labels(ROOT / "references.bib"),
                  exercises=exercise_numbers(files),
                  chapters={p.stem for p in files if p.parent == ROOT / "chapters"})
    # every chapter must have its execution before any deck is written
    executed, missing = [], []
    for path in paths:
        try:
            executed.append(executed_notebook(path, cache_path))
        except SlidesError as exc:
            missing.append(str(exc))
    if missing:
        raise SlidesError("\n".join(missing))
    exporter = make_exporter()
    rendered = []
    for path, nb in zip(paths, executed):
        start = time.perf_counter()
        chapter = Chapter(path, chapter_number(path))
        body, deck_ctx = render_deck(exporter, chapter, nb, ctx, book_title)
        rendered.append((chapter, body))
        for warning in dict.fromkeys(deck_ctx.warnings):
            log(f"  warning: {_rel(path)}: {warning}")
        log(f"{_rel(path)}: {body.count('<section')} sections, "
            f"{time.perf_counter() - start:.1f} s")
    targets = [(out, "_static/")]
    if also_into is not None:
        site_static = also_into.parent / "_static"  # also_into inside a built site
        targets.append((also_into, "../_static/" if site_has_static(site_static)
                        else "_static/"))
    written = []
    for folder, static in targets:
        folder.mkdir(parents=True, exist_ok=True)
        if static == "_static/":
            copy_static(folder / "_static")
        decks = []
        for chapter, body in rendered:
            name = chapter.path.stem + ".slides.html"
            (folder / name).write_text(body.replace(STATIC, static), encoding="utf-8")
            decks.append((name, f"{chapter.number}. {chapter.title}"))
            written.append(folder / name)
        # the index lists every deck in the folder, also those of an earlier run
        known = {name for name, _ in decks}
        for path in sorted(folder.glob("*.slides.html")):
            if path.name not in known:
                title = re.search(r"<title>(.*?) · slides</title>", path.read_text("utf-8"))
                decks.append((path.name, html.unescape(title.group(1)) if title else path.stem))
        write_index(folder, sorted(decks), book_title)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook paths or chapter numbers")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--also-into", type=Path, default=None,
                        help="a second folder for the decks, e.g. _build/html/slides")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        written = build(resolve_chapters(args.chapters), args.out, args.cache, args.also_into)
    except SlidesError as exc:
        print(f"slides: {exc}", file=sys.stderr)
        return 1
    folders = sorted({_rel(path.parent) for path in written})
    print(f"{len(written) // len(folders)} decks in {' and '.join(folders)}, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
