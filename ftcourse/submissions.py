"""The submissions folder as ``ftcourse grade`` reads it: one folder per student, checked before grading.

Any folder name that is a valid file name is a student id and stays exactly
as it is in the CSV; nbgrader sees a safe internal name instead
(``student-0001``…), so ids such as ``bob[1]``, ``eve `` (trailing space) or
``*`` cannot be taken for a pattern or trimmed. Hidden entries (``.…``) and
``__MACOSX`` (macOS archive leftovers) are skipped. A graded notebook that is a
symbolic link, not a regular file, or larger than the size limit is refused
with the reason; every other entry of a student's folder is listed as not
graded. :func:`sanitized` repairs what would make nbgrader itself crash
(``metadata.nbgrader`` that is not a mapping). Used by :mod:`ftcourse.grading`.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_NOTEBOOK_MB = 20
SKIPPED_NAMES = {"__MACOSX"}


class SubmissionsError(ValueError):
    """Nothing to grade in the folder (a usage error of ``ftcourse grade``)."""


@dataclass
class StudentFolder:
    """One student's folder: id as written, nbgrader's internal name, what will be graded and what will not."""

    student: str
    folder: Path
    internal: str
    notebooks: dict[str, Path] = field(default_factory=dict)  # graded notebook name -> the file to grade
    refused: dict[str, str] = field(default_factory=dict)  # graded notebook name -> why it is not graded
    others: dict[str, str] = field(default_factory=dict)  # any other entry -> why it is not graded


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_NAMES


def _refusal(path: Path, max_mb: float) -> str | None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return "symbolic link refused (hand in the notebook itself)"
    if not stat.S_ISREG(info.st_mode):
        return "not a file"
    if info.st_size > max_mb * 2**20:
        return f"file too large ({info.st_size / 2**20:.1f} MB; the limit is {max_mb:g} MB)"
    return None


def find_students(submissions: Path, notebooks: list[str], max_mb: float = MAX_NOTEBOOK_MB) -> list[StudentFolder]:
    """The student folders of ``submissions`` in name order, each with its files sorted out."""
    if not submissions.is_dir():
        raise SubmissionsError(f"{submissions}: no such folder")
    students: list[StudentFolder] = []
    for entry in sorted(submissions.iterdir(), key=lambda p: p.name):
        if _skipped(entry.name):
            continue
        if entry.is_symlink():
            folder = StudentFolder(entry.name, entry, "")
            folder.refused = {name: "student folder is a symbolic link (refused)" for name in notebooks}
            students.append(folder)
            continue
        if not entry.is_dir():
            continue  # a loose file next to the student folders: not a student
        folder = StudentFolder(entry.name, entry, "")
        for item in sorted(entry.iterdir(), key=lambda p: p.name):
            if _skipped(item.name):
                continue
            if item.name in notebooks:
                why = _refusal(item, max_mb)
                if why:
                    folder.refused[item.name] = why
                else:
                    folder.notebooks[item.name] = item
            elif item.is_symlink():
                folder.others[item.name] = "not graded: symbolic link"
            elif item.is_dir():
                folder.others[item.name] = "not graded: a folder (the notebooks go directly in the student's folder)"
            else:
                folder.others[item.name] = "not graded: not a graded notebook name"
        students.append(folder)
    if not students:
        raise SubmissionsError(f"{submissions}: no student folders (expected one folder per student)")
    if not any(
        s.notebooks or set(s.refused) - {n for n, why in s.refused.items() if "student folder" in why} for s in students
    ):
        raise SubmissionsError(
            f"{submissions}: no student folder contains a graded notebook (expected file names: {', '.join(notebooks)})"
        )
    for number, folder in enumerate(students, start=1):
        folder.internal = f"student-{number:04d}"
    return students


def loose_files(submissions: Path) -> list[str]:
    """Files directly in the submissions folder (not in a student's folder): reported, never graded."""
    return sorted(p.name for p in submissions.iterdir() if not _skipped(p.name) and not p.is_dir())


class NotANotebook(ValueError):
    """The file is not a readable notebook; the message is the row's reason."""


def read_submission(path: Path) -> nbformat.NotebookNode:
    """A submitted notebook, read without following links; NotANotebook with the reason otherwise."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise NotANotebook(f"notebook not valid JSON ({type(error).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise NotANotebook("not a Jupyter notebook (no list of cells)")
    try:
        return nbformat.reads(json.dumps(data), as_version=4)
    except Exception as error:  # nbformat raises several kinds on a damaged notebook
        raise NotANotebook(f"not a Jupyter notebook ({type(error).__name__})") from None


_FLAGS = ("grade", "solution", "locked", "task")


def _valid_nbgrader(meta) -> bool:
    if not isinstance(meta, dict):
        return False
    if "grade_id" in meta and not isinstance(meta["grade_id"], str):
        return False
    if "points" in meta and (isinstance(meta["points"], bool) or not isinstance(meta["points"], (int, float))):
        return False
    return all(isinstance(meta.get(flag, False), bool) for flag in _FLAGS)


def sanitized(notebook: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook with damaged metadata removed (what would crash nbgrader), and what was removed."""
    removed: list[str] = []
    if not isinstance(notebook.get("metadata"), dict):
        notebook.metadata = nbformat.NotebookNode()
        removed.append("notebook metadata")
    for index, cell in enumerate(notebook.cells):
        if not isinstance(cell, dict) or not isinstance(cell.get("source", ""), str):
            raise NotANotebook(f"not a Jupyter notebook (cell {index} is damaged)")
        if not isinstance(cell.get("metadata"), dict):
            cell.metadata = nbformat.NotebookNode()
            removed.append(f"cell {index} metadata")
            continue
        for key in [k for k in cell.metadata if k.startswith("ftcourse")]:
            del cell.metadata[key]  # only the grader's own cells carry these
        if "nbgrader" in cell.metadata and not _valid_nbgrader(cell.metadata["nbgrader"]):
            del cell.metadata["nbgrader"]
            removed.append(f"cell {index} nbgrader metadata")
    return notebook, removed
