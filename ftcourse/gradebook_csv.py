"""The CSV files of ``ftcourse grade``: the grades it writes, the marks the instructor types.

The instructor's data is never lost:

- ``grades.csv`` is written once, at the end, to a temporary file renamed over
  the target (atomic: a crash leaves the old file or the new one, never half of
  one), and an existing file is replaced only with ``--force``;
- while grading, each student's rows are appended and flushed to
  ``grades.partial.csv`` as soon as that student is graded, so a crash loses
  nothing graded; it is removed once ``grades.csv`` is in place. A partial file
  left by an interrupted run is never truncated: ``--force`` first renames it to
  ``grades.partial-<date>-<time>.csv`` (:func:`keep_partial`);
- marks typed by hand (the rubric exercise, or any notebook the instructor
  re-marks) live in their own file, ``marks.csv``, which ``grade`` reads and
  merges into the grades, and to which it only ever adds empty lines for new
  rubric submissions: it never changes or removes a line.

Every file is UTF-8 with a byte-order mark (spreadsheet software then reads
accents right), and a text cell that starts with ``= + - @`` (or a tab, a
carriage return or ``'``) gets a leading ``'`` so that no spreadsheet runs it as
a formula; :func:`unescape` takes it off again. The grades file's separator is
a comma, or what ``--delimiter`` says (``;`` for spreadsheets in a French
locale, which read a comma-separated file as one column). After each atomic
replace the folder itself is flushed to disk, so that the rename survives a
power cut. Used by :mod:`ftcourse.cli`.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ftcourse.files import sync_folder, write_atomically

ENCODING = "utf-8-sig"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
MARKS_COLUMNS = ["student", "notebook", "mark", "max", "comment"]


def escape(text: str) -> str:
    """A text cell that no spreadsheet reads as a formula: a leading ``'`` before ``= + - @`` (and ``'``)."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def unescape(text: str) -> str:
    """The inverse of :func:`escape`."""
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_STARTS) else text


def number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def partial_path(out: Path) -> Path:
    """Where the rows of a run in progress go: ``grades.partial.csv`` beside ``grades.csv``."""
    return out.with_name(f"{out.stem}.partial{out.suffix or '.csv'}")


def keep_partial(partial: Path) -> Path:
    """Rename an interrupted run's partial file to a name with the date and time (never overwriting one):
    where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(partial.stat().st_mtime))
    for attempt in range(1000):
        kept = partial.with_name(f"{partial.stem}-{stamp}{f'-{attempt}' if attempt else ''}{partial.suffix}")
        try:
            os.link(partial, kept)  # fails if the name is taken: never replaces a kept file
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links (FAT, some network shares): rename to a free name
            if kept.exists():
                continue
            os.rename(partial, kept)
        else:
            partial.unlink()
        sync_folder(partial.parent)
        return kept
    raise FileExistsError(f"no free name to keep {partial}")


def csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


class PartialFile:
    """``grades.partial.csv``: rows appended and flushed to disk as students finish."""

    def __init__(self, path: Path, header: list[str], delimiter: str = ",") -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = path.open("x", encoding=ENCODING, newline="")  # never truncates an existing file
        self._writer = csv.writer(self._stream, lineterminator="\r\n", delimiter=delimiter)
        self.rows_written = 0
        self._write([header])
        sync_folder(path.parent)

    def add(self, rows: list[list[str]]) -> None:
        self._write(rows)
        self.rows_written += len(rows)

    def _write(self, rows: list[list[str]]) -> None:
        self._writer.writerows(rows)
        self._stream.flush()
        os.fsync(self._stream.fileno())

    def close(self, remove: bool) -> None:
        self._stream.close()
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class Mark:
    """One line of the marks file, as the instructor typed it (text unescaped)."""

    student: str
    notebook: str
    mark: str
    comment: str
    line: int


class MarksFileError(ValueError):
    """The marks file cannot be read as ``student, notebook, mark, max, comment`` (it is left untouched)."""


def marks_delimiter(path: Path, default: str = ",") -> str:
    """The separator of an existing marks file, read from its header (a spreadsheet in a French locale saves
    it with ';'), else ``default``."""
    try:
        with path.open(encoding=ENCODING, newline="") as handle:
            header = handle.readline()
    except (OSError, UnicodeDecodeError):
        return default
    return ";" if ";" in header and "," not in header else ("," if "," in header else default)


def read_marks(path: Path) -> list[Mark]:
    """The lines of the marks file (none if it does not exist), separated by commas or semicolons."""
    if not path.exists():
        return []
    try:
        with path.open(encoding=ENCODING, newline="") as handle:
            reader = csv.DictReader(handle, delimiter=marks_delimiter(path))
            missing = [c for c in ("student", "notebook", "mark") if c not in (reader.fieldnames or [])]
            if missing:
                raise MarksFileError(f"{path}: no column {', '.join(missing)} (expected {', '.join(MARKS_COLUMNS)})")
            return [
                Mark(
                    unescape(row.get("student") or ""),
                    unescape(row.get("notebook") or ""),
                    (row.get("mark") or "").strip(),
                    unescape(row.get("comment") or ""),
                    reader.line_num,
                )
                for row in reader
            ]
    except (UnicodeDecodeError, csv.Error) as error:
        raise MarksFileError(f"{path}: cannot be read ({error})") from None


def add_mark_lines(path: Path, wanted: list[tuple[str, str, float | None]], delimiter: str = ",") -> int:
    """Append an empty line for each (student, notebook, max) not yet in the marks file; never touch the others.

    Returns how many lines were added. The file is rewritten atomically with its
    existing lines byte for byte, followed by the new ones, in the file's own
    separator (``delimiter`` for a new file).
    """
    present = {(m.student, m.notebook) for m in read_marks(path)}
    new = [(s, n, m) for s, n, m in wanted if (s, n) not in present]
    if not new:
        return 0
    delimiter = marks_delimiter(path, delimiter) if path.exists() else delimiter
    if path.exists():
        with path.open(encoding=ENCODING, newline="") as handle:  # line ends as they are, "\r\n" included
            old = handle.read()
    else:
        old = csv_text(MARKS_COLUMNS, [], delimiter)
    if old and not old.endswith(("\n", "\r")):
        old += "\r\n"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n", delimiter=delimiter).writerows(
        [[escape(s), escape(n), "", number(m), ""] for s, n, m in new]
    )
    write_atomically(path, old + buffer.getvalue(), encoding=ENCODING)
    return len(new)
