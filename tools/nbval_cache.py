"""pytest plugin: nbval's run of each chapter is also the book build's execution.

`make test` executes every chapter once, with nbval (each cell a test, asserts in cells).
The book needs the same executed notebooks, with their outputs and widget state. This
plugin watches nbval's kernel: it sees every message the kernel sends for each cell and
replays it through nbclient's own output handling (the code that myst-nb's execution runs:
outputs, ``clear_output``, display updates, saved widget state, Output widgets). When every
cell of a notebook has passed, it stores the executed notebook in the jupyter-cache that
myst-nb reads with ``execute_notebooks: cache`` (``_config.yml``), under the hash myst-nb
looks up. The book build then executes only the notebooks that are not there.

Enabled by ``LMCORE_EXECUTION_CACHE=<cache folder>`` (the Makefile sets it); the nbval
kernels then run with ``LMCORE_BOOK_BUILD=1`` (figures as on the site) and without
``OMP_NUM_THREADS`` (``lmcore.notebook.setup`` owns the thread policy, as in the book build).
A notebook is not cached when a cell failed, or when nbval and nbclient would not run the
same cells: nbval skips a cell for ``nbval-skip`` (or ``# NBVAL_SKIP``), nbclient for
``skip-execution``; a cell tagged both is skipped by both, and stored as nbclient leaves it.
"""
from __future__ import annotations

import copy
import fcntl
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

ENV = "LMCORE_EXECUTION_CACHE"
KERNEL_ENV = {"LMCORE_BOOK_BUILD": "1", "OMP_NUM_THREADS": None}  # None: unset
NBCLIENT_SKIPS = "skip-execution"  # the tag nbclient does not execute (and myst-nb with it)


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell_num")


@contextmanager
def _environment(changes):
    saved = {k: os.environ.get(k) for k in changes}
    for k, v in changes.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _NotebookRun:
    """One notebook's execution by nbval, rebuilt the way nbclient builds it."""

    def __init__(self, nbfile):
        from nbclient import NotebookClient

        self.path = Path(str(nbfile.fspath))
        self.nb = copy.deepcopy(nbfile.nb)
        self.code_index = [i for i, c in enumerate(self.nb.cells) if c.cell_type == "code"]
        # used only for its message handling, configured as myst-nb configures it
        self.client = NotebookClient(self.nb, record_timing=False)
        self.client.kc = nbfile.kernel.kc  # Output widgets answer the kernel, as nbclient does
        self.cacheable = True  # False once nbval and nbclient part ways on a cell
        self.done = set()  # code cell numbers whose test passed (or both skipped)
        self.executed = 0
        self.start = time.perf_counter()
        self.msg_id, self.cell_index = None, None
        kernel = nbfile.kernel
        receive = nbfile.get_kernel_message

        def execute_cell_input(source, allow_stdin=None):
            # As nbclient: with history, so that IPython's "a trailing ; hides the result"
            # (which reads the history) and the execution counts behave as in the book build.
            self.msg_id = kernel.kc.execute(source, store_history=True, allow_stdin=allow_stdin,
                                            stop_on_error=False)
            return self.msg_id

        def get_kernel_message(timeout=None, stream="iopub"):
            msg = receive(timeout=timeout, stream=stream)
            if stream == "iopub":
                self._record(msg)
            return msg

        kernel.execute_cell_input = execute_cell_input
        nbfile.get_kernel_message = get_kernel_message

    def begin(self, cell_num):
        self.cell_index = self.code_index[cell_num]
        cell = self.nb.cells[self.cell_index]
        cell.outputs = []
        cell.execution_count = None
        self.client.clear_before_next_output = False
        self.msg_id = None

    def _record(self, msg):
        from nbclient.exceptions import CellExecutionComplete

        if self.msg_id is None or msg["parent_header"].get("msg_id") != self.msg_id:
            return  # nbclient, too, handles only messages caused by the current cell
        try:
            self.client.process_message(msg, self.nb.cells[self.cell_index], self.cell_index)
        except CellExecutionComplete:
            pass

    def end(self, cell_num, passed, skipped=False):
        cell = self.nb.cells[self.cell_index]
        nbclient_skips = NBCLIENT_SKIPS in cell.metadata.get("tags", [])
        if skipped != nbclient_skips:
            self.cacheable = False
        if cell.source.strip() and not skipped:  # nbclient runs (and counts) these only
            self.executed += 1
            cell.execution_count = self.executed
        else:
            cell.outputs, cell.execution_count = [], None
        if passed or (skipped and nbclient_skips):
            self.done.add(cell_num)
        self.msg_id = None

    def complete(self) -> bool:
        return self.cacheable and len(self.done) == len(self.code_index)

    def finish(self, kernel, cache_path: Path):
        """Ask the kernel for language_info (as nbclient does), add the widget state, cache."""
        from jupyter_cache import get_cache
        from jupyter_cache.base import CacheBundleIn

        msg_id = kernel.kc.kernel_info()
        deadline = time.monotonic() + 30
        while True:
            reply = kernel.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self.nb.metadata["language_info"] = reply["content"]["language_info"]
        self.client.set_widgets_metadata()
        seconds = time.perf_counter() - self.start
        cache_path.mkdir(parents=True, exist_ok=True)
        with open(cache_path.parent / (cache_path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two xdist workers share one sqlite database
            get_cache(str(cache_path)).cache_notebook_bundle(
                CacheBundleIn(self.nb, str(self.path), data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True)


class ExecutionCachePlugin:
    def __init__(self, cache_path):
        self.cache_path = Path(cache_path).resolve()
        self.runs = {}

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):
        if not _is_nbval_cell(item):
            return (yield)
        nbfile = item.parent
        starting = nbfile.kernel is None  # nbval starts the kernel in the file's setup
        with _environment(KERNEL_ENV if starting else {}):
            result = yield
        if starting and nbfile.kernel is not None:
            self.runs[nbfile.nodeid] = _NotebookRun(nbfile)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        run = self.runs.get(item.parent.nodeid) if _is_nbval_cell(item) else None
        if run is None:
            return (yield)
        run.begin(item.cell_num)
        try:
            result = yield
        except pytest.skip.Exception:
            run.end(item.cell_num, passed=False, skipped=True)
            self._after(item, run)
            raise
        except BaseException:
            run.end(item.cell_num, passed=False)
            self._after(item, run)
            raise
        run.end(item.cell_num, passed=True)
        self._after(item, run)
        return result

    def _after(self, item, run):
        if item.cell_num != len(run.code_index) - 1:
            return
        self.runs.pop(item.parent.nodeid)
        if run.complete():
            try:
                run.finish(item.parent.kernel, self.cache_path)
            except Exception as exc:  # noqa: BLE001 (the build then executes it itself)
                warnings.warn(f"{run.path.name}: not cached for the book build ({exc!r}); "
                              "the build will execute it again", stacklevel=1)


def register(config) -> None:
    """Register the plugin when LMCORE_EXECUTION_CACHE names the cache (tests/conftest.py)."""
    path = os.environ.get(ENV)
    if path and not config.pluginmanager.has_plugin("lmcore_execution_cache"):
        config.pluginmanager.register(ExecutionCachePlugin(path), "lmcore_execution_cache")


def pytest_configure(config):
    """As a plugin of its own: ``pytest -p nbval_cache`` (tools/ on the path)."""
    register(config)
