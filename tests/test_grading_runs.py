"""Whole runs of ``ftcourse grade``, ``release`` and ``handout`` around the instructor's data (issue 13).

Real nbgrader on small classes and small instructor folders (a copy of one or
two notebooks of ``solutions/``, so that each run stays short): regrading gives
byte-identical CSVs, a broken environment stops at the canary, ``--no-sandbox``
says so, ``grades.csv`` is never replaced without ``--force``, hand-typed marks
are merged and never erased, a crash keeps the rows already graded, ``release``
never clobbers an edited notebook, and the hand-out holds no solution. The
class with odd ids and hostile submissions is in tests/test_grading.py.
"""

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from ftcourse.gradebook_csv import ENCODING, partial_path
from ftcourse.grader_prelude import seed_for
from ftcourse.grading import answered_notebook, solution_answers
from ftcourse.handout import STUDENT_MODULES
from ftcourse.sandbox import BWRAP, detect_sandbox
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

QUIZ, SENTIMENT, LR, ES = (
    "13_quiz.ipynb",
    "14_exercise_sentiment.ipynb",
    "15_exercise_lr_finder.ipynb",
    "16_exercise_early_stopping.ipynb",
)
SANDBOX = detect_sandbox()
# Without bubblewrap, grading refuses to run: these runs of the trusted instructor answers then ask for no sandbox.
SANDBOX_ARGS = [] if SANDBOX.kind == BWRAP else ["--no-sandbox"]


def answers(name, **edits):
    """The instructor's answers of ``name``, each ``grade_id=(old, new)`` edit applied (it must apply)."""
    found = solution_answers(ROOT / "solutions" / name)
    for grade_id, (old, new) in edits.items():
        assert old in found[grade_id], (grade_id, old)
        found[grade_id] = found[grade_id].replace(old, new)
    return found


def write_class(folder, students):
    for student, notebooks in students.items():
        (folder / student).mkdir(parents=True)
        for name, answered in notebooks.items():
            nbformat.write(answered_notebook(ROOT / "course" / name, answered), folder / student / name)
    return folder


def instructor_folder(base, *names, **edits):
    """A solutions folder holding copies of these notebooks of solutions/ (``name=(grade_id, old, new)`` edits)."""
    folder = base / "solutions"
    folder.mkdir()
    for name in names:
        shutil.copy2(ROOT / "solutions" / name, folder / name)
    for name, (grade_id, old, new) in edits.items():
        path = folder / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        assert old in cell.source
        cell.source = cell.source.replace(old, new)
        nbformat.write(notebook, path)
    return folder


def read_csv(path):
    with open(path, newline="", encoding=ENCODING) as handle:
        return list(csv.DictReader(handle))


# A student whose own code draws random numbers: wrong on about half of the test cells, which ones depending on
# the draws. Its points are the same on every regrade only because the grader seeds every generator.
FLAKY = (
    "            self.counter += 1\n",
    "            self.counter += 1\n            if random.random() < 0.01:\n                self.counter += 1\n",
)


