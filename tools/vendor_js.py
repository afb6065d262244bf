"""Copy the JavaScript the site needs into site_static/vendor/ (served as _static/vendor/), so the built book needs no CDN.

Sources: npm packages pinned in package.json / package-lock.json (installed by `npm ci`
into node_modules/), and plotly.js from the installed plotly Python package.

    python tools/vendor_js.py
"""
from __future__ import annotations

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
}
TREES = {  # destination folder -> source folder inside node_modules
    "mathjax": "mathjax/es5",  # MathJax 3 with its fonts
    "npm/@jupyter-widgets/html-manager/dist": "@jupyter-widgets/html-manager/dist",  # ipywidgets 8 embed manager
}
LICENSES = {
    "requirejs": "requirejs/README.md",
    "d3": "d3/LICENSE",
    "jquery": "jquery/LICENSE.txt",
    "mathjax": "mathjax/LICENSE",
    "html-manager": "@jupyter-widgets/html-manager/dist/embed.js.LICENSE.txt",
}


def main() -> None:
    if not NODE.is_dir():
        sys.exit("node_modules/ is missing: run `npm ci --ignore-scripts` first (make does this)")
    VENDOR.mkdir(parents=True, exist_ok=True)
    for dest, src in FILES.items():
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
    import plotly

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    shutil.copyfile(plotly_js, VENDOR / "plotly.min.js")
    for licence in Path(plotly.__file__).parent.parent.glob("plotly-*.dist-info/licen[cs]e*/*"):
        shutil.copyfile(licence, lic / f"plotly-{licence.name}")
    print(f"vendored JavaScript into {VENDOR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
