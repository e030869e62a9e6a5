"""The checks the hidden tests of the graded notebooks call, kept out of the student code's reach.

``ftcourse grade`` runs this module's source as a hidden first cell of every
notebook it grades, before the setup cell and any student code
(:mod:`ftcourse.autograde_hooks`). :class:`Grader` then captures private
references to the builtins and library functions the tests use, and records
the state of the kernel (IPython's cell transformers, exception handlers and
event callbacks, trace hooks) before the student's cells run. In the
instructor's notebooks each hidden test starts with::

    try:
        _grader
    except NameError:  # outside `ftcourse grade` (the instructor running solutions/): the same checks
        from ftcourse.grader_prelude import Grader as _Grader
        _grader = _Grader()
    _check = _grader.begin("16_exercise_early_stopping.ipynb", "es_test_min_delta")

``begin`` puts back every builtin, library function, class attribute and
``sys.modules`` entry the student's cells replaced (``math.isclose = lambda
*a: True``, ``torch.equal = ...``, ``builtins.zip = ...``), seeds ``random``,
numpy and torch from a stable hash of (student id, notebook, test) and prints
that seed (it shows in the feedback), and returns a :class:`Check`.
``Check.plain`` converts a result to plain Python values (``bool``, ``int``,
``float``, ``str``, ``None``, lists, tuples, dicts; numpy scalars and arrays
and torch tensors are converted by the library's own functions captured before
student code ran) and refuses anything else: an object whose ``__eq__`` always
returns True is not a plain value, so it earns nothing. Comparisons of plain
values use the interpreter's own ``==``, which student code cannot change.
``Check.call`` calls a student function and undoes whatever it patched before
the test looks at the result.

No name the student code can bind decides a grade. When ``ftcourse grade``
builds its copy of the instructor notebooks (:func:`ftcourse.grading.grading_copy`),
each hidden test becomes a function whose names (the builtins it reads
included, from :meth:`Grader.builtins`) are its own locals, called as
``<R>.finish(<R>_test(<R>.begin(...)))`` where ``<R>`` is a random name drawn
for that run; there is no fallback import. The first cell also calls :func:`install_anchor`,
which installs a Python audit hook: a hook cannot be removed, and its closure
holds what the student code must not reach: the grader object, the code
objects of its methods, IPython's own ``run_code`` and ``run_cell``, a
fingerprint of the grader's namespace, classes and state, and a secret key
(read from a file the sandbox then deletes). Every ``begin`` reports to the
hook, which records the test as begun only when the call came from the real
grader, called at the top level of the cell IPython is running (not from a
function, a nested ``run_cell``, or a look-alike), with the fingerprint intact
and the kernel untouched; IPython's ``post_run_cell`` event, seen by the hook,
records whether that cell raised; ``finish`` is recorded the same way, and
only for a test function compiled with its asserts. The last cell calls
:meth:`Grader.probe`,
whose report (this log, signed with the key by the hook) the grading process
checks: a test earns its points only if nbgrader passed it *and* the signed log
says the real grader began and finished it and the cell ran without an error.
A fake grader, a replaced class attribute or module attribute of the checker, a
``sys.modules`` entry, shadowed builtins, hidden errors or a missing report earn
nothing.

These are defences for a shared interpreter, not a proof: ``gc``'s object
walks and new audit hooks are refused while grading, but code that attacks
the interpreter itself (``ctypes``, or a thread racing the tests) can still
win, which is why every notebook whose report is missing or forged goes to the
instructor with its points withheld.
"""

import base64 as _base64
import hashlib as _hashlib
import hmac as _hmac
import importlib as _importlib
import json as _json
import os as _os
import random as _random
import sys as _sys

