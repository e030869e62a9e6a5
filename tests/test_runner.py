import warnings

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from ftcourse.runner import normalize_notebook, notebook_problems


def executed_notebook(minor: int = 5) -> nbformat.NotebookNode:
    """A notebook as Jupyter leaves it after a run: outputs, counts, per-run metadata, one cell without an id."""
    notebook = new_notebook(
        cells=[
            new_markdown_cell("# Title"),
            new_code_cell("print(1)", execution_count=3, outputs=[new_output("stream", name="stdout", text="1\n")]),
            new_code_cell(
                "2 + 2",
                execution_count=4,
                outputs=[new_output("execute_result", {"text/plain": "4"}, execution_count=4)],
            ),
        ]
    )
    notebook.nbformat_minor = minor
    notebook.cells[1].metadata["ExecuteTime"] = {"end_time": "2024-01-01T00:00:00"}
    notebook.metadata["widgets"] = {"state": {}}
    del notebook.cells[1]["id"]  # e.g. a cell added by an old editor
    if minor < 5:
        for cell in notebook.cells:
            cell.pop("id", None)
    return notebook


@pytest.mark.parametrize("minor", [5, 4])
def test_normalize_adds_ids_and_strips_outputs(tmp_path, minor):
    notebook = executed_notebook(minor)
    kept_ids = [cell.get("id") for cell in notebook.cells]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # normalising must not warn about the ids it adds
        clean = normalize_notebook(notebook)

    assert clean.nbformat == 4 and clean.nbformat_minor >= 5
    ids = [cell.get("id") for cell in clean.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    if minor == 5:  # existing ids are kept
        assert [ids[0], ids[2]] == [kept_ids[0], kept_ids[2]]
    code = [cell for cell in clean.cells if cell.cell_type == "code"]
    assert [cell.outputs for cell in code] == [[], []]
    assert [cell.execution_count for cell in code] == [None, None]
    assert "ExecuteTime" not in clean.cells[1].metadata and "widgets" not in clean.metadata
    assert [cell.source for cell in clean.cells] == ["# Title", "print(1)", "2 + 2"]

    path = tmp_path / "clean.ipynb"
    nbformat.write(clean, path)
    assert notebook_problems(path) == []
    nbformat.validate(nbformat.read(path, as_version=4))


def test_normalize_replaces_duplicate_ids():
    notebook = executed_notebook()
    notebook.cells[1]["id"] = notebook.cells[0]["id"]
    ids = [cell["id"] for cell in normalize_notebook(notebook).cells]
    assert len(set(ids)) == 3
