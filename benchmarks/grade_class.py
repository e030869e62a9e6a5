"""Benchmark: autograde a class of N students with `ftcourse grade` and report seconds per submission.

Each student submits the three autograded notebooks (quiz, LR range test,
early stopping), answered like a real class: some complete, some partly
wrong, some blank. Grading runs as ``ftcourse grade`` runs it: the
instructor's solutions first (the canary, counted in the wall time), then the
class, every kernel in the sandbox (bubblewrap) unless ``--no-sandbox``. Run
from the repository root:

    python benchmarks/grade_class.py --students 30 --jobs 2 --out benchmarks/results/grading.json

With ``--out``, each run is recorded under a key naming the class size, the
jobs, the sandbox and whether the CPU has native bf16, with the CPU's name and
the sandbox in force; runs of other machines are kept
(``benchmarks/readme_tables.py`` puts them in the README).
"""

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftcourse.grading import (  # noqa: E402
    answered_notebook,
    grade,
    graded_sources,
    is_manually_graded,
    solution_answers,
    summary,
)
from ftcourse.sandbox import available_cpus  # noqa: E402
from helpers.device import detect_capabilities  # noqa: E402
from helpers.environment import PRECISION_ENV  # noqa: E402


def make_class(folder: Path, students: int, seed: int) -> None:
    rng = random.Random(seed)
    for number in range(students):
        student = folder / f"student{number:03d}"
        student.mkdir(parents=True)
        for source in graded_sources():
            if is_manually_graded(nbformat.read(source, as_version=4)):
                continue  # graded by hand: `grade` does not run it
            answers = solution_answers(source)
            kind = rng.choice(["complete", "complete", "partial", "blank"])
            if kind == "blank":
                answers = {}
            elif kind == "partial":
                # Wrong quiz letters or a stubbed-out function: real failures for the graders to run into.
                answers = {
                    grade_id: re.sub(r'"[abcd]"', f'"{rng.choice("abcd")}"', code)
                    if grade_id.startswith("q")
                    else (code if rng.random() < 0.5 else "raise NotImplementedError()")
                    for grade_id, code in answers.items()
                }
            nbformat.write(answered_notebook(ROOT / "course" / source.name, answers), student / source.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--jobs", type=int, nargs="+", default=[2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="record the runs in this JSON file")
    parser.add_argument("--no-sandbox", action="store_true", help="grade without bubblewrap (for comparison)")
    args = parser.parse_args()
    caps = detect_capabilities()
    record = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        make_class(Path(tmp) / "class", args.students, args.seed)
        print(
            f"{'jobs':>4}  {'students':>8}  {'autograded':>10}  {'wall s':>7}  {'s/student':>9}  "
            f"{'s/autograded nb':>15}  result"
        )
        for jobs in args.jobs:
            start = time.perf_counter()
            run = grade(Path(tmp) / "class", timeout=60, jobs=jobs, progress=False, sandbox=not args.no_sandbox)
            wall = time.perf_counter() - start
            rows = run.rows
            executed = sum(row.total is not None for row in rows)  # notebooks nbgrader actually ran
            print(
                f"{jobs:>4}  {args.students:>8}  {executed:>10}  {wall:7.1f}  {wall / args.students:9.2f}  "
                f"{wall / max(executed, 1):15.2f}  {summary(rows)}; sandbox {run.sandbox.kind}; {caps.cpu_name}, "
                f"{'native bf16' if caps.cpu_bf16 else 'no native bf16'}",
                flush=True,
            )
            kind = "native-bf16" if caps.cpu_bf16 else "no-native-bf16"
            record[f"{args.students} students, {jobs} jobs, sandbox {run.sandbox.kind}/{kind}"] = {
                "students": args.students,
                "jobs": jobs,
                "autograded_notebooks": executed,
                "seconds": round(wall, 1),
                "seconds_per_student": wall / args.students,
                "seconds_per_autograded_notebook": wall / max(executed, 1),
                "summary": summary(rows),
                "cpu": caps.cpu_name,
                "cpu_native_bf16": caps.cpu_bf16,
                "precision_override": os.environ.get(PRECISION_ENV, ""),
                "date": date.today().isoformat(),
                "sandbox": run.sandbox.kind,
                "sandbox_detail": run.sandbox.detail,
                "cpu_count": available_cpus(),
                "confinement": run.confinement.kind if run.confinement else None,
                "checker": "signed report (hidden tests as functions, audit-hook anchor)",
            }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
