"""Release the graded notebooks and autograde a whole class with nbgrader.

Each graded notebook of ``solutions/`` (instructor source: solutions and
hidden tests) is one nbgrader assignment named after the file. ``release``
generates the student versions into ``course/``; ``grade`` rebuilds the same
gradebook in a temporary course folder and autogrades every student, in
parallel worker processes that each own a copy of that folder (nbgrader
itself grades one student at a time).

A submission that could not be graded is never reported as 0: its row says
``needs review`` and why. Used by ``ftcourse release`` and ``ftcourse grade``;
the workflow is described in README.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ftcourse.paths import solutions_dir as default_solutions_dir
from ftcourse.runner import is_nbgrader_assignment, normalize_notebook

COURSE_ID = "llm-finetuning-course"
GRADED = "graded"
NEEDS_REVIEW = "needs review"
CSV_COLUMNS = ["student", "notebook", "status", "reason", "total", "max"]


class GradingUsageError(ValueError):
    """A problem with the command's arguments (missing folder, nothing to grade)."""


def graded_sources(solutions_dir: Path | None = None) -> list[Path]:
    """Instructor notebooks of ``solutions/`` that carry nbgrader metadata, in course order."""
    solutions_dir = solutions_dir or default_solutions_dir()
    return [p for p in sorted(solutions_dir.glob("*.ipynb")) if is_nbgrader_assignment(nbformat.read(p, as_version=4))]


def assignment_id(notebook: Path | str) -> str:
    return Path(notebook).stem


def _config(root: Path, timeout: int):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = COURSE_ID
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Execute.timeout = timeout  # bounds an infinite loop: the cell is interrupted, grading goes on
    config.Execute.kernel_name = "python3"
    config.KernelManager.transport_encryption = "auto"
    config.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back and graded
    config.Application.log_level = "ERROR"
    return config


def _api(root: Path, timeout: int):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    # nbgrader creates its gradebook with the `alembic` executable of this environment.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = _config(root, timeout)
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def build_course(root: Path, sources: list[Path], timeout: int = 120) -> dict[str, Path]:
    """Generate every assignment into the nbgrader course folder ``root``.

    Returns ``{notebook file name: released notebook path}``.
    """
    import warnings

    released = {}
    api = _api(root, timeout)
    for source in sources:
        aid = assignment_id(source)
        (root / "source" / aid).mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / "source" / aid / source.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = api.generate_assignment(aid)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not generate {source.name}:\n{result.get('error') or result.get('log')}")
        released[source.name] = root / "release" / aid / source.name
    return released


def released_notebook(path: Path) -> nbformat.NotebookNode:
    """A released notebook as stored in ``course/``: normalised, outputs cleared."""
    return normalize_notebook(nbformat.read(path, as_version=4))


def release(solutions_dir: Path, course_dir: Path) -> list[Path]:
    """Write the student version of every graded notebook of ``solutions_dir`` into ``course_dir``."""
    sources = graded_sources(solutions_dir)
    if not sources:
        raise GradingUsageError(f"no nbgrader notebooks in {solutions_dir}")
    written = []
    with tempfile.TemporaryDirectory(prefix="ftcourse-release-") as tmp:
        for name, path in build_course(Path(tmp), sources).items():
            target = course_dir / name
            nbformat.write(released_notebook(path), target)
            written.append(target)
    return written


_SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n", re.MULTILINE)


def solution_answers(source: Path) -> dict[str, str]:
    """grade_id -> the instructor's answer of each solution cell of ``source``, without the markers."""
    return {
        cell.metadata["nbgrader"]["grade_id"]: _SOLUTION_MARKERS.sub("", cell.source)
        for cell in nbformat.read(source, as_version=4).cells
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution")
    }


