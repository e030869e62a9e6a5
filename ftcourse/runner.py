"""Execute the course notebooks headless (``ftcourse run``) and keep them normalised.

Released nbgrader assignments are skipped: their solution cells raise
``NotImplementedError`` by design; the grading round trip checks them instead.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

from ftcourse.paths import course_dir
from helpers.environment import FAST_ENV, RESULTS_ENV


def is_nbgrader_assignment(notebook: nbformat.NotebookNode) -> bool:
    """True if any cell carries nbgrader metadata (a graded assignment)."""
    return any(cell.get("metadata", {}).get("nbgrader") for cell in notebook.cells)


def course_notebooks(folder: Path | None = None) -> list[Path]:
    """The lesson notebooks of ``folder`` in course order (by file name)."""
    folder = folder or course_dir()
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


@dataclass
class RunResult:
    notebook: Path
    status: str  # "passed", "failed" or "skipped"
    seconds: float
    detail: str = ""  # failing cell, or why it was skipped
    output: Path | None = None


def run_notebook(
    path: Path, output_dir: Path, timeout: int = 1800, kernel_name: str = "python3", results_dir: Path | None = None
) -> RunResult:
    """Execute one notebook in a fresh kernel and save the executed copy in ``output_dir``.

    With ``results_dir``, the kernel's ``env.record`` writes to ``results_dir/<notebook stem>.json``
    (``FTCOURSE_RESULTS``, :mod:`helpers.recording`); a file left by an earlier run is removed first.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from tqdm.auto import tqdm

    notebook = nbformat.read(path, as_version=4)
    if is_nbgrader_assignment(notebook):
        return RunResult(path, "skipped", 0.0, "nbgrader assignment (graded with `ftcourse grade`)")
    code_cells = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    bar = tqdm(total=len(code_cells), desc=path.name, unit="cell", leave=False)
    current = {"index": None}

    def on_cell_execute(cell, cell_index, **_):
        current["index"] = cell_index

    def on_cell_complete(cell, cell_index, **_):
        bar.update(1)

    from traitlets.config import Config

    # "auto" encrypts the kernel's channels and silences ipykernel's warning about plain TCP.
    config = Config({"KernelManager": {"transport_encryption": "auto"}})
    client = NotebookClient(
        notebook,
        config=config,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_execute=on_cell_execute,
        on_cell_complete=on_cell_complete,
    )
    start = time.perf_counter()
    status, detail = "passed", ""
    former = os.environ.get(RESULTS_ENV)
    if results_dir is not None:  # the kernel inherits it when it starts
        results = results_dir / f"{path.stem}.json"
        results.unlink(missing_ok=True)
        os.environ[RESULTS_ENV] = str(results.resolve())
    else:
        os.environ.pop(RESULTS_ENV, None)
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        status = "failed"
        index = current["index"]
        number = code_cells.index(index) + 1 if index in code_cells else "?"
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        if isinstance(error, CellExecutionError):
            first_line = f"{error.ename}: {error.evalue}"
        detail = f"code cell {number} (cell index {index}): {first_line}"[:300]
    finally:
        bar.close()
        if former is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = former
    seconds = time.perf_counter() - start
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    nbformat.write(notebook, output)
    return RunResult(path, status, seconds, detail, output)


def run_course(
    notebooks: list[Path], output_dir: Path, fast: bool = False, timeout: int = 1800, results_dir: Path | None = None
) -> list[RunResult]:
    """Execute ``notebooks`` in order; the kernel inherits ``FTCOURSE_FAST`` from here (``results_dir``: as
    :func:`run_notebook`)."""
    from tqdm.auto import tqdm

    if fast:
        os.environ[FAST_ENV] = "1"
    results = []
    for path in tqdm(notebooks, desc="course", unit="notebook"):
        results.append(run_notebook(path, output_dir, timeout=timeout, results_dir=results_dir))
    return results


def summary_table(results: list[RunResult]) -> str:
    """A plain-text table: notebook, status, wall time, detail."""
    rows = [("notebook", "status", "wall time", "detail")]
    rows += [(r.notebook.name, r.status, f"{r.seconds:7.1f} s", r.detail) for r in results]
    rows.append(
        (
            "total",
            f"{sum(r.status == 'passed' for r in results)}/{len(results)} passed",
            f"{sum(r.seconds for r in results):7.1f} s",
            "",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + ("  " + row[3] if row[3] else "")
        )
        if n == 0 or n == len(rows) - 2:
            lines.append("-" * (sum(widths) + 4 + 8))
    return "\n".join(lines)


def normalize_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A normalised copy of ``notebook``: cell ids, no outputs or execution counts, no per-run metadata.

    A v4 notebook older than format 4.5 is raised to 4.5 (the first with cell
    ids); cells without an id get one and duplicate ids are replaced (by
    ``nbformat.validator.normalize``, which returns a new notebook rather than
    changing its argument). ``notebook`` itself is left as it was.
    """
    minor = notebook.get("nbformat_minor", 0)
    if notebook.get("nbformat") == 4:
        minor = max(minor, 5)
    with warnings.catch_warnings():  # it warns about each id it adds or replaces
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        warnings.simplefilter("ignore", DuplicateCellId)
        _, normalized = nbformat.validator.normalize(notebook, version_minor=minor)
    notebook = nbformat.from_dict(normalized)
    notebook.nbformat_minor = minor
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in ("execution", "collapsed", "scrolled", "ExecuteTime"):
            cell.metadata.pop(key, None)
    notebook.metadata.pop("widgets", None)
    return notebook


def notebook_problems(path: Path) -> list[str]:
    """Ways in which a stored notebook is not clean (empty list when it is)."""
    try:
        nbformat.read(path, as_version=4)
        # The file as stored: nbformat.read adds missing cell ids in memory, so it cannot tell.
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception as error:  # nbformat raises several kinds on bad files
        return [f"not a readable notebook ({error})"]
    problems = []
    if stored.get("nbformat") == 4 and stored.get("nbformat_minor", 0) < 5:
        problems.append(f"format 4.{stored.get('nbformat_minor', 0)} has no cell ids (4.5 has)")
    for index, cell in enumerate(stored.get("cells", [])):
        if "id" not in cell:
            problems.append(f"cell {index} has no id")
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {index} has stored outputs or an execution count")
    return problems
