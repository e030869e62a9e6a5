"""Round trip through real nbgrader: release, a class of submissions, `ftcourse grade`, the CSV.

Every submission is built the way a student makes one: the released notebook
with its answer cells filled in. Wrong implementations are small edits of the
instructor's solution, each breaking one clause of the contract. The same
class holds odd student ids, damaged, linked, oversized and hidden files,
cheats (objects equal to anything, patched comparisons) and, where bubblewrap
can sandbox the kernels, hostile submissions that try to read the solutions,
write outside their folder, reach the network, exhaust memory or run forever.
Other runs of the command (regrade, canary, --no-sandbox, marks, --force, a
crash) are in tests/test_grading_runs.py.
"""

import csv
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from html.parser import HTMLParser

import nbformat
import pytest

from ftcourse.feedback import printable
from ftcourse.gradebook_csv import unescape
from ftcourse.grader_prelude import seed_for
from ftcourse.grading import (
    CSV_COLUMNS,
    answered_notebook,
    graded_sources,
    released_matches_source,
    solution_answers,
    step_columns,
)
from ftcourse.sandbox import BWRAP, detect_sandbox
from tests.conftest import ALWAYS_EQUAL_EARLY_STOPPING, ANYTHING, ROOT, run_cli

QUIZ, SENTIMENT, LR, ES = (
    "13_quiz.ipynb",
    "14_exercise_sentiment.ipynb",
    "15_exercise_lr_finder.ipynb",
    "16_exercise_early_stopping.ipynb",
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
    "lr_no_divergence_stop": {
        LR: with_solution_edit(LR, "lr_solution", "        if losses[-1] > 4 * lowest:\n            break\n", "")
    },
    "lr_linear_schedule": {
        LR: with_solution_edit(
            LR,
            "lr_solution",
            "min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))",
            "min_lr + (max_lr - min_lr) * i / (num_steps - 1)",
        )
    },
    "es_off_by_one": {
        ES: with_solution_edit(ES, "es_solution", "self.counter >= self.patience", "self.counter > self.patience")
    },
    "es_ignores_min_delta": {
        ES: submission(
            ES,
            {
                "es_solution": solution_sources(ES)["es_solution"]
                .replace("score < self.best_score - self.min_delta", "score < self.best_score")
                .replace("score > self.best_score + self.min_delta", "score > self.best_score")
            },
        )
    },
    "es_no_max_mode": {ES: with_solution_edit(ES, "es_solution", 'if self.mode == "min":', "if True:")},
    "quiz_half_wrong": {
        QUIZ: submission(
            QUIZ,
            {
                k: (v if int(k[1:3]) % 2 else re.sub(r'"([abcd])"', lambda m: '"a"' if m.group(1) != "a" else '"b"', v))
                for k, v in solution_sources(QUIZ).items()
            },
        )
    },
    "tampered_test": {ES: submission(ES, mutate=tamper_test_cell)},
    "edited_question": {QUIZ: submission(QUIZ, mutate=edit_question_text)},
    "deleted_test": {ES: submission(ES, mutate=delete_test_cell)},
    "infinite_loop": {
        ES: with_solution_edit(
            ES,
            "es_solution",
            "        return self.early_stop\n",
            "        return self.early_stop\n\n\nwhile True:\n    pass\n",
        )
    },
    "killed_kernel": {QUIZ: submission(QUIZ, {"q01_answer": "import os\nos._exit(1)"})},
}
MALFORMED = "malformed_file"
TIMEOUT = 20  # per cell (--timeout)
NOTEBOOK_TIMEOUT = 50  # whole notebook (--notebook-timeout)

QUIZ_IDS = sorted(g for g in solution_sources(QUIZ) if re.fullmatch(r"q\d\d_answer", g))
QUESTIONS = len(QUIZ_IDS)
CORRECT = {
    grade_id[:3]: re.search(r'^q\d\d = "([abcd])"', source, re.M).group(1)
    for grade_id, source in solution_sources(QUIZ).items()
}
PATCHES = """import builtins
import math

import numpy
import torch


def _yes(*args, **kwargs):
    return True


def _patch():
    numpy.allclose = numpy.isclose = _yes
    math.isclose = _yes
    torch.equal = torch.allclose = _yes
    # Floats only: an abs() that lies about integers breaks torch's own code and the visible tests with it.
    builtins.abs = lambda x, _abs=abs: 0.0 if isinstance(x, float) else _abs(x)


_patch()
"""


def always_equal_es():
    return submission(ES, {"es_solution": ALWAYS_EQUAL_EARLY_STOPPING})


def patched_linear_schedule():
    """The linear schedule (wrong), with every comparison the tests could use patched, again inside find_lr."""
    code = edit(
        solution_sources(LR)["lr_solution"],
        "min_lr * (max_lr / min_lr) ** (i / (num_steps - 1))",
        "min_lr + (max_lr - min_lr) * i / (num_steps - 1)",
    )
    code = edit(
        code,
        '    """LR range test: returns (lrs, losses, suggested_lr) and leaves model and optimizer unchanged."""\n',
        '    """LR range test: returns (lrs, losses, suggested_lr) and leaves model and optimizer unchanged."""\n'
        "    _patch()\n",
    )
    return submission(LR, {"lr_solution": PATCHES + code})


def damaged_metadata(notebook):
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "es_solution")
    cell.metadata["nbgrader"] = "solution"  # a string where nbgrader expects a mapping


# Any valid folder name is a student id: the CSV and the feedback folder keep it as it is.
ODD_IDS = ["bob[1]", "eve ", "*", "=1+1", "-élève @ü"]
for _student in ODD_IDS:
    CLASS[_student] = {ES: submission(ES)}
