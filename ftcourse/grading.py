"""Release the graded notebooks and autograde a whole class with nbgrader, one student at a time.

Each graded notebook of ``solutions/`` (instructor source: solutions and
hidden tests) is one nbgrader assignment named after the file. ``release``
generates the student versions into ``course/`` (and refuses to overwrite a
released notebook that differs from what it would write, unless forced).
``grade`` refuses to run any student code when the sandbox is asked for (the
default) and this machine cannot give one. It rebuilds the gradebook in a
temporary course folder from a grading copy of each instructor notebook
(:func:`grading_copy`: every hidden test a function reached through a name
drawn for the run), grades the instructor's own solutions first (the canary:
anything short of full marks means the grading environment is broken, and
nothing else is graded), then hands the students out one at a time to worker
processes that each own a copy of that folder (nbgrader itself grades one
student at a time). A test keeps nbgrader's points only when the grader's
signed report confirms that the real grader ran it and it passed
(:func:`ftcourse.autograde_hooks.read_report`); feedback pages never show the
hidden tests (:mod:`ftcourse.feedback`).

Every student and every notebook is graded in its own unit of work: any
exception becomes that notebook's ``needs review`` row with the cause, and a
submission that could not be graded is never reported as 0. Kernels run in
the sandbox of :mod:`ftcourse.sandbox`, with the grader's checks of
:mod:`ftcourse.autograde_hooks`; files are sorted out by
:mod:`ftcourse.submissions`. Used by ``ftcourse release`` and ``ftcourse
grade``; the workflow is described in README.md.
"""

from __future__ import annotations

import ast
import builtins
import json
import multiprocessing
import os
import re
import secrets
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ftcourse import sandbox as sandbox_module
from ftcourse.feedback import printable
from ftcourse.files import write_atomically
from ftcourse.gradebook_csv import ENCODING, csv_text, escape, number
from ftcourse.paths import solutions_dir as default_solutions_dir
from ftcourse.runner import is_nbgrader_assignment, normalize_notebook
from ftcourse.sandbox import Limits, Sandbox, SandboxPlan, detect_sandbox
from ftcourse.submissions import (
    MAX_NOTEBOOK_MB,
    NotANotebook,
    SubmissionsError,
    find_students,
    loose_files,
    read_submission,
    sanitized,
)

COURSE_ID = "llm-finetuning-course"
GRADED = "graded"
NEEDS_REVIEW = "needs review"
REFUSED = "refused"
CSV_COLUMNS = ["student", "notebook", "status", "reason", "total", "max", "sandbox"]
RUBRIC = "graded by hand with the rubric"
SOLUTIONS_ID = "(solutions)"  # the canary's student id (its hidden tests are seeded from it)


class GradingUsageError(ValueError):
    """A problem with the command's arguments (missing folder, nothing to grade)."""


class GradingEnvironmentError(RuntimeError):
    """The instructor's own solutions did not earn full marks: the grading environment is broken."""


class ReleaseConflict(GradingUsageError):
    """Released notebooks in ``course/`` differ from what ``release`` would write (local edits would be lost)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        super().__init__(", ".join(str(p) for p in paths))


def graded_sources(solutions_dir: Path | None = None) -> list[Path]:
    """Instructor notebooks of ``solutions/`` that carry nbgrader metadata, in course order."""
    solutions_dir = solutions_dir or default_solutions_dir()
    return [p for p in sorted(solutions_dir.glob("*.ipynb")) if is_nbgrader_assignment(nbformat.read(p, as_version=4))]


def assignment_id(notebook: Path | str) -> str:
    return Path(notebook).stem


def _config(root: Path, timeout: int):
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )
    from traitlets.config import Config

    from ftcourse.autograde_hooks import GuardedExecute

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = COURSE_ID
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Execute.timeout = timeout  # bounds an infinite loop: the cell is interrupted, grading goes on
    config.Execute.kernel_name = "python3"
    config.KernelManager.transport_encryption = "auto"
    config.OverwriteCells.add_missing_cells = True  # a deleted test cell is put back and graded
    config.Application.log_level = "ERROR"
    # nbgrader's own list, with its Execute replaced by the sandboxed one that runs the grader's cells.
    config.Autograde.autograde_preprocessors = [
        GuardedExecute,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
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


_BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("__"))
_HIDDEN = re.compile(r"(### BEGIN HIDDEN TESTS\n)(.*?)(### END HIDDEN TESTS)", re.S)
_HEADER = re.compile(
    r"\Atry:\n    _grader\nexcept NameError:[^\n]*\n    from ftcourse\.grader_prelude import Grader as _Grader\n"
    r"    _grader = _Grader\(\)\n_check = _grader\.begin\((?P<args>[^\n]*)\)\n"
)


class HiddenTestFormatError(ValueError):
    """A hidden test of an instructor notebook does not start with the grader's header."""


