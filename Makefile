# Two commands for a fresh clone (see README.md):
#   make book   create .venv if missing, install, execute every chapter, build _build/html
#   make test   the same environment; every test: lmcore, chapters (nbval), the site in a browser
#   make serve  view the built site on http://127.0.0.1:8000
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
VENDOR_STAMP := site_static/vendor/.stamp
PYTEST_WORKERS ?= 2

.PHONY: book test unit serve bench clean env

env: $(STAMP) $(VENDOR_STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

$(VENDOR_STAMP): $(STAMP) $(NODE_STAMP) tools/vendor_js.py
	$(PY) tools/vendor_js.py
	touch $@

# Executes every chapter (LMCORE_BOOK_BUILD=1 makes plotly figures use the site's one
# copy of plotly.js) and writes the HTML into _build/html.
book: env
	$(PY) tools/build_glossary.py --check
	LMCORE_BOOK_BUILD=1 $(VENV)/bin/jupyter-book build . --all
	@echo "The book is in _build/html (make serve to view it)."

# lmcore unit tests only: quick feedback while developing.
unit: env
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore=tests/test_site.py

# Everything: unit tests, every chapter from a fresh kernel (nbval, asserts in cells), and
# the built site in headless Debian chromium with no network (screenshots: _build/screenshots).
test: book
	# One BLAS thread per worker: two workers share the 2 cores instead of fighting over them.
	OMP_NUM_THREADS=1 LMCORE_REQUIRE_SITE=1 $(PY) -m pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadscope \
	    --nbval-lax --durations=15 tests chapters

serve:
	@test -f _build/html/index.html || { echo "no site yet: run make book"; exit 1; }
	$(PY) -m http.server --bind 127.0.0.1 --directory _build/html 8000

bench: env
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf _build