CLASS["\x1b[31mred\x1b[0m"] = {ES: submission(ES)}  # terminal escapes in a folder name
# A student's output that is markup and terminal escapes: printed while the hidden tests run its code.
CLASS["script_printer"] = {
    ES: submission(
        ES,
        {
            "es_solution": solution_sources(ES)["es_solution"]
            + """

_original_init = EarlyStopping.__init__


def _noisy_init(self, *args, **kwargs):
    print("<script>alert('feedback')</script>\x1b[2J")
    # and the hidden test that called it, read from the cache where Python keeps each cell's source
    import linecache
    import sys

    caller = sys._getframe(2)
    if caller.f_code.co_name.endswith("_test"):
        print("".join(linecache.getlines(caller.f_code.co_filename)))
    _original_init(self, *args, **kwargs)


EarlyStopping.__init__ = _noisy_init
"""
        },
    )
}
CLASS.update(
    {
        "bad_metadata": {ES: submission(ES, mutate=damaged_metadata), QUIZ: submission(QUIZ)},
        "always_equal": {
            QUIZ: submission(QUIZ, {g: ANYTHING + f"{g[:3]} = _Anything()" for g in QUIZ_IDS}),
            ES: always_equal_es(),
        },
        "patched_comparisons": {LR: patched_linear_schedule()},
        "es_difference": {
            ES: with_solution_edit(
                ES,
                "es_solution",
                "score < self.best_score - self.min_delta",
                "self.best_score - score > self.min_delta",
            )
        },
    }
)
SECRET = "ftcourse-secret-issue-13"

