"""Set-up shared by every chapter: device, seed, and figures that work on the static site.

``setup()`` is the first call in each chapter after the imports. In the book's execution
(``LMCORE_BOOK_BUILD=1``: the Makefile sets it for the book build, and
``tools/nbval_cache.py`` for the nbval run whose notebooks the build uses) plotly figures
are written as HTML that uses the one copy of plotly.js the site serves from ``_static``;
in Jupyter and Colab plotly's own renderer is left alone.
"""
from __future__ import annotations

import os
import sys

import torch

from .device import get_device, seed_everything


def in_colab() -> bool:
    return "google.colab" in sys.modules


def building_book() -> bool:
    """True while the chapters are executed for the book (LMCORE_BOOK_BUILD=1)."""
    return os.environ.get("LMCORE_BOOK_BUILD") == "1"


def _register_book_renderer() -> None:
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    class _SiteRenderer(MimetypeRenderer):
        """HTML without plotly.js inside: the site loads ``_static/vendor/plotly.min.js`` once."""

        def to_mimebundle(self, fig_dict):
            html = pio.to_html(
                fig_dict,
                include_plotlyjs=False,
                full_html=False,
                config={"responsive": True, "displaylogo": False},
            )
            return {"text/html": html}

    pio.renderers["lmcore_site"] = _SiteRenderer()
    pio.renderers.default = "lmcore_site"


def _use_cjk_font_if_present() -> None:
    """Let matplotlib draw Chinese labels when a CJK font is installed."""
    try:
        from matplotlib import font_manager, rcParams
    except ImportError:
        return
    names = {f.name for f in font_manager.fontManager.ttflist}
    for name in ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei"):
        if name in names:
            rcParams["font.sans-serif"] = [name, *rcParams["font.sans-serif"]]
            rcParams["axes.unicode_minus"] = False
            return


def setup(seed: int = 0, quiet: bool = False, threads: int | None = 1) -> torch.device:
    """Seed everything, configure figures, and return the device (cuda, mps or cpu).

    threads: CPU threads for torch on a CPU-only run. The book's models are small, and for
    small matrices a second thread costs more in coordination than it gains (and far more
    on a busy machine), so the default is 1. ``None`` keeps torch's default: chapters that
    measure the hardware's peak pass it. Ignored on a GPU.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads={threads!r}; expected a positive int or None")
    device = get_device()
    if device.type == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    if building_book():
        _register_book_renderer()
    _use_cjk_font_if_present()
    if not quiet:
        print(f"torch {torch.__version__} | device: {device} | seed: {seed}")
    return device


def glue(name: str, value, display: bool = False):
    """Store ``value`` for ``{glue:text}`name``` in the chapter's prose (myst-nb).

    Outside the book build (Colab, plain Jupyter) myst-nb may be missing; then this only
    returns the value, so the chapter still runs.
    """
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # NumPy/torch scalars -> Python numbers, which myst-nb can format
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value