_type = type
_len = len
_isinstance = isinstance
_callable = callable
_repr = repr
_getattr = getattr
_list = list
_tuple = tuple
_dict = dict
_str = str
_vars = vars
_print = print
_all = all
_any = any
_zip = zip
_min = min
_max = max
_abs = abs
_NoneType = type(None)
_SCALARS = (bool, int, float, str, _NoneType)
_type_setattr = type.__setattr__
_dict_items = dict.items
_Random = _random.Random
_sha256 = _hashlib.sha256
_settrace = _sys.settrace
_setprofile = _sys.setprofile
_gettrace = _sys.gettrace
_getprofile = _sys.getprofile
_audit = _sys.audit
_getframe = _sys._getframe
_sys_modules = _sys.modules
_object_getattribute = object.__getattribute__
_BUILTINS = _importlib.import_module("builtins")
# What compiles a cell: a replaced one could compile the tests without their asserts (checked at each test).
_COMPILERS = ("codeop", "IPython.core.compilerop")
_COMPILE_BUILTINS = ("compile", "exec", "eval", "__import__")

STUDENT_FOR_SOLUTIONS = "(solutions)"

# Modules and classes whose callables are put back at the start of every test and after every student call,
# by the top-level package a notebook's hidden tests import (builtins, math, random and copy always).
PROTECTED = {
    "builtins": (["builtins"], []),
    "math": (["math"], []),
    "random": (["random"], ["random.Random"]),
    "copy": (["copy"], []),
    "numpy": (["numpy", "numpy.random", "numpy.linalg"], []),
    "torch": (
        ["torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.optim", "torch.utils.data"],
        [
            "torch.Tensor",
            "torch.nn.Module",
            "torch.nn.Linear",
            "torch.nn.Parameter",
            "torch.optim.Optimizer",
            "torch.optim.SGD",
            "torch.optim.Adam",
            "torch.optim.AdamW",
            "torch.utils.data.DataLoader",
            "torch.utils.data.Dataset",
        ],
    ),
    "matplotlib": (["matplotlib", "matplotlib.pyplot"], []),
}
ALWAYS = ("builtins", "math", "random", "copy")
CONVERTED = ("numpy", "torch")  # imported by every Grader: Check.plain converts their numbers, begin seeds them


def seed_for(student: str, notebook: str, test: str) -> int:
    """The seed of one hidden test: the first 4 bytes of sha256(student, notebook, test), as an integer."""
    text = "\x1f".join((student, notebook, test)).encode("utf-8")
    return int.from_bytes(_sha256(text).digest()[:4], "big")


def _resolve(dotted: str):
    """The module or class named ``dotted`` if it is already imported, else None (never imports)."""
    parts = dotted.split(".")
    for cut in range(_len(parts), 0, -1):
        module = _sys.modules.get(".".join(parts[:cut]))
        if module is not None:
            target = module
            for name in parts[cut:]:
                target = _getattr(target, name, None)
                if target is None:
                    return None
            return target
    return None


