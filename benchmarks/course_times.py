"""Benchmark: how long each notebook of the course takes, in default or fast mode, on this machine.

Runs ``course/`` with the same runner as ``ftcourse run`` (fresh kernel per
notebook) and records the wall time of each notebook, the precision it trained
in and the processor, under a key that names the mode and whether the CPU has
native bf16: runs on other machines are kept, so the README can show both
kinds of CPU side by side (``benchmarks/readme_tables.py``).

    python benchmarks/course_times.py --mode full --out benchmarks/results/course_times.json
    python benchmarks/course_times.py --mode fast --out benchmarks/results/course_times.json

In full mode it also gathers what each lesson recorded with ``env.record`` (:mod:`helpers.recording`) into
``benchmarks/results/lessons.json`` (``--lessons``), under the same machine key: ``RESULTS.md`` is generated
from it. Fast-mode numbers come from tiny subsets and are not kept.
"""

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftcourse.runner import course_notebooks, run_course, run_notebook  # noqa: E402
from helpers import setup  # noqa: E402
from helpers.device import choose_precision  # noqa: E402
from helpers.environment import FAST_ENV  # noqa: E402


def machine_record(env) -> dict:
    """Where a benchmark ran: device, precision, threads, CPU (and whether it has native bf16), library versions."""
    return {
        "device": env.device,
        "precision": env.precision.name,
        "threads": env.threads,
        "cpu": env.capabilities.cpu_name,
        "cpu_native_bf16": env.capabilities.cpu_bf16,
        "versions": env.versions,
    }


def machine_key(env, mode: str) -> str:
    """``full/native-bf16``, ``fast/no-native-bf16``, ``full/cuda``…: one entry per kind of machine and mode.

    A run in another precision than the machine's own choice (``FTCOURSE_PRECISION=fp32`` on a CPU with native
    bf16: the arithmetic of a CPU without it, on faster hardware) is kept apart: ``full/native-bf16/fp32``.
    """
    kind = env.device if env.device != "cpu" else "native-bf16" if env.capabilities.cpu_bf16 else "no-native-bf16"
    key = f"{mode}/{kind}"
    if env.precision.name != choose_precision(env.capabilities, env.device).name:
        key += f"/{env.precision.name}"
    return key


def _default_mode_results(results: Path) -> dict:
    """The ``results`` file a notebook wrote, refused when it comes from a fast-mode run."""
    recorded = json.loads(results.read_text())
    if recorded["mode"] != "full":
        sys.exit(f"{results} comes from a fast-mode run")
    return recorded


def recorded_notebook_run(env, notebook: Path, results: Path) -> dict:
    """The wall time of the last ``--mode full`` run of ``notebook`` on this kind of machine, with the
    ``results`` file that run left: a benchmark's notebook part without running the notebook again."""
    times = json.loads((ROOT / "benchmarks" / "results" / "course_times.json").read_text())
    key = machine_key(env, "full")
    seconds = times.get(key, {}).get("seconds", {}).get(notebook.name)
    if seconds is None or not results.is_file():
        sys.exit(f"no course_times.py run of {notebook.name} under {key!r} with its results: run the notebook part")
    recorded = _default_mode_results(results)
    # The results file is the last run's, in whatever precision it ran: it must be the run whose time is read.
    if not str(recorded.get("measured_on", "")).endswith(f", {env.precision.name}"):
        sys.exit(
            f"{results} comes from a run in another precision than {env.precision.name} "
            f"({recorded.get('measured_on')!r}): set FTCOURSE_PRECISION to match it, or run the notebook part"
        )
    return {"seconds": seconds, "results": recorded}


def run_notebook_default(notebook: Path, results: Path) -> dict:
    """``notebook`` executed in default mode in a fresh kernel: its wall time and the ``results`` file it writes."""
    os.environ[FAST_ENV] = "0"  # the kernel inherits it: default mode
    results.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        run = run_notebook(notebook, Path(folder))
    if run.status != "passed":
        sys.exit(f"{notebook.name} failed: {run.detail}")
    return {"seconds": run.seconds, "results": _default_mode_results(results)}


def keep_lesson_records(path: Path, key: str, results: list, records: Path) -> None:
    """Add what each notebook that passed recorded (``records/<stem>.json``) to ``path`` under ``key``.

    A notebook's earlier record under the same key is replaced as a whole: its numbers come from one run.
    """
    kept = json.loads(path.read_text()) if path.is_file() else {}
    entry = kept.setdefault(key, {})
    for result in results:
        written = records / f"{result.notebook.stem}.json"
        if result.status != "passed":
            continue
        if not written.is_file():
            print(f"{result.notebook.name}: recorded nothing (no env.record call ran)")
            continue
        entry[result.notebook.name] = {
            **_default_mode_results(written),
            "date": date.today().isoformat(),
            "seconds": round(result.seconds, 1),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["full", "fast"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--executed", type=Path, help="keep the executed notebooks in this folder (default: discarded)")
    parser.add_argument(
        "--lessons",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "lessons.json",
        help="where full-mode runs keep what each lesson recorded (default: %(default)s)",
    )
    parser.add_argument("notebooks", nargs="*", help="default: every notebook of course/")
    args = parser.parse_args()
    env = setup(seed=42, fast=args.mode == "fast")
    notebooks = [Path(n) for n in args.notebooks] or course_notebooks()
    with tempfile.TemporaryDirectory() as scratch:
        records = Path(scratch) / "records"
        results = run_course(notebooks, args.executed or Path(scratch), fast=args.mode == "fast", results_dir=records)
        if args.mode == "full":
            keep_lesson_records(args.lessons, machine_key(env, "full"), results, records)
    failed = [r for r in results if r.status == "failed"]
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry = record.setdefault(machine_key(env, args.mode), {})
    # Notebooks re-timed one at a time may run on another CPU of the same kind and on another day: each keeps the
    # CPU and the date it was timed on, and the column's date lists them all.
    cpu_of = entry.setdefault("cpu_by_notebook", {})
    date_of = entry.setdefault("date_by_notebook", {})
    for name in entry.get("seconds", {}):
        cpu_of.setdefault(name, entry.get("cpu", ""))
        date_of.setdefault(name, entry.get("date", ""))
    entry.update(machine_record(env))
    seconds = entry.setdefault("seconds", {})
    for result in results:
        if result.status == "passed":
            seconds[result.notebook.name] = round(result.seconds, 1)
            cpu_of[result.notebook.name] = env.capabilities.cpu_name
            date_of[result.notebook.name] = date.today().isoformat()
    entry["date"] = ", ".join(sorted(set(date_of.values()), key=lambda day: (not day.startswith("before"), day)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    for result in results:
        print(f"{result.notebook.name:40} {result.status:8} {result.seconds:7.1f} s {result.detail}")
    if failed:
        sys.exit(f"{len(failed)} notebook(s) failed: their times were not recorded")


if __name__ == "__main__":
    main()
