"""Round trip through real nbgrader: release, a class of submissions, `ftcourse grade`, the CSV.

Every submission is built the way a student makes one: the released notebook
with its answer cells filled in. Wrong implementations are small edits of the
instructor's solution, each breaking one clause of the contract.
"""

import csv
import json
import re
import shutil
from html.parser import HTMLParser

import nbformat
import pytest

from ftcourse.grading import (
    CSV_COLUMNS,
    answered_notebook,
    graded_sources,
    released_matches_source,
    solution_answers,
    step_columns,
)
from tests.conftest import ROOT, run_cli

QUIZ, SENTIMENT, LR, ES = (
    "10_quiz.ipynb", "11_exercise_sentiment.ipynb", "12_exercise_lr_finder.ipynb", "13_exercise_early_stopping.ipynb"
)


def solution_sources(name):
    return solution_answers(ROOT / "solutions" / name)


def edit(source, old, new):
    assert old in source, f"variant does not apply: {old!r}"
    return source.replace(old, new)


def submission(name, answers=None, mutate=None):
    """The released notebook of `name` with its answer cells filled (by default with the solution)."""
    notebook = answered_notebook(ROOT / "course" / name, solution_sources(name) if answers is None else answers)
    if mutate:
        mutate(notebook)
    return notebook


def with_solution_edit(name, grade_id, old, new):
    answers = solution_sources(name)
    answers[grade_id] = edit(answers[grade_id], old, new)
    return submission(name, answers)


SET_LR = '        for group in optimizer.param_groups:\n            group["lr"] = lr\n'


def lr_after_step():
    answers = solution_sources(LR)
    code = edit(answers["lr_solution"], SET_LR, "")
    answers["lr_solution"] = edit(code, "        optimizer.step()\n", "        optimizer.step()\n" + SET_LR)
    return submission(LR, answers)


def tamper_test_cell(notebook):
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "es_test_max")
    cell.source = "assert True  # tests are overrated"


def delete_test_cell(notebook):
    notebook.cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "es_test_patience"]


def edit_question_text(notebook):
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q03_text")
    cell.source += "\n\n(I think the answer is c)"


