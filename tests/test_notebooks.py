"""The stored notebooks are clean, start with the shared setup cell, and are in course order."""

import nbformat
import pytest

from ftcourse.runner import course_notebooks, notebook_problems
from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "course").glob("*.ipynb")) + sorted((ROOT / "solutions").rglob("*.ipynb"))
SETUP_CELL = "from helpers import setup\n\nenv = setup(seed=42)"


def test_there_are_notebooks():
    assert course_notebooks(), "course/ has no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_normalised(path):
    assert notebook_problems(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_the_setup_cell(path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    first_code = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert first_code.source == SETUP_CELL


def test_course_notebooks_are_numbered():
    names = [p.name for p in course_notebooks()]
    assert all(name[:2].isdigit() and name[2] == "_" for name in names)
    assert names == sorted(names)
