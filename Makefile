# Two commands for a fresh clone (see README.md):
#   make book   create .venv if missing, install, execute every chapter, build _build/html
#   make test   the same environment; every test: ruff, lmcore, chapters (nbval), the site
# and, for readers and authors:
#   make serve      view the built site on http://127.0.0.1:8000
#   make lab        JupyterLab on the chapters, with the live widget explorers
#   make gpu-check  on a machine with a CUDA GPU: the unit tests and every chapter on it
# and for teaching (from the executed chapters that make book or make test leave):
#   make book-student   the student edition (no solutions) in _build/student/html
#   make slides         reveal.js slides of every chapter in _build/slides
#   make pdf            the whole book as one PDF, printed offline by chromium
#   make assignments    build the autograded assignments and grade the reference and
#                       the wrong solutions (otter-grader)
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
VENDOR_STAMP := site_static/vendor/.stamp
# The Playground's model: the shipped checkpoint exported to ONNX (+ vocabulary and lmcore's
# reference probabilities), made at build time so that it cannot drift from the checkpoint.
PLAYGROUND := site_static/playground/model/shakespeare_char_gpt.json
PYTEST_WORKERS ?= 2
# Executed chapters that the book build reads (myst-nb's jupyter-cache, _config.yml).
CACHE := _build/.jupyter_cache
PYTEST := $(PY) -m pytest -p no:cacheprovider

.PHONY: book site kit book-student slides pdf downloads assignments test unit lint lab serve bench gpu-check clean env

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

$(PLAYGROUND): $(STAMP) assets/models/shakespeare_char_gpt.pt tools/export_playground.py \
		lmcore/export.py lmcore/transformer.py lmcore/attention.py lmcore/layers.py
	$(PY) tools/export_playground.py

# Executes every chapter and writes the HTML into _build/html. The cache is emptied first:
# its key is the notebook's code, not lmcore's, so an old entry could show old outputs.
# Then the course kit from the same executions: student edition, slides, PDF, downloads.
book: env
	rm -rf $(CACHE)
	$(MAKE) --no-print-directory site
	$(MAKE) --no-print-directory kit

# The HTML from the executed chapters in $(CACHE); a chapter that is not there is executed
# (and stored) now. LMCORE_BOOK_BUILD=1: plotly figures use the site's one plotly.js.
site: env $(PLAYGROUND)
	$(PY) tools/build_glossary.py --check
	$(PY) tools/build_course.py --check
	mkdir -p _build
	LMCORE_BOOK_BUILD=1 $(VENV)/bin/jupyter-book build . --all 2>&1 | tee _build/book.log
	@if grep -n "WARNING" _build/book.log | grep -v "IPKernelApp"; then \
	    echo "make site: the build warned (above); the book builds without warnings"; exit 1; fi
	@echo "The book is in _build/html (make serve to view it)."

# The course kit. Each reads the executed chapters in $(CACHE) and executes none.
kit: book-student slides pdf downloads

book-student: env $(PLAYGROUND)
	$(PY) tools/editions.py student

slides: env
	$(PY) tools/slides.py --out _build/slides --also-into _build/html/slides

pdf: env
	$(PY) tools/pdf.py --out _build/html/downloads/how-language-models-compute.pdf

# The notebooks (with and without solutions) and the assignments' student notebooks,
# linked from the course page.
downloads: env
	$(PY) tools/editions.py notebooks --out _build/html/downloads
	$(PY) tools/assignments.py build
	$(PY) tools/assignments.py pack

# Grades each assignment's reference solution (full marks) and wrong solution (what it
# should lose); make test does the same in tests/test_assignments.py.
assignments: env
	$(PY) tools/assignments.py build
	$(PY) tools/assignments.py check
	$(PY) tools/assignments.py pack

# lmcore unit tests, ruff and the static chapter checks: quick feedback while developing.
unit: env
	$(PYTEST) -q -m "not browser and not executed" tests

lint: env
	$(PY) -m ruff check .

# Everything, executing each chapter once:
# 1. ruff, the unit tests, the chapter checks, the Colab cell, JupyterLab, and every chapter
#    from a fresh kernel with nbval (each cell a test, asserts in cells). nbval's run is also
#    the book's execution: tools/nbval_cache.py stores each executed notebook, outputs and
#    widget state as nbclient would write them, in $(CACHE). One BLAS thread per worker: two
#    workers share the 2 cores instead of fighting over them (the chapters' own kernels
#    follow lmcore.notebook.setup(), as in the book build).
# 2. The site from those notebooks, and the course kit (student edition, slides, PDF,
#    downloads); none of them executes a chapter again.
# 3. The built site, the student edition, the slides and the PDF in headless chromium
#    (screenshots: _build/screenshots), and the checks on the executed outputs.
test: env
	rm -rf $(CACHE)
	LMCORE_EXECUTION_CACHE=$(CACHE) OMP_NUM_THREADS=1 $(PYTEST) -n $(PYTEST_WORKERS) --dist loadscope \
	    --nbval-lax --durations=15 -m "not browser and not executed" tests chapters
	$(MAKE) --no-print-directory site kit
	@! grep -n "Executing notebook" _build/book.log || { echo "make test: the book build executed" \
	    "the chapters above again; nbval's run should have stored them (tools/nbval_cache.py)"; exit 1; }
	LMCORE_REQUIRE_SITE=1 $(PYTEST) -n $(PYTEST_WORKERS) --durations=5 -m "browser or executed" tests

# JupyterLab on the chapters (tools/lab.py; LAB_ARGS="--no-browser --port=8890" for example).
lab: env
	$(PY) tools/lab.py $(LAB_ARGS)

serve:
	@test -f _build/html/index.html || { echo "no site yet: run make book"; exit 1; }
	$(PY) -m http.server --bind 127.0.0.1 --directory _build/html 8000

# On a machine with a CUDA GPU (e.g. a cloud VM with a T4): the unit tests and every chapter
# with LMCORE_DEVICE=cuda, so a green result means the GPU path ran. Elsewhere it refuses.
gpu-check: env
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || { \
	    echo "make gpu-check: no CUDA GPU here (torch.cuda.is_available() is False)." \
	         "It runs everything on the GPU, so it needs a machine with one."; exit 1; }
	LMCORE_DEVICE=cuda $(PYTEST) -n $(PYTEST_WORKERS) --dist loadscope --nbval-lax --durations=15 \
	    -m "not browser and not executed" tests chapters

bench: env
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf _build
