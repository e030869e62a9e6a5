"""What lessons record with ``env.record``: the entries, the file a run writes, and RESULTS.md made from them."""

import json
import math
import os
import sys

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers import setup
from helpers.environment import RESULTS_ENV
from helpers.evaluation.uncertainty import Interval, independent_difference, mcnemar, paired_bootstrap
from helpers.recording import result_entry
from tests.conftest import ROOT

LESSONS = sorted(path for path in (ROOT / "course").glob("[01][0-9]_*.ipynb") if int(path.name[:2]) <= 11)


def test_entries_keep_the_value_its_interval_and_what_is_needed_to_read_it():
    paired = paired_bootstrap([1, 1, 0, 1, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0, 0, 1])
    entry = result_entry(paired, seeds=3, holm_verdict="indistinguishable", unit="accuracy difference")
    assert entry["kind"] == "PairedComparison" and entry["n"] == 8 and entry["seeds"] == 3
    assert entry["difference"]["value"] == pytest.approx(0.375) and entry["verdict"] == paired.verdict
    assert entry["holm_verdict"] == "indistinguishable" and entry["unit"] == "accuracy difference"
    assert result_entry(Interval(0.7, 0.6, 0.8), n=40) == {
        "kind": "Interval",
        "value": 0.7,
        "low": 0.6,
        "high": 0.8,
        "confidence": 0.95,
        "n": 40,
    }
    assert result_entry(independent_difference([1, 0, 1], [0, 0]))["n_a"] == 3
    assert result_entry(mcnemar([1, 1, 0], [0, 1, 1]))["kind"] == "McNemarTest"
    assert result_entry(3) == {"kind": "number", "value": 3.0}
    assert result_entry(True) == {"kind": "flag", "value": True}
    assert result_entry("bf16") == {"kind": "text", "value": "bf16"}
    assert result_entry(float("nan"))["value"] is None  # JSON has no NaN
    assert result_entry(Interval(float("nan"), float("nan"), 1.0))["low"] is None  # at any depth
    assert result_entry(np.bool_(True)) == {"kind": "flag", "value": True}  # NumPy scalars as Python's
    assert result_entry(np.float32(0.5)) == {"kind": "number", "value": 0.5}
    no_p = paired_bootstrap([1.0, 1.0], [1.0, 1.0])
    assert math.isnan(no_p.p_value) or 0 <= no_p.p_value <= 1
    assert json.dumps(result_entry(no_p), allow_nan=False)


def test_a_loss_comparison_is_recorded_as_a_judgement_with_its_direction_in_the_unit():
    # the loss after is lower on every item: the sign verdict says "worse" (A - B < 0), the record "better"
    after, before = [0.2, 0.3, 0.1, 0.4, 0.2, 0.3], [0.5, 0.6, 0.4, 0.7, 0.5, 0.6]
    change = paired_bootstrap(after, before)
    assert change.verdict == "worse"
    entry = result_entry(change, holm_verdict="worse", unit="loss difference", higher_is_better=False)
    assert entry["verdict"] == "better" and entry["holm_verdict"] == "better"
    assert entry["higher_is_better"] is False and entry["unit"] == "loss difference (lower is better)"
    assert entry["difference"]["value"] == pytest.approx(-0.3)  # the numbers themselves are not turned
    same = result_entry(change, holm_verdict="indistinguishable", unit="ECE (lower is better)", higher_is_better=False)
    assert same["holm_verdict"] == "indistinguishable" and same["unit"] == "ECE (lower is better)"
    assert "higher_is_better" not in result_entry(change)
    with pytest.raises(ValueError, match="has none"):  # an interval carries no verdict to turn
        result_entry(Interval(0.1, 0.0, 0.2), higher_is_better=False)


def test_entries_refuse_what_cannot_be_read_back():
    with pytest.raises(TypeError, match="cannot record a list"):
        result_entry([0.1, 0.2])
    with pytest.raises(TypeError, match="cannot record a ndarray"):
        result_entry(np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="holm_verdict must be one of"):
        result_entry(0.5, holm_verdict="significant")
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        result_entry(0.5, seeds=0)


