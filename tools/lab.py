"""JupyterLab on the book's chapters, with the live ipywidgets explorers (`make lab`).

    python tools/lab.py [extra jupyter-lab options, e.g. --no-browser --port=8890]

JupyterLab, ipywidgets and its JupyterLab extension are pinned in requirements.txt, so
`make lab` (which installs the environment first) has everything. The server listens on
127.0.0.1 only, serves the repository (so chapters find `assets/` and `lmcore`) and
opens on the chapters folder. tests/test_lab.py starts it the same way.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lab_command(*extra: str) -> list[str]:
    # As root (a container, CI) jupyter refuses to start unless told it is meant.
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", *root,
            f"--ServerApp.root_dir={ROOT}", "--LabApp.default_url=/lab/tree/chapters", *extra]


if __name__ == "__main__":
    command = lab_command(*sys.argv[1:])
    os.execv(command[0], command)
