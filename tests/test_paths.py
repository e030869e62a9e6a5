"""Where the course is (ftcourse.paths): the rule, the CLI from any working directory, and a wheel install.

The rule: ``--root`` / ``FTCOURSE_ROOT``, else the working directory or a
parent holding ``course/`` and ``solutions/``, else the checkout the package
was imported from. The in-process tests use small fake roots (two empty
folders). The command-line tests use a tiny real course root: a copy of one
graded notebook of ``solutions/``, released there by ``ftcourse release``.
The wheel tests build and install the project as a non-editable wheel into a
private folder and run ``ftcourse`` from it, where there is no checkout to fall
back on: release, check and grade with real nbgrader.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import ftcourse.paths as paths_module
from ftcourse.grading import CSV_COLUMNS, answered_notebook, max_points, solution_answers, step_columns
from ftcourse.paths import ROOT_ENV, CourseRootNotFound, course_dir, course_root, solutions_dir
from tests.conftest import ROOT

ES = "16_exercise_early_stopping.ipynb"


# --- helpers ------------------------------------------------------------------------


def fake_root(folder: Path) -> Path:
    """A minimal course root: the two folders the rule looks for, nothing else."""
    (folder / "course").mkdir(parents=True)
    (folder / "solutions").mkdir()
    return folder


def cli_env(**extra: str) -> dict:
    """The test session's environment without anything that points at a course or a package."""
    env = {k: v for k, v in os.environ.items() if k not in (ROOT_ENV, "PYTHONPATH")}
    env.update(HF_HUB_OFFLINE="1", FTCOURSE_FAST="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def ftcourse(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m ftcourse.cli ARGS`` in ``cwd``; ``env`` is the whole environment (default: cli_env())."""
    return subprocess.run(
        [sys.executable, "-m", "ftcourse.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else cli_env(),
        timeout=timeout,
    )


def python(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def output(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


@pytest.fixture
def no_root_env(monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)


# --- 1. the rule, in process (editable install) ---------------------------------------


def test_this_session_imports_the_editable_checkout():
    # Precondition of the fallback tests: the package comes from this checkout, not from a wheel.
    assert Path(paths_module.__file__).resolve() == ROOT / "ftcourse" / "paths.py"


def test_env_var_names_the_root(tmp_path, monkeypatch):
    root = fake_root(tmp_path / "elsewhere" / "my course")
    monkeypatch.setenv(ROOT_ENV, str(root))
    monkeypatch.chdir(fake_root(tmp_path / "cwd_root"))  # the variable wins over the working directory
    assert course_root() == root.resolve()
    assert course_dir() == root.resolve() / "course" and solutions_dir() == root.resolve() / "solutions"


def test_relative_env_var_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    fake_root(tmp_path / "here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ROOT_ENV, "here")
    assert course_root() == (tmp_path / "here").resolve()


@pytest.mark.parametrize("what", ["missing folder", "only course/", "only solutions/"])
def test_invalid_env_var_is_an_error_naming_the_variable(tmp_path, monkeypatch, what):
    target = tmp_path / "target"
    if what == "only course/":
        (target / "course").mkdir(parents=True)
    elif what == "only solutions/":
        (target / "solutions").mkdir(parents=True)
    monkeypatch.setenv(ROOT_ENV, str(target))
    # Neither a valid working directory nor the package's checkout rescues a wrong variable.
    monkeypatch.chdir(fake_root(tmp_path / "cwd_root"))
    with pytest.raises(CourseRootNotFound) as error:
        course_root()
    assert f"{ROOT_ENV}={target}" in str(error.value)
    assert "does not hold both course/ and solutions/" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


def test_explicit_root_beats_the_env_var(tmp_path, monkeypatch):
    explicit, from_env = fake_root(tmp_path / "explicit"), fake_root(tmp_path / "from_env")
    monkeypatch.setenv(ROOT_ENV, str(from_env))
    assert course_root(explicit) == explicit.resolve()
    assert course_root(str(explicit)) == explicit.resolve()
    # A valid argument is used even when the variable is wrong ...
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "nowhere"))
    assert course_root(explicit) == explicit.resolve()
    # ... and a wrong argument is an error naming --root, even when the variable is right.
    monkeypatch.setenv(ROOT_ENV, str(from_env))
    with pytest.raises(CourseRootNotFound, match=r"^--root=.*nowhere"):
        course_root(tmp_path / "nowhere")


def test_walks_up_from_a_nested_working_directory(tmp_path, monkeypatch, no_root_env):
    root = fake_root(tmp_path / "copy")
    nested = root / "course" / "notes" / "week 1"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert course_root() == root.resolve()
    assert course_root(start=root / "solutions") == root.resolve()
    assert course_root(start=root) == root.resolve()


def test_a_folder_with_only_one_of_the_two_is_walked_past(tmp_path, monkeypatch, no_root_env):
    root = fake_root(tmp_path / "copy")
    half = root / "project"
    (half / "course").mkdir(parents=True)  # course/ without solutions/: not a root
    (half / "deep").mkdir()
    monkeypatch.chdir(half / "deep")
    assert course_root() == root.resolve()


def test_nearest_root_wins(tmp_path, monkeypatch, no_root_env):
    outer = fake_root(tmp_path / "outer")
    inner = fake_root(outer / "inner")
    (inner / "deep").mkdir()
    monkeypatch.chdir(inner / "deep")
    assert course_root() == inner.resolve()


def test_working_directory_copy_beats_the_package_checkout(tmp_path, monkeypatch, no_root_env):
    root = fake_root(tmp_path / "copy")
    monkeypatch.chdir(root)
    assert course_root() == root.resolve() != ROOT


def test_unrelated_working_directory_falls_back_to_the_editable_checkout(tmp_path, monkeypatch, no_root_env):
    monkeypatch.chdir(tmp_path)
    assert course_root() == ROOT
    assert course_dir() == ROOT / "course" and solutions_dir() == ROOT / "solutions"


# --- 2. the CLI from other working directories (editable install) ---------------------


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    """A self-contained course root: one graded notebook of solutions/, released by the CLI into its course/."""
    root = fake_root(tmp_path_factory.mktemp("tiny") / "course root")
    shutil.copy2(ROOT / "solutions" / ES, root / "solutions" / ES)
    (root / "notes" / "week 1").mkdir(parents=True)
    result = ftcourse("--root", str(root), "release", cwd=tmp_path_factory.mktemp("unrelated"))
    assert result.returncode == 0, output(result)
    released = root / "course" / ES
    assert result.stdout.strip() == f"released {released.resolve()}"
    text = released.read_text(encoding="utf-8")
    assert "raise NotImplementedError()" in text and "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
    return root


@pytest.fixture(scope="module")
def stale_root(tiny_root, tmp_path_factory):
    """A copy of the tiny root whose solution changed after the release (and was saved with an execution count)."""
    root = tmp_path_factory.mktemp("stale") / "course root"
    shutil.copytree(tiny_root, root)
    notebook = nbformat.read(root / "solutions" / ES, as_version=4)
    notebook.cells[0].source += "\n\nA sentence added after the release."
    next(cell for cell in notebook.cells if cell.cell_type == "code").execution_count = 1  # and saved unclean
    nbformat.write(notebook, root / "solutions" / ES)
    return root


MODES = ["--root", ROOT_ENV, "nested cwd"]


def ftcourse_in(mode: str, root: Path, unrelated: Path, *args: str) -> subprocess.CompletedProcess:
    """``ftcourse ARGS`` told about ``root`` by ``mode``: --root or the variable (cwd unrelated), or a cwd inside it."""
    if mode == "--root":
        return ftcourse("--root", str(root), *args, cwd=unrelated)
    if mode == ROOT_ENV:
        return ftcourse(*args, cwd=unrelated, env=cli_env(**{ROOT_ENV: str(root)}))
    return ftcourse(*args, cwd=root / "notes" / "week 1")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [ROOT_ENV, "nested cwd"])  # --root: test_wheel_install_release_check_with_root
def test_release_check_finds_the_tiny_root(tiny_root, tmp_path, mode):
    result = ftcourse_in(mode, tiny_root, tmp_path, "release", "--check")
    assert result.returncode == 0, output(result)
    assert result.stdout == ""


@pytest.mark.slow
def test_release_check_fails_on_an_edited_solution(stale_root, tmp_path):
    # Exit 1 naming the copy's notebook: from a cwd inside the copy, the copy is checked, not this checkout
    # (which is up to date, and where an editable install falls back to).
    result = ftcourse_in("nested cwd", stale_root, tmp_path, "release", "--check")
    assert result.returncode == 1, output(result)
    stale = (stale_root / "course" / ES).resolve()
    assert result.stdout.splitlines() == [
        f"{stale} is missing or out of date with {stale.parent.parent / 'solutions' / ES}: run `ftcourse release`"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_normalize_check_looks_at_the_root_it_is_told(stale_root, tmp_path, mode):
    # normalize --check without arguments checks course/ and solutions/ of the course root: only the copy's
    # unclean solution is reported, nothing of this checkout.
    result = ftcourse_in(mode, stale_root, tmp_path, "normalize", "--check")
    assert result.returncode == 1, output(result)
    dirty = (stale_root / "solutions" / ES).resolve()
    index = next(
        i for i, c in enumerate(nbformat.read(dirty, as_version=4).cells) if c.get("execution_count") is not None
    )
    assert result.stdout.splitlines() == [f"{dirty}: cell {index} has stored outputs or an execution count"]


@pytest.mark.slow
def test_release_check_of_this_checkout_from_an_unrelated_cwd(tmp_path):
    """No --root, no variable, cwd outside any course: the editable install's checkout is checked.

    Exit 0 when course/ is up to date with solutions/; the notebooks may be in the middle of an edit while
    this runs, so an exit 1 is accepted as long as every complaint is about this checkout's course/.
    """
    result = ftcourse("release", "--check", cwd=tmp_path)
    assert result.returncode in (0, 1), output(result)
    assert "no course checkout found" not in result.stderr
    for line in result.stdout.splitlines():
        assert line.startswith(str(ROOT / "course") + os.sep) and "out of date" in line, output(result)


def test_run_resolves_notebook_names_in_this_checkout_from_an_unrelated_cwd(tmp_path):
    # A bare notebook name that is not in the working directory is looked up in the course root's course/.
    result = ftcourse("run", "--output", str(tmp_path / "executed"), "13_quiz.ipynb", cwd=tmp_path)
    assert result.returncode == 0, output(result)
    assert "13_quiz.ipynb" in result.stdout and "skipped" in result.stdout


def test_cli_reports_a_wrong_root_with_exit_2(tmp_path):
    wrong = ftcourse("--root", str(tmp_path / "nowhere"), "release", "--check", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, output(wrong)
    assert wrong.stderr.startswith(f"ftcourse release: --root={tmp_path / 'nowhere'}: ")
    wrong = ftcourse("release", "--check", cwd=tmp_path, env=cli_env(**{ROOT_ENV: str(tmp_path)}))
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, output(wrong)
    assert wrong.stderr.startswith(f"ftcourse release: {ROOT_ENV}={tmp_path}: ")
    assert "does not hold both course/ and solutions/" in wrong.stderr


# --- 3. a non-editable (wheel) install ------------------------------------------------


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """The project built as a wheel and installed with ``pip --target`` into a private folder.

    The wheel is built from a copy of the project files (so the build leaves nothing in the checkout).
    Returns ``(site folder, environment that imports from it)``.
    """
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in ("helpers", "ftcourse"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--no-input"]
    build = subprocess.run(
        pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(src)],
        capture_output=True,
        text=True,
        cwd=base,
        env=cli_env(),
        timeout=300,
    )
    assert build.returncode == 0, output(build)
    (wheel,) = (base / "dist").glob("llm_finetuning_course-*.whl")
    site = base / "site"
    install = subprocess.run(
        pip + ["install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        cwd=base,
        env=cli_env(),
        timeout=300,
    )
    assert install.returncode == 0, output(install)
    # Every module of the source tree is in the wheel (subpackages included).
    for package in ("helpers", "ftcourse"):
        wanted = {p.relative_to(src) for p in (src / package).rglob("*.py")}
        assert wanted <= {p.relative_to(site) for p in (site / package).rglob("*.py")}
    return site, cli_env(PYTHONPATH=str(site))


def wheel_cli(wheel_site, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return ftcourse(*args, cwd=cwd, env=wheel_site[1])


@pytest.mark.slow
def test_wheel_install_imports_from_its_own_folder(wheel_site, tmp_path):
    site, env = wheel_site
    result = python(
        "import json, ftcourse, ftcourse.paths, ftcourse.cli, helpers, helpers.environment\n"
        "print(json.dumps([m.__file__ for m in (ftcourse, ftcourse.paths, ftcourse.cli, helpers, helpers.environment)]))",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, output(result)
    for file in json.loads(result.stdout):
        assert Path(file).resolve().is_relative_to(site.resolve()), (
            f"{file} is not from the wheel (the editable finder won)"
        )
    # The wheel's package folder is not inside a checkout: there is nothing to fall back on.
    assert not (site / "course").exists() and not (site.parent / "course").exists()


@pytest.mark.slow
def test_wheel_install_without_a_root_is_a_clear_error(wheel_site, tmp_path):
    site, env = wheel_site
    unrelated = tmp_path / "somewhere" / "else"
    unrelated.mkdir(parents=True)
    result = python(
        "from ftcourse.paths import CourseRootNotFound, course_root\n"
        "try:\n    print('found', course_root())\nexcept CourseRootNotFound as error:\n    print('raised', error)\n",
        cwd=unrelated,
        env=env,
    )
    assert result.returncode == 0, output(result)
    assert result.stdout.startswith(f"raised no course checkout found: neither {unrelated.resolve()} nor its parents")
    for hint in ("installed ftcourse package is not inside a checkout", "--root DIR", f"{ROOT_ENV}=DIR"):
        assert hint in result.stdout

    for command in (["release", "--check"], ["grade", str(tmp_path), "--out", "g.csv"], ["normalize", "--check"]):
        cli = wheel_cli(wheel_site, *command, cwd=unrelated)
        assert cli.returncode == 2, output(cli)
        assert cli.stderr.startswith(f"ftcourse {command[0]}: no course checkout found: neither {unrelated.resolve()}")
        assert f"--root DIR, or set {ROOT_ENV}=DIR." in cli.stderr and "Traceback" not in cli.stderr
    assert not (unrelated / "g.csv").exists()


@pytest.mark.slow
def test_wheel_install_release_check_with_root(wheel_site, tiny_root, tmp_path):
    result = wheel_cli(wheel_site, "--root", str(tiny_root), "release", "--check", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == "", output(result)


@pytest.mark.slow
def test_wheel_install_walks_up_from_a_nested_cwd(wheel_site, tiny_root, tmp_path):
    # Rule 2 without the editable fallback: `run NAME` finds NAME in the course/ of the root above the cwd.
    result = wheel_cli(
        wheel_site, "run", "--output", str(tmp_path / "executed"), ES, cwd=tiny_root / "notes" / "week 1"
    )
    assert result.returncode == 0, output(result)
    assert ES in result.stdout and "skipped" in result.stdout
    missing = wheel_cli(
        wheel_site, "run", "--output", str(tmp_path / "executed"), "13_quiz.ipynb", cwd=tiny_root / "notes"
    )
    assert missing.returncode == 2 and "13_quiz.ipynb: no such notebook" in missing.stderr, output(missing)


@pytest.mark.slow
def test_wheel_install_grades_a_class(wheel_site, tiny_root, tmp_path):
    released = tiny_root / "course" / ES
    submissions = tmp_path / "submissions"
    (submissions / "alice").mkdir(parents=True)
    (submissions / "bob").mkdir()
    nbformat.write(
        answered_notebook(released, solution_answers(tiny_root / "solutions" / ES)), submissions / "alice" / ES
    )
    shutil.copy2(released, submissions / "bob" / ES)  # handed in blank
    work = tmp_path / "work"
    work.mkdir()

    result = wheel_cli(
        wheel_site,
        "--root",
        str(tiny_root),
        "grade",
        str(submissions),
        "--out",
        "grades.csv",
        "--timeout",
        "300",
        cwd=work,
    )
    assert result.returncode == 0, output(result)
    assert "2 students, 2 notebooks: 2 graded, 0 need review" in result.stdout
    assert "wrote grades.csv" in result.stdout
    with open(
        work / "grades.csv", newline="", encoding="utf-8-sig"
    ) as handle:  # --out is relative to the cwd; BOM for spreadsheets
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, {row["student"]: row for row in reader}
    # The step columns are those of the tiny root's solutions/ (one notebook), not of this checkout's four.
    assert header == CSV_COLUMNS + step_columns(tiny_root / "solutions")
    assert step_columns(tiny_root / "solutions") != step_columns(ROOT / "solutions")
    maximum = max_points(nbformat.read(released, as_version=4))
    assert maximum > 0 and set(rows) == {"alice", "bob"}
    alice, bob = rows["alice"], rows["bob"]
    assert (alice["notebook"], alice["status"], alice["reason"]) == (ES, "graded", "")
    assert float(alice["total"]) == float(alice["max"]) == maximum, alice
    assert (bob["notebook"], bob["status"], bob["reason"]) == (ES, "graded", "")
    assert float(bob["max"]) == maximum and float(bob["total"]) < maximum, bob
