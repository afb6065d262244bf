"""A small Sphinx extension for the offline site.

sphinx-thebe 0.3 registers its inline configuration script twice per page, which makes
the browser throw "Identifier 'THEBE_JS_URL' has already been declared". Drop exact
duplicates from each page's script list.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # An inline script may be registered with filename None or "": treat them alike.
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", None) or None, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
