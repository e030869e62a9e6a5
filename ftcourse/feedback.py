"""The feedback page ``ftcourse grade --feedback`` writes for each student and notebook.

nbgrader's own feedback page is the executed notebook, hidden tests included:
handed back, it gives every later cohort the tests to write against (nbgrader
issue #917), and it is HTML written with nbconvert's sanitizer off, so a
student's output can carry script into the page the instructor opens. This
page shows, for each graded test, its name, its points, passed or failed,
what the test printed (the seed of its hidden tests, the quiz's explanations)
and the last line of its error, all as escaped text; never the code of a cell,
never raw HTML from an output. A printed line that is a line of the hidden
tests (student code can read the source of the tests that call it) is
masked. ``ftcourse grade --feedback-with-tests`` writes nbgrader's page
instead, for the instructor's own use. Control characters and
terminal escapes are taken out of everything shown (:func:`printable`). Used
by :mod:`ftcourse.grading`.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

from ftcourse.files import write_atomically
from ftcourse.gradebook_csv import number

# Terminal escapes (CSI and OSC sequences, lone ESC), then every control character but newline and tab.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b.?")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str, newlines: bool = True) -> str:
    """``text`` without terminal escapes and control characters (bidirectional overrides included);
    newlines and tabs are kept when ``newlines``, else each becomes a space."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", str(text)))
    return text if newlines else re.sub(r"[\n\t]", " ", text)


def _test_results(notebook: nbformat.NotebookNode) -> list[dict]:
    """For each autograded test cell: its id, what it printed, and its error (type and message) if it failed."""
    results = []
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        printed, error = [], None
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                printed.append(str(output.get("text", "")))
            elif kind == "error":
                error = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        results.append(
            {
                "grade_id": meta.get("grade_id", ""),
                "points": float(meta.get("points", 0)),
                "printed": "".join(printed),
                "error": error,
            }
        )
    return results


HIDDEN_LINE = "[ligne masquée : code des tests cachés]"


def _hidden_lines(notebook: nbformat.NotebookNode) -> set[str]:
    """The lines of the hidden tests as they ran (stripped; the short ones, like ``else:``, left out)."""
    lines: set[str] = set()
    for cell in notebook.cells:
        source = str(cell.get("source", ""))
        if cell.get("cell_type") == "code" and "### BEGIN HIDDEN TESTS" in source:
            hidden = source[source.index("### BEGIN HIDDEN TESTS") :]
            lines.update(line.strip() for line in hidden.splitlines() if len(line.strip()) >= 12)
    return lines


def _masked(text: str, hidden: set[str]) -> str:
    """``text`` with every line that is a line of the hidden tests replaced (student code can read the source of
    the tests that run it, and print it into its own feedback)."""
    return "\n".join(HIDDEN_LINE if line.strip() in hidden else line for line in text.split("\n"))


_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap;background:#f6f6f6;"
    "padding:.5em}.passed{color:#176317}.failed{color:#a31515}"
)


def feedback_html(
    notebook: nbformat.NotebookNode, steps: dict[str, float], total: float | None, max_score: float | None, title: str
) -> str:
    """The page: the total, then one section per test (points as graded, printed text, error line)."""
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p id="total">Score : {number(total) or "-"} / {number(max_score) or "-"}</p>',
    ]
    hidden = _hidden_lines(notebook)
    for result in _test_results(notebook):
        grade_id = result["grade_id"]
        score = steps.get(grade_id, 0.0)
        passed = score >= result["points"] > 0
        parts.append(f'<section id="{html.escape(grade_id, quote=True)}"><h2>{html.escape(grade_id)}</h2>')
        parts.append(
            f'<p class="score {"passed" if passed else "failed"}">Score : {number(score)} / '
            f"{number(result['points'])} ({'réussi' if passed else 'échoué'})</p>"
        )
        if result["printed"]:
            parts.append(f'<pre class="printed">{html.escape(printable(_masked(result["printed"], hidden)))}</pre>')
        if result["error"]:
            parts.append(f'<pre class="error">{html.escape(printable(_masked(result["error"], hidden)))}</pre>')
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_feedback(
    path: Path, notebook: nbformat.NotebookNode, steps: dict[str, float], total: float | None, max_score: float | None
) -> None:
    """Write the feedback page of one graded notebook (atomically)."""
    write_atomically(path, feedback_html(notebook, steps, total, max_score, path.stem), encoding="utf-8")
