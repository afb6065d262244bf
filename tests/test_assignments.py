"""The autograded assignments (assignments/, tools/assignments.py, otter-grader).

The slow tests build every master with otter assign and grade, with otter run's code, each
reference solution (it must get full marks) and each deliberately wrong solution in
assignments/wrong/ (it must get exactly the score, and fail exactly the tests, that its
``# expected:`` line states); they check that no hidden test or solution reaches the
student notebooks, run one student notebook where otter believes it is on Colab, and pack
the zip. The fast ones check the masters, the wrong solutions' expectations, the points
stated in the stories and the README, and that the verification rejects bad gradings.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import assignments as tool

MASTERS = sorted((ROOT / "assignments").glob("[0-9][0-9]_*.ipynb"))
NAMES = [p.stem for p in MASTERS]


def _master(path: Path) -> dict:
    """The question, the solution cell and the tests of a master notebook, read from its
    otter assign blocks: {"question", "solution", "tests": [{"name", "points", "hidden"}]}."""
    nb = nbformat.read(path, as_version=4)
    out, block = {"tests": []}, None
    for cell in nb.cells:
        first = cell.source.splitlines()[0] if cell.source else ""
        if cell.cell_type == "raw" and first.startswith("# BEGIN QUESTION"):
            out["question"] = yaml.safe_load("\n".join(cell.source.splitlines()[1:]))["name"]
        elif cell.cell_type == "raw" and re.match(r"# (BEGIN|END) (SOLUTION|TESTS)$", first):
            block = first.split()[2] if first.startswith("# BEGIN") else None
        elif cell.cell_type == "code" and block == "SOLUTION":
            out["solution"] = cell.source
        elif cell.cell_type == "code" and block == "TESTS":
            head, body = cell.source.split('""" # END TEST CONFIG\n')
            config = yaml.safe_load(head.split("\n", 1)[1])
            fn = ast.parse(body).body[0]
            out["tests"].append({"name": fn.name, "points": config["points"],
                                 "hidden": bool(config.get("hidden", False)),
                                 "args": [a.arg for a in fn.args.args]})
    return out


# ----------------------------------------------------------------------------- fast, static
def test_six_masters_each_with_a_wrong_solution():
    assert NAMES == ["01_softmax", "02_attention", "03_lstm_step", "04_linear_backward",
                     "05_top_p", "06_bpe_merge"]
    wrong = sorted(p.stem for p in (ROOT / "assignments" / "wrong").glob("*.py"))
    assert wrong == NAMES, "every master needs assignments/wrong/<name>.py, and nothing else"


@pytest.mark.parametrize("path", MASTERS, ids=NAMES)
def test_master_is_well_formed(path):
    m = _master(path)
    q = m["question"]
    assert re.search(rf"^def {q}\(", m["solution"], re.MULTILINE), f"the answer cell must define {q}()"
    assert "# BEGIN SOLUTION" in m["solution"] and "# END SOLUTION" in m["solution"]
    names = [t["name"] for t in m["tests"]]
    assert len(set(names)) == len(names), f"test names repeat: {names}"
    assert all(t["args"] == [q] for t in m["tests"]), "each test takes the student's function"
    assert all(isinstance(t["points"], int) and t["points"] > 0 for t in m["tests"])
    assert any(not t["hidden"] for t in m["tests"]) and any(t["hidden"] for t in m["tests"])
    assert nbformat.read(path, as_version=4).cells[0].cell_type == "markdown"
    text = path.read_text(encoding="utf-8")
    assert '"outputs": []' in text and '"output_type"' not in text, "store masters without outputs"


@pytest.mark.parametrize("path", MASTERS, ids=NAMES)
def test_story_states_the_points_of_the_tests(path):
    m = _master(path)
    public = sum(t["points"] for t in m["tests"] if not t["hidden"])
    hidden = sum(t["points"] for t in m["tests"] if t["hidden"])
    intro = nbformat.read(path, as_version=4).cells[0].source
    stated = re.search(r"Points: (\d+) \(public tests (\d+), hidden tests (\d+)\)", intro)
    assert stated, "the story must say 'Points: N (public tests a, hidden tests b)'"
    assert tuple(map(int, stated.groups())) == (public + hidden, public, hidden)
    assert f'grader.check("{m["question"]}")' in intro