CLASS = {
    "full": {QUIZ: submission(QUIZ), SENTIMENT: submission(SENTIMENT), LR: submission(LR), ES: submission(ES)},
    "blank": {QUIZ: submission(QUIZ, answers={}), LR: submission(LR, answers={}), ES: submission(ES, answers={})},
    "lr_set_after_step": {LR: lr_after_step()},
    "lr_no_restore": {LR: with_solution_edit(LR, "lr_solution", "    model.load_state_dict(model_state)\n", "")},
    "lr_no_divergence_stop": {LR: with_solution_edit(LR, "lr_solution", "        if losses[-1] > 4 * lowest:\n            break\n", "")},
    "lr_linear_schedule": {
        LR: with_solution_edit(LR, "lr_solution", "min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))",
                               "min_lr + (max_lr - min_lr) * i / (num_steps - 1)")
    },
    "es_off_by_one": {ES: with_solution_edit(ES, "es_solution", "self.counter >= self.patience", "self.counter > self.patience")},
    "es_ignores_min_delta": {
        ES: submission(ES, {"es_solution": solution_sources(ES)["es_solution"]
                            .replace("score < self.best_score - self.min_delta", "score < self.best_score")
                            .replace("score > self.best_score + self.min_delta", "score > self.best_score")})
    },
    "es_no_max_mode": {ES: with_solution_edit(ES, "es_solution", 'if self.mode == "min":', "if True:")},
    "quiz_half_wrong": {
        QUIZ: submission(QUIZ, {k: (v if int(k[1:3]) % 2 else re.sub(r'"([abcd])"', lambda m: '"a"' if m.group(1) != "a" else '"b"', v))
                                for k, v in solution_sources(QUIZ).items()})
    },
    "tampered_test": {ES: submission(ES, mutate=tamper_test_cell)},
    "edited_question": {QUIZ: submission(QUIZ, mutate=edit_question_text)},
    "deleted_test": {ES: submission(ES, mutate=delete_test_cell)},
    "infinite_loop": {ES: with_solution_edit(ES, "es_solution", "        return self.early_stop\n",
                                             "        return self.early_stop\n\n\nwhile True:\n    pass\n")},
    "killed_kernel": {QUIZ: submission(QUIZ, {"q01_answer": "import os\nos._exit(1)"})},
}
MALFORMED = "malformed_file"
TIMEOUT = 30


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One real ``ftcourse grade`` of the whole class (nbgrader): its CSV rows by (student, notebook), folder, stdout.

    Every test that requests it is marked slow (tests/conftest.py).
    """
    base = tmp_path_factory.mktemp("class")
    submissions = base / "submissions"
    for student, notebooks in CLASS.items():
        (submissions / student).mkdir(parents=True)
        for name, notebook in notebooks.items():
            nbformat.write(notebook, submissions / student / name)
    (submissions / MALFORMED).mkdir()
    (submissions / MALFORMED / QUIZ).write_text('{"cells": [', encoding="utf-8")
    result = run_cli("grade", str(submissions), "--out", str(base / "grades.csv"), "--feedback", str(base / "feedback"),
                     "--timeout", str(TIMEOUT), "--jobs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    with open(base / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {(row["student"], row["notebook"]): row for row in rows}, base, result.stdout


def row(graded, student, notebook):
    return graded[0][(student, notebook)]


class FeedbackPage(HTMLParser):
    """The graded cells of an nbgrader feedback page: for each grade id, its score and what it printed."""

    def __init__(self, html: str):
        super().__init__()
        self.cells: dict[str, dict] = {}
        self._current: dict | None = None
        self._output: str | None = None  # "stdout" or "error" while inside that output's <pre>
        self._pending: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("name") and not attrs["name"].startswith("comment-"):
            self._current = self.cells.setdefault(attrs["name"], {"score": None, "stdout": "", "error": ""})
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "output_subarea" in classes:
            self._pending = "error" if "output_error" in classes else "stdout" if "output_stdout" in classes else None
        if tag == "pre" and self._pending:
            self._output, self._pending = self._pending, None

    def handle_endtag(self, tag):
        if tag == "pre":
            self._output = None

    def handle_data(self, data):
        if self._current is None:
            return
        if self._output:
            self._current[self._output] += data
        elif self._current["score"] is None and (score := re.search(r"Score: ([\d.]+) / ([\d.]+)", data)):
            self._current["score"] = (float(score.group(1)), float(score.group(2)))


def quiz_letters(answers: dict[str, str]) -> dict[str, str]:
    """The letter each quiz answer cell assigns (``q01 = "c"``), by question: {"q01": "c", ...}."""
    return {grade_id[:3]: re.search(r'^q\d\d = "([abcd])"', source, re.M).group(1) for grade_id, source in answers.items()}


def test_csv_has_the_documented_columns(graded):
    rows, base, _ = graded
    with open(base / "grades.csv", newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    assert header == CSV_COLUMNS + step_columns()
    assert len(rows) == (len(CLASS) + 1) * 4  # one row per student and graded notebook


def test_solutions_earn_full_marks(graded):
    for name, maximum in [(QUIZ, 12), (LR, 10), (ES, 9)]:
        r = row(graded, "full", name)
        assert (r["status"], r["reason"], float(r["total"]), float(r["max"])) == ("graded", "", maximum, maximum), r


def test_rubric_exercise_is_left_to_the_instructor(graded):
    r = row(graded, "full", SENTIMENT)
    assert (r["status"], r["reason"], r["total"], float(r["max"])) == ("needs review", "graded by hand with the rubric", "", 10)


@pytest.mark.parametrize("source", graded_sources(), ids=lambda p: p.name)
def test_every_nbgrader_cell_has_a_role(source):
    """nbgrader's autograde drops the grade_id of a cell that is neither locked, a solution, a test nor a task, then
    fails on it (KeyError 'grade_id'): a cell students may edit freely carries no nbgrader metadata at all."""
    for cell in nbformat.read(source, as_version=4).cells:
        meta = cell.metadata.get("nbgrader")
        if meta is not None:
            assert any(meta.get(role) for role in ("locked", "solution", "grade", "task")), (cell.get("id"), meta)


def _assigned(notebook, name):
    """The value assigned to ``name`` in a notebook's cells (``NAME = "value"``) and the comment after it."""
    for cell in notebook.cells:
        match = re.search(rf'^{name} = "([^"]+)"(.*)$', cell.source, re.M)
        if match:
            return match.groups()
    raise AssertionError(f"{name} is not assigned in the notebook")


def test_sentiment_config_cell_is_editable_and_uses_the_names_of_lesson_03():
    released = nbformat.read(ROOT / "course" / SENTIMENT, as_version=4)
    config = next(c for c in released.cells if c.cell_type == "code" and "\nDATASET_NAME = " in c.source)
    # The students are told to edit it: neither nbgrader nor Jupyter may lock it.
    assert not config.metadata.get("nbgrader", {}).get("locked") and config.metadata.get("editable", True), config.metadata
    lesson = nbformat.read(ROOT / "course" / "03_bert_classification.ipynb", as_version=4)
    for name, online in [("MODEL_NAME", '"bert-base-uncased"'), ("DATASET_NAME", '"imdb"')]:
        value, comment = _assigned(released, name)
        assert name in config.source and value == _assigned(lesson, name)[0], name
        assert online in comment and online in _assigned(lesson, name)[1], name


