"""The course's autograded assignments, graded with otter-grader (assignments/README.md).

    python tools/assignments.py build [NAME ...]     otter assign each master notebook
    python tools/assignments.py grade NOTEBOOK       grade one submitted notebook (otter run)
    python tools/assignments.py check [NAME ...]     grade each reference and each wrong solution
    python tools/assignments.py pack                 zip the student notebooks

``build`` writes ``_build/assignments/<name>/{student,autograder}`` (``--out`` to change),
then makes each student notebook self-contained: its public tests go into a set-up cell
that writes them to a temporary folder for ``grader.check`` (otter refuses tests stored in
the notebook's metadata on Colab, which keeps no notebook file on disk). It refuses a
student notebook that contains a line of a hidden test or of the solution.
``check`` grades, with the autograder zip, the student notebook with the reference solution
(it must get full marks) and with ``assignments/wrong/<name>.py`` in the answer cell (it
must get exactly the score, and fail exactly the tests, that the file's
``# expected: S of P points, fails test_a, test_b`` line states); exit status 1 otherwise.
Grading runs in-process, offline, without Docker (``otter run``'s own code).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MASTERS = ROOT / "assignments"
OUT = ROOT / "_build" / "assignments"
ZIP = ROOT / "_build" / "html" / "downloads" / "assignments-student.zip"
EXPECTED = re.compile(r"^# expected: (\d+(?:\.\d+)?) of (\d+(?:\.\d+)?) points, fails (.+)$",
                      re.MULTILINE)
ANSWER, SOLUTION = "otter_answer_cell", "otter_assign_solution_cell"

SETUP_CELL = '''\
# @title Run this cell first: it sets up grader.check("{question}")
# grader.check("{question}") runs the public tests, which this cell writes to a temporary
# folder. (Colab keeps no notebook file on disk, so tests stored inside the notebook
# cannot be read there; a folder of test files works everywhere.)
import sys
import tempfile
from pathlib import Path

if "google.colab" in sys.modules:  # Colab has torch, not the grader
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader=={version}"],
                   check=True)

import otter

PUBLIC_TESTS = {{
{tests}}}
_tests = tempfile.TemporaryDirectory(prefix="{name}-tests-")  # removed when the kernel stops
for _file, _text in PUBLIC_TESTS.items():
    Path(_tests.name, _file).write_text(_text, encoding="utf-8")
grader = otter.Notebook(tests_dir=_tests.name)'''


def masters(names=()) -> list[Path]:
    found = {p.stem: p for p in sorted(MASTERS.glob("[0-9][0-9]_*.ipynb"))}
    unknown = sorted(set(names) - set(found))
    if unknown:
        raise SystemExit(f"no master notebook for {unknown} in {MASTERS}; there are {sorted(found)}")
    return [found[n] for n in names] if names else list(found.values())


def _literal(text: str) -> str:
    """``text`` as a readable raw triple-quoted literal (or repr() where that cannot be)."""
    lit = f"r'''{text}'''"
    if "'''" in text or text.endswith("\\"):
        lit = repr(text)
    assert ast.literal_eval(lit) == text
    return lit


def test_cases(source: str) -> list[dict]:
    """The test cases of an otter exception-based test file, in otter's order:
    [{"name": function name, "points": ..., "hidden": ...}]."""
    cases = []
    for node in ast.parse(source).body:
        for dec in getattr(node, "decorator_list", []):
            if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "test_case":
                kw = {k.arg: ast.literal_eval(k.value) for k in dec.keywords}
                cases.append({"name": node.name, "points": kw.get("points"),
                              "hidden": bool(kw.get("hidden", False))})
    return cases


def _case_lines(tests_source: str, hidden: bool) -> set[str]:
    """The lines (stripped, longer than 20 characters) of the hidden or the public cases."""
    names = {c["name"] for c in test_cases(tests_source) if c["hidden"] == hidden}
    return {ln.strip() for node in ast.parse(tests_source).body if getattr(node, "name", None) in names
            for ln in ast.get_source_segment(tests_source, node).splitlines() if len(ln.strip()) > 20}


def leaks(student: Path, autograder: Path) -> list[str]:
    """Names and lines of hidden tests, and lines of the reference solution, that are lines
    of the student notebook (empty list: nothing leaks). Imports, and lines that a public
    test shares with a hidden one, are allowed."""
    text = student.read_text(encoding="utf-8")
    visible = {ln.strip() for c in nbformat.reads(text, as_version=4).cells
               for ln in c.source.splitlines()}
    found = []
    for tests in sorted((autograder / "tests").glob("*.py")):
        source = tests.read_text(encoding="utf-8")
        found += [f"hidden test name {c['name']}" for c in test_cases(source)
                  if c["hidden"] and c["name"] in text]
        lines = _case_lines(source, hidden=True) - _case_lines(source, hidden=False)
        lines = {ln for ln in lines if not ln.startswith(("import ", "from "))}
        found += [f"hidden test line {ln!r}" for ln in sorted(lines) if ln in visible]
    for cell in nbformat.read(autograder / student.name, as_version=4).cells:
        if SOLUTION in cell.metadata.get("tags", []):
            found += [f"solution line {ln!r}" for ln in _solution_lines(cell.source)
                      if ln in visible]
    return found


def _solution_lines(source: str) -> list[str]:
    """The lines between # BEGIN SOLUTION and # END SOLUTION (stripped, non-trivial)."""
    inside, out = False, []
    for line in source.splitlines():
        if line.strip() in ("# BEGIN SOLUTION", "# END SOLUTION"):
            inside = line.strip() == "# BEGIN SOLUTION"
        elif inside and len(line.strip()) > 12:
            out.append(line.strip())
    return out