def grading_test_source(source: str, grader_name: str) -> str:
    """A test cell as ``ftcourse grade`` runs it: each hidden block's header (``try: _grader ... _check =
    _grader.begin(...)``) replaced by a call of the block, made a function, with ``<grader_name>.begin(...)``.

    The block's names (``_check``, its reference implementations, its expected values, and the builtins it
    reads, taken from the grader's copies) are then locals of that function, which student code cannot rebind;
    the grader is reached by a name drawn for the run, and there is no fallback import to redirect through
    ``sys.modules``. The block's return is reported with ``<grader_name>.finish(...)``.
    """

    def rewrite(match: re.Match) -> str:
        body = match.group(2)
        header = _HEADER.match(body)
        if header is None:
            raise HiddenTestFormatError(
                "a hidden test block does not start with the grader's header "
                "(try: _grader ... _check = _grader.begin(...))"
            )
        tree = ast.parse(body[header.end() :])
        # The builtins the block reads, bound as its first locals from the grader's own copies: a name the
        # student binds in the notebook (`range = ...`) would otherwise shadow them.
        used = sorted({node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in _BUILTIN_NAMES})
        if used:
            names = ast.Tuple(elts=[ast.Name(id=name, ctx=ast.Store()) for name in used], ctx=ast.Store())
            value = ast.parse(f"_check.builtins({tuple(used)!r})", mode="eval").body
            tree.body.insert(0, ast.Assign(targets=[names], value=value))
        function = f"{grader_name}_test"
        definition = ast.FunctionDef(
            name=function,
            args=ast.arguments(
                posonlyargs=[], args=[ast.arg(arg="_check")], kwonlyargs=[], kw_defaults=[], defaults=[]
            ),
            body=tree.body or [ast.Pass()],
            decorator_list=[],
            returns=None,
            **({"type_params": []} if "type_params" in ast.FunctionDef._fields else {}),
        )
        code = ast.unparse(ast.fix_missing_locations(ast.Module(body=[definition], type_ignores=[])))
        # finish() is reached only if the block returned: every check passed (the anchor records it). It is called
        # in an assert: a cell compiled without its asserts never reports a finished test.
        call = f"assert {grader_name}.finish({function}({grader_name}.begin({header.group('args')})))\n"
        return f"{match.group(1)}{code}\n{call}{match.group(3)}"

    return _HIDDEN.sub(rewrite, source)


def grading_copy(source: Path, target: Path, grader_name: str) -> None:
    """Write the copy of an instructor notebook that ``ftcourse grade`` builds its gradebook from."""
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and _is_test(_meta(cell)) and "### BEGIN HIDDEN TESTS" in cell.source:
            cell.source = grading_test_source(cell.source, grader_name)
    nbformat.write(notebook, target)


def build_course(
    root: Path, sources: list[Path], timeout: int = 120, grader_name: str | None = None
) -> dict[str, Path]:
    """Generate every assignment into the nbgrader course folder ``root`` (with ``grader_name``, from the
    grading copy of each source: :func:`grading_copy`).

    Returns ``{notebook file name: released notebook path}``.
    """
    released = {}
    api = _api(root, timeout)
    for source in sources:
        aid = assignment_id(source)
        (root / "source" / aid).mkdir(parents=True, exist_ok=True)
        if grader_name:
            grading_copy(source, root / "source" / aid / source.name, grader_name)
        else:
            shutil.copy2(source, root / "source" / aid / source.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = api.generate_assignment(aid)
        if not result["success"]:
            raise RuntimeError(
                f"nbgrader could not generate {source.name}:\n{result.get('error') or result.get('log')}"
            )
        released[source.name] = root / "release" / aid / source.name
    return released


def released_notebook(path: Path) -> nbformat.NotebookNode:
    """A released notebook as stored in ``course/``: normalised, outputs cleared."""
    return normalize_notebook(nbformat.read(path, as_version=4))


@dataclass
class ReleaseResult:
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)


