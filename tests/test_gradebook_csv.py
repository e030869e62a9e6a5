"""The CSV files of ``ftcourse grade`` (ftcourse.gradebook_csv, grading.apply_marks): nothing the instructor
wrote is lost, and no cell is a spreadsheet formula. The whole command is exercised in tests/test_grading_runs.py."""

import csv
import os

import pytest

from ftcourse.gradebook_csv import (
    ENCODING,
    MARKS_COLUMNS,
    PartialFile,
    add_mark_lines,
    csv_text,
    escape,
    read_marks,
    unescape,
    write_atomically,
)
from ftcourse.grading import GRADED, NEEDS_REVIEW, RUBRIC, GradeRow, apply_marks


@pytest.mark.parametrize("text", ["=1+1", "+33 6", "-2", "@SUM(A1)", "'quoted", "\tx", "=", "'=x"])
def test_formula_starts_are_escaped_and_unescaped(text):
    escaped = escape(text)
    assert escaped == "'" + text and unescape(escaped) == text


@pytest.mark.parametrize("text", ["alice", "bob[1]", "eve ", "*", "élève", "a=b", ""])
def test_other_text_is_unchanged(text):
    assert escape(text) == text and unescape(text) == text


def test_written_file_has_a_bom_and_reads_back(tmp_path):
    path = tmp_path / "grades.csv"
    write_atomically(path, csv_text(["student", "total"], [[escape("=évé"), "3"], ["bob[1]", ""]]), encoding=ENCODING)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with path.open(encoding=ENCODING, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["student", "total"], ["'=évé", "3"], ["bob[1]", ""]]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text("old,content\r\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "student\r\n\udc80\r\n", encoding=ENCODING)  # a lone surrogate cannot be encoded
    assert path.read_bytes() == b"old,content\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv"]


def test_partial_file_rows_are_on_disk_before_it_is_closed(tmp_path):
    path = tmp_path / "grades.partial.csv"
    partial = PartialFile(path, ["student", "total"])
    partial.add([["alice", "9"]])
    with path.open(encoding=ENCODING, newline="") as handle:  # another reader, while it is still open
        assert list(csv.reader(handle)) == [["student", "total"], ["alice", "9"]]
    partial.add([["bob", "3"]])
    partial.close(remove=False)
    assert path.exists() and partial.rows_written == 2
    PartialFile(tmp_path / "empty.csv", ["student"]).close(remove=True)
    assert not (tmp_path / "empty.csv").exists()


def test_mark_lines_are_added_never_changed(tmp_path):
    marks = tmp_path / "marks.csv"
    assert add_mark_lines(marks, [("bob[1]", "14_exercise_sentiment.ipynb", 10.0), ("=x", "11.ipynb", 10.0)]) == 2
    lines = marks.read_text(encoding=ENCODING).splitlines()
    assert lines[0] == ",".join(MARKS_COLUMNS)
    # The instructor types a mark and a comment (and keeps the file as a spreadsheet saved it: no final newline).
    typed = marks.read_text(encoding=ENCODING).replace(
        "bob[1],14_exercise_sentiment.ipynb,,10,", 'bob[1],14_exercise_sentiment.ipynb,"7,5",10,"clair, bien mesuré"'
    )
    marks.write_text(typed.rstrip("\r\n"), encoding=ENCODING)
    before = marks.read_bytes()
    assert add_mark_lines(marks, [("bob[1]", "14_exercise_sentiment.ipynb", 10.0), ("eve ", "11.ipynb", 10.0)]) == 1
    after = marks.read_bytes()
    assert after.startswith(before) and after.count(b"bob[1]") == 1
    assert add_mark_lines(marks, [("eve ", "11.ipynb", 10.0)]) == 0 and marks.read_bytes() == after
    read = {(m.student, m.notebook): (m.mark, m.comment) for m in read_marks(marks)}
    assert read == {
        ("bob[1]", "14_exercise_sentiment.ipynb"): ("7,5", "clair, bien mesuré"),
        ("=x", "11.ipynb"): ("", ""),
        ("eve ", "11.ipynb"): ("", ""),
    }