def test_blank_release_earns_zero(graded):
    for name in (QUIZ, LR, ES):
        r = row(graded, "blank", name)
        assert r["status"] == "graded" and float(r["total"]) == 0 and float(r["max"]) > 0, r


@pytest.mark.parametrize(
    "student, notebook, lost_steps",
    [
        ("lr_set_after_step", LR, {"lr_test_schedule"}),
        ("lr_no_restore", LR, {"lr_test_restore"}),
        ("lr_no_divergence_stop", LR, {"lr_test_divergence"}),
        ("lr_linear_schedule", LR, {"lr_test_schedule"}),
        ("es_off_by_one", ES, {"es_test_patience"}),
        ("es_ignores_min_delta", ES, {"es_test_min_delta"}),
        # Treating "max" like "min" breaks mode "max" with and without min_delta: two steps.
        ("es_no_max_mode", ES, {"es_test_max", "es_test_min_delta"}),
    ],
)
def test_wrong_implementations_lose_exactly_their_clause(graded, student, notebook, lost_steps):
    r = row(graded, student, notebook)
    full = row(graded, "full", notebook)
    assert r["status"] == "graded", r
    steps = [s for s in step_columns() if full[s] != ""]
    lost = {s: float(full[s]) - float(r[s]) for s in steps if float(r[s]) != float(full[s])}
    assert lost == {s: float(full[s]) for s in lost_steps}, f"{student} lost {lost}"
    assert float(r["total"]) == float(full["total"]) - sum(float(full[s]) for s in lost_steps)


def test_quiz_scores_each_question(graded):
    r = row(graded, "quiz_half_wrong", QUIZ)
    assert float(r["total"]) == 6
    assert [float(r[f"q{i:02d}_test"]) for i in range(1, 13)] == [1.0, 0.0] * 6


def test_tampered_test_cell_is_graded_with_the_original_and_flagged(graded):
    r = row(graded, "tampered_test", ES)
    assert (r["status"], r["reason"]) == ("needs review", "test cell changed: es_test_max")
    assert float(r["total"]) == 9  # nbgrader restored the real test, which the solution passes


def test_edited_read_only_cell_is_flagged(graded):
    r = row(graded, "edited_question", QUIZ)
    assert (r["status"], r["reason"], float(r["total"])) == ("needs review", "read-only cell changed: q03_text", 12)


def test_deleted_test_cell_is_restored_and_flagged(graded):
    r = row(graded, "deleted_test", ES)
    assert (r["status"], r["reason"]) == ("needs review", "test cell missing: es_test_patience")
    assert float(r["total"]) == 9


def test_infinite_loop_is_interrupted_and_flagged(graded):
    r = row(graded, "infinite_loop", ES)
    assert (r["status"], r["reason"]) == ("needs review", f"cell timeout ({TIMEOUT} s): es_solution")
    # Interrupted, not killed: the class defined before the loop exists, and every test after it ran.
    assert float(r["total"]) == float(r["max"]) == 9
    assert float(r["total"]) == sum(float(r[s]) for s in step_columns() if r[s] != "")


def test_killed_kernel_is_flagged_never_a_silent_zero(graded):
    r = row(graded, "killed_kernel", QUIZ)
    assert r["status"] == "needs review" and r["reason"] == "kernel died"
    assert r["total"] == "" and all(r[s] == "" for s in step_columns())


def test_malformed_and_missing_notebooks_are_flagged(graded):
    r = row(graded, MALFORMED, QUIZ)
    assert r["status"] == "needs review" and r["total"] == ""
    assert re.fullmatch(r"notebook not valid JSON \(\w+\)", r["reason"]), r["reason"]  # (the parser's error type)
    r = row(graded, MALFORMED, LR)
    assert (r["status"], r["reason"], r["total"]) == ("needs review", "notebook missing", "")


def test_bad_submissions_do_not_stop_the_others(graded):
    rows, _, stdout = graded
    graded_rows = [r for r in rows.values() if r["status"] == "graded"]
    assert {r["student"] for r in graded_rows} >= {"full", "blank", "lr_no_restore", "es_off_by_one"}
    # The printed summary counts what the CSV holds, and lists every row to review with its reason.
    summary = re.search(r"^(\d+) students, (\d+) notebooks: (\d+) graded, (\d+) need review in ", stdout, re.M)
    assert summary, stdout
    review = [r for r in rows.values() if r["status"] != "graded"]
    assert [int(n) for n in summary.groups()] == [len(CLASS) + 1, len(rows), len(graded_rows), len(review)]
    listed = re.findall(r"^  needs review: (\S+) / (\S+): (.*)$", stdout, re.M)
    assert sorted(listed) == sorted((r["student"], r["notebook"], r["reason"]) for r in review)


