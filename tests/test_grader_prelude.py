"""The checks the hidden tests call (ftcourse.grader_prelude), run in this process on the real test cells.

Each test executes the real test cells of ``solutions/`` (visible and hidden
parts) against a student's answer, with a ``Grader`` created first as
``ftcourse grade`` creates it: what passes and fails here is what nbgrader
scores (tests/test_grading.py checks the same through the whole pipeline).
"""

import contextlib
import io
import math
import random
import re

import nbformat
import numpy
import pytest
import torch

from ftcourse.grader_prelude import Grader, seed_for
from ftcourse.grading import solution_answers
from tests.conftest import ALWAYS_EQUAL_EARLY_STOPPING, ANYTHING, ROOT

QUIZ, LR, ES = "13_quiz.ipynb", "15_exercise_lr_finder.ipynb", "16_exercise_early_stopping.ipynb"
ES_TESTS = ["es_test_init", "es_test_improve", "es_test_patience", "es_test_min_delta", "es_test_max"]


# Read once, before any test patches builtins in this process (nbformat would run on the patched ones).
_SOURCES = {
    name: {
        cell.metadata.get("nbgrader", {}).get("grade_id"): cell.source
        for cell in nbformat.read(ROOT / "solutions" / name, as_version=4).cells
    }
    for name in (QUIZ, LR, ES)
}


def cell_source(notebook: str, grade_id: str) -> str:
    return _SOURCES[notebook][grade_id]


def notebook_cells(notebook: str, kind: str) -> list[str]:
    """The sources of the locked code cells ("fixtures") or the test cells ("tests") of an instructor notebook."""
    sources = []
    for cell in nbformat.read(ROOT / "solutions" / notebook, as_version=4).cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if kind == "tests" and meta.get("grade"):
            sources.append(meta["grade_id"])
        elif (
            kind == "fixtures"
            and meta.get("locked")
            and not meta.get("grade")
            and "setup(" not in cell.source
            and "env.grading" not in cell.source
        ):
            sources.append(cell.source)
    return sources


@pytest.fixture
def kernel():
    """A fresh namespace with a Grader created before any "student" code, as the grader's first cell does.

    The generators it seeds and anything the student code patches are put back afterwards.
    """
    states = random.getstate(), numpy.random.get_state(), torch.get_rng_state()
    saved = {name: getattr(math, name) for name in ("isclose", "fsum")}
    saved_numpy = {name: getattr(numpy, name) for name in ("allclose", "isclose", "array_equal")}
    saved_torch = {name: getattr(torch, name) for name in ("equal", "allclose")}
    import builtins

    saved_builtins = dict(vars(builtins))

    def make(student: str = "alice", protect=("numpy", "torch", "matplotlib")) -> dict:
        return {"_grader": Grader(student=student, protect=protect), "__name__": "__main__"}

    yield make
    vars(builtins).update(saved_builtins)
    for module, values in ((math, saved), (numpy, saved_numpy), (torch, saved_torch)):
        for name, value in values.items():
            setattr(module, name, value)
    random.setstate(states[0])
    numpy.random.set_state(states[1])
    torch.set_rng_state(states[2])


