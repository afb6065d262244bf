"""The student edition's half of "no solutions" (sphinx-exercise's ``hide_solutions``).

With ``hide_solutions: true`` sphinx-exercise drops every ``{solution}`` directive; the rest
is done here, and only then (in the reader edition this extension does nothing):

1. The code cells tagged ``solution`` are removed, source and outputs, when the page is
   read: before its images are collected and before the search index sees its words.
2. ``html_copy_source`` is forced off: ``_sources/`` would hold every solution.
3. A chapter page's download button offers the student notebook instead of the source
   (which has the solutions): ``_sources/<page>.ipynb`` is written at the end of the build
   through ``student_notebook`` of ``tools/editions.py``, the function the notebook zips
   use. Other pages lose their source download (there is none to offer).

``tools/editions.py student`` builds the edition.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from sphinx.transforms import SphinxTransform
from sphinx.util import logging

SOLUTION_TAG = "solution"
LOGGER = logging.getLogger(__name__)


def _hiding(config) -> bool:
    return bool(getattr(config, "hide_solutions", False))


def is_solution_cell(node) -> bool:
    """A myst-nb code cell (a container with nb_element "cell_code") tagged solution."""
    return (node.tagname == "container" and node.get("nb_element") == "cell_code"
            and SOLUTION_TAG in ((node.get("cell_metadata") or {}).get("tags") or []))


class RemoveSolutionCells(SphinxTransform):
    """Remove the solution code cells from the doctree (student edition only)."""

    default_priority = 200  # after parsing (myst-nb builds the cells while parsing)

    def apply(self, **kwargs) -> None:
        if not _hiding(self.config):
            return
        for node in list(self.document.findall(is_solution_cell)):
            node.parent.remove(node)


def _no_sources(app, config) -> None:
    if _hiding(config) and config.html_copy_source:
        LOGGER.info("student edition: html_copy_source off (_sources/ would keep the solutions)")
        config.html_copy_source = False


def _notebook_pages(app) -> dict[str, Path]:
    """docname -> source path of every page written from a .ipynb file."""
    pages = {}
    for docname in app.env.found_docs:
        path = Path(app.env.doc2path(docname))
        if path.suffix == ".ipynb":
            pages[docname] = path
    return pages


def _download_student_notebook(app, pagename, templatename, context, doctree) -> None:
    """Point the download button at the student notebook; drop other source downloads."""
    if not _hiding(app.config) or not context.get("header_buttons"):
        return
    is_notebook = Path(app.env.doc2path(pagename)).suffix == ".ipynb" \
        if pagename in app.env.found_docs else False
    for group in context["header_buttons"]:
        if group.get("label") != "download-buttons":
            continue
        kept = []
        for button in group.get("buttons", []):
            label = button.get("label")
            if label == "download-source-button" and is_notebook:
                button = {**button, "url": f"{context['pathto']('_sources', 1)}/{pagename}.ipynb",
                          "text": ".ipynb",
                          "tooltip": "Download the notebook (student edition: no solutions)"}
            elif label in ("download-source-button", "download-notebook-button"):
                continue
            kept.append(button)
        group["buttons"] = kept


def _editions():
    """tools/editions.py (one directory up), for its student_notebook."""
    tools = Path(__file__).resolve().parent.parent
    if str(tools) not in sys.path:
        sys.path.append(str(tools))  # editions.py imports booktoc.py beside it
    path = tools / "editions.py"
    spec = importlib.util.spec_from_file_location("lmcore_book_editions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_student_notebooks(app, exception) -> None:
    if exception is not None or not _hiding(app.config) or app.builder.format != "html":
        return
    import nbformat

    student_notebook = _editions().student_notebook
    for docname, path in sorted(_notebook_pages(app).items()):
        target = Path(app.outdir) / "_sources" / f"{docname}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nb = student_notebook(nbformat.read(path, as_version=nbformat.NO_CONVERT))
        target.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def setup(app):
    app.setup_extension("sphinx_exercise")  # defines hide_solutions
    app.add_transform(RemoveSolutionCells)
    app.connect("config-inited", _no_sources)
    # after sphinx-book-theme has made its buttons (priority 501)
    app.connect("html-page-context", _download_student_notebook, priority=700)
    app.connect("build-finished", _write_student_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