class Grader:
    """Private copies of what the tests rely on, captured when it is created (before any student code)."""

    # No instance dictionary: a method cannot be shadowed on the instance (class attributes are fingerprinted).
    __slots__ = ("student", "_saved", "_modules", "_np", "_torch", "_fignums", "_random_seed", "_kernel_state")

    def __init__(self, student: str = STUDENT_FOR_SOLUTIONS, protect: tuple = ("numpy", "torch", "matplotlib")) -> None:
        self.student = student
        packages = _list(ALWAYS) + [name for name in protect if name not in ALWAYS]
        # Import them now, before student code can replace their functions; numpy and torch always (the
        # notebooks' setup cell imports them anyway): their generators are seeded and their numbers converted.
        for package in packages + [name for name in CONVERTED if name not in packages]:
            for dotted in PROTECTED.get(package, ([package], []))[0]:
                try:
                    _importlib.import_module(dotted)
                except Exception:  # a package the tests use but this environment lacks: its tests will fail
                    pass
        self._saved = []  # (namespace owner, is_class, {name: callable})
        for package in packages:
            modules, classes = PROTECTED.get(package, ([package], []))
            for dotted in modules + classes:
                owner = _resolve(dotted)
                if owner is None:
                    continue
                callables = {name: value for name, value in _dict_items(_dict(_vars(owner))) if _callable(value)}
                self._saved.append((owner, _isinstance(owner, type), callables))
        # The module objects themselves: a test's `import numpy` must not find a look-alike put in sys.modules.
        self._modules = {
            name: _sys_modules[name]
            for package in packages
            for name in PROTECTED.get(package, ([package], []))[0]
            if name in _sys_modules
        }
        self._capture_converters()
        self._kernel_state = self._snapshot_kernel()

    # --- what is captured ------------------------------------------------------------------------

    def _capture_converters(self) -> None:
        numpy = _sys.modules.get("numpy")
        torch = _sys.modules.get("torch")
        self._np = None
        if numpy is not None:
            self._np = {
                "ndarray": numpy.ndarray,
                "generic": numpy.generic,
                "item": numpy.generic.item,
                "tolist": numpy.ndarray.tolist,
                "scalars": _tuple(_type(numpy.dtype(code).type(0)) for code in "?bhilqBHILQefdg"),
                "seed": numpy.random.seed,
                "gradient": numpy.gradient,
                "argmin": numpy.argmin,
                "asarray": numpy.asarray,
            }
        self._torch = None
        if torch is not None:
            self._torch = {
                "Tensor": torch.Tensor,
                "Parameter": torch.nn.Parameter,
                "tolist": torch.Tensor.tolist,
                "detach": torch.Tensor.detach,
                "manual_seed": torch.manual_seed,
                "state_dict": torch.nn.Module.state_dict,
                "optimizer_state_dict": torch.optim.Optimizer.state_dict,
            }
        pyplot = _sys.modules.get("matplotlib.pyplot")
        self._fignums = pyplot.get_fignums if pyplot is not None else None
        self._random_seed = _random.seed

    def _snapshot_kernel(self) -> dict:
        """What of the kernel a student could change to hide failures: compared by :meth:`probe`."""
        state: dict = {"sys.displayhook": _sys.displayhook}
        try:
            shell = get_ipython()  # noqa: F821 - defined in an IPython kernel
        except NameError:
            return state
        for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
            state[name] = _tuple(_getattr(shell, name, ()))
        manager = _getattr(shell, "input_transformer_manager", None)
        state["input_transformer_manager"] = manager
        for name in ("cleanup_transforms", "line_transforms", "token_transformers"):
            state[f"input_transformer_manager.{name}"] = _tuple(_getattr(manager, name, ()))
        state["custom_exceptions"] = shell.custom_exceptions
        state["CustomTB"] = _getattr(shell, "CustomTB", None)
        instance = _vars(shell)
        for name in _SHELL_METHODS:
            state[f"shell.{name}"] = instance.get(name)
        events = _getattr(shell, "events", None)
        for event, callbacks in _dict_items(_dict(_getattr(events, "callbacks", {}))):
            state[f"events.{event}"] = _Callbacks(callbacks)
        # The compiler IPython compiles cells with: another one could strip the tests' asserts. (Its flags change
        # with a student's `from __future__ import ...`, and no flag strips asserts: they are not compared.)
        compiler = _getattr(shell, "compile", None)
        state["shell.compile"] = compiler
        for name in _COMPILERS:
            module = _sys_modules.get(name)
            if module is not None:
                state[f"module {name}"] = {k: v for k, v in _dict_items(_dict(_vars(module))) if _callable(v)}
        kernel = _getattr(shell, "kernel", None)
        session = _getattr(kernel, "session", None)
        for owner in (shell, kernel, session, compiler):
            if owner is None:
                continue
            for cls in _type(owner).__mro__:
                if cls is not object:
                    state[f"class {cls.__qualname__}"] = {
                        k: v for k, v in _dict_items(_dict(_vars(cls))) if _callable(v)
                    }
        for name in ("shell_handlers", "control_handlers"):
            handlers = _getattr(kernel, name, None)
            if _type(handlers) is _dict:
                state[f"kernel.{name}"] = _dict(handlers)
        return state

    # --- used by the tests -----------------------------------------------------------------------

    def restore(self) -> list:
        """Put back every captured callable that was replaced or deleted; remove trace and profile hooks.
        Returns the names of the builtins put back."""
        builtins_put_back = []
        for owner, is_class, callables in self._saved:
            current = _vars(owner)
            for name, value in _dict_items(callables):
                if current.get(name) is not value:
                    if owner is _BUILTINS:
                        builtins_put_back.append(name)
                    try:
                        if is_class:
                            _type_setattr(owner, name, value)
                        else:
                            current[name] = value
                    except (TypeError, AttributeError):  # a type that cannot change could not be patched either
                        pass
        for name, module in _dict_items(self._modules):
            if _sys_modules.get(name) is not module:
                _sys_modules[name] = module
        _settrace(None)
        _setprofile(None)
        return builtins_put_back

    def begin(self, notebook: str, test: str, random: bool = True) -> "Check":
        """Start one hidden test: restore, seed every generator from (student, notebook, test), print the seed
        (a test that draws nothing at random says ``random=False`` and prints nothing)."""
        put_back = self.restore()
        seed = seed_for(self.student, notebook, test)
        self._random_seed(seed)
        if self._np is not None:
            self._np["seed"](seed)
        if self._torch is not None:
            self._torch["manual_seed"](seed)
        if random:
            _print(f"[tests cachés] graine {seed} = sha256(élève, notebook, test) ; test {test}")
        check = Check(self, seed)
        # Under `ftcourse grade`, the anchor (install_anchor) records this test as begun by the real grader
        # at the top level of the cell being run; elsewhere no hook listens and this does nothing.
        _audit("ftcourse.begin", self, test, put_back)
        return check

    def tampered(self) -> list:
        """What of the kernel changed since the prelude (names), empty when nothing did."""
        now = self._snapshot_kernel()
        changed = [
            name
            for name, value in _dict_items(self._kernel_state)
            if name not in now or not _same_state(now[name], value)
        ]
        changed += [name for name in now if name not in self._kernel_state]
        if _gettrace() is not None or _getprofile() is not None:
            changed.append("trace or profile hook")
        return changed

    def finish(self, returned=None) -> bool:
        """The end of one hidden test (its function returned: every check passed). Under ``ftcourse grade`` the
        anchor records it; elsewhere this does nothing. True, for the ``assert`` the grading copy calls it in."""
        _audit("ftcourse.finish", self)
        return True

    def builtins(self, names: tuple) -> tuple:
        """The interpreter's own builtins of these names, as captured before any student code: the grading copy's
        hidden tests bind them as locals, so that a name the student binds in the notebook cannot shadow them."""
        for owner, _, callables in self._saved:
            if _getattr(owner, "__name__", None) == "builtins":
                return _tuple(callables[name] if name in callables else _getattr(owner, name) for name in names)
        raise RuntimeError("the grader captured no builtins")

    def probe(self) -> None:
        """The grader's last cell: the anchor answers with its signed report (an AssertionError the grading
        process reads). Without an anchor (outside ``ftcourse grade``) there is nothing to report."""
        _audit("ftcourse.probe", self, self.tampered())
        raise AssertionError("ftcourse probe: no grader anchor in this kernel")


