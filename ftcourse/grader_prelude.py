"""The checks the hidden tests of the graded notebooks call, kept out of the student code's easy reach.

``ftcourse grade`` runs this module's source as a hidden first cell of every
notebook it grades, before the setup cell and any student code
(:mod:`ftcourse.autograde_hooks`). :class:`Grader` then captures private
references to the builtins and library functions the tests use, and records
the state of the kernel (IPython's cell transformers, exception handlers and
event callbacks, trace hooks) before the student's cells run. Each hidden test
starts with::

    try:
        _grader
    except NameError:  # outside `ftcourse grade` (the instructor running solutions/): the same checks
        from ftcourse.grader_prelude import Grader as _Grader
        _grader = _Grader()
    _check = _grader.begin("15_exercise_early_stopping.ipynb", "es_test_min_delta")

``begin`` puts back every builtin, library function and class attribute the
student's cells replaced (``math.isclose = lambda *a: True``,
``torch.equal = ...``, ``builtins.zip = ...``), seeds ``random``, numpy and
torch from a stable hash of (student id, notebook, test) and prints that seed
(it shows in the feedback), and returns a :class:`Check`. ``Check.plain``
converts a result to plain Python values (``bool``, ``int``, ``float``,
``str``, ``None``, lists, tuples, dicts; numpy scalars and arrays and torch
tensors are converted by the library's own functions captured before student
code ran) and refuses anything else: an object whose ``__eq__`` always returns
True is not a plain value, so it earns nothing. Comparisons of plain values use
the interpreter's own ``==``, which student code cannot change. ``Check.call``
calls a student function and undoes whatever it patched before the test looks at
the result.

The grader's last hidden cell calls :meth:`Grader.probe`, which must fail with
a token only the grader knows: a kernel whose errors are swallowed, whose cells
are rewritten, or whose checker was replaced does not produce it, and the
notebook is flagged. These are defences for a shared interpreter, not a proof:
code that runs in the same process as the tests and attacks the grader
deliberately (through ``gc`` or ``ctypes``) can still win, which is why a
notebook flagged by the probe goes to the instructor.
"""

import hashlib as _hashlib
import importlib as _importlib
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

STUDENT_FOR_SOLUTIONS = "(solutions)"

