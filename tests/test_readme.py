import json
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_tables_are_generated_from_the_result_files():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "readme_tables.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_result_changes_the_rendered_table(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import readme_tables
    finally:
        sys.path.pop(0)
    record = json.loads((readme_tables.RESULTS / "course_times.json").read_text())
    key = next(iter(record))
    name = next(iter(record[key]["seconds"]))
    record[key]["seconds"][name] = 3723.0
    (tmp_path / "course_times.json").write_text(json.dumps(record))
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    row = next(line for line in readme_tables.course_times().splitlines() if line.startswith(f"| `{name}` |"))
    assert "62 min 03 s" in row


def test_no_benchmark_script_shadows_a_package_it_runs_beside():
    """``python benchmarks/X.py`` puts benchmarks/ first on sys.path: a script named like a package
    (``peft.py`` did) replaces that package for every benchmark, and transformers then fails to import."""
    import importlib.util

    scripts = sorted(path.stem for path in (ROOT / "benchmarks").glob("*.py") if path.stem != "__init__")
    assert scripts
    clashes = [
        name
        for name in scripts
        if importlib.util.find_spec(name) is not None
        and not str(importlib.util.find_spec(name).origin).startswith(str(ROOT / "benchmarks"))
    ]
    assert clashes == []


def test_a_run_in_another_precision_than_the_machine_choice_is_timed_apart():
    """fp32 forced on a CPU with native bf16 must not overwrite (or be read as) that CPU's own bf16 times."""
    from benchmarks.course_times import machine_key
    from helpers import setup
    from helpers.device import choose_precision

    env = setup(seed=0, fast=True, verbose=False, precision="auto")
    kind = env.device if env.device != "cpu" else "native-bf16" if env.capabilities.cpu_bf16 else "no-native-bf16"
    assert machine_key(env, "full") == f"full/{kind}"
    other = "fp32" if choose_precision(env.capabilities, env.device).name != "fp32" else "bf16"
    forced = setup(seed=0, fast=True, verbose=False, precision=other)
    assert machine_key(forced, "fast") == f"fast/{kind}/{other}"
