"""Run the test suite as two streams at once, for `make test` on a machine with several cores.

Each stream is a list of pytest runs, one after the other; the two streams run side by side. A
notebook's runs (main precision, then the other) all belong to one stream, so that no notebook is
ever executed twice at the same time: lessons write into ``course/outputs/``. The unit tests go in
the stream with the lighter notebooks, so that both end at about the same time (measured, see the
README). Each stream writes its own log, printed whole when it ends; the exit status is the first
failure's, 0 when every run passed.

    python .ci/test_streams.py --main-precision bf16 --other-precision fp32 -- <pytest options>

``--other-precision none`` skips the second precision (a CPU without native bf16: see the Makefile);
``--training-notebooks`` alone prints the notebooks that run in both precisions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBVAL = ["--nbval-lax", "--nbval-current-env", "--nbval-cell-timeout=900"]

# The notebooks that train, run again in the other precision.
TRAINING = {
    "course/01_strategies.ipynb",
    "course/03_bert_classification.ipynb",
    "course/04_gpt_instruction_tuning.ipynb",
    "course/05_hyperparameters.ipynb",
    "course/06_catastrophic_forgetting.ipynb",
    "course/07_overfitting_imbalance.ipynb",
    "course/08_multitask.ipynb",
    "course/09_evaluation.ipynb",
    "course/11_peft.ipynb",
    "solutions/13_exercise_sentiment.ipynb",
}
# Stream "notebooks": the lessons that train, but for 09, which goes to stream "tests" after the unit tests so
# that both streams end at about the same time. Every other notebook goes to stream "tests" too (a new
# notebook lands there by default).
HEAVY = TRAINING - {"course/09_evaluation.ipynb"}


def notebooks() -> list[str]:
    """Every notebook nbval runs, in name order: the released assignments of course/ are left out, as
    conftest.py leaves them out of a folder's collection (their stubs raise by design)."""
    import nbformat

    from ftcourse.runner import is_nbgrader_assignment

    found = sorted(ROOT.glob("course/*.ipynb")) + sorted(ROOT.glob("solutions/*.ipynb"))
    return [
        path.relative_to(ROOT).as_posix()
        for path in found
        if path.parent.name == "solutions" or not is_nbgrader_assignment(nbformat.read(path, as_version=4))
    ]


def streams(main: str, other: str | None, extra: list[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """``{stream: [(precision, pytest arguments), ...]}``."""
    light = [nb for nb in notebooks() if nb not in HEAVY]
    heavy = [nb for nb in notebooks() if nb in HEAVY]
    plan = {
        "tests": [(main, ["tests", *light, *extra])],
        "notebooks": [(main, [*heavy, *extra])],
    }
    if other is not None:
        plan["tests"].append((other, ["tests/test_device.py", *[nb for nb in light if nb in TRAINING], *extra]))
        plan["notebooks"].append((other, [*[nb for nb in heavy if nb in TRAINING], *extra]))
    return plan


def run_stream(name: str, runs: list[tuple[str, list[str]]], log: Path, results: dict) -> None:
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        for precision, args in runs:
            command = [sys.executable, "-m", "pytest", *NBVAL, *args]
            out.write(f"== stream {name}, FTCOURSE_PRECISION={precision}: pytest {' '.join(args)}\n")
            out.flush()
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTCOURSE_FAST": "1", "FTCOURSE_PRECISION": precision}
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
            if code != 0:
                results[name] = code
                break
        else:
            results[name] = 0
    results[f"{name} seconds"] = time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main-precision", required=True, choices=("bf16", "fp32"))
    parser.add_argument("--other-precision", required=True, choices=("bf16", "fp32", "none"))
    parser.add_argument("pytest_args", nargs="*", help="more pytest options, after --")
    if argv is None and sys.argv[1:] == ["--training-notebooks"]:  # for make test-other-precision
        print(" ".join(sorted(TRAINING)))
        return 0
    args = parser.parse_args(argv)
    other = None if args.other_precision == "none" else args.other_precision
    plan = streams(args.main_precision, other, args.pytest_args)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="ftcourse-streams-") as folder:
        logs = {name: Path(folder) / f"{name}.log" for name in plan}
        threads = [
            threading.Thread(target=run_stream, args=(name, runs, logs[name], results)) for name, runs in plan.items()
        ]
        print(f"== {len(plan)} streams at once: " + "; ".join(f"{n}: {len(r)} pytest run(s)" for n, r in plan.items()))
        for thread in threads:
            thread.start()
        for thread, name in zip(threads, plan):
            thread.join()
            print(logs[name].read_text(encoding="utf-8"), flush=True)
    for name in plan:
        print(f"== stream {name}: {'passed' if results[name] == 0 else 'FAILED'} in {results[name + ' seconds']:.0f} s")
    return next((results[name] for name in plan if results[name] != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