def run_cell(namespace: dict, source: str) -> tuple[bool, str]:
    """Execute one cell in ``namespace``: (passed, what it printed and the error)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            exec(compile(source, "<cell>", "exec"), namespace)
        except Exception as error:  # a failing test cell, as nbgrader sees it
            return False, out.getvalue() + f"{type(error).__name__}: {error}"
    return True, out.getvalue()


def es_variant(**replacements: str) -> str:
    source = solution_answers(ROOT / "solutions" / ES)["es_solution"]
    for old, new in replacements.items():
        assert old in source, old
        source = source.replace(old, new)
    return source


SOLUTION_MIN = "score < self.best_score - self.min_delta"
SOLUTION_MAX = "score > self.best_score + self.min_delta"
EQUIVALENT_ES = {
    "solution": es_variant(),
    # The case: mathematically the same contract, written as a difference.
    "difference": es_variant(
        **{
            SOLUTION_MIN: "self.best_score - score > self.min_delta",
            SOLUTION_MAX: "score - self.best_score > self.min_delta",
        }
    ),
    "moved_term": es_variant(
        **{
            SOLUTION_MIN: "score + self.min_delta < self.best_score",
            SOLUTION_MAX: "score - self.min_delta > self.best_score",
        }
    ),
}


@pytest.mark.parametrize("variant", list(EQUIVALENT_ES))
def test_equivalent_early_stopping_implementations_pass_for_every_student(kernel, variant):
    """Scores and min_delta are binary fractions, so equivalent comparisons cannot disagree by rounding:
    every equivalent implementation earns every step, whatever the student id (that is, the seed)."""
    failures = []
    for number in range(40):
        namespace = kernel(student=f"student-{number}", protect=())
        passed, _ = run_cell(namespace, EQUIVALENT_ES[variant])
        assert passed
        for grade_id in ES_TESTS:
            passed, output = run_cell(namespace, cell_source(ES, grade_id))
            if not passed:
                failures.append((number, grade_id, output[-300:]))
    assert failures == []


def test_non_strict_comparison_is_caught_by_the_ties(kernel):
    """The control: `<=` breaks the contract only on ties, and the hidden test draws ties (it can fail)."""
    source = es_variant(
        **{
            SOLUTION_MIN: "score <= self.best_score - self.min_delta",
            SOLUTION_MAX: "score >= self.best_score + self.min_delta",
        }
    )
    failed = 0
    for number in range(10):
        namespace = kernel(student=f"student-{number}", protect=())
        run_cell(namespace, source)
        passed, output = run_cell(namespace, cell_source(ES, "es_test_min_delta"))
        failed += not passed
        assert passed or "(best_score, counter) = " in output, output
    assert failed == 10


def test_seed_depends_on_student_notebook_and_test_and_is_printed(kernel):
    assert seed_for("alice", ES, "es_test_max") == seed_for("alice", ES, "es_test_max")
    seeds = {seed_for(s, n, t) for s in ("alice", "bob") for n in (LR, ES) for t in ("a", "b")}
    assert len(seeds) == 8
    namespace = kernel(student="bob[1]", protect=())
    run_cell(namespace, EQUIVALENT_ES["solution"])
    passed, printed = run_cell(namespace, cell_source(ES, "es_test_max"))
    assert passed, printed
    assert f"graine {seed_for('bob[1]', ES, 'es_test_max')} " in printed.splitlines()[0]
    # The same student drawn twice gets the same inputs: the hidden test's own generator proves it.
    draws = []
    for _ in range(2):
        grader = Grader(student="eve ", protect=())
        check = grader.begin(ES, "es_test_min_delta", random=False)
        draws.append(
            ([check.rng.random() for _ in range(5)], random.random(), float(numpy.random.rand()), float(torch.rand(1)))
        )
    assert draws[0] == draws[1]
    other = Grader(student="eve", protect=()).begin(ES, "es_test_min_delta", random=False)
    assert [other.rng.random() for _ in range(5)] != draws[0][0]  # "eve" is not "eve "


def test_plain_refuses_objects_that_claim_equality(kernel):
    namespace = kernel(protect=())
    run_cell(
        namespace,
        ANYTHING
        + """
class _Str(str):
    def __eq__(self, other):
        return True


class _EveryType(type):
    def __eq__(cls, other):
        return True

    __hash__ = type.__hash__


class _Disguised(_Anything, metaclass=_EveryType):
    pass
