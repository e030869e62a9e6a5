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


LESSONS = [p for p in sorted((ROOT / "course").glob("*.ipynb")) if not (ROOT / "solutions" / p.name).exists()]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_lesson_ends_with_practice_and_hidden_hints(path):
    """The lessons (not the graded notebooks) end with an « À vous » cell of tasks and a collapsed cell of hints."""
    cells = nbformat.read(path, as_version=4).cells
    tasks, hints = cells[-2], cells[-1]
    assert tasks.cell_type == "markdown" and tasks.source.startswith("## À vous")
    assert len([line for line in tasks.source.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]) >= 2
    assert hints.cell_type == "markdown" and hints.source.startswith("<details>") and "</details>" in hints.source


def test_the_title_of_each_notebook_carries_its_number():
    for path in NOTEBOOKS:
        title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
        assert title.startswith(f"# {path.name[:2]} · "), (path.name, title)