# Methods of IPython's shell that a student could shadow on the instance to rewrite or hide a cell's run.
_SHELL_METHODS = (
    "run_cell",
    "run_cell_async",
    "run_ast_nodes",
    "run_code",
    "showtraceback",
    "_showtraceback",
    "showsyntaxerror",
    "transform_cell",
    "transform_ast",
    "should_run_async",
    "ex",
    "ev",
)
# Packages that legitimately add event callbacks while a notebook runs (matplotlib's inline backend).
_KNOWN_CALLBACK_MODULES = ("matplotlib", "matplotlib_inline", "ipykernel", "IPython", "ipywidgets")


class _Callbacks:
    """An event's callbacks at one moment: later, none may be gone and the new ones must come from known packages."""

    def __init__(self, callbacks) -> None:
        self.items = _tuple(callbacks)

    def unchanged_since(self, before: "_Callbacks") -> bool:
        if not _all(_any(item is old for item in self.items) for old in before.items):
            return False
        added = [item for item in self.items if not _any(item is old for old in before.items)]
        return _all(
            _str(_getattr(item, "__module__", "") or "").split(".")[0] in _KNOWN_CALLBACK_MODULES for item in added
        )


def _same_state(now, before) -> bool:
    if _type(now) is _Callbacks and _type(before) is _Callbacks:
        return now.unchanged_since(before)
    if _type(now) is _dict and _type(before) is _dict:
        return now.keys() == before.keys() and _all(now[k] is before[k] for k in before)
    if _type(now) is _tuple and _type(before) is _tuple:
        return _len(now) == _len(before) and _all(x is y for x, y in _zip(now, before))
    return now is before


