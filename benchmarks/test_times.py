"""Measure how long the course's own checks take here: ``make quick`` and CI's ``.ci/run``, against their targets.

    python benchmarks/test_times.py quick --out benchmarks/results/test_times.json
    python benchmarks/test_times.py ci --out benchmarks/results/test_times.json

``quick`` runs ``make quick`` in this checkout (its venv already set up). ``ci`` clones the
committed ``HEAD`` of this checkout into a temporary folder and runs ``.ci/run`` there, as CI does
on a clean checkout (setup included). Each run's wall time, exit status and machine are recorded
under its name; the README's "test-times" table is rendered from that file
(``benchmarks/readme_tables.py``). A failed run is recorded as failed, never as a time to meet a
target with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.device import detect_capabilities  # noqa: E402

# The targets of issue 30, on this course's 2-core machines.
TARGETS = {"make quick": 120, ".ci/run": 20 * 60}


def run(command: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    return code, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("quick", "ci"))
    parser.add_argument("--out", type=Path, default=None, help="record the run in this JSON file")
    parser.add_argument("--log", type=Path, default=None, help="keep the run's output here (default: a temp file)")
    args = parser.parse_args()
    caps = detect_capabilities()
    with tempfile.TemporaryDirectory(prefix="ftcourse-test-times-") as tmp:
        log = args.log or Path(tmp) / f"{args.what}.log"
        if args.what == "quick":
            name, commit = "make quick", None
            code, seconds = run(["make", "quick"], ROOT, log)
        else:
            name = ".ci/run"
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
            clone = Path(tmp) / "checkout"
            subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
            code, seconds = run(["bash", ".ci/run"], clone, log)
        print(log.read_text(encoding="utf-8")[-3000:])
        print(f"{name}: exit {code} in {seconds:.0f} s (target {TARGETS[name]} s)")
        if args.out:
            record = json.loads(args.out.read_text()) if args.out.is_file() else {}
            record[name] = {
                "seconds": round(seconds, 1),
                "exit_status": code,
                "target_seconds": TARGETS[name],
                "commit": commit,
                "cpu": caps.cpu_name,
                "cpu_native_bf16": caps.cpu_bf16,
                "threads": len(os.sched_getaffinity(0)),
                "date": date.today().isoformat(),
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