""",
    )
    check = namespace["_grader"].begin(QUIZ, "q01_test", random=False)
    disguised = namespace["_Disguised"]()
    assert type(disguised) in (bool, int, str)  # what a check written with `in` would have let through
    for fake in (
        namespace["_Anything"](),
        namespace["_Str"]("a"),
        [1, namespace["_Anything"]()],
        {"best": namespace["_Anything"]()},
        disguised,
    ):
        with pytest.raises(AssertionError, match="where plain values are expected"):
            check.plain(fake)
    assert check.plain((numpy.float64(0.5), numpy.int64(3), numpy.bool_(True))) == (0.5, 3, True)
    assert [type(v) for v in check.plain((numpy.float64(0.5), numpy.int64(3), numpy.bool_(True)))] == [float, int, bool]
    assert check.plain(torch.tensor([[1.0, 2.0]])) == [[1.0, 2.0]]
    assert check.plain({"a": [None, "x", (1, 2.5)]}) == {"a": [None, "x", (1, 2.5)]}


def test_always_equal_quiz_answer_earns_nothing(kernel):
    namespace = kernel(protect=())
    passed, _ = run_cell(namespace, ANYTHING + "\nq01 = _Anything()")
    assert passed
    passed, output = run_cell(namespace, cell_source(QUIZ, "q01_test"))
    assert not passed and "where plain values are expected" in output, output
    namespace = kernel(protect=())
    run_cell(
        namespace,
        'q01 = "'
        + re.search(r'q01 = "(\w)"', solution_answers(ROOT / "solutions" / QUIZ)["q01_answer"]).group(1)
        + '"',
    )
    assert run_cell(namespace, cell_source(QUIZ, "q01_test"))[0]


def test_always_equal_early_stopping_earns_nothing(kernel):
    namespace = kernel(protect=())
    run_cell(namespace, ALWAYS_EQUAL_EARLY_STOPPING)
    results = {grade_id: run_cell(namespace, cell_source(ES, grade_id)) for grade_id in ES_TESTS}
    assert {grade_id: passed for grade_id, (passed, _) in results.items()} == dict.fromkeys(ES_TESTS, False)
    # The visible asserts of es_test_improve and es_test_patience (`is False`, `is True`) already refuse it;
    # the others reach their hidden part, whose conversion to plain values refuses it.
    refused = {grade_id for grade_id, (_, output) in results.items() if "where plain values are expected" in output}
    assert refused == {"es_test_init", "es_test_min_delta", "es_test_max"}, results


LR_FIXTURES, LR_TESTS = notebook_cells(LR, "fixtures"), notebook_cells(LR, "tests")


def lr_namespace(kernel, find_lr_source: str) -> dict:
    namespace = kernel(student="alice", protect=("copy", "types", "matplotlib", "numpy", "torch"))
    # torch imports sympy at the first optimizer step; done here, before any patched builtin could break it
    # (a patched `all` inside sympy's import fails the cheat for a reason that is not the one tested).
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).step()
    for source in LR_FIXTURES + [find_lr_source]:
        passed, output = run_cell(namespace, source)
        assert passed, output
    return namespace


LINEAR = ("min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))", "min_lr + (max_lr - min_lr) * i / (num_steps - 1)")
PATCHES = """
import builtins, math
import numpy
import torch


def _yes(*args, **kwargs):
    return True


def _patch():
    numpy.allclose = numpy.isclose = numpy.array_equal = _yes
    math.isclose = _yes
    torch.equal = torch.allclose = _yes
    builtins.abs = lambda x: 0.0
    builtins.all = lambda *args: True

_patch()
"""


def test_monkeypatched_comparisons_earn_nothing(kernel):
    """A wrong schedule passes the visible test once abs() is patched, and earned the hidden step when the test
    compared with numpy.allclose (patched again inside find_lr); the grader puts them back: nothing is earned."""
    solution = solution_answers(ROOT / "solutions" / LR)["lr_solution"]
    cheat = PATCHES + solution.replace(*LINEAR).replace('    """LR range test', '    _patch()\n    """LR range test', 1)
    assert '_patch()\n    """LR range test' in cheat
    namespace = lr_namespace(kernel, cheat)
    passed, output = run_cell(namespace, cell_source(LR, "lr_test_schedule"))
    assert not passed and "recorded rates" in output, output
    # The same test cell without its hidden part (what the student sees) passes: the patches did work there.
    visible = cell_source(LR, "lr_test_schedule").split("### BEGIN HIDDEN TESTS")[0]
    namespace = lr_namespace(kernel, cheat)
    assert run_cell(namespace, visible)[0]
    # The honest solution passes every test cell, with or without the patches around it.
    for source in (solution, PATCHES + solution):
        namespace = lr_namespace(kernel, source)
        for grade_id in LR_TESTS:
            passed, output = run_cell(namespace, cell_source(LR, grade_id))
            assert passed, (grade_id, output[-500:])


def test_restore_puts_back_builtins_and_library_functions(kernel):
    import builtins

    namespace = kernel(protect=("numpy",))
    original = builtins.len, math.isclose, numpy.allclose
    run_cell(
        namespace,
        "import builtins, math, numpy\nbuiltins.len = lambda x: 0\nmath.isclose = lambda *a, **k: True\n"
        "numpy.allclose = lambda *a, **k: True\ndel builtins.sorted",
    )
    assert builtins.len is not original[0] and not hasattr(builtins, "sorted")
    namespace["_grader"].begin(ES, "es_test_max", random=False)
    assert (builtins.len, math.isclose, numpy.allclose) == original and builtins.sorted([2, 1]) == [1, 2]