@pytest.fixture(scope="module")
def regraded(tmp_path_factory):
    """The same class graded twice (sandbox as detected), LR and ES: both CSVs and the feedback folder."""
    base = tmp_path_factory.mktemp("regrade")
    solutions = instructor_folder(base, LR, ES)
    flaky = answers(ES, es_solution=FLAKY)
    flaky["es_solution"] = "import random\n\n" + flaky["es_solution"]
    submissions = write_class(
        base / "submissions",
        {
            "alice": {LR: answers(LR), ES: answers(ES)},
            "bob[1]": {ES: flaky},
            "eve ": {ES: flaky},
            "lr_linear": {
                LR: answers(
                    LR,
                    lr_solution=(
                        "min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))",
                        "min_lr + (max_lr - min_lr) * i / (num_steps - 1)",
                    ),
                )
            },
        },
    )
    outputs = []
    for run in (1, 2):
        out = base / f"grades{run}.csv"
        result = run_cli(
            "grade",
            str(submissions),
            "--solutions",
            str(solutions),
            "--out",
            str(out),
            "--feedback",
            str(base / f"feedback{run}"),
            "--timeout",
            "60",
            "--jobs",
            "2",
            *SANDBOX_ARGS,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(out.read_bytes())
    return outputs, base


def test_regrading_gives_byte_identical_csvs(regraded):
    (first, second), base = regraded
    assert first == second
    rows = {(r["student"], r["notebook"]): r for r in read_csv(base / "grades1.csv")}
    assert float(rows[("alice", ES)]["total"]) == 9 and float(rows[("alice", LR)]["total"]) == 10
    assert float(rows[("lr_linear", LR)]["total"]) == 8
    # The flaky students lost points: their grade depends on the draws (the same on both runs: seeded).
    for student in ("bob[1]", "eve "):
        assert float(rows[(student, ES)]["total"]) < 9, rows[(student, ES)]


def test_regrade_feedback_shows_the_same_seeds(regraded):
    _, base = regraded
    for run in (1, 2):
        page = (base / f"feedback{run}" / "eve " / "16_exercise_early_stopping.html").read_text(encoding="utf-8")
        assert f"graine {seed_for('eve ', ES, 'es_test_patience')} " in page
        assert f"graine {seed_for('eve', ES, 'es_test_patience')} " not in page


def test_broken_environment_stops_at_the_canary(tmp_path):
    """Solutions that fall short of full marks: nothing is graded, the command says why and exits 3."""
    solutions = instructor_folder(
        tmp_path,
        ES,
        **{
            "16_exercise_early_stopping": (
                "es_solution",
                "self.counter >= self.patience",
                "self.counter > self.patience",
            )
        },
    )
    submissions = write_class(tmp_path / "submissions", {"alice": {ES: answers(ES)}})
    out = tmp_path / "grades.csv"
    result = run_cli(
        "grade", str(submissions), "--solutions", str(solutions), "--out", str(out), "--jobs", "1", *SANDBOX_ARGS
    )
    assert result.returncode == 3, result.stdout + result.stderr
    message = result.stderr.strip().splitlines()
    message = message[next(i for i, line in enumerate(message) if line.startswith("ftcourse grade: ")) :]
    assert message[0] == (
        "ftcourse grade: the instructor's solutions do not earn full marks, so the grading "
        "environment is broken (nothing was graded):"
    )
    assert message[1] == "  16_exercise_early_stopping.ipynb: graded, 7 / 9"
    assert not out.exists() and not partial_path(out).exists()


@pytest.fixture(scope="module")
def unsandboxed(tmp_path_factory):
    """A class graded with --no-sandbox (ES and the rubric exercise): the folder and the command's result."""
    base = tmp_path_factory.mktemp("nosandbox")
    solutions = instructor_folder(base, SENTIMENT, ES)
    submissions = write_class(
        base / "submissions",
        {
            "alice": {ES: answers(ES), SENTIMENT: answers(SENTIMENT)},
            "bob": {SENTIMENT: answers(SENTIMENT)},
        },
    )
    args = ["grade", str(submissions), "--solutions", str(solutions), "--out", str(base / "grades.csv"), "--jobs", "2"]
    result = run_cli(*args, "--no-sandbox")
    assert result.returncode == 0, result.stdout + result.stderr
    return base, args, result


def test_no_sandbox_warns_first_and_says_so_in_the_csv(unsandboxed):
    base, _, result = unsandboxed
    # The warning comes before anything else, progress bars included: before any student code runs.
    assert result.stderr.strip().splitlines()[0] == (
        "WARNING: --no-sandbox: student code will run with your permissions, your files and the network. "
        "Grade untrusted submissions on Linux with bubblewrap."
    )
    assert "sandbox: none (turned off with --no-sandbox)" in result.stdout.splitlines()
    rows = read_csv(base / "grades.csv")
    assert {r["sandbox"] for r in rows} == {"none"} and len(rows) == 4
    assert [(r["student"], r["status"], r["total"]) for r in rows if r["notebook"] == ES] == [
        ("alice", "graded", "9"),
        ("bob", "needs review", ""),
    ]  # bob handed in no ES notebook: a row says so


def test_grades_are_never_replaced_without_force_and_marks_are_merged(unsandboxed):
    base, args, _ = unsandboxed
    grades, marks = base / "grades.csv", base / "marks.csv"
    # The rubric exercise's lines were added to marks.csv, empty, for the instructor to fill in.
    lines = marks.read_text(encoding=ENCODING).splitlines()
    assert lines == ["student,notebook,mark,max,comment", f"alice,{SENTIMENT},,10,", f"bob,{SENTIMENT},,10,"]
    before = grades.read_bytes()
    again = run_cli(*args, "--no-sandbox")
    assert again.returncode == 2
    assert (
        again.stderr.strip() == f"ftcourse grade: {grades} exists: pass --force to replace it, or choose another --out"
    )
    assert grades.read_bytes() == before
    # The instructor types bob's mark; alice's stays empty. Grading again with --force merges it.
    typed = marks.read_text(encoding=ENCODING).replace(f"bob,{SENTIMENT},,10,", f'bob,{SENTIMENT},"8,5",10,"=clair"')
    marks.write_text(typed, encoding=ENCODING)
    typed_bytes = marks.read_bytes()
    forced = run_cli(*args, "--no-sandbox", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    rows = {(r["student"], r["notebook"]): r for r in read_csv(grades)}
    assert (rows[("bob", SENTIMENT)]["status"], rows[("bob", SENTIMENT)]["total"]) == ("graded", "8.5")
    assert rows[("bob", SENTIMENT)]["reason"] == "marked by hand: =clair"
    assert (rows[("alice", SENTIMENT)]["status"], rows[("alice", SENTIMENT)]["total"]) == ("needs review", "")
    assert marks.read_bytes() == typed_bytes  # nothing added (no new rubric submission), nothing changed


def test_crash_keeps_the_rows_already_graded(tmp_path):
    """The command killed after its first student: grades.partial.csv holds that student, grades.csv is not
    written, and the next run refuses to go on without --force rather than replace the partial file."""
    solutions = instructor_folder(tmp_path, ES)
    submissions = write_class(tmp_path / "submissions", {f"student{i}": {ES: answers(ES)} for i in range(6)})
    out = tmp_path / "grades.csv"
    partial = partial_path(out)
    scratch = tmp_path / "scratch"  # the run's temporary folder (a kill leaves it behind)
    scratch.mkdir()
    command = [
        sys.executable,
        "-m",
        "ftcourse.cli",
        "grade",
        str(submissions),
        "--solutions",
        str(solutions),
        "--out",
        str(out),
        "--jobs",
        "1",
        *SANDBOX_ARGS,
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 400
        while time.time() < deadline and process.poll() is None:
            if partial.exists() and len(partial.read_text(encoding=ENCODING).splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # the grader and its workers, at once
    finally:
        process.wait(timeout=60)
    rows = read_csv(partial)
    assert 1 <= len(rows) < 6 and {r["status"] for r in rows} == {"graded"}
    assert all(float(r["total"]) == 9 for r in rows)
    assert not out.exists()
    kept = partial.read_bytes()
    again = run_cli("grade", str(submissions), "--solutions", str(solutions), "--out", str(out))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"ftcourse grade: {partial} holds the rows of an interrupted run: keep it "
        "elsewhere, or pass --force (it is then kept under a name with its date and time)"
    )
    assert partial.read_bytes() == kept
    # --force grades again and keeps the interrupted run's rows under a dated name, byte for byte.
    forced = run_cli(
        "grade",
        str(submissions),
        "--solutions",
        str(solutions),
        "--out",
        str(out),
        "--force",
        "--delimiter",
        ";",
        *SANDBOX_ARGS,
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    dated = sorted(tmp_path.glob("grades.partial-*.csv"))
    assert len(dated) == 1 and dated[0].read_bytes() == kept
    assert re.fullmatch(r"grades\.partial-\d{8}-\d{6}\.csv", dated[0].name)
    assert f"kept the interrupted run's rows as {dated[0]}" in forced.stdout.splitlines()
    assert not partial.exists()
    # --delimiter ';': what a spreadsheet in a French locale opens as columns.
    with open(out, newline="", encoding=ENCODING) as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    assert len(rows) == 6 and {r["total"] for r in rows} == {"9"}


def test_release_refuses_to_clobber_an_edited_notebook(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "course", course)
    notebook = nbformat.read(course / ES, as_version=4)
    notebook.cells[0].source += "\n\nUne précision ajoutée dans course/ par erreur."
    nbformat.write(notebook, course / ES)
    before = {p.name: p.read_bytes() for p in course.glob("*.ipynb")}
    result = run_cli("release", "--course", str(course))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"  {course / ES}" in result.stderr.splitlines()
    assert re.search(r"nothing was written", result.stderr)
    assert {p.name: p.read_bytes() for p in course.glob("*.ipynb")} == before
    forced = run_cli("release", "--course", str(course), "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert f"released {course / ES}" in forced.stdout.splitlines()
    assert (course / ES).read_bytes() == (ROOT / "course" / ES).read_bytes()
    assert all((course / n).read_bytes() == b for n, b in before.items() if n != ES)


# What a student must never see: nbgrader's markers in a notebook; solution bodies, hidden-test code and quiz
# explanations in any file (the ftcourse package handed out for `ftcourse doctor` and `run` names the markers).
MARKERS = ["BEGIN SOLUTION", "BEGIN HIDDEN TESTS"]
SECRETS = [
    "improved = score < self.best_score - self.min_delta",
    "model_state = copy.deepcopy(model.state_dict())",
    "_RecordingSGD",
    "reference_trace",
    "explanations = {",
    "Juste : ",
    "_check.plain((stopper.best_score, stopper.counter)",
]  # no quotes: the .ipynb file escapes them
# The library version of exercise 15's contract is in the handout by design (lesson 05 teaches it, issue 14): it
# saves the state with the exercise's idiom. This is the only fingerprint a handed-out file may hold.
LIBRARY_VERSIONS = {"helpers/training/lr_finder.py": {"model_state = copy.deepcopy(model.state_dict())"}}


def test_handout_holds_no_solution(tmp_path):
    target = tmp_path / "handout"
    result = run_cli("handout", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (target / "solutions").exists() and not (target / "tests").exists()
    assert sorted(p.name for p in (target / "course").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "course").glob("*.ipynb")
    )
    assert (target / "helpers" / "__init__.py").is_file() and (target / "pyproject.toml").is_file()
    # what make setup reads before installing: the preflight, and the hashes the asset wheels are checked against
    assert (target / ".ci" / "preflight.py").is_file() and (target / "asset-hashes.txt").is_file()
    assert sorted(p.name for p in (target / ".ci").iterdir()) == ["preflight.py"]
    leaks = []
    for path in target.rglob("*"):
        if path.is_file() and path.suffix in (".ipynb", ".py", ".md", ".toml", ".txt", ".yml", ""):
            text = path.read_text(encoding="utf-8", errors="replace")
            secrets = SECRETS + MARKERS if path.suffix == ".ipynb" else SECRETS
            name = path.relative_to(target).as_posix()
            leaks += [(name, s) for s in secrets if s in text and s not in LIBRARY_VERSIONS.get(name, set())]
    assert leaks == []
    # The solutions really do hold them: the check above can fail.
    sources = "".join((ROOT / "solutions" / n).read_text(encoding="utf-8") for n in (QUIZ, LR, ES))
    assert all(s in sources for s in SECRETS + MARKERS)
    again = run_cli("handout", str(target))
    assert again.returncode == 2 and "exists and is not an empty folder" in again.stderr
    # No grading internals: only what ftcourse doctor, run, install-assets and normalize need.
    assert sorted(p.name for p in (target / "ftcourse").glob("*.py")) == sorted(STUDENT_MODULES)
    for internal in ("grader_prelude.py", "sandbox.py", "grading.py", "autograde_hooks.py"):
        assert (ROOT / "ftcourse" / internal).is_file() and not (target / "ftcourse" / internal).exists()
    # -S: without site-packages, where this checkout's editable install would also find the grading modules.
    handed = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import ftcourse; "
            "print(ftcourse.__file__); from ftcourse.cli import main; sys.exit(main(sys.argv[2:]))",
            str(target),
            "grade",
            str(tmp_path),
            "--out",
            str(tmp_path / "g.csv"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert handed.stdout.strip() == str(target / "ftcourse" / "__init__.py")
    assert (handed.returncode, handed.stderr.strip()) == (
        2,
        "ftcourse grade: an instructor command, not part of the students' hand-out",
    )


def test_sandbox_is_available_where_ci_requires_it():
    """CI installs bubblewrap (.ci/run) and sets FTCOURSE_REQUIRE_SANDBOX: there, no sandbox is a failure."""
    if os.environ.get("FTCOURSE_REQUIRE_SANDBOX"):
        assert SANDBOX.kind == BWRAP, SANDBOX.detail
    elif SANDBOX.kind != BWRAP:
        pytest.skip(f"no sandbox on this machine: {SANDBOX.detail}")
    assert SANDBOX.detail.startswith("bubblewrap")


def test_kernel_sockets_fit_when_the_temporary_folder_is_deep(tmp_path):
    """A Unix socket's path holds 107 bytes: a deep TMPDIR (pytest's, an instructor's) moves the kernel's folder
    to the system's temporary folder instead of failing to connect (the crash test above grades under one)."""
    from ftcourse.sandbox import _SOCKET_PATH_MAX, _kernel_box

    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    box = _kernel_box(str(deep))
    try:
        assert not box.startswith(str(deep)) and len(box) + len("/ipc-99999") <= _SOCKET_PATH_MAX
    finally:
        os.rmdir(box)
    short = _kernel_box(str(tmp_path.parent.parent)) if len(str(tmp_path.parent.parent)) < 60 else None
    if short is not None:
        assert os.path.dirname(short) == str(tmp_path.parent.parent)
        os.rmdir(short)


def test_folders_under_tmp_stay_visible_in_the_sandbox():
    """A Python environment or checkout under /tmp (a clean CI clone, an instructor's scratch copy) must stay
    readable in the kernel's sandbox: its empty /tmp is mounted first, the read-only folders on top of it."""
    if SANDBOX.kind != BWRAP:
        if os.environ.get("FTCOURSE_REQUIRE_SANDBOX"):
            pytest.fail(SANDBOX.detail)
        pytest.skip(f"no sandbox on this machine: {SANDBOX.detail}")
    from ftcourse.sandbox import _bwrap_prefix

    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        (Path(folder) / "venv-marker").write_text("here", encoding="utf-8")
        os.chmod(folder, 0o755)
        command = _bwrap_prefix(SANDBOX.bwrap, [folder], private_tmp=True, tmp_size=2**20)
        visible = subprocess.run(command + ["--", "/bin/cat", f"{folder}/venv-marker"], capture_output=True, text=True)
        assert (visible.returncode, visible.stdout) == (0, "here"), visible.stderr
        # The rest of the real /tmp stays hidden: only the folder named is shown.
        listing = subprocess.run(command + ["--", "/bin/ls", "-A", "/tmp"], capture_output=True, text=True)
        assert listing.stdout.split() == [os.path.basename(folder)], listing.stdout


def test_grading_refuses_to_run_without_a_sandbox(tmp_path):
    """No bubblewrap (FTCOURSE_BWRAP names a missing program): exit 2 before any student code, the cause and the
    fix named; a submission that would leave a file behind did not run, and no grades file was started."""
    solutions = instructor_folder(tmp_path, ES)
    canary = tmp_path / "student-code-ran"
    answered = answers(ES)
    answered["es_solution"] += f"\n\nopen({str(canary)!r}, 'w').write('ran')\n"
    submissions = write_class(tmp_path / "submissions", {"alice": {ES: answered}})
    out = tmp_path / "grades.csv"
    result = run_cli(
        "grade",
        str(submissions),
        "--solutions",
        str(solutions),
        "--out",
        str(out),
        env={"FTCOURSE_BWRAP": str(tmp_path / "no-bwrap-here")},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"ftcourse grade: no sandbox, so nothing was run: bubblewrap is not installed "
        f"(no bwrap {tmp_path / 'no-bwrap-here'})."
    )
    assert lines[1].startswith("  To fix: install bubblewrap: Debian/Ubuntu `sudo apt-get install bubblewrap`")
    assert "pass --no-sandbox" in lines[2]
    assert not canary.exists() and not out.exists() and not partial_path(out).exists()
    doctor = run_cli("doctor", "--grading", env={"FTCOURSE_BWRAP": str(tmp_path / "no-bwrap-here")})
    assert doctor.returncode == 1 and "[FAIL] sandbox: bubblewrap is not installed" in doctor.stdout


def test_doctor_grading_imports_torch_in_the_sandbox():
    if SANDBOX.kind != BWRAP:
        if os.environ.get("FTCOURSE_REQUIRE_SANDBOX"):
            pytest.fail(SANDBOX.detail)
        pytest.skip(f"no sandbox on this machine: {SANDBOX.detail}")
    result = run_cli("doctor", "--grading")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^  \[ok\] sandboxed import torch: torch \S+ in [\d.]+ s$", result.stdout, re.M), result.stdout
    assert re.search(r"^  limits per kernel: 256 processes, 4096 MB of memory, ", result.stdout, re.M), result.stdout


def test_normalize_replaces_a_notebook_in_one_rename(tmp_path):
    """solutions/ holds the only copy of the hidden tests: normalize writes a new file and renames it into place,
    so that an interrupted run leaves the old notebook or the new one, never half of one."""
    notebook = tmp_path / ES
    shutil.copy2(ROOT / "solutions" / ES, notebook)
    data = nbformat.read(notebook, as_version=4)
    next(cell for cell in data.cells if cell.cell_type == "code").execution_count = 3  # for normalize to clean
    nbformat.write(data, notebook)
    before = notebook.stat().st_ino
    result = run_cli("normalize", str(notebook))
    assert result.returncode == 0 and f"normalised {notebook}" in result.stdout, result.stdout + result.stderr
    assert notebook.stat().st_ino != before  # a new file renamed over the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == [ES]  # no temporary file left
    assert run_cli("normalize", "--check", str(notebook)).returncode == 0