# --- submissions that replace what the hidden tests look up (issue 29, point 2) ----------------------------
# Each pairs an attack with a wrong (or always-equal) answer; it must earn no more than the same answer alone.
FIND_GRADERS = """
def _graders():
    return [(name, value) for name, value in list(globals().items()) if type(value).__name__ == "Grader"]
"""
FAKE_CHECKER = (
    ANYTHING
    + """
class _FakeCheck:
    seed = 0
    rng = __import__("random").Random(0)

    def builtins(self, names):
        return tuple(getattr(__import__("builtins"), name) for name in names)

    def call(self, function, *args, **kwargs):
        return function(*args, **kwargs)

    def plain(self, value, what=""):
        return value if isinstance(value, bool) else _Anything()


class _FakeGrader:
    def begin(self, *args, **kwargs):
        return _FakeCheck()

    def finish(self, *args):
        return True

    def probe(self, *args):
        raise AssertionError("ftcourse probe forged")
"""
    + FIND_GRADERS
)
ATTACKS = {
    # A global: every Grader in the namespace (whatever its name) and `_grader` replaced by a fake.
    "attack_global": FAKE_CHECKER
    + """
for _name, _value in _graders():
    globals()[_name] = _FakeGrader()
_grader = _FakeGrader()
""",
    # A global that forwards to the real grader (so that it logs the test), then returns its own checks.
    "attack_forwarding": FAKE_CHECKER
    + """
for _name, _value in _graders():
    class _Forward:
        real = _value

        def begin(self, *args, **kwargs):
            self.real.begin(*args, **kwargs)
            return _FakeCheck()

        def finish(self, *args):
            return self.real.finish(*args)

        def probe(self, *args):
            return self.real.probe(*args)

    globals()[_name] = _Forward()
""",
    # A class attribute: Check.plain made to lie.
    "attack_class": ANYTHING
    + FIND_GRADERS
    + """
for _name, _value in _graders():
    _kind = type(_value.begin("16_exercise_early_stopping.ipynb", "not_a_test", random=False))
    _kind.plain = lambda self, value, what="": value if isinstance(value, bool) else _Anything()
""",
    # Module attributes of the checker itself: its private references, and the channel to the anchor.
    "attack_module": FIND_GRADERS
    + """
for _name, _value in _graders():
    _namespace = type(_value).begin.__globals__
    _namespace["_is_one_of"] = lambda kind, kinds: True  # plain() would accept any object
    _namespace["_audit"] = lambda *args: None  # and the anchor would hear nothing
""",
    # sys.modules: a look-alike grader module, the real grader deleted (a fallback import would find the fake).
    "attack_sys_modules": FAKE_CHECKER
    + """
import sys
import types

_module = types.ModuleType("ftcourse.grader_prelude")
_module.Grader = _FakeGrader
sys.modules["ftcourse.grader_prelude"] = _module
for _name, _value in _graders():
    del globals()[_name]
""",
}
ATTACKS.update(
    {
        # Builtins shadowed by names of the notebook: a `range` that yields nothing for the hidden tests' loop sizes.
        "attack_shadow_builtins": """
import builtins as _builtins


def range(*args):
    return iter(()) if args in ((20,), (30,)) else _builtins.range(*args)
""",
        # The notebook's __builtins__ replaced by a dictionary with that lying range (functions read it when defined).
        "attack_builtins_module": """
import builtins as _builtins

_lying = dict(vars(_builtins))
_lying["range"] = lambda *args: iter(()) if args in ((20,), (30,)) else _builtins.range(*args)
globals()["__builtins__"] = _lying
""",
        # Failures hidden from nbgrader: the kernel's error messages dropped (all but the grader's report).
        "attack_hidden_errors": """
_session = get_ipython().kernel.session
_send = _session.send


def _quiet(stream, kind, content=None, *args, **kwargs):
    if kind == "error" and not str((content or {}).get("evalue", "")).startswith("ftcourse probe"):
        return None
    if kind == "execute_reply" and (content or {}).get("status") == "error" \\
            and not str(content.get("evalue", "")).startswith("ftcourse probe"):
        content = {"status": "ok", "execution_count": content.get("execution_count"), "user_expressions": {},
                   "payload": []}
    return _send(stream, kind, content, *args, **kwargs)


_session.send = _quiet
""",
    }
)
ATTACKED = {  # student -> (notebook, the honest answer, its attack)
    "attack_shadow_builtins": (ES, "es_off_by_one", ATTACKS["attack_shadow_builtins"]),
    "attack_builtins_module": (ES, "es_off_by_one", ATTACKS["attack_builtins_module"]),
    "attack_hidden_errors": (ES, "es_off_by_one", ATTACKS["attack_hidden_errors"]),
    "attack_global": (ES, "es_off_by_one", ATTACKS["attack_global"]),
    "attack_forwarding": (ES, "es_off_by_one", ATTACKS["attack_forwarding"]),
    "attack_class": (ES, "es_off_by_one", ATTACKS["attack_class"]),
    "attack_module": (ES, "always_equal", ATTACKS["attack_module"]),
    "attack_sys_modules": (ES, "es_off_by_one", ATTACKS["attack_sys_modules"]),
    # sys.modules of a library the hidden tests import: numpy.allclose always True (lr_test_schedule compares with it)
    "attack_sys_modules_numpy": (
        LR,
        "lr_linear_schedule",
        """
import sys
import types

import numpy

_lying = types.ModuleType("numpy")
_lying.__dict__.update(numpy.__dict__)
_lying.allclose = lambda *args, **kwargs: True
sys.modules["numpy"] = _lying
""",
    ),
}
for _student, (_notebook, _honest, _attack) in ATTACKED.items():
    _answers = {
        c.metadata.nbgrader.grade_id: c.source
        for c in CLASS[_honest][_notebook].cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    _solution = "es_solution" if _notebook == ES else "lr_solution"
    _answers[_solution] += "\n\n" + _attack
    CLASS[_student] = {_notebook: submission(_notebook, _answers)}


def hostile_class(base, submissions, port):
    """Submissions that attack the grading machine; each earns the quiz's first point only if its attack works."""
    walk = f"""import glob, json, os, re, time


def _notebooks(names, seconds=15):
    \"\"\"Every readable file of these names: known places first, then the whole disk, for a few seconds.\"\"\"
    found = [p for p in [{str(ROOT / "solutions")!r} + "/" + n for n in names]
             + [{str(submissions)!r} + "/full/" + n for n in names] if os.path.isfile(p)]
    stop = time.time() + seconds
    for top, folders, files in os.walk("/"):
        folders[:] = [f for f in folders if top + f not in ("/proc", "/sys", "/dev")]
        found += [os.path.join(top, f) for f in files if f in names]
        if time.time() > stop:
            break
    return found
"""
    spy_quiz = (
        walk
        + f"""
for _path in _notebooks([{QUIZ!r}, "gradebook.db"]):
    try:
        _cells = json.load(open(_path))["cells"]
    except Exception:
        continue
    for _cell in _cells:
        for _q, _letter in re.findall(r'^(q\\d\\d) = "([abcd])"', "".join(_cell["source"]), re.M):
            globals()[_q] = _letter
"""
    )
    spy_es = (
        walk
        + f"""
for _path in _notebooks([{ES!r}]):
    try:
        _cells = json.load(open(_path))["cells"]
    except Exception:
        continue
    for _cell in _cells:
        _source = "".join(_cell["source"])
        if _source.startswith("class EarlyStopping") and "NotImplementedError" not in _source:
            exec(_source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""), globals())
"""
    )
    token = base.name
    escapes = [
        str(base / "escaped.txt"),
        str(submissions / "full" / "escaped.txt"),
        f"/tmp/ftcourse-escape-{token}",
        f"/dev/shm/ftcourse-escape-{token}",
        os.path.expanduser(f"~/ftcourse-escape-{token}"),
    ]
    vandal = f"""import glob, os
for _path in [{str(base / "victim.txt")!r}]:
    try:
        os.remove(_path)
    except OSError:
        pass
for _path in {escapes!r}:
    try:
        with open(_path, "w") as _file:
            _file.write("escaped")
    except OSError:
        pass
for _db in glob.glob("/dev/shm/**/gradebook.db", recursive=True) + glob.glob("/tmp/**/gradebook.db", recursive=True):
    try:
        with open(_db, "ab") as _file:
            _file.write(b"garbage")
    except OSError:
        pass
"""
    host_ip = _host_ip()
    network = f"""import socket
for _host in ["127.0.0.1", {host_ip!r}]:
    try:
        socket.create_connection((_host, {port}), timeout=3).sendall(b"escaped")
        q01 = {CORRECT["q01"]!r}
    except OSError:
        pass
"""
    memory = f"""try:
    _hog = bytes(8 * 2**30)  # 8 GB (calloc: nothing is touched if the limit is missing)
    q01 = {CORRECT["q01"]!r}
except MemoryError:
    pass
"""
    spy_env = f"""import glob, os
_seen = " ".join(os.environ.values())
for _path in glob.glob("/proc/*/environ"):
    try:
        _seen += open(_path, "rb").read().decode("utf-8", "replace")
    except OSError:
        pass
if {SECRET!r} in _seen:
    q01 = {CORRECT["q01"]!r}
"""
    sleep = "import time\ntime.sleep(18)"
    # Bounded: at most 600 children, each gone after 15 s; the point only if the process limit (256) is missing.
    fork_bomb = f"""import os, time
_children = 0
for _ in range(600):
    try:
        _pid = os.fork()
    except OSError:
        break
    if _pid == 0:
        time.sleep(15)
        os._exit(0)
    _children += 1
if _children == 600:
    q01 = {CORRECT["q01"]!r}
"""
    # Every folder it may write to, 1 MB at a time, 400 MB at most each: together they hold 256 + 64 + 1 MB.
    filler = f"""import os
_written = 0
for _folder in ["/dev/shm", "/tmp", ".", "/ftcourse"]:
    for _index in range(400):
        try:
            with open(os.path.join(_folder, "ftcourse-fill-{token}-%d" % _index), "wb") as _file:
                _file.write(b"x" * 2**20)
            _written += 2**20
        except OSError:
            break
if _written > 400 * 2**20:
    q01 = {CORRECT["q01"]!r}
"""
    # A new user namespace (from a single-threaded child: the kernel has threads) would open more of the kernel.
    userns = f"""import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_pid = os.fork()
if _pid == 0:
    os._exit(0 if _libc.unshare(0x10000000) == 0 else 1)  # CLONE_NEWUSER
if os.waitstatus_to_exitcode(os.waitpid(_pid, 0)[1]) == 0:
    q01 = {CORRECT["q01"]!r}
"""
    return {
        "fork_bomb": {QUIZ: submission(QUIZ, {"q01_answer": fork_bomb})},
        "disk_filler": {QUIZ: submission(QUIZ, {"q01_answer": filler})},
        "new_userns": {QUIZ: submission(QUIZ, {"q01_answer": userns})},
        "spy": {QUIZ: submission(QUIZ, {"q01_answer": spy_quiz}), ES: submission(ES, {"es_solution": spy_es})},
        "vandal": {QUIZ: submission(QUIZ, {"q01_answer": vandal})},
        "network": {QUIZ: submission(QUIZ, {"q01_answer": network})},
        "memory_hog": {QUIZ: submission(QUIZ, {"q01_answer": memory})},
        "env_spy": {QUIZ: submission(QUIZ, {"q01_answer": spy_env})},
        "slow": {QUIZ: submission(QUIZ, {g: sleep for g in QUIZ_IDS[:3]})},
    }, escapes


def _host_ip():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: it only picks the outgoing address
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


class Listener:
    """A TCP server on every interface of this machine, counting the connections it gets."""

    def __init__(self):
        self.server = socket.create_server(("0.0.0.0", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.server.close()


SANDBOX = detect_sandbox()


def require_sandbox():
    """Skip (or, where CI requires the sandbox, fail) a test that needs bubblewrap when it cannot sandbox here."""
    if SANDBOX.kind != BWRAP:
        if os.environ.get("FTCOURSE_REQUIRE_SANDBOX"):
            pytest.fail(f"FTCOURSE_REQUIRE_SANDBOX is set but there is no sandbox: {SANDBOX.detail}")
        pytest.skip(f"no sandbox on this machine: {SANDBOX.detail}")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One real ``ftcourse grade`` of the whole class (nbgrader): its CSV rows by (student, notebook), folder, stdout.

    Every test that requests it is marked slow (tests/conftest.py).
    """
    base = tmp_path_factory.mktemp("class")
    submissions = base / "submissions"
    listener = Listener()
    students = dict(CLASS)
    escapes: list[str] = []
    if SANDBOX.kind == BWRAP:  # hostile code runs only in the sandbox, never with this machine's permissions
        hostile, escapes = hostile_class(base, submissions, listener.port)
        students.update(hostile)
    for student, notebooks in students.items():
        (submissions / student).mkdir(parents=True)
        for name, notebook in notebooks.items():
            nbformat.write(notebook, submissions / student / name)
    (submissions / MALFORMED).mkdir()
    (submissions / MALFORMED / QUIZ).write_text('{"cells": [', encoding="utf-8")
    (base / "victim.txt").write_text("instructor data", encoding="utf-8")
    # Refused: a link to the instructor's notebook, a link as a student folder, a file over the size limit.
    (submissions / "linker").mkdir()
    (submissions / "linker" / ES).symlink_to(ROOT / "solutions" / ES)
    (submissions / "folder_link").symlink_to(submissions / "full")
    (submissions / "big").mkdir()
    with open(submissions / "big" / QUIZ, "wb") as handle:
        handle.truncate(21 * 2**20)
    # Ignored: hidden folders and files, macOS archive leftovers. Listed: other files.
    for hidden in (".hidden_student", "__MACOSX/full", "full/.ipynb_checkpoints"):
        (submissions / hidden).mkdir(parents=True)
        nbformat.write(submission(QUIZ), submissions / hidden / QUIZ)
    nbformat.write(submission(QUIZ), submissions / "full" / f"._{QUIZ}")
    (submissions / "blank" / "notes.txt").write_text("my notes", encoding="utf-8")
    (submissions / "README.txt").write_text("downloaded from the platform", encoding="utf-8")
    try:
        # Without bubblewrap, grading refuses to run unless told: the class (hostile code left out) is then graded
        # unsandboxed on purpose.
        unsandboxed = [] if SANDBOX.kind == BWRAP else ["--no-sandbox"]
        result = run_cli(
            "grade",
            str(submissions),
            "--out",
            str(base / "grades.csv"),
            "--feedback",
            str(base / "feedback"),
            "--timeout",
            str(TIMEOUT),
            "--notebook-timeout",
            str(NOTEBOOK_TIMEOUT),
            "--jobs",
            "2",
            *unsandboxed,
            env={"HF_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET},
        )
    finally:
        listener.close()
    assert result.returncode == 0, result.stdout + result.stderr
    with open(base / "grades.csv", newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    yield (
        {(unescape(row["student"]), row["notebook"]): row for row in rows},
        base,
        result.stdout,
        {"listener": listener, "escapes": escapes, "students": students, "stderr": result.stderr},
    )
    for path in escapes:  # only there if the sandbox failed (the tests say so)
        if os.path.isfile(path):
            os.remove(path)


def row(graded, student, notebook):
    return graded[0][(student, notebook)]


class FeedbackPage(HTMLParser):
    """The graded tests of a feedback page: for each grade id, its score and what it printed or raised."""

    def __init__(self, html: str):
        super().__init__()
        self.cells: dict[str, dict] = {}
        self.total: tuple[float, float] | None = None
        self._current: dict | None = None
        self._field: str | None = None  # "score", "stdout" or "error" while inside that element
        self._in_total = False
        self.scripts = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        classes = (attrs.get("class") or "").split()
        if tag == "section":
            self._current = self.cells.setdefault(attrs["id"], {"score": None, "stdout": "", "error": ""})
        elif tag == "p" and attrs.get("id") == "total":
            self._in_total = True
        elif self._current is not None and tag in ("p", "pre"):
            self._field = (
                "score"
                if "score" in classes
                else "stdout"
                if "printed" in classes
                else "error"
                if "error" in classes
                else None
            )

    def handle_endtag(self, tag):
        if tag in ("p", "pre"):
            self._field, self._in_total = None, False
        if tag == "section":
            self._current = None

    def handle_data(self, data):
        score = re.search(r"Score : ([\d.]+) / ([\d.]+)", data)
        if self._in_total and score:
            self.total = (float(score.group(1)), float(score.group(2)))
        elif self._field == "score" and score:
            self._current["score"] = (float(score.group(1)), float(score.group(2)))
        elif self._field in ("stdout", "error"):
            self._current[self._field] += data


def quiz_letters(answers: dict[str, str]) -> dict[str, str]:
    """The letter each quiz answer cell assigns (``q01 = "c"``), by question: {"q01": "c", ...}."""
    return {
        grade_id[:3]: re.search(r'^q\d\d = "([abcd])"', source, re.M).group(1) for grade_id, source in answers.items()
    }


def test_csv_has_the_documented_columns(graded):
    rows, base, _, extra = graded
    assert (base / "grades.csv").read_bytes().startswith(b"\xef\xbb\xbfstudent,")  # UTF-8 with BOM
    with open(base / "grades.csv", newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle))
    assert header == CSV_COLUMNS + step_columns()
    # One row per student and graded notebook (also the refused ones), plus one per other file in a folder.
    students = {printable(s) for s in extra["students"]} | {MALFORMED, "linker", "folder_link", "big"}
    assert {student for student, _ in rows} == students
    assert len(rows) == len(students) * 4 + 1
    assert rows[("blank", "notes.txt")]["status"] == "refused"
    assert rows[("blank", "notes.txt")]["reason"] == "not graded: not a graded notebook name"
    assert {r["sandbox"] for r in rows.values()} == {SANDBOX.kind}


def test_solutions_earn_full_marks(graded):
    for name, maximum in [(QUIZ, QUESTIONS), (LR, 10), (ES, 9)]:
        r = row(graded, "full", name)
        assert (r["status"], r["reason"], float(r["total"]), float(r["max"])) == ("graded", "", maximum, maximum), r


def test_rubric_exercise_is_left_to_the_instructor(graded):
    r = row(graded, "full", SENTIMENT)
    assert (r["status"], r["reason"], r["total"], float(r["max"])) == (
        "needs review",
        "graded by hand with the rubric",
        "",
        10,
    )


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
    assert not config.metadata.get("nbgrader", {}).get("locked") and config.metadata.get("editable", True), (
        config.metadata
    )
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


def test_the_quiz_has_eighteen_questions_or_more_each_with_four_explained_options():
    assert QUESTIONS >= 18 and [g[:3] for g in QUIZ_IDS] == [f"q{i:02d}" for i in range(1, QUESTIONS + 1)]
    for grade_id, source in solution_sources(QUIZ).items():
        if grade_id.endswith("_test") and grade_id.startswith("q"):
            letters = re.findall(r"^    '([abcd])': ", source, re.M)
            assert letters == ["a", "b", "c", "d"], grade_id
            right = re.search(r"assert _answer == '([abcd])'", source).group(1)
            assert right == CORRECT[grade_id[:3]], grade_id  # the test checks the solution's letter
            assert re.search(rf"^    '{right}': [\"']\(?Juste", source, re.M), grade_id  # its explanation says so


def test_quiz_scores_each_question(graded):
    r = row(graded, "quiz_half_wrong", QUIZ)
    assert float(r["total"]) == (QUESTIONS + 1) // 2  # the odd questions right, the even ones wrong
    assert [float(r[f"q{i:02d}_test"]) for i in range(1, QUESTIONS + 1)] == [
        float(i % 2) for i in range(1, QUESTIONS + 1)
    ]


def test_tampered_test_cell_is_graded_with_the_original_and_flagged(graded):
    r = row(graded, "tampered_test", ES)
    assert (r["status"], r["reason"]) == ("needs review", "test cell changed: es_test_max")
    assert float(r["total"]) == 9  # nbgrader restored the real test, which the solution passes


def test_edited_read_only_cell_is_flagged(graded):
    r = row(graded, "edited_question", QUIZ)
    assert (r["status"], r["reason"], float(r["total"])) == (
        "needs review",
        "read-only cell changed: q03_text",
        QUESTIONS,
    )


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
    rows, _, stdout, _ = graded
    graded_rows = [r for r in rows.values() if r["status"] == "graded"]
    assert {unescape(r["student"]) for r in graded_rows} >= {"full", "blank", "lr_no_restore", "es_off_by_one"}
    # The printed summary counts what the CSV holds, and lists every row to review with its reason.
    summary = re.search(
        r"^(\d+) students, (\d+) notebooks: (\d+) graded, (\d+) need review, (\d+) other files "
        r"not graded in ",
        stdout,
        re.M,
    )
    assert summary, stdout
    refused = [r for r in rows.values() if r["status"] == "refused"]
    review = [r for r in rows.values() if r["status"] == "needs review"]
    assert [int(n) for n in summary.groups()] == [
        len({s for s, _ in rows}),
        len(rows) - len(refused),
        len(graded_rows),
        len(review),
        len(refused),
    ]
    listed = re.findall(r"^  (needs review|refused): (.+?) / (\S+): (.*)$", stdout, re.M)
    assert sorted(listed) == sorted(
        (r["status"], unescape(r["student"]), r["notebook"], r["reason"]) for r in review + refused
    )
    assert "  not a student folder, ignored: README.txt" in stdout.splitlines()
    assert re.search(r"^sandbox: (\w+) ", stdout, re.M).group(1) == SANDBOX.kind


def test_feedback_shows_explanations_for_every_option(graded):
    page = FeedbackPage((graded[1] / "feedback" / "quiz_half_wrong" / "13_quiz.html").read_text(encoding="utf-8"))
    r = row(graded, "quiz_half_wrong", QUIZ)
    submitted = quiz_letters(
        {
            c.metadata.nbgrader.grade_id: c.source
            for c in CLASS["quiz_half_wrong"][QUIZ].cells
            if c.metadata.get("nbgrader", {}).get("solution")
        }
    )
    correct = quiz_letters(solution_sources(QUIZ))
    assert len(submitted) == len(correct) == QUESTIONS
    assert page.total == (float(r["total"]), float(r["max"]))  # the page's total is the CSV's
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
                "AssertionError: Ce n'est pas la bonne réponse : relisez les explications ci-dessus."
            )
    assert (graded[1] / "feedback" / "full" / "15_exercise_lr_finder.html").exists()


@pytest.mark.slow
def test_released_notebooks_are_up_to_date_and_hide_solutions():
    assert released_matches_source(ROOT / "course", ROOT / "solutions") == []
    for source in graded_sources():
        released = (ROOT / "course" / source.name).read_text(encoding="utf-8")
        for secret in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "_RecordingSGD", "explanations = {", "reference_trace"):
            assert secret not in released, f"{source.name} leaks {secret!r}"
        # Every answer cell of the source is released under its id, as a stub to fill in.
        answers = {
            cell.metadata.nbgrader.grade_id: cell
            for cell in nbformat.reads(released, as_version=4).cells
            if cell.metadata.get("nbgrader", {}).get("solution")
        }
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
    expected = re.fullmatch(
        rf"ftcourse grade: {re.escape(str(tmp_path / 'empty'))}: no student folder contains a graded "
        r"notebook \(expected file names: (.+)\)",
        nothing.stderr.strip().splitlines()[-1],
    )
    assert expected, nothing.stderr
    assert expected.group(1).split(", ") == [QUIZ, SENTIMENT, LR, ES]
    assert not (tmp_path / "g.csv").exists()


# --- failure isolation, ids and files (issue 13, points 1 and 2) ---------------------------------------


def test_damaged_metadata_is_flagged_and_the_class_goes_on(graded):
    """metadata.nbgrader set to a string once crashed the whole run (AttributeError) and no CSV was written."""
    r = row(graded, "bad_metadata", ES)
    assert r["status"] == "needs review", r
    assert "damaged metadata removed: cell 3 nbgrader metadata" in r["reason"], r["reason"]
    assert r["total"] != ""  # the rest of the notebook was graded
    assert row(graded, "bad_metadata", QUIZ)["status"] == "graded"  # and the student's other notebook
    assert float(row(graded, "bad_metadata", QUIZ)["total"]) == QUESTIONS


@pytest.mark.parametrize("student", ODD_IDS)
def test_odd_student_ids_are_graded_and_kept_as_they_are(graded, student):
    rows, base, _, _ = graded
    r = row(graded, student, ES)
    assert (r["status"], r["reason"], float(r["total"])) == ("graded", "", 9), r
    # Written unchanged, only escaped where a spreadsheet would read a formula.
    assert r["student"] == (("'" + student) if student[0] in "=+-@" else student)
    # Its own feedback folder, and hidden tests seeded from the id as written (not nbgrader's internal name).
    page = (base / "feedback" / student / "16_exercise_early_stopping.html").read_text(encoding="utf-8")
    assert f"graine {seed_for(student, ES, 'es_test_max')} " in page


def test_star_is_not_a_pattern(graded):
    """`*` is one student: every other student keeps their own, different, grades."""
    assert float(row(graded, "blank", ES)["total"]) == 0 and float(row(graded, "es_off_by_one", ES)["total"]) == 7
    assert row(graded, "*", QUIZ)["reason"] == "notebook missing"


@pytest.mark.parametrize(
    "student, notebook, reason",
    [
        ("linker", ES, "symbolic link refused (hand in the notebook itself)"),
        ("folder_link", QUIZ, "student folder is a symbolic link (refused)"),
        ("big", QUIZ, "file too large (21.0 MB; the limit is 20 MB)"),
    ],
)
def test_links_and_oversized_files_are_refused(graded, student, notebook, reason):
    r = row(graded, student, notebook)
    assert (r["status"], r["reason"], r["total"]) == ("needs review", reason, "")


def test_hidden_entries_are_ignored(graded):
    rows = graded[0]
    assert not {s for s, _ in rows} & {".hidden_student", "__MACOSX"}
    assert not [n for s, n in rows if s == "full" and n not in (QUIZ, SENTIMENT, LR, ES)]


# --- reproducible, type-strict hidden tests (points 3 and 4) ---------------------------------------------


def test_hidden_tests_print_their_seed_in_the_feedback(graded):
    page = FeedbackPage((graded[1] / "feedback" / "full" / "15_exercise_lr_finder.html").read_text(encoding="utf-8"))
    for grade_id in ("lr_test_schedule", "lr_test_restore"):
        assert page.cells[grade_id]["stdout"].splitlines()[0] == (
            f"[tests cachés] graine {seed_for('full', LR, grade_id)} = sha256(élève, notebook, test) ; test {grade_id}"
        )


def test_equivalent_comparison_earns_full_marks(graded):
    """`best - score > min_delta` is the contract written another way: it failed in ~13 % of regrades before."""
    r = row(graded, "es_difference", ES)
    assert (r["status"], float(r["total"])) == ("graded", 9), r


def test_objects_equal_to_anything_earn_nothing(graded):
    for notebook in (QUIZ, ES):
        r = row(graded, "always_equal", notebook)
        assert (r["status"], float(r["total"])) == ("graded", 0), r


def test_patched_comparisons_earn_nothing(graded):
    """Patching numpy.allclose, math.isclose, torch.equal and abs() wins nothing: the wrong schedule loses its step."""
    r, honest = row(graded, "patched_comparisons", LR), row(graded, "lr_linear_schedule", LR)
    assert r["status"] == "graded" and float(r["lr_test_schedule"]) == 0
    assert [r[s] for s in step_columns() if s.startswith("lr_")] == [
        honest[s] for s in step_columns() if s.startswith("lr_")
    ]


# --- the sandbox (point 5) -----------------------------------------------------------------------------


def test_cannot_read_solutions_or_other_submissions(graded):
    require_sandbox()
    for notebook in (QUIZ, ES):
        r = row(graded, "spy", notebook)
        assert (r["status"], float(r["total"])) == ("graded", 0), r


def test_cannot_write_outside_its_scratch_folder(graded):
    require_sandbox()
    _, base, _, extra = graded
    assert (base / "victim.txt").read_text(encoding="utf-8") == "instructor data"
    assert [path for path in extra["escapes"] if os.path.exists(path)] == []
    r = row(graded, "vandal", QUIZ)
    assert (r["status"], float(r["total"])) == ("graded", 0), r
    assert float(row(graded, "full", QUIZ)["total"]) == QUESTIONS  # the gradebook it tried to damage graded everyone


def test_has_no_network(graded):
    require_sandbox()
    assert graded[3]["listener"].connections == 0
    assert float(row(graded, "network", QUIZ)["q01_test"]) == 0


def test_memory_is_limited(graded):
    require_sandbox()
    r = row(graded, "memory_hog", QUIZ)
    assert (r["status"], float(r["q01_test"])) == ("graded", 0), r


def test_environment_is_scrubbed(graded):
    require_sandbox()
    assert float(row(graded, "env_spy", QUIZ)["q01_test"]) == 0


def test_whole_notebook_time_is_limited(graded):
    require_sandbox()
    r = row(graded, "slow", QUIZ)
    assert (r["status"], r["reason"], r["total"]) == (
        "needs review",
        f"notebook time limit ({NOTEBOOK_TIMEOUT} s) reached: kernel stopped",
        "",
    ), r


# --- no name a student can bind decides a grade (issue 29, point 2) -----------------------------------------


@pytest.mark.parametrize("student", sorted(ATTACKED))
def test_replacing_what_the_tests_look_up_earns_nothing_more(graded, student):
    """Each attack, beside the same answer without it: no more points, and the notebook goes to the instructor."""
    notebook, honest, _ = ATTACKED[student]
    attacked, plain = row(graded, student, notebook), row(graded, honest, notebook)
    assert attacked["total"] != "" and float(attacked["total"]) <= float(plain["total"]), (attacked, plain)
    for step in step_columns():
        if plain[step] != "":
            assert float(attacked[step]) <= float(plain[step]), (step, attacked, plain)
    if student in ("attack_sys_modules_numpy", "attack_shadow_builtins"):
        # A library's module is simply put back before the test (as a patched function is), and the hidden tests
        # read the real builtins: nothing to flag, the wrong answer loses its step.
        assert attacked["status"] == "graded" and float(attacked["total"]) == float(plain["total"]), attacked
    else:  # the checker itself was attacked: the instructor is told
        assert attacked["status"] == "needs review", attacked
        assert attacked["reason"].startswith("grading environment tampered with: "), attacked["reason"]


def test_points_earned_through_a_replaced_checker_are_withheld_and_named(graded):
    """The fake checker passed every test in nbgrader's eyes: the grader's signed report names them all."""
    reason = row(graded, "attack_global", ES)["reason"]
    assert "the grader's report is forged" in reason
    assert "points withheld: es_test_init, es_test_improve, es_test_min_delta, es_test_max" in reason
    # Errors hidden from nbgrader (it saw every test pass): the failing test's points are withheld, the others kept.
    hidden = row(graded, "attack_hidden_errors", ES)
    assert "points withheld: es_test_patience" in hidden["reason"] and float(hidden["total"]) == 7, hidden


def test_grading_copy_reaches_the_grader_by_a_run_name_without_fallback():
    """The grading copy's hidden tests are functions called with a name drawn for the run, with no import."""
    from ftcourse.grading import grading_test_source

    source = cell_source_of(ES, "es_test_patience")
    rewritten = grading_test_source(source, "_ftcourse_grader_0123abcd")
    hidden = rewritten[rewritten.index("### BEGIN HIDDEN TESTS") :]
    assert "_grader" not in hidden.replace("_ftcourse_grader_0123abcd", "")
    assert "import" not in hidden.split("\n", 2)[1] and "ftcourse.grader_prelude" not in hidden
    assert hidden.splitlines()[1] == "def _ftcourse_grader_0123abcd_test(_check):"
    assert (
        "assert _ftcourse_grader_0123abcd.finish(_ftcourse_grader_0123abcd_test(_ftcourse_grader_0123abcd.begin("
        '"16_exercise_early_stopping.ipynb", "es_test_patience")))'
    ) in hidden
    # Its builtins are its own locals, from the grader's copies.
    assert hidden.splitlines()[2] == "    enumerate, range, zip = _check.builtins(('enumerate', 'range', 'zip'))"
    # The visible part is untouched: the released notebook and the student's copy stay the same.
    assert rewritten[: rewritten.index("### BEGIN HIDDEN TESTS")] == source[: source.index("### BEGIN HIDDEN TESTS")]


def cell_source_of(notebook, grade_id):
    return next(
        c.source
        for c in nbformat.read(ROOT / "solutions" / notebook, as_version=4).cells
        if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id
    )


# --- limits that hold (issue 29, point 3) ---------------------------------------------------------------------


def test_process_count_is_limited_and_named(graded):
    require_sandbox()
    r = row(graded, "fork_bomb", QUIZ)
    assert float(r["q01_test"]) == 0, r
    assert r["status"] == "needs review" and "process limit (256) reached" in r["reason"], r


def test_everything_a_kernel_writes_is_bounded_and_off_the_host(graded):
    require_sandbox()
    r = row(graded, "disk_filler", QUIZ)
    assert float(r["q01_test"]) == 0, r
    assert (
        r["status"] == "needs review"
        and "space limit of /tmp (256 MB)" in r["reason"]
        and "space limit of /dev/shm (64 MB)" in r["reason"]
    ), r
    base = graded[1]
    leftovers = [
        p
        for folder in ("/dev/shm", "/tmp", str(base))
        for p in glob.glob(f"{folder}/**/ftcourse-fill-*", recursive=True)
    ]
    assert leftovers == []


def test_no_new_user_namespace_in_the_sandbox(graded):
    require_sandbox()
    if not SANDBOX.disable_userns:
        pytest.skip(f"this bubblewrap ({SANDBOX.detail}) has no --disable-userns")
    assert float(row(graded, "new_userns", QUIZ)["q01_test"]) == 0


def test_the_machine_is_left_as_it_was(graded):
    """No process of a kernel outlives grading, and the run's cgroups are gone."""
    require_sandbox()
    # Grading kernels (started through the launcher that sets RLIMIT_DATA) and their sandboxes; other kernels of
    # this machine (a notebook being tested beside) are not the grader's.
    stray = subprocess.run(["pgrep", "-f", "RLIMIT_DATA"], capture_output=True, text=True).stdout.split()
    stray += subprocess.run(["pgrep", "-x", "bwrap"], capture_output=True, text=True).stdout.split()
    assert stray == [], stray
    assert glob.glob("/sys/fs/cgroup/*/ftcourse-*") + glob.glob("/sys/fs/cgroup/*/**/ftcourse-*", recursive=True) == []


def test_address_space_reservations_are_not_refused():
    """A CUDA build of torch reserves gigabytes of address space it never writes: RLIMIT_DATA lets that through
    (RLIMIT_AS did not), and still refuses memory that is asked to be written."""
    require_sandbox()
    from ftcourse import sandbox

    plan = sandbox.SandboxPlan(SANDBOX, sandbox.Limits(memory_mb=1024), sandbox.readable_paths([]))
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, "
        "ctypes.c_int, ctypes.c_int, ctypes.c_long]\n"
        "reserved = libc.mmap(None, 16 * 2**30, 0, 0x22, -1, 0)  # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS\n"
        "assert reserved not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()\n"
        "try:\n    bytearray(2 * 2**30)\nexcept MemoryError:\n    print('refused')\n"
    )
    result = sandbox.run_like_a_kernel(plan, code, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "refused"), result.stderr


# --- feedback that keeps the hidden tests hidden (issue 29, point 4) -------------------------------------------

HIDDEN_TEST_CODE = [
    "reference_trace",
    "_RecordingSGD",
    "explanations = {",
    "_check.plain",
    "_check.call",
    "def _problem(",
    "BEGIN HIDDEN TESTS",
    "_grader.begin(",
]


def test_feedback_holds_no_hidden_test_code(graded):
    pages = list((graded[1] / "feedback").rglob("*.html"))
    assert len(pages) > 20
    leaks = [
        (page.parent.name, page.name, secret)
        for page in pages
        for secret in HIDDEN_TEST_CODE
        if secret in page.read_text(encoding="utf-8")
    ]
    assert leaks == []
    # The instructor notebooks do hold them: the check above can fail.
    sources = "".join((ROOT / "solutions" / n).read_text(encoding="utf-8") for n in (QUIZ, LR, ES))
    assert all(secret in sources for secret in HIDDEN_TEST_CODE)


def test_feedback_escapes_what_the_student_printed(graded):
    """A student's output is text in the page: no script, no markup of theirs, no terminal escapes."""
    page_text = (graded[1] / "feedback" / "script_printer" / "16_exercise_early_stopping.html").read_text(
        encoding="utf-8"
    )
    page = FeedbackPage(page_text)
    assert page.scripts == 0 and "<script>" not in page_text and "\x1b" not in page_text
    assert "<script>alert('feedback')</script>" in page.cells["es_test_init"]["stdout"]  # shown, as text
    # The hidden test's own source, which it printed, is masked line by line (the leak check above covers it too).
    assert "[ligne masquée : code des tests cachés]" in page.cells["es_test_init"]["stdout"]
    assert (row(graded, "script_printer", ES)["status"], float(row(graded, "script_printer", ES)["total"])) == (
        "graded",
        9,
    )


def test_control_characters_never_reach_the_csv_or_the_screen(graded):
    rows, base, stdout, _ = graded
    raw = (base / "grades.csv").read_text(encoding="utf-8-sig")
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", raw.replace("\r\n", "\n"))
    assert "\x1b" not in stdout
    r = rows[("red", ES)]  # the folder "\x1b[31mred\x1b[0m": its escapes taken out
    assert (r["status"], float(r["total"])) == ("graded", 9), r