def test_readme_table_matches_the_masters_and_wrong_solutions():
    readme = (ROOT / "assignments" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d) \| `(\w+)\.ipynb` \| `(\w+)\(.*\| (\d+) \((\d+) \+ (\d+)\) \|"
                      r".*\| (\d+) of (\d+) \|$", readme, re.MULTILINE)
    assert [r[1] for r in rows] == NAMES
    for _, name, function, total, public, hidden, score, possible in rows:
        m = _master(ROOT / "assignments" / f"{name}.ipynb")
        assert function == m["question"]
        pub = sum(t["points"] for t in m["tests"] if not t["hidden"])
        hid = sum(t["points"] for t in m["tests"] if t["hidden"])
        assert (int(total), int(public), int(hidden)) == (pub + hid, pub, hid), name
        expected = tool.expectation((ROOT / "assignments" / "wrong" / f"{name}.py").read_text(), name)
        assert (float(score), float(possible)) == (expected["score"], expected["possible"]), name


@pytest.mark.parametrize("name", NAMES)
def test_wrong_solution_states_a_consistent_expectation(name):
    m = _master(ROOT / "assignments" / f"{name}.ipynb")
    code = (ROOT / "assignments" / "wrong" / f"{name}.py").read_text(encoding="utf-8")
    expected = tool.expectation(code, name)
    points = {t["name"]: t["points"] for t in m["tests"]}
    assert set(expected["fails"]) <= set(points), f"unknown tests in {expected['fails']}"
    assert expected["possible"] == sum(points.values())
    assert expected["score"] == sum(points.values()) - sum(points[n] for n in expected["fails"])
    assert 0 < expected["score"] < expected["possible"], "a wrong solution loses some, not all"
    tree = ast.parse(code)
    assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == [m["question"]]


def _run(score, fails=(), tests=("test_a", "test_b", "test_c"), points=(1, 2, 3), error=None):
    return {"score": score, "possible": float(sum(points)), "error": error,
            "tests": [{"name": n, "points": p, "hidden": i > 0, "passed": n not in fails}
                      for i, (n, p) in enumerate(zip(tests, points))]}


def test_verify_rejects_every_bad_grading():
    """The check must be able to fail: a wrong solution with full marks, a reference that
    loses points, a score or a set of failed tests other than stated, an ungradable run."""
    expected = {"score": 3.0, "possible": 6.0, "fails": ["test_c"]}
    good = tool.verify(_run(6.0), _run(3.0, ["test_c"]), expected)
    assert good == []
    assert tool.verify(_run(6.0), _run(6.0), expected), "a wrong solution with full marks passed"
    assert tool.verify(_run(5.0, ["test_a"]), _run(3.0, ["test_c"]), expected)
    assert tool.verify(_run(6.0), _run(4.0, ["test_b"]), expected)
    assert tool.verify(_run(6.0), _run(3.0, ["test_a", "test_b"]), expected)
    assert tool.verify(_run(6.0), _run(0.0, ["test_a", "test_b", "test_c"], error="boom"), expected)
    assert tool.verify(_run(6.0), _run(6.0), {"score": 6.0, "possible": 6.0, "fails": []})
    assert tool.verify(_run(6.0), _run(3.0, ["test_c"]), {**expected, "possible": 7.0})


def test_expectation_line_is_required():
    with pytest.raises(SystemExit, match="expected"):
        tool.expectation("def f():\n    pass\n", "f.py")


def test_public_tests_literal_round_trips():
    for text in ("plain\n", "a '''quoted''' text", "ends with a backslash \\", "tab\there\\n"):
        assert ast.literal_eval(tool._literal(text)) == text


# ------------------------------------------------------------------- slow: otter assign/run
def _tool(*args, **kw):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "assignments.py"), *map(str, args)],
                          check=False, capture_output=True, text=True, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    proc = _tool("build", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def checked(built):
    proc = _tool("check", "--out", built, env={**os.environ, "OMP_NUM_THREADS": "1"})
    report = json.loads((built / "check.json").read_text()) if (built / "check.json").exists() else {}
    return proc, report


@pytest.mark.slow
def test_check_gives_references_full_marks_and_wrong_solutions_their_score(checked):
    proc, report = checked
    assert proc.returncode == 0, f"tools/assignments.py check failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert sorted(report) == NAMES
    for name, r in report.items():
        m = _master(ROOT / "assignments" / f"{name}.ipynb")
        possible = sum(t["points"] for t in m["tests"])
        ref, wrong = r["reference"], r["wrong"]
        assert ref["error"] is None and wrong["error"] is None, name
        # every test of the master was run, hidden ones included, in the master's order
        assert [t["name"] for t in ref["tests"]] == [t["name"] for t in m["tests"]], name
        assert ref["score"] == ref["possible"] == possible and all(t["passed"] for t in ref["tests"]), name
        stated = tool.expectation((ROOT / "assignments" / "wrong" / f"{name}.py").read_text(), name)
        failed = sorted(t["name"] for t in wrong["tests"] if not t["passed"])
        assert wrong["score"] == stated["score"] < possible and failed == stated["fails"], name
        hidden = {t["name"] for t in m["tests"] if t["hidden"]}
        assert hidden & set(failed), f"{name}: the wrong solution must lose hidden points too"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_is_self_contained_and_hides_the_answers(built, name, tmp_path):
    student_dir = built / name / "student"
    assert sorted(p.name for p in student_dir.iterdir()) == [f"{name}.ipynb"], "one file"
    student = student_dir / f"{name}.ipynb"
    autograder = built / name / "autograder"
    assert tool.leaks(student, autograder) == []
    # the leak check can fail: a notebook with the hidden tests or the solution in it
    for extra in (next((autograder / "tests").glob("*.py")).read_text(),
                  tool.reference_code(autograder / f"{name}.ipynb")):
        tampered = nbformat.read(student, as_version=4)
        tampered.cells.append(nbformat.v4.new_code_cell(extra))
        nbformat.write(tampered, tmp_path / student.name)
        assert tool.leaks(tmp_path / student.name, autograder), "a leak went unnoticed"
    text = student.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)
    m = _master(ROOT / "assignments" / f"{name}.ipynb")
    for t in m["tests"]:
        assert (t["name"] in text) != t["hidden"], f"{t['name']}: public tests in, hidden out"
    assert "hidden=True" not in text and "tests" not in nb.metadata.get("otter", {})
    [answer] = [c for c in nb.cells if tool.ANSWER in c.metadata.get("tags", [])]
    assert answer.source.rstrip().endswith("...") and "BEGIN SOLUTION" not in text
    [setup] = [c for c in nb.cells if "PUBLIC_TESTS" in c.source]
    assert setup.metadata.get("editable") is False
    assert f'grader.check("{m["question"]}")' in [c.source for c in nb.cells]


COLAB = """\
import sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")  # the set-up cell's Colab branch
from otter.check.utils import IPythonInterpreter
IPythonInterpreter.COLAB.value.check_strs.append("ipykernel")  # otter believes it runs on Colab
"""


@pytest.mark.slow
def test_student_notebook_checks_work_where_otter_believes_it_is_colab(built, tmp_path):
    """On Colab otter reads no tests from the notebook; the set-up cell's test files work.
    The Colab branch's pip install finds otter-grader installed (no index: nothing is fetched)."""
    from nbclient import NotebookClient

    name = "01_softmax"
    nb = nbformat.read(built / name / "student" / f"{name}.ipynb", as_version=4)
    reference = tool.reference_code(built / name / "autograder" / f"{name}.ipynb")
    [answer] = [c for c in nb.cells if tool.ANSWER in c.metadata.get("tags", [])]
    answer.source = reference
    nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB))
    nb.cells.append(nbformat.v4.new_code_cell(
        'import otter.check.utils as u\nprint("colab:", u.IPythonInterpreter.COLAB.value.running())\n'
        "softmax = lambda x, dim=-1: x.exp() / x.exp().sum()  # ignores dim\n"
        'grader.check("softmax")'))
    env = {**os.environ, "PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1"}
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    outputs = {i: "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                          for o in c.get("outputs", [])) for i, c in enumerate(nb.cells)}
    checks = [i for i, c in enumerate(nb.cells) if c.source == 'grader.check("softmax")']
    assert "All test cases passed" in outputs[checks[0]], outputs[checks[0]]
    assert "colab: True" in outputs[len(nb.cells) - 1]
    assert "Test case failed" in outputs[len(nb.cells) - 1], outputs[len(nb.cells) - 1]


@pytest.mark.slow
def test_pack_writes_the_student_notebooks_reproducibly(built, tmp_path):
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    for z in (first, second):
        proc = _tool("pack", "--out", built, "--zip", z)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as z:
        assert z.namelist() == ["assignments/README.md"] + [f"assignments/{n}.ipynb" for n in NAMES]
        for n in NAMES:
            assert z.read(f"assignments/{n}.ipynb") == (built / n / "student" / f"{n}.ipynb").read_bytes()
        assert "grader.check" in z.read("assignments/README.md").decode()