# Modules and classes whose callables are put back at the start of every test and after every student call,
# by the top-level package a notebook's hidden tests import (builtins, math, random and copy always).
PROTECTED = {
    "builtins": (["builtins"], []),
    "math": (["math"], []),
    "random": (["random"], ["random.Random"]),
    "copy": (["copy"], []),
    "numpy": (["numpy", "numpy.random", "numpy.linalg"], []),
    "torch": (["torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.optim", "torch.utils.data"],
              ["torch.Tensor", "torch.nn.Module", "torch.nn.Linear", "torch.nn.Parameter", "torch.optim.Optimizer",
               "torch.optim.SGD", "torch.optim.Adam", "torch.optim.AdamW", "torch.utils.data.DataLoader",
               "torch.utils.data.Dataset"]),
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
        kernel = _getattr(shell, "kernel", None)
        session = _getattr(kernel, "session", None)
        for owner in (shell, kernel, session):
            if owner is None:
                continue
            for cls in _type(owner).__mro__:
                if cls is not object:
                    state[f"class {cls.__qualname__}"] = {
                        k: v for k, v in _dict_items(_dict(_vars(cls))) if _callable(v)}
        for name in ("shell_handlers", "control_handlers"):
            handlers = _getattr(kernel, name, None)
            if _type(handlers) is _dict:
                state[f"kernel.{name}"] = _dict(handlers)
        return state

    # --- used by the tests -----------------------------------------------------------------------

    def restore(self) -> None:
        """Put back every captured callable that was replaced or deleted; remove trace and profile hooks."""
        for owner, is_class, callables in self._saved:
            current = _vars(owner)
            for name, value in _dict_items(callables):
                if current.get(name) is not value:
                    try:
                        if is_class:
                            _type_setattr(owner, name, value)
                        else:
                            current[name] = value
                    except (TypeError, AttributeError):  # a type that cannot change could not be patched either
                        pass
        _settrace(None)
        _setprofile(None)

    def begin(self, notebook: str, test: str, random: bool = True) -> "Check":
        """Start one hidden test: restore, seed every generator from (student, notebook, test), print the seed
        (a test that draws nothing at random says ``random=False`` and prints nothing)."""
        self.restore()
        seed = seed_for(self.student, notebook, test)
        self._random_seed(seed)
        if self._np is not None:
            self._np["seed"](seed)
        if self._torch is not None:
            self._torch["manual_seed"](seed)
        if random:
            _print(f"[tests cachés] graine {seed} = sha256(élève, notebook, test) ; test {test}")
        return Check(self, seed)

    def tampered(self) -> list:
        """What of the kernel changed since the prelude (names), empty when nothing did."""
        now = self._snapshot_kernel()
        changed = [name for name, value in _dict_items(self._kernel_state)
                   if name not in now or not _same_state(now[name], value)]
        changed += [name for name in now if name not in self._kernel_state]
        if _sys.gettrace() is not None or _sys.getprofile() is not None:
            changed.append("trace or profile hook")
        return changed

    def probe(self, token: str) -> None:
        """The grader's last cell: fails with ``token`` when the kernel is intact, without it when it is not."""
        changed = self.tampered()
        if changed:
            raise AssertionError("grading environment changed: " + ", ".join(changed))
        raise AssertionError(f"ftcourse probe {token}")


# Methods of IPython's shell that a student could shadow on the instance to rewrite or hide a cell's run.
_SHELL_METHODS = ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback", "_showtraceback",
                  "showsyntaxerror", "transform_cell", "transform_ast", "should_run_async", "ex", "ev")
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
        return _all(_str(_getattr(item, "__module__", "") or "").split(".")[0] in _KNOWN_CALLBACK_MODULES
                    for item in added)


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

    def __init__(self, grader: Grader, seed: int) -> None:
        self._grader = grader
        self.seed = seed
        self.rng = _Random(seed)

    def plain(self, value, what: str = "the result"):
        """``value`` as plain Python data, or AssertionError naming its type (objects that fake equality fail)."""
        kind = _type(value)
        # Identity, never `in` (==): a class whose metaclass claims equality with every type passes `in`.
        if _is_one_of(kind, _SCALARS):
            return value
        if kind is _list or kind is _tuple:
            items = [self.plain(item, what) for item in value]
            return items if kind is _list else _tuple(items)
        if kind is _dict:
            return {self.plain(k, what): self.plain(v, what) for k, v in _dict_items(value)}
        np, torch = self._grader._np, self._grader._torch
        if np is not None:
            if _is_one_of(kind, np["scalars"]):
                return self.plain(np["item"](value), what)
            if kind is np["ndarray"]:
                return self.plain(np["tolist"](value), what)
        if torch is not None and (kind is torch["Tensor"] or kind is torch["Parameter"]):
            return self.plain(torch["tolist"](torch["detach"](value)), what)
        raise AssertionError(f"{what}: an object of type {kind.__name__!s} where plain values are expected "
                             "(bool, int, float, str, None, list, tuple, dict, numpy or torch numbers)")

    def call(self, function, *args, **kwargs):
        """``function(*args, **kwargs)``, then undo whatever it replaced (builtins, library functions)."""
        try:
            return function(*args, **kwargs)
        finally:
            self._grader.restore()

    def state_dict(self, module) -> dict:
        """A module's weights as plain lists, read with torch's own ``Module.state_dict`` (a copy)."""
        torch = self._grader._torch
        return {name: self.plain(tensor, name) for name, tensor in _dict_items(torch["state_dict"](module))}

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