def make_self_contained(student_dir: Path, name: str) -> Path:
    """Put the public tests of ``student_dir/tests`` into a set-up cell of the notebook."""
    import otter

    path = student_dir / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    files = sorted((student_dir / "tests").glob("*.py"))
    tests = "".join(f"    {f.name!r}: {_literal(f.read_text(encoding='utf-8'))},\n" for f in files)
    question = files[0].stem if len(files) == 1 else "<question>"
    cell = nbformat.v4.new_code_cell(SETUP_CELL.format(
        question=question, version=otter.__version__, tests=tests, name=name))
    # locked, and shown collapsed (Colab: a form; Jupyter: the source hidden)
    cell.metadata.update(editable=False, deletable=False, cellView="form",
                         jupyter={"source_hidden": True})
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells.insert(first_code, cell)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    shutil.rmtree(student_dir / "tests")
    return path


def build(out: Path, names=()) -> list[Path]:
    """otter assign each master into out/<name>/{student,autograder}; returns the dirs."""
    from otter.assign import main as otter_assign

    dirs = []
    for master in masters(names):
        dest = out / master.stem
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            otter_assign(str(master), str(dest), no_run_tests=True, no_pdfs=True)
        student = make_self_contained(dest / "student", master.stem)
        problems = leaks(student, dest / "autograder")
        if problems:
            raise SystemExit(f"{student} shows what students must not see: {problems[:5]}")
        dirs.append(dest)
        print(f"built {dest}", flush=True)
    return dirs


def autograder_zip(assignment_dir: Path) -> Path:
    zips = sorted((assignment_dir / "autograder").glob("*-autograder_*.zip"))
    if len(zips) != 1:
        raise SystemExit(f"expected one autograder zip in {assignment_dir / 'autograder'}, "
                         f"found {[z.name for z in zips]}: run `python tools/assignments.py build`")
    return zips[0]


def grade(notebook: Path, zip_path: Path, output_dir: Path | None = None) -> dict:
    """Grade one notebook with otter run's code (no Docker); returns
    {"score", "possible", "tests": [{"name", "points", "hidden", "passed"}], "error"}."""
    from otter.run import main as otter_run

    with zipfile.ZipFile(zip_path) as z:
        sources = {Path(n).stem: z.read(n).decode() for n in z.namelist()
                   if n.startswith("tests/") and n.endswith(".py")}
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            results = otter_run(str(notebook), autograder=str(zip_path), no_logo=True,
                                output_dir=str(output_dir) if output_dir else None)
        error = results.catastrophic_error
    except (RuntimeError, ValueError, OSError) as err:  # not a notebook, another assignment...: 0
        results, error = None, err
    tests = []
    for question, source in sorted(sources.items()):
        cases = test_cases(source)
        outcome = results.results.get(question) if results is not None else None
        passed = {r.test_case.name: r.passed for r in getattr(outcome, "test_case_results", [])}
        for k, case in enumerate(cases, start=1):
            tests.append({**case, "question": question,
                          "passed": bool(passed.get(f"{question} - {k}", False))})
    return {"score": float(results.total) if error is None else 0.0,
            "possible": float(sum(c["points"] for c in tests)),
            "tests": tests, "error": None if error is None else repr(error)}