def _same_notebook(path: Path, fresh: nbformat.NotebookNode) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == json.loads(nbformat.writes(fresh))
    except (OSError, ValueError):
        return False


def release(solutions_dir: Path, course_dir: Path, force: bool = False) -> ReleaseResult:
    """Write the student version of every graded notebook of ``solutions_dir`` into ``course_dir``.

    A released notebook already in ``course_dir`` that differs from what would be written (an edit made there,
    or a changed source) is overwritten only with ``force``; otherwise nothing is written and
    :class:`ReleaseConflict` names them all. Each notebook is written atomically.
    """
    sources = graded_sources(solutions_dir)
    if not sources:
        raise GradingUsageError(f"no nbgrader notebooks in {solutions_dir}")
    result = ReleaseResult()
    with tempfile.TemporaryDirectory(prefix="ftcourse-release-") as tmp:
        fresh = {name: released_notebook(path) for name, path in build_course(Path(tmp), sources).items()}
    same = {
        name: (course_dir / name).exists() and _same_notebook(course_dir / name, notebook)
        for name, notebook in fresh.items()
    }
    conflicts = [course_dir / name for name in fresh if (course_dir / name).exists() and not same[name]]
    if conflicts and not force:
        raise ReleaseConflict(conflicts)
    for name, notebook in fresh.items():
        target = course_dir / name
        if same[name]:
            result.unchanged.append(target)
            continue
        text = nbformat.writes(notebook)
        write_atomically(target, text if text.endswith("\n") else text + "\n", encoding="utf-8")
        result.written.append(target)
    return result


_SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n", re.MULTILINE)


def solution_answers(source: Path) -> dict[str, str]:
    """grade_id -> the instructor's answer of each solution cell of ``source``, without the markers."""
    return {
        _meta(cell)["grade_id"]: _SOLUTION_MARKERS.sub("", cell.source)
        for cell in nbformat.read(source, as_version=4).cells
        if _meta(cell).get("solution")
    }