def answered_notebook(released: Path, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The released notebook with its answer cells replaced by ``answers`` (grade_id -> source):
    a submission as a student makes one. Used by the round-trip tests and the grading benchmark."""
    notebook = nbformat.read(released, as_version=4)
    for cell in notebook.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return notebook


# --- grading ------------------------------------------------------------------------


@dataclass
class GradeRow:
    student: str
    notebook: str
    status: str = GRADED
    reason: str = ""
    total: float | None = None
    max_score: float | None = None
    steps: dict[str, float] = field(default_factory=dict)


def _metas(notebook: nbformat.NotebookNode) -> list[dict]:
    return [cell.get("metadata", {}).get("nbgrader", {}) for cell in notebook.cells]


def _is_test(meta: dict) -> bool:
    return bool(meta.get("grade")) and not meta.get("solution") and not meta.get("task")


def is_manually_graded(notebook: nbformat.NotebookNode) -> bool:
    """True when no cell is an autograded test: the instructor grades it by hand (rubric)."""
    return not any(_is_test(meta) for meta in _metas(notebook))


def max_points(notebook: nbformat.NotebookNode) -> float:
    return float(sum(meta.get("points", 0) for meta in _metas(notebook) if meta.get("grade") or meta.get("task")))


def _cell_problems(submitted: nbformat.NotebookNode, released: nbformat.NotebookNode) -> str:
    """Test cells and read-only cells that a submission deleted or edited (nbgrader restores them)."""
    protected = {
        meta["grade_id"]: ("test cell" if _is_test(meta) else "read-only cell", cell.source)
        for cell, meta in zip(released.cells, _metas(released))
        if meta.get("grade_id") and (meta.get("locked") or _is_test(meta))
    }
    found = {meta.get("grade_id"): cell.source for cell, meta in zip(submitted.cells, _metas(submitted))}
    problems: dict[str, list[str]] = {}
    for grade_id, (kind, source) in protected.items():
        if grade_id not in found:
            problems.setdefault(f"{kind} missing", []).append(grade_id)
        elif found[grade_id].strip() != source.strip():
            problems.setdefault(f"{kind} changed", []).append(grade_id)
    return "; ".join(f"{what}: {', '.join(ids)}" for what, ids in problems.items())


def _timeouts(autograded: Path) -> list[str]:
    if not autograded.exists():
        return []
    notebook = nbformat.read(autograded, as_version=4)
    hits = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "CellTimeoutError":
                hits.append(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {index}")
    return hits


def _failure_reason(result: dict) -> str:
    text = f"{result.get('error') or ''}\n{result.get('log') or ''}"
    if "DeadKernel" in text or "Kernel died" in text or "kernel died" in text:
        return "kernel died"
    if "UnresponsiveKernelError" in text:
        return "kernel stopped responding"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "autograde failed: " + (lines[-1][:200] if lines else "no log")


def _grade_students(master: str, work: str, students: list[tuple[str, str]], notebooks: list[str], timeout: int,
                    feedback_dir: str | None) -> list[GradeRow]:
    """Worker: grade ``students`` (id, folder) in a private copy of the ``master`` course folder."""
    import warnings

    from nbgrader.api import Gradebook

    warnings.simplefilter("ignore")
    # Kernels inherit this: demonstration cells run on small data, and nothing reaches the Hub.
    os.environ["FTCOURSE_FAST"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    root = Path(work)
    shutil.copytree(master, root)
    api = _api(root, timeout)
    released_by_name = {name: nbformat.read(root / "release" / assignment_id(name) / name, as_version=4) for name in notebooks}
    rows: list[GradeRow] = []
    for student, folder in students:
        for name in notebooks:
            aid = assignment_id(name)
            row = GradeRow(student, name)
            rows.append(row)
            path = Path(folder) / name
            if not path.is_file():
                row.status, row.reason = NEEDS_REVIEW, "notebook missing"
                continue
            try:
                submitted = nbformat.read(path, as_version=4)
            except Exception as error:  # json and nbformat raise several kinds on a broken file
                row.status, row.reason = NEEDS_REVIEW, f"notebook not valid JSON ({type(error).__name__})"
                continue
            released = released_by_name[name]
            if is_manually_graded(released):
                # Nothing to autograde: executing it would only re-run the student's training.
                row.status, row.reason = NEEDS_REVIEW, "graded by hand with the rubric"
                row.max_score = max_points(released)
                continue
            cell_problems = _cell_problems(submitted, released)
            target = root / "submitted" / student / aid
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
            result = api.autograde(aid, student)
            if not result["success"]:
                row.status, row.reason = NEEDS_REVIEW, _failure_reason(result)
                continue
            with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
                notebook = gradebook.find_submission_notebook(Path(name).stem, aid, student)
                row.steps = {grade.name: float(grade.score) for grade in notebook.grades}
                row.total, row.max_score = float(notebook.score), float(notebook.max_score)
                manual = [grade.name for grade in notebook.grades if grade.needs_manual_grade]
            reasons = []
            timeouts = _timeouts(root / "autograded" / student / aid / name)
            if timeouts:
                reasons.append(f"cell timeout ({timeout} s): {', '.join(timeouts)}")
            if cell_problems:
                reasons.append(cell_problems)
            if manual:
                reasons.append(f"manual grading needed: {', '.join(manual)}")
            if reasons:
                row.status, row.reason = NEEDS_REVIEW, "; ".join(reasons)
            if feedback_dir:
                feedback = api.generate_feedback(aid, student)
                html = root / "feedback" / student / aid / f"{Path(name).stem}.html"
                if feedback["success"] and html.exists():
                    destination = Path(feedback_dir) / student
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(html, destination / html.name)
    return rows


def find_students(submissions: Path, notebooks: list[str]) -> list[tuple[str, Path]]:
    """Student folders of ``submissions`` (folder name = student id); usage errors if there is nothing to grade."""
    if not submissions.is_dir():
        raise GradingUsageError(f"{submissions}: no such folder")
    students = [(p.name, p) for p in sorted(submissions.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not students:
        raise GradingUsageError(f"{submissions}: no student folders (expected one folder per student)")
    if not any((folder / name).exists() for _, folder in students for name in notebooks):
        raise GradingUsageError(
            f"{submissions}: no student folder contains a graded notebook (expected file names: {', '.join(notebooks)})"
        )
    return students


def grade(
    submissions: Path,
    solutions_dir: Path | None = None,
    timeout: int = 60,
    jobs: int = 2,
    feedback_dir: Path | None = None,
    progress: bool = True,
) -> list[GradeRow]:
    """Autograde every student folder of ``submissions``; one row per student and graded notebook."""
    from tqdm.auto import tqdm

    sources = graded_sources(solutions_dir)
    if not sources:
        raise GradingUsageError(f"no nbgrader notebooks in {solutions_dir or default_solutions_dir()}")
    notebooks = [p.name for p in sources]
    students = find_students(submissions, notebooks)
    jobs = max(1, min(jobs, len(students)))
    with tempfile.TemporaryDirectory(prefix="ftcourse-grade-") as tmp:
        master = Path(tmp) / "master"
        build_course(master, sources, timeout)
        shares = [students[i::jobs] for i in range(jobs)]
        args = [
            (str(master), str(Path(tmp) / f"worker{i}"), [(s, str(f)) for s, f in share], notebooks, timeout,
             str(feedback_dir) if feedback_dir else None)
            for i, share in enumerate(shares)
        ]
        rows: list[GradeRow] = []
        bar = tqdm(total=len(students), desc="grading", unit="student", disable=not progress)
        if jobs == 1:
            rows = _grade_students(*args[0])
            bar.update(len(students))
        else:
            import multiprocessing

            with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                for share_rows in pool.map(_grade_students, *zip(*args)):
                    rows += share_rows
                    bar.update(len({row.student for row in share_rows}))
        bar.close()
    order = {student: i for i, (student, _) in enumerate(students)}
    return sorted(rows, key=lambda row: (order[row.student], notebooks.index(row.notebook)))


def step_columns(solutions_dir: Path | None = None) -> list[str]:
    """Names of the graded steps (test cells), in notebook order: the CSV's per-step columns."""
    columns = []
    for source in graded_sources(solutions_dir):
        for meta in _metas(nbformat.read(source, as_version=4)):
            if meta.get("grade") or meta.get("task"):
                columns.append(meta["grade_id"])
    return columns


def write_csv(rows: list[GradeRow], path: Path, steps: list[str]) -> None:
    """One row per student and notebook: identity, status, reason, total, max, then points per step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS + steps)
        for row in rows:
            fmt = lambda value: "" if value is None else f"{value:g}"  # noqa: E731
            writer.writerow(
                [row.student, row.notebook, row.status, row.reason, fmt(row.total), fmt(row.max_score)]
                + [fmt(row.steps.get(step)) for step in steps]
            )


def summary(rows: list[GradeRow]) -> str:
    graded = sum(row.status == GRADED for row in rows)
    students = len({row.student for row in rows})
    return f"{students} students, {len(rows)} notebooks: {graded} graded, {len(rows) - graded} need review"


def released_matches_source(course_dir: Path, solutions_dir: Path) -> list[str]:
    """Names of graded notebooks whose released copy in ``course_dir`` is missing or out of date."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="ftcourse-check-") as tmp:
        for name, path in build_course(Path(tmp), graded_sources(solutions_dir)).items():
            current = course_dir / name
            fresh = json.loads(nbformat.writes(released_notebook(path)))
            if not current.exists() or json.loads(current.read_text(encoding="utf-8")) != fresh:
                stale.append(name)
    return stale