def test_env_record_writes_every_record_at_once_when_a_results_file_is_named(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "lesson.json"
    monkeypatch.setenv(RESULTS_ENV, str(path))
    env = setup(seed=3, fast=True, verbose=False)
    value = Interval(0.7, 0.6, 0.8)
    assert env.record("accuracy", value, n=40, unit="accuracy") is value
    first = json.loads(path.read_text())
    assert first["mode"] == "fast" and first["seed"] == 3 and first["precision"] == env.precision.name
    assert first["measured_on"] == env.measured_on() and list(first["records"]) == ["accuracy"]
    env.record("ratio", 1.5)
    env.record("accuracy", Interval(0.75, 0.65, 0.85), n=40)  # recorded again: replaced
    records = json.loads(path.read_text())["records"]
    assert set(records) == {"accuracy", "ratio"} and records["accuracy"]["value"] == 0.75
    assert not list(tmp_path.glob("deep/*.tmp"))  # written atomically, nothing left beside it
    with pytest.raises(ValueError, match="needs a name"):
        env.record(" ", 1.0)


def test_without_a_results_file_records_stay_in_memory(tmp_path, monkeypatch):
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    env = setup(seed=0, fast=True, verbose=False)
    env.record("share", 0.25, n=4)
    assert env.results == {"share": {"kind": "number", "value": 0.25, "n": 4}}
    assert list(tmp_path.iterdir()) == []


def test_the_runner_gives_each_kernel_its_results_file_and_course_times_keeps_default_runs(tmp_path, monkeypatch):
    """A real kernel records through env.record; course_times keeps a full-mode run, and refuses a fast one."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import course_times
    finally:
        sys.path.pop(0)
    from ftcourse.runner import run_notebook

    notebook = tmp_path / "07_demo.ipynb"
    source = "from helpers import setup\nenv = setup(verbose=False)\nenv.record('gap', 0.5, n=10, unit='accuracy')"
    nbformat.write(new_notebook(cells=[new_code_cell(source)]), notebook)
    records = tmp_path / "records"
    records.mkdir()
    (records / "07_demo.json").write_text("stale")  # an earlier run's file goes first
    monkeypatch.setenv(RESULTS_ENV, "/elsewhere.json")
    monkeypatch.setenv("FTCOURSE_FAST", "0")
    run = run_notebook(notebook, tmp_path / "executed", results_dir=records)
    assert run.status == "passed", run.detail
    assert os.environ[RESULTS_ENV] == "/elsewhere.json"  # put back as it was
    written = json.loads((records / "07_demo.json").read_text())
    assert written["mode"] == "full" and written["records"]["gap"]["value"] == 0.5

    lessons = tmp_path / "lessons.json"
    lessons.write_text(json.dumps({"full/x": {"06_other.ipynb": {"kept": True}}}))
    course_times.keep_lesson_records(lessons, "full/x", [run], records)
    kept = json.loads(lessons.read_text())["full/x"]
    assert kept["06_other.ipynb"] == {"kept": True}  # other lessons' records stay
    assert kept["07_demo.ipynb"]["records"]["gap"]["unit"] == "accuracy"
    assert kept["07_demo.ipynb"]["seconds"] == round(run.seconds, 1)

    written["mode"] = "fast"
    (records / "07_demo.json").write_text(json.dumps(written))
    with pytest.raises(SystemExit, match="fast-mode run"):
        course_times.keep_lesson_records(lessons, "full/x", [run], records)


def test_a_benchmark_reads_a_recorded_notebook_run_only_in_the_precision_of_its_results_file(tmp_path, monkeypatch):
    """The notebook's results file is the last run's: its time must come from the run in that same precision."""
    from benchmarks import course_times

    monkeypatch.setenv("FTCOURSE_PRECISION", "fp32")
    env = setup(seed=0, fast=False, verbose=False)
    key = course_times.machine_key(env, "full")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "course_times.json").write_text(
        json.dumps({key: {"seconds": {"03_demo.ipynb": 300.0}}})
    )
    monkeypatch.setattr(course_times, "ROOT", tmp_path)
    results = tmp_path / "results.json"
    for precision, accepted in (("bf16", False), ("fp32", True)):
        results.write_text(json.dumps({"mode": "full", "measured_on": f"cpu (demo, 2 threads), {precision}"}))
        if accepted:
            run = course_times.recorded_notebook_run(env, tmp_path / "03_demo.ipynb", results)
            assert run["seconds"] == 300.0 and run["results"]["measured_on"].endswith("fp32")
        else:
            with pytest.raises(SystemExit, match="another precision"):
                course_times.recorded_notebook_run(env, tmp_path / "03_demo.ipynb", results)


def test_results_md_renders_each_record_with_its_interval_and_verdicts(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    paired = paired_bootstrap([1, 1, 0, 1, 1, 1, 0, 1], [0, 1, 0, 0, 1, 0, 0, 1])
    run = {
        "measured_on": "cpu (AMD EPYC), fp32",
        "date": "2026-12-07",
        "seconds": 75.0,
        "mode": "full",
        "records": {
            "tuned minus start": result_entry(paired, seeds=3, holm_verdict="worse", unit="accuracy"),
            "start": result_entry(Interval(0.5, 0.25, 0.75), n=8),
        },
    }
    (tmp_path / "lessons.json").write_text(json.dumps({"full/native-bf16/fp32": {"04_x.ipynb": run}}))
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    table = readme_tables.lesson_results()
    d = paired.difference
    assert "### `04_x.ipynb` — full mode, cpu (AMD EPYC), fp32; 2026-12-07, 1 min 15 s" in table
    assert (
        f"| tuned minus start | {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | accuracy | {paired.verdict} | worse |"
        in table
    )
    assert "| start | 0.500 [0.250, 0.750] |  |  |  |  | 8 |  |" in table


def test_every_lesson_records_what_it_concludes_from():
    missing = [
        path.name
        for path in LESSONS
        if not any("env.record(" in cell.source for cell in nbformat.read(path, as_version=4).cells)
    ]
    assert len(LESSONS) == 12 and missing == []