def _is_one_of(kind, kinds) -> bool:
    for candidate in kinds:
        if kind is candidate:
            return True
    return False


class Check:
    """One hidden test's checks: its seed, its random generator, strict conversion, safe calls."""

    __slots__ = ("_grader", "seed", "rng")

    def __init__(self, grader: Grader, seed: int) -> None:
        self._grader = grader
        self.seed = seed
        self.rng = _Random(seed)

    def plain(self, value, what: str = "the result"):
        """``value`` as plain Python data, or AssertionError naming its type (objects that fake equality fail).

        Student code may have run while ``value`` was computed (a property, ``__len__``): what it patched is
        undone first, so that the test's next statements run on the real builtins and libraries."""
        self._grader.restore()
        _audit("ftcourse.verify", self)
        return self._plain(value, what)

    def _plain(self, value, what: str):
        kind = _type(value)
        # Identity, never `in` (==): a class whose metaclass claims equality with every type passes `in`.
        if _is_one_of(kind, _SCALARS):
            return value
        if kind is _list or kind is _tuple:
            items = [self._plain(item, what) for item in value]
            return items if kind is _list else _tuple(items)
        if kind is _dict:
            return {self._plain(k, what): self._plain(v, what) for k, v in _dict_items(value)}
        np, torch = self._grader._np, self._grader._torch
        if np is not None:
            if _is_one_of(kind, np["scalars"]):
                return self._plain(np["item"](value), what)
            if kind is np["ndarray"]:
                return self._plain(np["tolist"](value), what)
        if torch is not None and (kind is torch["Tensor"] or kind is torch["Parameter"]):
            return self._plain(torch["tolist"](torch["detach"](value)), what)
        raise AssertionError(
            f"{what}: an object of type {kind.__name__!s} where plain values are expected "
            "(bool, int, float, str, None, list, tuple, dict, numpy or torch numbers)"
        )

    def builtins(self, names: tuple) -> tuple:
        """The interpreter's own builtins of these names (see :meth:`Grader.builtins`)."""
        return self._grader.builtins(names)

    def call(self, function, *args, **kwargs):
        """``function(*args, **kwargs)``, then undo whatever it replaced (builtins, library functions)."""
        try:
            return function(*args, **kwargs)
        finally:
            self._grader.restore()
            _audit("ftcourse.verify", self)

    def state_dict(self, module) -> dict:
        """A module's weights as plain lists, read with torch's own ``Module.state_dict`` (a copy)."""
        torch = self._grader._torch
        return {name: self._plain(tensor, name) for name, tensor in _dict_items(torch["state_dict"](module))}

    def optimizer_state(self, optimizer) -> dict:
        """An optimizer's state (moments, learning rates) as plain data, read with torch's own ``state_dict``."""
        return self.plain(self._grader._torch["optimizer_state_dict"](optimizer), "optimizer state")

    def fignums(self) -> list:
        """matplotlib's open figures, by its own ``get_fignums``."""
        return _list(self._grader._fignums()) if self._grader._fignums else []

    def suggestions(self, lrs: list, losses: list, tolerance: float = 1e-9) -> list:
        """The rates the contract's ``lrs[argmin(np.gradient(losses))]`` may be: the steepest slope's, and any
        whose slope is within ``tolerance`` (relative) of it, so that a slope computed another way cannot lose
        the point by rounding. numpy's own functions, captured before student code ran."""
        np = self._grader._np
        slopes = np["tolist"](np["gradient"](np["asarray"](losses, dtype=float)))
        steepest = _min(slopes)
        margin = tolerance * _max(1.0, _abs(steepest))
        return [lr for lr, slope in _zip(lrs, slopes) if slope <= steepest + margin]


