"""Where the course is: one rule for every ``ftcourse`` command, from any working directory.

The course root is the folder that holds ``course/`` and ``solutions/`` (a
checkout of this repository). It is, in this order:

1. ``--root DIR`` on the command line, or else the ``FTCOURSE_ROOT`` variable;
2. the working directory or its nearest parent that holds both folders;
3. the checkout the ``ftcourse`` package itself was imported from (an
   editable install, ``pip install -e .``).

A non-editable install (a wheel) has no checkout of its own, so there rule 1
or 2 applies. ``--course`` and ``--solutions`` still name either folder
explicitly; relative paths given on the command line are relative to the
working directory, as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "FTCOURSE_ROOT"


class CourseRootNotFound(FileNotFoundError):
    """No course checkout could be found by the rule above."""


def _is_root(folder: Path) -> bool:
    return (folder / "course").is_dir() and (folder / "solutions").is_dir()


def course_root(explicit: str | Path | None = None, start: Path | None = None) -> Path:
    """The course root by the module's rule; ``explicit`` is ``--root`` (it wins over ``FTCOURSE_ROOT``)."""
    given = explicit or os.environ.get(ROOT_ENV)
    if given:
        root = Path(given).expanduser().resolve()
        if not _is_root(root):
            source = "--root" if explicit else ROOT_ENV
            raise CourseRootNotFound(f"{source}={given}: {root} does not hold both course/ and solutions/")
        return root
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_root(folder):
            return folder
    package_checkout = Path(__file__).resolve().parent.parent
    if _is_root(package_checkout):
        return package_checkout
    raise CourseRootNotFound(
        f"no course checkout found: neither {here} nor its parents hold course/ and solutions/, and the installed "
        f"ftcourse package is not inside a checkout. Run the command inside your copy of the course, pass "
        f"--root DIR, or set {ROOT_ENV}=DIR."
    )


def course_dir(root: Path | None = None) -> Path:
    """The ``course/`` folder (student notebooks)."""
    return (root or course_root()) / "course"


def solutions_dir(root: Path | None = None) -> Path:
    """The ``solutions/`` folder (instructor sources of the graded notebooks)."""
    return (root or course_root()) / "solutions"