def test_feedback_shows_explanations_for_every_option(graded):
    page = FeedbackPage((graded[1] / "feedback" / "quiz_half_wrong" / "10_quiz.html").read_text(encoding="utf-8"))
    r = row(graded, "quiz_half_wrong", QUIZ)
    submitted = quiz_letters({c.metadata.nbgrader.grade_id: c.source for c in CLASS["quiz_half_wrong"][QUIZ].cells
                              if c.metadata.get("nbgrader", {}).get("solution")})
    correct = quiz_letters(solution_sources(QUIZ))
    assert len(submitted) == len(correct) == 12
    assert page.cells["top"]["score"] == (float(r["total"]), float(r["max"]))  # the page's total is the CSV's
    for question, letter in submitted.items():
        cell = page.cells[f"{question}_test"]
        assert cell["score"] == (float(r[f"{question}_test"]), 1.0)  # the page shows the CSV's points
        printed = cell["stdout"].splitlines()
        assert printed[0] == f"Votre réponse : {letter}"
        options = [re.fullmatch(r"  ([abcd])\) (Juste|Faux) : .+", line).groups() for line in printed[1:]]
        assert [option for option, _ in options] == ["a", "b", "c", "d"]  # every option explained
        assert [option for option, verdict in options if verdict == "Juste"] == [correct[question]]
        if letter == correct[question]:
            assert cell["error"] == ""
        else:
            assert cell["error"].strip().splitlines()[-1] == (
                "AssertionError: Ce n'est pas la bonne réponse : relisez les explications ci-dessus.")
    assert (graded[1] / "feedback" / "full" / "12_exercise_lr_finder.html").exists()


@pytest.mark.slow
def test_released_notebooks_are_up_to_date_and_hide_solutions():
    assert released_matches_source(ROOT / "course", ROOT / "solutions") == []
    for source in graded_sources():
        released = (ROOT / "course" / source.name).read_text(encoding="utf-8")
        for secret in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "_RecordingSGD", "explanations = {", "reference_trace"):
            assert secret not in released, f"{source.name} leaks {secret!r}"
        # Every answer cell of the source is released under its id, as a stub to fill in.
        answers = {cell.metadata.nbgrader.grade_id: cell for cell in nbformat.reads(released, as_version=4).cells
                   if cell.metadata.get("nbgrader", {}).get("solution")}
        assert set(answers) == set(solution_sources(source.name)), source.name
        for grade_id, cell in answers.items():
            if cell.cell_type == "code":
                assert "raise NotImplementedError()" in [line.strip() for line in cell.source.splitlines()], grade_id
            else:
                assert cell.source.strip() == "YOUR ANSWER HERE", grade_id


@pytest.mark.slow
def test_out_of_date_release_is_detected(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(ROOT / "course", course)
    notebook = json.loads((course / ES).read_text(encoding="utf-8"))
    notebook["cells"][0]["source"] = "# an older version"
    (course / ES).write_text(json.dumps(notebook), encoding="utf-8")
    result = run_cli("release", "--check", "--course", str(course))
    assert result.returncode == 1, result.stdout + result.stderr
    stale = [line.split(" is missing or out of date with ")[0] for line in result.stdout.splitlines()]
    assert stale == [str(course / ES)], result.stdout  # that notebook, and only that one


def test_grade_usage_errors(tmp_path):
    missing = run_cli("grade", str(tmp_path / "nowhere"), "--out", str(tmp_path / "g.csv"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == f"ftcourse grade: {tmp_path / 'nowhere'}: no such folder"
    (tmp_path / "empty" / "alice").mkdir(parents=True)
    (tmp_path / "empty" / "alice" / "notes.txt").write_text("hello")
    nothing = run_cli("grade", str(tmp_path / "empty"), "--out", str(tmp_path / "g.csv"))
    assert nothing.returncode == 2
    expected = re.fullmatch(rf"ftcourse grade: {re.escape(str(tmp_path / 'empty'))}: no student folder contains a graded "
                            r"notebook \(expected file names: (.+)\)", nothing.stderr.strip().splitlines()[-1])
    assert expected, nothing.stderr
    assert expected.group(1).split(", ") == [QUIZ, SENTIMENT, LR, ES]
    assert not (tmp_path / "g.csv").exists()
