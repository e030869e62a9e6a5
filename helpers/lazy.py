"""Lazy re-exports: a package names the functions of its modules, and a module is imported on first use.

``from helpers.training import train_loop`` imports ``helpers.training.loops``
(and torch) only then, so that ``import helpers.training`` stays light, as
``import helpers`` does. The same mechanism as ``helpers.setup``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package``, which re-exports ``{module: [name, ...]}`` lazily.

    Each ``module`` is a submodule of ``package``; a name is looked up there on
    first access and then kept on the package. A name listed twice is an
    error (it would be ambiguous).
    """
    where: dict[str, str] = {}
    for module, names in exports.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is exported by both .{where[name]} and .{module}")
            if name.startswith("_"):
                raise ValueError(f"{package}: {name!r} is private and cannot be exported")
            where[name] = module

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return sorted(where), __getattr__, __dir__
