"""nbgrader's executor as ``ftcourse grade`` runs it: the grader's own first and last cells, a sandboxed kernel.

:class:`GuardedExecute` takes the place of nbgrader's ``Execute`` in
``Autograde.autograde_preprocessors``. Around the student's notebook it runs
two cells of the grader's, taken out again before nbgrader scores the
notebook (they never show in the feedback):

- first, the prelude (:func:`prelude_source`): :mod:`ftcourse.grader_prelude`'s
  ``Grader`` is created before the setup cell and any student code, with the
  student's id (hidden tests are seeded from it) and the packages the hidden
  tests import (their functions are captured then);
- last, the probe: ``_grader.probe(token)`` must fail with a token only this
  process knows; :func:`probe_verdict` reads its output.

The kernel is started by :class:`ftcourse.sandbox.SandboxKernelManager`.
What the two cells printed is left in :data:`LAST_RUN` for the grading
worker. Used by :mod:`ftcourse.grading`.
"""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell
from nbgrader.preprocessors import Execute

from ftcourse.sandbox import SandboxKernelManager

MARK = "ftcourse-grader"


@dataclass
class GraderCells:
    """The two cells of the grader for one notebook: the prelude's source, and the probe's token."""

    prelude: str
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def probe(self) -> str:
        return f'_grader.probe("{self.token}")'


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
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for module in modules:
                top = module.split(".")[0]
                if top not in names and top != "ftcourse":
                    names.append(top)
    return tuple(names)


def prelude_source(student: str, packages: tuple[str, ...]) -> str:
    """The first cell: the grader module's code run in a private namespace, ``_grader`` left for the tests."""
    module = Path(__file__).with_name("grader_prelude.py").read_text(encoding="utf-8")
    return (
        "# ftcourse grade: the grader's checks, created before any student code (not part of the notebook)\n"
        "def _ftcourse_prelude():\n"
        f"    namespace = {{'__name__': 'ftcourse_grader_prelude'}}\n"
        f"    exec(compile({module!r}, '<ftcourse grader>', 'exec'), namespace)\n"
        f"    return namespace['Grader'](student={student!r}, protect={packages!r})\n"
        "_grader = _ftcourse_prelude()\n"
        "del _ftcourse_prelude\n"
    )


def probe_verdict(outputs: list, token: str) -> str | None:
    """None when the probe failed as it must (its token in an AssertionError), else what went wrong."""
    errors = [o for o in outputs if o.get("output_type") == "error"]
    if any(o.get("ename") == "AssertionError" and o.get("evalue") == f"ftcourse probe {token}" for o in errors):
        return None
    for output in errors:
        if str(output.get("evalue", "")).startswith("grading environment changed: "):
            return str(output["evalue"])
    return "the grader's last check did not report (errors hidden or cells rewritten)"


class GuardedExecute(Execute):
    """nbgrader's ``Execute`` with the sandboxed kernel and the grader's first and last cells."""

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxKernelManager
        super().__init__(*args, **kwargs)

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
