"""What students get: ``ftcourse handout DIR`` writes the course without ``solutions/`` or hidden tests.

The hand-out holds the notebooks of ``course/`` (lessons and released
exercises), the ``helpers`` library they import, the part of the ``ftcourse``
command students use (``install-assets``, ``doctor``, ``run``, ``normalize``:
:data:`STUDENT_MODULES`) and the files that install them (``pyproject.toml``,
``constraints.txt``, ``asset-hashes.txt``, ``environment.yml``, ``Makefile``, ``README.md``, the
setup preflight ``.ci/preflight.py``). It
never holds ``solutions/``, the tests, the benchmarks, ``nbgrader_config.py``
or the grading internals (the sandbox, the grader's checks, the hidden-test
rewriting): in the hand-out, ``ftcourse grade``, ``release`` and ``handout``
say they are instructor commands.

It refuses to write when a released notebook is out of date with its source
(``ftcourse release`` first), when the folder is not new or empty, and, as a
last check, when any notebook it wrote still carries a solution or hidden-test
marker. It is built in a temporary folder beside the target and renamed into
place. Used by :mod:`ftcourse.cli`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

# .ci/preflight.py: make setup checks Python, venv and disk space with it; asset-hashes.txt: install-assets checks
# the asset wheels against it.
FILES = (
    "pyproject.toml",
    "constraints.txt",
    "asset-hashes.txt",
    "environment.yml",
    "Makefile",
    "README.md",
    "RESULTS.md",  # the README links to it
    ".gitignore",
    ".ci/preflight.py",
)
PACKAGES = ("helpers", "ftcourse")
# The modules of ftcourse a student's copy needs (ftcourse doctor, run, install-assets, normalize).
STUDENT_MODULES = ("__init__.py", "cli.py", "paths.py", "runner.py", "files.py")
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


class HandoutError(ValueError):
    """The hand-out cannot be written (and nothing was)."""


def _ignore(folder: str, names: list[str]) -> set[str]:
    ignored = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo")) or n.startswith(".")}
    if Path(folder).name == "ftcourse":  # grading internals stay with the instructor
        ignored |= {n for n in names if n.endswith(".py") and n not in STUDENT_MODULES}
    return ignored


def write_handout(root: Path, target: Path) -> list[Path]:
    """Write the students' copy of the course at ``root`` into the new or empty folder ``target``; its files."""
    from ftcourse.grading import released_matches_source

    root = root.resolve()
    target = target.expanduser().absolute()
    for inner in ("course", "solutions", *PACKAGES):
        if target.resolve().is_relative_to(root / inner):
            raise HandoutError(f"{target} is inside {root / inner}: choose a folder outside it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise HandoutError(f"{target} exists and is not an empty folder")
    stale = released_matches_source(root / "course", root / "solutions")
    if stale:
        raise HandoutError(
            f"released notebooks out of date with solutions/: {', '.join(stale)}; run `ftcourse release` first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (build / "course").mkdir()
        for notebook in sorted((root / "course").glob("*.ipynb")):
            if not notebook.name.startswith("."):
                shutil.copy2(notebook, build / "course" / notebook.name)
        for package in PACKAGES:
            shutil.copytree(root / package, build / package, ignore=_ignore)
        for name in FILES:
            if (root / name).is_file():
                (build / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, build / name)
        for notebook in build.rglob("*.ipynb"):
            text = notebook.read_text(encoding="utf-8")
            leaked = [marker for marker in MARKERS if marker in text]
            if leaked:
                raise HandoutError(f"{notebook.relative_to(build)} contains {', '.join(leaked)}: not handed out")
        if target.exists():
            target.rmdir()
        build.rename(target)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return sorted(p for p in target.rglob("*") if p.is_file())