# --- the anchor (under `ftcourse grade` only) -----------------------------------------------------------

REPORT_PREFIX = "ftcourse probe "
REFUSAL_PREFIX = "ftcourse probe refused: "
_REFUSED_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.addaudithook")


def report_mac(secret: bytes, payload: str) -> str:
    """The signature of a probe report: HMAC-SHA256 of its payload with the run's secret key (hex)."""
    return _hmac.new(secret, payload.encode("ascii"), _hashlib.sha256).hexdigest()


def install_anchor(grader: Grader, secret_file: str) -> None:
    """Make ``grader`` the only checker whose word counts in this kernel (``ftcourse grade``'s first cell).

    Reads the run's secret key from ``secret_file`` and deletes the file, registers IPython callbacks for
    the start and end of every cell, and installs an audit hook (which cannot be removed) that keeps the key,
    the log of tests begun and passed, and the identities it checks against. Everything the hook uses is
    bound in this function's closure now, so that no later change to a module or a namespace reaches it.
    The hook also refuses ``gc``'s object walks and further audit hooks for the rest of the kernel's life.
    """
    shell = get_ipython()  # noqa: F821 - defined in an IPython kernel
    with open(secret_file, "rb") as handle:
        secret = handle.read()
    _os.remove(secret_file)
    if _len(secret) < 16:
        raise RuntimeError("the grader's secret key is missing")
    # Builtins and functions of the hook, bound here: student code cannot replace a closure's own references.
    tuple_, dict_, id_, map_, type_, str_, getattr_ = _tuple, _dict, id, map, _type, _str, _getattr
    vars_, hasattr_, len_, all_, any_, zip_, int_ = _vars, hasattr, _len, _all, _any, _zip, int
    getframe, get_attribute, dumps, b64encode = _getframe, _object_getattribute, _json.dumps, _base64.b64encode
    statvfs = _os.statvfs
    hmac_new, sha256, tampered = _hmac.new, _hashlib.sha256, Grader.tampered
    prefix, refusal, refused = REPORT_PREFIX, REFUSAL_PREFIX, _REFUSED_EVENTS
    user_ns = shell.user_ns

    def codes(owner, name: str) -> tuple:
        """The code of every definition of method ``name`` along ``owner``'s classes (overrides call their base)."""
        return tuple_(
            vars_(cls)[name].__code__
            for cls in type_(owner).__mro__
            if name in vars_(cls) and hasattr_(vars_(cls)[name], "__code__")
        )

    trigger = codes(shell.events, "trigger")

    def stack(frame) -> tuple:
        """The code objects of ``frame`` and every frame it was called from, up to the kernel's main loop."""
        found = []
        while frame is not None:
            found.append(frame.f_code)
            frame = frame.f_back
        return tuple_(found)

    # How IPython runs a cell, seen from this (the prelude's) cell: every frame above the cell's own, from
    # IPython's run_code to the kernel's main loop. A test is begun only from a cell run the same way, not from
    # a function, a nested or silent run, or an event loop callback of the student's.
    cell_path = stack(getframe(2).f_back)  # 0 this function, 1 the prelude's function, 2 the prelude's cell

    def same_codes(found: tuple, expected: tuple) -> bool:
        return len_(found) == len_(expected) and all_(a is b for a, b in zip_(found, expected))

    def run_by_ipython(frame) -> bool:
        """``frame`` is one of IPython's own frames on the real path of a cell (the path's top part)."""
        found = stack(frame)
        return len_(found) <= len_(cell_path) and same_codes(found, cell_path[len_(cell_path) - len_(found) :])

    begin_code, probe_code, finish_code = Grader.begin.__code__, Grader.probe.__code__, Grader.finish.__code__
    real_builtins = vars_(_BUILTINS)  # what a cell's names fall back to
    compile_builtins = _COMPILE_BUILTINS
    namespace = Grader.begin.__globals__  # this module's namespace: the private references live there
    watched = [namespace, _vars(Grader), _vars(Check), _vars(_Callbacks)]
    slots = Grader.__slots__

    def state_ids() -> tuple:
        """Identities of everything the checks rely on: the namespace, the classes, the grader's state."""
        parts = []
        for mapping in watched:
            mapping = dict_(mapping)
            parts += [tuple_(mapping), tuple_(map_(id_, mapping.values()))]
        for slot in slots:
            value = get_attribute(grader, slot)
            parts.append(id_(value))
            if type_(value) is dict_:
                parts += [tuple_(value), tuple_(map_(id_, value.values()))]
        for owner, _, callables in get_attribute(grader, "_saved"):
            parts += [id_(owner), tuple_(map_(id_, callables.values()))]
        return tuple_(parts)

    log: list = []  # every top-level cell run since this one: its number, the test it began, problems
    status = {"depth": 1, "cell": None, "problems": []}  # the prelude's own cell is running now
    baseline = []
    busy = []

    def caller_is_cell(frame) -> bool:
        """``frame`` is the top level of a cell the kernel is running (not a function, not exec'd text)."""
        return (
            frame is not None
            and frame.f_code.co_name == "<module>"
            and frame.f_globals is user_ns
            and same_codes(stack(frame.f_back), cell_path)
        )

    def intact() -> bool:
        return state_ids() == baseline[0]

    def on_cell(phase: str, result) -> None:
        frame = getframe(3)  # 0 this, 1 on_event, 2 the hook, 3 the callback that called sys.audit
        chain = frame.f_back
        if (
            frame.f_code is not callback_codes[phase]
            or chain is None
            or not any_(chain.f_code is c for c in trigger)
            or not run_by_ipython(chain.f_back)
        ):
            status["problems"].append("the grader's cell callbacks were called from elsewhere")
            return
        if phase == "pre":
            status["depth"] += 1
            if status["depth"] == 1:
                status["cell"] = {
                    "n": None,
                    "test": None,
                    "begun": False,
                    "finished": False,
                    "passed": False,
                    "problems": [],
                }
            return
        status["depth"] -= 1
        cell = status["cell"]
        if status["depth"] != 0 or cell is None:
            return
        cell["passed"] = (
            getattr_(result, "error_before_exec", None) is None and getattr_(result, "error_in_exec", None) is None
        )
        # The number the kernel reports for this cell (nbgrader records it in the executed notebook).
        count = getattr_(result, "execution_count", None)
        cell["n"] = count if type_(count) is int_ else None
        if not intact():
            cell["problems"].append("the grader's state changed during the cell")
        log.append(cell)
        status["cell"] = None

    def on_begin(who, test, put_back) -> None:
        frame = getframe(3)  # the grader's begin
        cell = status["cell"]
        if cell is None:
            status["problems"].append(f"{test} begun outside a cell")
            return
        if cell["test"] is not None:
            cell["problems"].append(f"{test} begun twice in one cell")
            return
        cell["test"] = str_(test)
        problems = []
        if who is not grader or frame.f_code is not begin_code:
            problems.append("not the grader")
        if status["depth"] != 1 or not caller_is_cell(frame.f_back):
            problems.append("not begun at the top level of its cell")
        elif frame.f_back.f_builtins is not real_builtins:
            problems.append("the notebook's builtins were replaced")
        if any_(name in compile_builtins for name in put_back):
            problems.append("a builtin that compiles or imports code was replaced")
        if not intact():
            problems.append("the grader's state changed")
        else:
            changed = tampered(grader)
            if changed:
                problems.append("kernel changed: " + ", ".join(changed))
        cell["begun"] = not problems
        cell["problems"] += problems

    def on_finish(who) -> None:
        """The test function returned: recorded when it is the real grader's finish, called at the top level of the
        cell that began the test (its call is an ``assert``: a cell compiled without asserts never makes it)."""
        frame = getframe(3)  # the grader's finish
        cell = status["cell"]
        if cell is None or not cell["begun"]:
            status["problems"].append("a test finished that was not begun")
            return
        problems = []
        if who is not grader or frame.f_code is not finish_code:
            problems.append("not the grader")
        if status["depth"] != 1 or not caller_is_cell(frame.f_back):
            problems.append("not finished at the top level of its cell")
        if not intact():
            problems.append("the grader's state changed")
        cell["finished"] = not problems
        cell["problems"] += problems

    def on_probe(who, changed) -> None:
        frame = getframe(3)  # the grader's probe
        wrong = [
            what
            for what, bad in (
                ("not the grader", who is not grader or frame.f_code is not probe_code),
                ("inside another cell", status["depth"] != 1),
                ("not at the top level of a cell", not caller_is_cell(frame.f_back)),
            )
            if bad
        ]
        if wrong:
            raise AssertionError(f"{refusal}{', '.join(wrong)}")
        problems = status["problems"] + ([] if intact() else ["the grader's state changed"])
        report = {"cells": log, "problems": problems, "kernel": [str_(name) for name in changed], "free": {}}
        for folder in ("/tmp", "/dev/shm"):  # how full the kernel's writable folders are (the sandbox's own)
            try:
                found = statvfs(folder)
                report["free"][folder] = found.f_bavail * found.f_frsize
            except OSError:
                pass
        payload = b64encode(dumps(report, sort_keys=True).encode("utf-8")).decode("ascii")
        raise AssertionError(f"{prefix}{payload} {hmac_new(secret, payload.encode('ascii'), sha256).hexdigest()}")

    def on_event(event: str, args: tuple) -> None:
        if event == "ftcourse.cell":
            on_cell(*args)
        elif event == "ftcourse.begin":
            on_begin(*args)
        elif event == "ftcourse.finish":
            on_finish(*args)
        elif event == "ftcourse.probe":
            on_probe(*args)
        elif event == "ftcourse.verify" and status["cell"] is not None and not intact():
            status["cell"]["problems"].append("the grader's state changed during a check")

    def hook(event: str, args: tuple) -> None:
        if event[:9] != "ftcourse.":
            if event in refused:
                raise RuntimeError(f"{event} is not available while grading")
            return
        if busy:  # an event raised by the hook's own work
            return
        busy.append(True)
        try:
            on_event(event, args)
        finally:
            busy.clear()

    def pre_cell(*args) -> None:
        _audit("ftcourse.cell", "pre", None)

    def post_cell(result=None) -> None:
        _audit("ftcourse.cell", "post", result)

    callback_codes = {"pre": pre_cell.__code__, "post": post_cell.__code__}
    shell.events.register("pre_run_cell", pre_cell)
    shell.events.register("post_run_cell", post_cell)
    # The kernel as it is now, our callbacks included, is what the probe compares with.
    grader._kernel_state = grader._snapshot_kernel()
    baseline.append(state_ids())
    _sys.addaudithook(hook)
