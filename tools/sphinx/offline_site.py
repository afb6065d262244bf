"""A small Sphinx extension for the offline site.

1. Vendored scripts instead of CDNs. Notebook outputs keep the script URLs their library
   writes (bertviz loads require.js, d3 and jQuery from cdnjs), so that they work in
   Jupyter and Colab. The site serves local copies instead: each page's HTML has every URL
   in ``CDN_TO_VENDOR`` replaced by the relative path of the copy that
   ``tools/vendor_js.py`` puts in ``_static/vendor``. A page that still names a CDN
   host in a ``src``/``href`` or a require.js path fails the build.
2. sphinx-thebe 0.3 registers its inline configuration script twice per page, which makes
   the browser throw "Identifier 'THEBE_JS_URL' has already been declared". Drop exact
   duplicates from each page's script list.
"""
from __future__ import annotations

import re

from sphinx.errors import ExtensionError

# URL prefix a library writes -> file under _static/ (require.js paths have no ".js").
CDN_TO_VENDOR = {
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": "vendor/require.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min": "vendor/d3.min",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min": "vendor/jquery.min",
}
# A script or stylesheet still fetched from one of these hosts is a page that needs the network.
_CDN_USE = re.compile(
    r"""(?:src|href)\s*=\s*["']https?://(?:cdnjs\.cloudflare\.com|cdn\.jsdelivr\.net|unpkg\.com)"""
    r"""|["']https?://(?:cdnjs\.cloudflare\.com|cdn\.jsdelivr\.net|unpkg\.com)[^"']*["']\s*[,}]""")


def vendor_urls(html: str, static_prefix: str) -> str:
    """Replace each CDN URL in html by ``static_prefix`` + its vendored path; raise on others.

    static_prefix: the relative URL of ``_static/`` from the page (e.g. ``"../_static/"``).
    """
    for cdn, local in CDN_TO_VENDOR.items():
        html = html.replace(cdn, static_prefix + local)
    left = _CDN_USE.search(html)
    if left:
        raise ValueError(f"the page still loads {left.group(0)!r} from a CDN; vendor it "
                         "(package.json, tools/vendor_js.py) and add it to CDN_TO_VENDOR")
    return html


def _use_vendored_scripts(app, pagename, templatename, context, doctree):
    if "body" not in context:
        return
    static = context["pathto"]("_static/", 1)
    try:
        context["body"] = vendor_urls(context["body"], static)
    except ValueError as error:
        raise ExtensionError(f"{pagename}: {error}") from None


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # An inline script may be registered with filename None or "": treat them alike.
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", None) or None,
               tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _use_vendored_scripts, priority=800)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