def _rows():
    return [
        GradeRow("bob", "11.ipynb", NEEDS_REVIEW, RUBRIC, None, 10.0),
        GradeRow("eve", "11.ipynb", NEEDS_REVIEW, RUBRIC, None, 10.0),
        GradeRow("ann", "13.ipynb", GRADED, "", 7.0, 9.0),
        GradeRow("zoe", "11.ipynb", NEEDS_REVIEW, RUBRIC, None, 10.0),
    ]


def test_marks_are_merged_and_bad_ones_flagged(tmp_path):
    marks = tmp_path / "marks.csv"
    marks.write_text(
        csv_text(
            MARKS_COLUMNS,
            [
                ["bob", "11.ipynb", "7,5", "10", "bien"],
                ["eve", "11.ipynb", "12", "10", ""],
                ["ann", "13.ipynb", "8", "9", "re-marked"],
                ["zoe", "11.ipynb", "3", "", ""],
                ["zoe", "11.ipynb", "4", "", ""],
                ["nobody", "11.ipynb", "5", "", ""],
                ["bob", "13.ipynb", "", "", "no mark typed"],
            ],
        ),
        encoding=ENCODING,
    )
    rows = _rows()
    unknown = apply_marks(rows, read_marks(marks))
    got = {r.student: (r.status, r.total, r.reason) for r in rows}
    assert got["bob"] == (GRADED, 7.5, "marked by hand: bien")
    assert got["eve"][0:2] == (NEEDS_REVIEW, None) and "hand mark not valid: '12'" in got["eve"][2]
    assert got["ann"] == (GRADED, 8.0, "marked by hand: re-marked (autograder: 7)")
    assert got["zoe"][0:2] == (NEEDS_REVIEW, None) and got["zoe"][2].startswith("several hand marks")
    assert [(m.student, m.notebook) for m in unknown] == [("nobody", "11.ipynb")]


def test_unreadable_marks_file_is_an_error_and_left_alone(tmp_path):
    from ftcourse.gradebook_csv import MarksFileError

    marks = tmp_path / "marks.csv"
    marks.write_text("name;score\nbob;3\n", encoding="utf-8")
    before = marks.read_bytes()
    with pytest.raises(MarksFileError, match="no column student, notebook, mark"):
        read_marks(marks)
    assert marks.read_bytes() == before
    assert os.listdir(tmp_path) == ["marks.csv"]


def test_an_interrupted_run_is_kept_under_a_dated_name_never_replaced(tmp_path):
    """grades.partial.csv of an interrupted run: --force keeps it as grades.partial-<date>-<time>.csv, and a second
    one of the same second gets its own name instead of replacing the first."""
    from ftcourse.gradebook_csv import keep_partial

    partial = tmp_path / "grades.partial.csv"
    partial.write_bytes(b"first run")
    first = keep_partial(partial)
    partial.write_bytes(b"second run")
    os.utime(partial, (first.stat().st_mtime, first.stat().st_mtime))  # the same date and time
    second = keep_partial(partial)
    assert first != second and not partial.exists()
    assert (first.read_bytes(), second.read_bytes()) == (b"first run", b"second run")
    assert second.name == first.name.replace(".csv", "-1.csv")


def test_marks_saved_by_a_french_spreadsheet_are_read_and_extended_with_semicolons(tmp_path):
    """A marks file re-saved by a spreadsheet in a French locale uses ';': it is read, and new lines follow it."""
    path = tmp_path / "marks.csv"
    path.write_text('student;notebook;mark;max;comment\r\nalice;13.ipynb;"8,5";10;bien\r\n', encoding=ENCODING)
    marks = read_marks(path)
    assert [(m.student, m.notebook, m.mark, m.comment) for m in marks] == [("alice", "13.ipynb", "8,5", "bien")]
    before = path.read_bytes()
    assert add_mark_lines(path, [("alice", "13.ipynb", 10), ("bob", "13.ipynb", 10)]) == 1
    assert path.read_bytes() == before + b"bob;13.ipynb;;10;\r\n"
    fresh = tmp_path / "new-marks.csv"
    assert add_mark_lines(fresh, [("eve", "13.ipynb", 10)], delimiter=";") == 1
    assert fresh.read_bytes() == "student;notebook;mark;max;comment\r\neve;13.ipynb;;10;\r\n".encode(ENCODING)
