"""Benchmark: how long each notebook of the course takes, in default or fast mode, on this machine.

Runs ``course/`` with the same runner as ``ftcourse run`` (fresh kernel per
notebook) and records the wall time of each notebook, the precision it trained
in and the processor, under a key that names the mode and whether the CPU has
native bf16: runs on other machines are kept, so the README can show both
kinds of CPU side by side (``benchmarks/readme_tables.py``).

    python benchmarks/course_times.py --mode full --out benchmarks/results/course_times.json
    python benchmarks/course_times.py --mode fast --out benchmarks/results/course_times.json
"""

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftcourse.runner import course_notebooks, run_course  # noqa: E402
from helpers import setup  # noqa: E402


def machine_key(env, mode: str) -> str:
    """``full/native-bf16``, ``fast/no-native-bf16``, ``full/cuda``…: one entry per kind of machine and mode."""
    if env.device != "cpu":
        return f"{mode}/{env.device}"
    return f"{mode}/{'native-bf16' if env.capabilities.cpu_bf16 else 'no-native-bf16'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["full", "fast"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--executed", type=Path, help="keep the executed notebooks in this folder (default: discarded)")
    parser.add_argument("notebooks", nargs="*", help="default: every notebook of course/")
    args = parser.parse_args()
    env = setup(seed=42, fast=args.mode == "fast")
    notebooks = [Path(n) for n in args.notebooks] or course_notebooks()
    with tempfile.TemporaryDirectory() as scratch:
        results = run_course(notebooks, args.executed or Path(scratch), fast=args.mode == "fast")
    failed = [r for r in results if r.status == "failed"]
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entry = record.setdefault(machine_key(env, args.mode), {})
    # Notebooks re-timed one at a time may run on another CPU of the same kind: each keeps the CPU it ran on.
    cpu_of = entry.setdefault("cpu_by_notebook", {})
    for name in entry.get("seconds", {}):
        cpu_of.setdefault(name, entry.get("cpu", ""))
    entry.update({
        "cpu": env.capabilities.cpu_name, "cpu_native_bf16": env.capabilities.cpu_bf16,
        "device": env.device, "precision": env.precision.name, "threads": env.threads,
        "date": date.today().isoformat(), "versions": env.versions,
    })
    seconds = entry.setdefault("seconds", {})
    for result in results:
        if result.status == "passed":
            seconds[result.notebook.name] = round(result.seconds, 1)
            cpu_of[result.notebook.name] = env.capabilities.cpu_name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    for result in results:
        print(f"{result.notebook.name:40} {result.status:8} {result.seconds:7.1f} s {result.detail}")
    if failed:
        sys.exit(f"{len(failed)} notebook(s) failed: their times were not recorded")


if __name__ == "__main__":
    main()
