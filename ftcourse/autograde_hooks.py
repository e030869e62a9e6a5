"""nbgrader's executor as ``ftcourse grade`` runs it: the grader's own first and last cells, a sandboxed kernel.

:class:`GuardedExecute` takes the place of nbgrader's ``Execute`` in
``Autograde.autograde_preprocessors``. Around the student's notebook it runs
two cells of the grader's, taken out again before nbgrader scores the
notebook (they never show in the feedback):

- first, the prelude (:func:`prelude_source`): :mod:`ftcourse.grader_prelude`'s
  ``Grader`` is created before the setup cell and any student code, with the
  student's id (hidden tests are seeded from it) and the packages the hidden
  tests import (their functions are captured then), bound to the run's random
  name, and anchored (``install_anchor``) with this notebook's secret key, which
  the kernel manager hands to the kernel in a file the prelude deletes;
- last, the probe: ``<name>.probe()``, whose signed report of the tests the
  real grader began and passed :func:`read_report` checks.

The kernel is started by :class:`ftcourse.sandbox.SandboxKernelManager`.
What the two cells printed is left in :data:`LAST_RUN` for the grading
worker. Used by :mod:`ftcourse.grading`.
"""

from __future__ import annotations

import ast
import base64
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell
from nbgrader.preprocessors import Execute

from ftcourse.sandbox import SandboxKernelManager

MARK = "ftcourse-grader"


# The environment variable that tells the prelude where the kernel manager left the secret key.
SECRET_VARIABLE = "FTCOURSE_GRADER_SECRET"


@dataclass
class GraderCells:
    """The two cells of the grader for one notebook, under the run's grader name, and the notebook's secret key
    (never in a cell: the kernel manager writes it to a file the prelude reads and deletes)."""

    prelude: str
    grader_name: str
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def probe(self) -> str:
        return f"{self.grader_name}.probe()"


@dataclass
class RunReport:
    """What the grader's cells showed in the last notebook executed (for the worker that ran it)."""

    prelude_error: str | None = None
    probe_outputs: list = field(default_factory=list)


CURRENT: GraderCells | None = None  # set by the grading worker before each autograde
LAST_RUN = RunReport()


def tested_packages(source: Path) -> tuple[str, ...]:
    """Top-level packages the test cells of an instructor notebook import (their functions get captured)."""
    names: list[str] = []
    for cell in nbformat.read(source, as_version=4).cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            )
            for module in modules:
                top = module.split(".")[0]
                if top not in names and top != "ftcourse":
                    names.append(top)
    return tuple(names)


def prelude_source(student: str, packages: tuple[str, ...], grader_name: str) -> str:
    """The first cell: the grader module's code run in a private namespace, its ``Grader`` bound to
    ``grader_name`` (the name the grading copy's hidden tests use) and anchored with the secret key."""
    module = Path(__file__).with_name("grader_prelude.py").read_text(encoding="utf-8")
    return (
        "# ftcourse grade: the grader's checks, created before any student code (not part of the notebook)\n"
        "def _ftcourse_prelude():\n"
        "    import os\n"
        f"    namespace = {{'__name__': 'ftcourse_grader_prelude'}}\n"
        f"    exec(compile({module!r}, '<ftcourse grader>', 'exec'), namespace)\n"
        f"    grader = namespace['Grader'](student={student!r}, protect={packages!r})\n"
        f"    namespace['install_anchor'](grader, os.environ.pop({SECRET_VARIABLE!r}))\n"
        "    return grader\n"
        f"{grader_name} = _ftcourse_prelude()\n"
        "del _ftcourse_prelude\n"
    )


@dataclass
class Report:
    """The grader's signed report on one notebook: by execution count, the test each cell began, whether the
    real grader began it properly and whether the cell ran without an error; problems seen; kernel changes."""

    cells: dict[int, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    kernel: list[str] = field(default_factory=list)
    free: dict[str, int] = field(default_factory=dict)  # free bytes in the kernel's /tmp and /dev/shm at the end

    def verified(self, execution_count: int | None, grade_id: str) -> bool:
        """The test cell run as ``execution_count`` began ``grade_id`` through the real grader, at the top level
        of that cell, its test function returned to the grader's ``finish`` there, nothing changed, and the cell
        raised no error."""
        cell = self.cells.get(execution_count) if execution_count is not None else None
        return bool(
            cell
            and cell.get("test") == grade_id
            and cell.get("begun")
            and cell.get("finished")
            and cell.get("passed")
            and not cell.get("problems")
            and not self.problems
        )


def read_report(outputs: list, secret: bytes) -> tuple[Report | None, str | None]:
    """The probe's report if its signature is right, else (None, why)."""
    from ftcourse.grader_prelude import REFUSAL_PREFIX, REPORT_PREFIX, report_mac

    for output in outputs:
        value = str(output.get("evalue", "")) if output.get("output_type") == "error" else ""
        if output.get("ename") != "AssertionError" or not value.startswith(REPORT_PREFIX):
            continue
        if value.startswith(REFUSAL_PREFIX):
            return None, f"the grader refused to report ({value[len(REFUSAL_PREFIX) :][:200]})"
        payload, _, mac = value[len(REPORT_PREFIX) :].partition(" ")
        try:
            if not hmac.compare_digest(mac, report_mac(secret, payload)):
                return None, "the grader's report is forged"
            data = json.loads(base64.b64decode(payload, validate=True))
        except (ValueError, TypeError):
            return None, "the grader's report is forged"
        cells: dict[int, dict] = {}
        problems = [str(p) for p in data.get("problems", [])]
        for cell in data.get("cells", []):
            if cell.get("n") in cells:  # two runs under one number: a cell run behind nbgrader's back
                problems.append(f"cell {cell['n']} ran twice")
            cells[cell.get("n")] = cell
        free = {str(k): int(v) for k, v in data.get("free", {}).items() if isinstance(v, int)}
        return Report(cells, problems, [str(k) for k in data.get("kernel", [])], free), None
    return None, "the grader's last check did not report (errors hidden, cells rewritten or the grader replaced)"


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with the sandboxed kernel and the grader's first and last cells."""

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)

    def create_kernel_manager(self):
        manager = super().create_kernel_manager()
        if CURRENT is not None:
            manager.grader_secret = CURRENT.secret  # handed to the kernel in a file only it sees
        return manager

    def preprocess(self, nb, resources, km=None):
        global LAST_RUN
        LAST_RUN = RunReport()
        cells = CURRENT
        if cells is None:
            return super().preprocess(nb, resources, km)
        prelude = new_code_cell(cells.prelude, metadata={MARK: "prelude"})
        probe = new_code_cell(cells.probe, metadata={MARK: "probe"})
        nb.cells.insert(0, prelude)
        nb.cells.append(probe)
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            nb.cells = [cell for cell in nb.cells if cell is not prelude and cell is not probe]
        errors = [o for o in prelude.get("outputs", []) if o.get("output_type") == "error"]
        if errors:
            LAST_RUN.prelude_error = f"{errors[0].get('ename')}: {errors[0].get('evalue')}"[:300]
        LAST_RUN.probe_outputs = list(probe.get("outputs", []))
        return nb, resources
