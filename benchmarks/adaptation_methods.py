"""Benchmark of lesson 11: full, partial and LoRA fine-tuning measured alike, from the notebook in default mode.

``course/11_peft.ipynb`` executed in default mode in a fresh kernel: its wall
time and the results it saves (``course/outputs/11_peft/results.json``: the
MiniLM and SmolLM2 tables with costs, quality and retention, the adapter
checks, the TRL comparison and the QLoRA weight bytes), with the machine it
ran on. ``benchmarks/readme_tables.py`` renders the README's table from it.

Run from the repository root:

    python benchmarks/adaptation_methods.py --out benchmarks/results/adaptation_methods.json
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.course_times import machine_record, recorded_notebook_run, run_notebook_default  # noqa: E402
from helpers import setup  # noqa: E402

NOTEBOOK = ROOT / "course" / "11_peft.ipynb"
RESULTS = ROOT / "course" / "outputs" / "11_peft" / "results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="write the results as JSON here")
    parser.add_argument(
        "--reuse-course-times-run",
        action="store_true",
        help="take the wall time and results of the last `course_times.py --mode full` run of the "
        "notebook instead of running it again",
    )
    args = parser.parse_args()
    env = setup(seed=42, fast=False)
    run = (
        recorded_notebook_run(env, NOTEBOOK, RESULTS)
        if args.reuse_course_times_run
        else run_notebook_default(NOTEBOOK, RESULTS)
    )
    run["measured_on"] = machine_record(env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(run, indent=2, ensure_ascii=False))
    print(f"notebook 11, default mode, wall time {run['seconds'] / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
