"""Copy the JavaScript the site needs into site_static/vendor/ (served as _static/vendor/), so the built book needs no CDN.

Sources: npm packages pinned in package.json / package-lock.json (installed by `npm ci`
into node_modules/), and plotly.js from the installed plotly Python package.

    python tools/vendor_js.py
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / "node_modules"
VENDOR = ROOT / "site_static" / "vendor"  # served as _static/vendor/ in the built site

FILES = {  # destination name -> source inside node_modules
    "require.min.js": "requirejs/require.js",  # require.js 2.3.7 (myst-nb widgets, bertviz)
    "d3.min.js": "d3/dist/d3.min.js",  # d3 5.7.0 (bertviz)
    "jquery.min.js": "jquery/dist/jquery.min.js",  # jQuery 3.7.1 (bertviz)
    # ONNX Runtime Web 1.30.0 for the Playground (site_static/playground/playground.js), and
    # only there: the ES-module bundle with its WebAssembly loader inside, and the one
    # WebAssembly build it ships (threaded; the page runs it on one thread, so no
    # COOP/COEP headers are needed).
    "onnxruntime-web/ort.wasm.bundle.min.mjs": "onnxruntime-web/dist/ort.wasm.bundle.min.mjs",
    "onnxruntime-web/ort-wasm-simd-threaded.wasm":
        "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    # reveal.js 5.2.1 for the chapters' slides (tools/slides.py), not for the book's pages:
    # the core, its stylesheet, the white theme (its fonts are local, below) and the
    # speaker-notes plugin. Pinned to 5.x: with 6.0 (plugin files moved) the decks are blank.
    "reveal.js/dist/reveal.js": "reveal.js/dist/reveal.js",
    "reveal.js/dist/reveal.css": "reveal.js/dist/reveal.css",
    "reveal.js/dist/theme/white.css": "reveal.js/dist/theme/white.css",
    "reveal.js/plugin/notes/notes.js": "reveal.js/plugin/notes/notes.js",
}
TREES = {  # destination folder -> source folder inside node_modules
    "mathjax": "mathjax/es5",  # MathJax 3 with its fonts
    "npm/@jupyter-widgets/html-manager/dist": "@jupyter-widgets/html-manager/dist",  # ipywidgets 8 embed manager
    "reveal.js/dist/theme/fonts/source-sans-pro":  # the white theme's font (slides)
        "reveal.js/dist/theme/fonts/source-sans-pro",
}
LICENSES = {
    "requirejs": "requirejs/README.md",
    "d3": "d3/LICENSE",
    "jquery": "jquery/LICENSE.txt",
    "mathjax": "mathjax/LICENSE",
    "html-manager": "@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt",
    "reveal.js": "reveal.js/LICENSE",
}


def main() -> None:
    if not NODE.is_dir():
        sys.exit("node_modules/ is missing: run `npm ci --ignore-scripts` first (make does this)")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for dest, src in FILES.items():
        (VENDOR / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NODE / src, VENDOR / dest)
    for dest, src in TREES.items():
        target = VENDOR / dest
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(NODE / src, target, ignore=shutil.ignore_patterns("*.map"))
    lic = VENDOR / "licenses"
    lic.mkdir(exist_ok=True)
    for name, src in LICENSES.items():
        if (NODE / src).exists():
            shutil.copyfile(NODE / src, lic / f"{name}-{Path(src).name}")
    # onnxruntime-web ships no LICENSE file: its package.json says MIT and its bundle
    # starts with the copyright notice; keep both with the vendored copy.
    ort_dir = NODE / "onnxruntime-web"
    notice = (ort_dir / "dist" / "ort.wasm.bundle.min.mjs").read_text(encoding="utf-8")
    notice = notice[: notice.index("*/") + 2]
    licence = json.loads((ort_dir / "package.json").read_text(encoding="utf-8"))["license"]
    (lic / "onnxruntime-web-LICENSE.txt").write_text(
        f"{notice}\n\nnpm package onnxruntime-web: license {licence!r} "
        "(https://github.com/microsoft/onnxruntime/blob/main/LICENSE)\n", encoding="utf-8")
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(plotly_js, VENDOR / "plotly.min.js")
    for licence in Path(plotly.__file__).parent.parent.glob("plotly-*.dist-info/licen[cs]e*/*"):
        shutil.copyfile(licence, lic / f"plotly-{licence.name}")
    print(f"vendored JavaScript into {VENDOR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