def submission(student_nb: Path, code: str, dest: Path) -> Path:
    """The student notebook with ``code`` in its one answer cell, written to ``dest``."""
    nb = nbformat.read(student_nb, as_version=4)
    answers = [c for c in nb.cells if ANSWER in c.metadata.get("tags", [])]
    if len(answers) != 1:
        raise SystemExit(f"{student_nb} has {len(answers)} answer cells; expected one")
    answers[0].source = code.rstrip("\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def reference_code(autograder_nb: Path) -> str:
    cells = [c for c in nbformat.read(autograder_nb, as_version=4).cells
             if SOLUTION in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{autograder_nb} has {len(cells)} solution cells; expected one")
    return "\n".join(ln for ln in cells[0].source.splitlines()
                     if ln.strip() not in ("# BEGIN SOLUTION", "# END SOLUTION"))


def expectation(wrong_code: str, where: str) -> dict:
    m = EXPECTED.search(wrong_code)
    if not m:
        raise SystemExit(f"{where} lacks a line '# expected: S of P points, fails test_a, test_b'")
    return {"score": float(m.group(1)), "possible": float(m.group(2)),
            "fails": sorted(n.strip() for n in m.group(3).split(","))}


def verify(reference: dict, wrong: dict, expected: dict) -> list[str]:
    """What is wrong with these two gradings (empty list: all as it should be)."""
    problems = []
    for label, result in (("reference", reference), ("wrong", wrong)):
        if result["error"]:
            problems.append(f"{label}: otter could not grade it: {result['error']}")
    lost = [t["name"] for t in reference["tests"] if not t["passed"]]
    if reference["score"] != reference["possible"] or lost:
        problems.append(f"reference: {reference['score']:g} of {reference['possible']:g} "
                        f"points, fails {lost}; it must get full marks")
    if expected["score"] >= expected["possible"]:
        problems.append(f"wrong: expected {expected['score']:g} of {expected['possible']:g}: "
                        "a wrong solution must be expected to lose points")
    if expected["possible"] != reference["possible"]:
        problems.append(f"wrong: the expectation says {expected['possible']:g} points in all, "
                        f"the tests give {reference['possible']:g}")
    fails = sorted(t["name"] for t in wrong["tests"] if not t["passed"])
    if wrong["score"] != expected["score"] or fails != expected["fails"]:
        problems.append(f"wrong: {wrong['score']:g} points, fails {fails}; expected "
                        f"{expected['score']:g}, fails {expected['fails']}")
    return problems


def check(out: Path, names=()) -> dict:
    """Grade every reference and wrong solution; returns the report (also out/check.json)."""
    report = {}
    for master in masters(names):
        name, adir = master.stem, out / master.stem
        student, zip_path = adir / "student" / f"{name}.ipynb", autograder_zip(adir)
        if not student.exists():
            raise SystemExit(f"{student} is missing: run `python tools/assignments.py build`")
        wrong_file = MASTERS / "wrong" / f"{name}.py"
        if not wrong_file.exists():
            raise SystemExit(f"{wrong_file} is missing: every assignment needs a wrong solution")
        wrong_code = wrong_file.read_text(encoding="utf-8")
        expected = expectation(wrong_code, str(wrong_file))
        runs = {}
        for label, code in (("reference", reference_code(adir / "autograder" / f"{name}.ipynb")),
                            ("wrong", wrong_code)):
            nb = submission(student, code, adir / "submissions" / label / f"{name}.ipynb")
            runs[label] = grade(nb, zip_path)
        problems = verify(runs["reference"], runs["wrong"], expected)
        report[name] = {**runs, "expected": expected, "problems": problems}
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"{name}: reference {runs['reference']['score']:g}/{runs['reference']['possible']:g}, "
              f"wrong {runs['wrong']['score']:g} (expected {expected['score']:g}) {status}",
              flush=True)
    (out / "check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def pack(out: Path, zip_path: Path) -> Path:
    """The student notebooks (and a short how-to) in one zip, byte-for-byte reproducible."""
    notebooks = [out / m.stem / "student" / f"{m.stem}.ipynb" for m in masters()]
    missing = [str(p) for p in notebooks if not p.exists()]
    if missing:
        raise SystemExit(f"not built: {missing}; run `python tools/assignments.py build`")
    how_to = (ROOT / "assignments" / "README.md").read_text(encoding="utf-8")
    how_to = how_to.split("<!-- students -->")[1].split("<!-- /students -->")[0].strip() + "\n"
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in [("assignments/README.md", how_to.encode())] + [
                (f"assignments/{p.name}", p.read_bytes()) for p in notebooks]:
            z.writestr(zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0)), data,
                       compress_type=zipfile.ZIP_DEFLATED)
    print(f"wrote {zip_path} ({len(notebooks)} notebooks)")
    return zip_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "grade", "check", "pack"])
    parser.add_argument("args", nargs="*", help="assignment names (build, check) or a notebook (grade)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"build folder (default {OUT})")
    parser.add_argument("--zip", type=Path, default=ZIP, help=f"pack's zip (default {ZIP})")
    parser.add_argument("--results", type=Path, help="grade: folder for otter's results.json")
    a = parser.parse_args(argv)
    out = a.out.resolve()
    if a.command == "build":
        build(out, a.args)
    elif a.command == "pack":
        pack(out, a.zip)
    elif a.command == "check":
        report = check(out, a.args)
        return 1 if any(r["problems"] for r in report.values()) else 0
    else:
        if len(a.args) != 1:
            parser.error("grade takes one notebook")
        nb = Path(a.args[0])
        name = nbformat.read(nb, as_version=4).metadata.get("otter", {}).get("assignment_name")
        if name is None:
            raise SystemExit(f"{nb} is not an assignment notebook (no otter assignment_name)")
        result = grade(nb.resolve(), autograder_zip(out / name), a.results)
        for t in result["tests"]:
            print(f"{'pass' if t['passed'] else 'FAIL'}  {t['points']:>3g}  "
                  f"{'hidden' if t['hidden'] else 'public'}  {t['name']}")
        print(f"{name}: {result['score']:g} of {result['possible']:g} points"
              + (f" (otter could not grade it: {result['error']})" if result["error"] else ""))
        print(json.dumps({"assignment": name, "score": result["score"],
                          "possible": result["possible"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
