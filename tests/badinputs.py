"""The bad-input ledger shared by the property suites (``tests/test_props_*.py``).

Each suite counts the bad inputs it tries by (module, outcome); with
``LMCORE_BAD_INPUT_REPORT=path`` the counts are appended to the JSON list in ``path``, which
is where the closing notes' tables of bad inputs by module and outcome come from.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest


class Ledger:
    def __init__(self, suite: str):
        self.suite = suite
        self.tried = Counter()  # (module, outcome) -> inputs tried

    def refuses(self, module, names, fn, exc=(ValueError, TypeError)):
        """fn() must raise ``exc`` with a message naming one of ``names``; count the case."""
        names = (names,) if isinstance(names, str) else names
        with pytest.raises(exc) as info:
            fn()
        message = str(info.value)
        assert any(n in message for n in names), f"message does not name {names}: {message}"
        self.tried[(module, type(info.value).__name__)] += 1

    def handled(self, module):
        """Count a boundary input that must give a correct result (checked by the caller)."""
        self.tried[(module, "correct result")] += 1

    def write_report(self) -> None:
        path = os.environ.get("LMCORE_BAD_INPUT_REPORT")
        if not path:
            return
        rows = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows = json.load(f)
        rows += [{"module": m, "outcome": o, "count": n, "suite": self.suite}
                 for (m, o), n in sorted(self.tried.items())]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