def answered_notebook(released: Path, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The released notebook with its answer cells replaced by ``answers`` (grade_id -> source):
    a submission as a student makes one. Used by the round-trip tests and the grading benchmark."""
    notebook = nbformat.read(released, as_version=4)
    for cell in notebook.cells:
        grade_id = _meta(cell).get("grade_id")
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
    sandbox: str = ""


def _meta(cell) -> dict:
    """A cell's nbgrader metadata, or {} (also when a damaged notebook has something else there)."""
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def _metas(notebook: nbformat.NotebookNode) -> list[dict]:
    return [_meta(cell) for cell in notebook.cells]


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
    found = {meta.get("grade_id"): cell.get("source", "") for cell, meta in zip(submitted.cells, _metas(submitted))}
    problems: dict[str, list[str]] = {}
    for grade_id, (kind, source) in protected.items():
        if grade_id not in found:
            problems.setdefault(f"{kind} missing", []).append(grade_id)
        elif str(found[grade_id]).strip() != source.strip():
            problems.setdefault(f"{kind} changed", []).append(grade_id)
    return "; ".join(f"{what}: {', '.join(ids)}" for what, ids in problems.items())


def _failure_reason(result: dict) -> str:
    text = f"{result.get('error') or ''}\n{result.get('log') or ''}"
    if "DeadKernel" in text or "Kernel died" in text or "kernel died" in text:
        return "kernel died"
    if "UnresponsiveKernelError" in text:
        return "kernel stopped responding"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "autograde failed: " + (lines[-1][:200] if lines else "no log")


@dataclass
class StudentTask:
    """One unit of work for a grading worker: one student's folder, sorted out by ftcourse.submissions."""

    student: str  # the id as written (CSV, feedback folder, seeds)
    internal: str  # nbgrader's id for it
    notebooks: dict[str, str] = field(default_factory=dict)  # graded notebook name -> file to grade
    refused: dict[str, str] = field(default_factory=dict)
    others: dict[str, str] = field(default_factory=dict)
    only: list[str] | None = None  # grade only these notebooks (the canary grades one per task)
    feedback: bool = True  # write its feedback pages (not for the canary)


@dataclass
class WorkerSettings:
    notebooks: list[str]
    packages: dict[str, tuple[str, ...]]  # notebook -> packages its hidden tests import
    timeout: int
    feedback_dir: str | None
    plan: SandboxPlan
    grader_name: str  # the run's random name of the grader in the grading copy's hidden tests
    feedback_with_tests: bool = False  # feedback pages that show the hidden tests' code (nbgrader's own page)


_WORKER: dict = {}


def _fast_scratch() -> str | None:
    """Where the gradebook and the working copies go: ``TMPDIR`` when it is set, else a memory-backed folder
    when there is one (no disk syncs), else the system's temporary folder."""
    if os.environ.get("TMPDIR"):
        return None  # tempfile uses it
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2**30:
            return str(shm)
    except OSError:
        pass
    return None


def _init_worker(master: str, work: str, settings: WorkerSettings) -> None:
    """Per worker process, once: a private copy of the course folder and the sandbox plan."""
    warnings.simplefilter("ignore")
    # Kernels get these (sandbox.PASSED_VARIABLES): demonstration cells run on small data, nothing reaches the Hub.
    os.environ["FTCOURSE_FAST"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    base = Path(tempfile.mkdtemp(prefix="worker-", dir=work))
    root = base / "course"
    shutil.copytree(master, root)
    (base / "kernels").mkdir()
    os.environ["FTCOURSE_KERNEL_DIR"] = str(base / "kernels")
    sandbox_module.PLAN = settings.plan
    _WORKER.clear()
    _WORKER.update(
        root=root,
        api=_api(root, settings.timeout),
        settings=settings,
        released={
            name: nbformat.read(root / "release" / assignment_id(name) / name, as_version=4)
            for name in settings.notebooks
        },
    )


def _grade_task(task: StudentTask) -> list[GradeRow]:
    """Worker: grade one student; any failure is that notebook's row, never the end of the run."""
    settings: WorkerSettings = _WORKER["settings"]
    rows = []
    for name in task.only or settings.notebooks:
        try:
            row = _grade_notebook(task, name)
        except Exception as error:  # the grader's own failure on this notebook: flagged, the class goes on
            row = GradeRow(task.student, name, NEEDS_REVIEW, f"grader error: {type(error).__name__}: {error}"[:300])
        row.sandbox = settings.plan.sandbox.kind
        rows.append(row)
    if task.only is None:
        for other, why in task.others.items():
            rows.append(GradeRow(task.student, other, REFUSED, why, sandbox=settings.plan.sandbox.kind))
    return rows


def _grade_notebook(task: StudentTask, name: str) -> GradeRow:
    from nbgrader.api import Gradebook

    from ftcourse import autograde_hooks
    from ftcourse.autograde_hooks import GraderCells, prelude_source, read_report
    from ftcourse.feedback import write_feedback

    root: Path = _WORKER["root"]
    api = _WORKER["api"]
    settings: WorkerSettings = _WORKER["settings"]
    aid = assignment_id(name)
    row = GradeRow(task.student, name)
    if name in task.refused:
        row.status, row.reason = NEEDS_REVIEW, task.refused[name]
        return row
    if name not in task.notebooks:
        row.status, row.reason = NEEDS_REVIEW, "notebook missing"
        return row
    released = _WORKER["released"][name]
    try:
        submitted, removed = sanitized(read_submission(Path(task.notebooks[name])))
    except NotANotebook as error:
        row.status, row.reason = NEEDS_REVIEW, str(error)
        return row
    if is_manually_graded(released):
        # Nothing to autograde: executing it would only re-run the student's training.
        row.status, row.reason = NEEDS_REVIEW, RUBRIC
        row.max_score = max_points(released)
        return row
    cell_problems = _cell_problems(submitted, released)
    for stage in ("submitted", "autograded", "feedback"):
        shutil.rmtree(root / stage / task.internal / aid, ignore_errors=True)
    target = root / "submitted" / task.internal / aid
    target.mkdir(parents=True)
    nbformat.write(submitted, target / name)
    cells = GraderCells(
        prelude_source(task.student, settings.packages.get(name, ()), settings.grader_name), settings.grader_name
    )
    autograde_hooks.CURRENT = cells
    workdir = str(root / "autograded" / task.internal / aid)
    sandbox_module.KILLED_AT_DEADLINE.discard(workdir)
    sandbox_module.LIMITS_REACHED.pop(workdir, None)
    try:
        result = api.autograde(aid, task.internal)
    finally:
        autograde_hooks.CURRENT = None
    limits = sandbox_module.LIMITS_REACHED.pop(workdir, [])
    sizes = {"/tmp": settings.plan.limits.scratch_mb, "/dev/shm": settings.plan.limits.shm_mb}
    if not result["success"]:
        if limits:
            reason = f"{' and '.join(limits)} reached: kernel stopped"
        elif workdir in sandbox_module.KILLED_AT_DEADLINE:
            reason = f"notebook time limit ({settings.plan.limits.notebook_seconds} s) reached: kernel stopped"
        else:
            reason = _failure_reason(result)
        row.status, row.reason = NEEDS_REVIEW, reason
        return row
    run = autograde_hooks.LAST_RUN
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(Path(name).stem, aid, task.internal)
        row.steps = {grade.name: float(grade.score) for grade in notebook.grades}
        row.max_score = float(notebook.max_score)
        manual = [grade.name for grade in notebook.grades if grade.needs_manual_grade]
    autograded = nbformat.read(root / "autograded" / task.internal / aid / name, as_version=4)
    reasons = []
    if run.prelude_error:
        reasons.append(f"grader error: its first cell failed ({run.prelude_error})")
    # A test earns its points only when nbgrader passed it and the grader's signed report confirms it.
    report, missing = read_report(run.probe_outputs, cells.secret)
    unverified = [
        grade_id
        for grade_id, count in _test_cells(autograded)
        if row.steps.get(grade_id) and (report is None or not report.verified(count, grade_id))
    ]
    for grade_id in unverified:
        row.steps[grade_id] = 0.0
    row.total = float(sum(row.steps.values()))
    withheld = f"not confirmed by the grader, points withheld: {', '.join(unverified)}" if unverified else ""
    if run.prelude_error:  # the grader never started: nothing could be confirmed
        reasons[-1] += f"; {withheld}" if withheld else ""
    else:
        tampered = [missing] if missing else []
        if report is not None:
            tampered += report.problems + [f"kernel changed: {', '.join(report.kernel)}"] * bool(report.kernel)
        tampered += [withheld] if withheld else []
        if tampered:
            reasons.append(f"grading environment tampered with: {'; '.join(tampered)}")
    if report is not None and settings.plan.sandbox.kind == sandbox_module.BWRAP:  # the sandbox's own folders
        limits += [
            f"space limit of {folder} ({sizes[folder]} MB)"
            for folder, free in report.free.items()
            if folder in sizes and free < 2**20
        ]
    if limits:
        reasons.append(f"{' and '.join(limits)} reached")
    timeouts = _timeouts(autograded)
    if timeouts:
        reasons.append(f"cell timeout ({settings.timeout} s): {', '.join(timeouts)}")
    if cell_problems:
        reasons.append(cell_problems)
    if removed:
        reasons.append(f"damaged metadata removed: {', '.join(removed)}")
    if manual:
        reasons.append(f"manual grading needed: {', '.join(manual)}")
    if reasons:
        row.status, row.reason = NEEDS_REVIEW, "; ".join(reasons)
    if settings.feedback_dir and task.feedback:
        destination = Path(settings.feedback_dir) / task.student
        html = f"{Path(name).stem}.html"
        if settings.feedback_with_tests:
            feedback = api.generate_feedback(aid, task.internal)
            page = root / "feedback" / task.internal / aid / html
            if feedback["success"] and page.exists():
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(page, destination / html)
        else:
            write_feedback(destination / html, autograded, row.steps, row.total, row.max_score)
    return row


def _test_cells(notebook: nbformat.NotebookNode) -> list[tuple[str, int | None]]:
    """(grade id, execution count) of each autograded test cell of an executed notebook, in order."""
    return [
        (_meta(cell)["grade_id"], cell.get("execution_count"))
        for cell in notebook.cells
        if _is_test(_meta(cell)) and _meta(cell).get("grade_id")
    ]


def _timeouts(notebook: nbformat.NotebookNode) -> list[str]:
    hits = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "CellTimeoutError":
                hits.append(_meta(cell).get("grade_id") or f"cell {index}")
    return hits


@dataclass
class GradingRun:
    """What ``grade`` did: the rows (students in name order), the sandbox used, files next to the folders, and
    how the kernels' processes and memory were limited."""

    rows: list[GradeRow]
    sandbox: Sandbox
    loose_files: list[str] = field(default_factory=list)
    confinement: sandbox_module.Confinement | None = None


def _pool(jobs: int, master: Path, work: Path, settings: WorkerSettings) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(str(master), str(work), settings),
    )


def _flagged(task: StudentTask, settings: WorkerSettings, reason: str) -> list[GradeRow]:
    """``needs review`` rows, with ``reason``, for every notebook of a task the grader could not grade."""
    return [
        GradeRow(task.student, name, NEEDS_REVIEW, reason, sandbox=settings.plan.sandbox.kind)
        for name in (task.only or settings.notebooks)
    ]


def _run_tasks(
    pool: ProcessPoolExecutor,
    tasks: list[StudentTask],
    new_pool: Callable[[int], ProcessPoolExecutor],
    done: Callable[[StudentTask, list[GradeRow]], None],
    settings: WorkerSettings,
) -> bool:
    """Hand the tasks out to ``pool`` one at a time (as workers free up); a worker crash costs only its student.

    When the pool breaks, the tasks it had not finished are graded again, each in a fresh pool of its own, so
    that the one that broke it is found and flagged and the others are graded. Returns False when ``pool``
    broke (the caller makes a new one for what follows).
    """
    retry: list[StudentTask] = []
    futures = {pool.submit(_grade_task, task): task for task in tasks}
    for future in as_completed(futures):
        task = futures[future]
        try:
            done(task, future.result())
        except BrokenProcessPool:
            retry.append(task)
        except Exception as error:  # pickling, or a bug of the grader: that student is flagged
            done(task, _flagged(task, settings, f"grader error: {type(error).__name__}: {error}"))
    for task in retry:
        with new_pool(1) as alone:
            try:
                done(task, alone.submit(_grade_task, task).result())
            except BrokenProcessPool:
                done(task, _flagged(task, settings, "grader process crashed while grading this student"))
    return not retry


def grade(
    submissions: Path,
    solutions_dir: Path | None = None,
    timeout: int = 60,
    jobs: int = 2,
    feedback_dir: Path | None = None,
    progress: bool = True,
    sandbox: bool = True,
    limits: Limits | None = None,
    on_student: Callable[[list[GradeRow]], None] | None = None,
    max_notebook_mb: float = MAX_NOTEBOOK_MB,
    feedback_with_tests: bool = False,
) -> GradingRun:
    """Autograde every student folder of ``submissions``; one row per student and graded notebook.

    With ``sandbox`` (the default), :class:`~ftcourse.sandbox.SandboxUnavailable` when this machine cannot
    sandbox the kernels, before any student code runs; ``sandbox=False`` grades without one. The instructor's
    solutions are graded first; :class:`GradingEnvironmentError` if they fall short of full marks.
    ``on_student`` is called with each student's rows as soon as that student is graded.
    """
    from tqdm.auto import tqdm

    solutions_dir = solutions_dir or default_solutions_dir()
    sources = graded_sources(solutions_dir)
    if not sources:
        raise GradingUsageError(f"no nbgrader notebooks in {solutions_dir}")
    notebooks = [p.name for p in sources]
    try:
        students = find_students(submissions, notebooks, max_notebook_mb)
    except SubmissionsError as error:
        raise GradingUsageError(str(error)) from None
    box = detect_sandbox(sandbox)
    if sandbox and box.kind == sandbox_module.NONE:
        raise sandbox_module.SandboxUnavailable(box)  # fail closed: nothing of the students' has run
    limits = limits or Limits.for_run(timeout, min(jobs, len(students)))
    confinement = sandbox_module.make_confinement()
    # The name the hidden tests reach the grader by in this run's copy of the instructor notebooks.
    grader_name = f"_ftcourse_grader_{secrets.token_hex(8)}"
    try:
        with tempfile.TemporaryDirectory(prefix="ftcourse-grade-", dir=_fast_scratch()) as tmp:
            tmp_path = Path(tmp)
            hidden = [solutions_dir.resolve().parent, submissions.resolve(), tmp_path]
            plan = SandboxPlan(box, limits, sandbox_module.readable_paths(hidden), confinement=confinement)
            packages = {source.name: _tested_packages(source) for source in sources}
            if any("matplotlib" in names for names in packages.values()):
                plan.fontlist = sandbox_module.build_fontlist(plan, tmp_path / "fonts")
            master = tmp_path / "master"
            build_course(master, sources, timeout, grader_name=grader_name)
            settings = WorkerSettings(
                notebooks,
                packages,
                timeout,
                str(feedback_dir) if feedback_dir else None,
                plan,
                grader_name,
                feedback_with_tests,
            )
            rows = _grade_all(students, sources, master, tmp_path, settings, jobs, progress, on_student, tqdm)
    finally:
        sandbox_module.remove_confinement(confinement)
    order = {s.student: i for i, s in enumerate(students)}
    rank = {name: i for i, name in enumerate(notebooks)}
    rows.sort(key=lambda row: (order[row.student], rank.get(row.notebook, len(rank)), row.notebook))
    return GradingRun(rows, box, loose_files(submissions), confinement)


def _grade_all(
    students,
    sources: list[Path],
    master: Path,
    tmp_path: Path,
    settings: WorkerSettings,
    jobs: int,
    progress: bool,
    on_student,
    tqdm,
) -> list[GradeRow]:
    """The canary, then every student, in a pool of worker processes."""
    work = tmp_path / "work"
    work.mkdir()
    canary = _canary_tasks(master, sources, tmp_path / "canary")
    tasks = [
        StudentTask(s.student, s.internal, {n: str(p) for n, p in s.notebooks.items()}, dict(s.refused), dict(s.others))
        for s in students
    ]
    workers = max(1, min(jobs, len(tasks)))

    def new_pool(size: int) -> ProcessPoolExecutor:
        return _pool(size, master, work, settings)

    pool = new_pool(workers)
    try:
        canary_rows: list[GradeRow] = []
        bar = tqdm(total=len(canary), desc="checking the solutions", unit="notebook", disable=not progress)
        if not _run_tasks(
            pool, canary, new_pool, lambda task, rows: (canary_rows.extend(rows), bar.update(1)), settings
        ):
            pool.shutdown()
            pool = new_pool(workers)
        bar.close()
        short = [r for r in canary_rows if r.status != GRADED or r.total is None or r.total != r.max_score]
        if short:
            raise GradingEnvironmentError(
                "the instructor's solutions do not earn full marks, so the grading environment is broken "
                "(nothing was graded):\n"
                + "\n".join(
                    f"  {r.notebook}: {r.status}, {number(r.total) or '-'} / {number(r.max_score) or '-'}"
                    + (f" ({r.reason})" if r.reason else "")
                    for r in short
                )
            )
        rows: list[GradeRow] = []
        bar = tqdm(total=len(tasks), desc="grading", unit="student", disable=not progress)

        def done(task: StudentTask, student_rows: list[GradeRow]) -> None:
            rows.extend(student_rows)
            if on_student:
                on_student(student_rows)
            bar.update(1)

        _run_tasks(pool, tasks, new_pool, done, settings)
        bar.close()
    finally:
        pool.shutdown(cancel_futures=True)
    return rows


def _tested_packages(source: Path) -> tuple[str, ...]:
    from ftcourse.autograde_hooks import tested_packages

    return tested_packages(source)


def _canary_tasks(master: Path, sources: list[Path], folder: Path) -> list[StudentTask]:
    """The instructor's solutions as a submission, one task per autograded notebook."""
    folder.mkdir(parents=True)
    tasks = []
    for source in sources:
        released = master / "release" / assignment_id(source) / source.name
        if is_manually_graded(nbformat.read(released, as_version=4)):
            continue
        path = folder / source.name
        nbformat.write(answered_notebook(released, solution_answers(source)), path)
        tasks.append(
            StudentTask(
                SOLUTIONS_ID,
                f"solutions-{len(tasks) + 1}",
                {source.name: str(path)},
                only=[source.name],
                feedback=False,
            )
        )
    return tasks


def step_columns(solutions_dir: Path | None = None) -> list[str]:
    """Names of the graded steps (test cells), in notebook order: the CSV's per-step columns."""
    columns = []
    for source in graded_sources(solutions_dir):
        for meta in _metas(nbformat.read(source, as_version=4)):
            if meta.get("grade") or meta.get("task"):
                columns.append(meta["grade_id"])
    return columns


def _cell(text: str) -> str:
    """A text cell of the CSV: no control characters or terminal escapes, escaped against formulas."""
    return escape(printable(text, newlines=False))


def csv_rows(rows: list[GradeRow], steps: list[str]) -> list[list[str]]:
    """The CSV lines of ``rows``: identity, status, reason, total, max, sandbox, then points per step."""
    return [
        [
            _cell(row.student),
            _cell(row.notebook),
            row.status,
            _cell(row.reason),
            number(row.total),
            number(row.max_score),
            row.sandbox,
        ]
        + [number(row.steps.get(step)) for step in steps]
        for row in rows
    ]


def write_csv(rows: list[GradeRow], path: Path, steps: list[str], delimiter: str = ",") -> None:
    """The grades file, written atomically (UTF-8 with BOM, text cells escaped against formulas)."""
    write_atomically(path, csv_text(CSV_COLUMNS + steps, csv_rows(rows, steps), delimiter), encoding=ENCODING)


def apply_marks(rows: list[GradeRow], marks: list) -> list:
    """Merge the marks typed by hand (``gradebook_csv.read_marks``) into ``rows``; return those matching no row.

    A mark sets that notebook's total: status ``graded``, reason ``marked by hand`` (with the comment, and the
    autograder's total when there was one). A mark that is not a number from 0 to the maximum, or two marks for
    the same notebook, leave it ``needs review`` with the reason. Empty marks are ignored.
    """
    by_key = {(row.student, row.notebook): row for row in rows}
    typed: dict[tuple[str, str], list] = {}
    unknown = []
    for mark in marks:
        if not mark.mark:
            continue
        if (mark.student, mark.notebook) not in by_key:
            unknown.append(mark)
        else:
            typed.setdefault((mark.student, mark.notebook), []).append(mark)
    for key, found in typed.items():
        row = by_key[key]
        if len(found) > 1:
            row.status = NEEDS_REVIEW
            row.reason = f"several hand marks (marks file lines {', '.join(str(m.line) for m in found)})"
            continue
        mark = found[0]
        try:
            value = float(mark.mark.replace(",", "."))
        except ValueError:
            value = float("nan")
        top = row.max_score
        if not (0 <= value <= (top if top is not None else float("inf"))):
            row.status = NEEDS_REVIEW
            row.reason = f"hand mark not valid: {mark.mark!r} (a number from 0 to {number(top) or 'the maximum'})"
            continue
        autograded = row.total if row.reason != RUBRIC else None
        row.status, row.total = GRADED, value
        row.reason = (
            "marked by hand"
            + (f": {mark.comment}" if mark.comment else "")
            + (f" (autograder: {number(autograded)})" if autograded is not None else "")
        )
    return unknown


def summary(rows: list[GradeRow]) -> str:
    notebooks = [row for row in rows if row.status != REFUSED]
    graded = sum(row.status == GRADED for row in notebooks)
    students = len({row.student for row in rows})
    refused = len(rows) - len(notebooks)
    text = f"{students} students, {len(notebooks)} notebooks: {graded} graded, {len(notebooks) - graded} need review"
    return text + (f", {refused} other files not graded" if refused else "")


def released_matches_source(course_dir: Path, solutions_dir: Path) -> list[str]:
    """Names of graded notebooks whose released copy in ``course_dir`` is missing or out of date."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="ftcourse-check-") as tmp:
        for name, path in build_course(Path(tmp), graded_sources(solutions_dir)).items():
            current = course_dir / name
            if not current.exists() or not _same_notebook(current, released_notebook(path)):
                stale.append(name)
    return stale
