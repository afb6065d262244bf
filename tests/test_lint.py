"""ruff (pinned in requirements.txt, configured in pyproject.toml) is clean on the whole
repository, the chapters included: part of `make test`."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--output-format=concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"ruff check . found problems:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
