"""Execute chapters from a fresh kernel, as the build does, and print seconds per chapter.

    python tools/time_chapters.py [chapters/NN_slug.ipynb ...]   (default: all chapters)
"""
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "chapters").glob("*.ipynb"))
os.environ.setdefault("LMCORE_BOOK_BUILD", "1")
for path in paths:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    print(json.dumps({"chapter": path.name, "seconds": round(time.perf_counter() - start, 1)}), flush=True)
