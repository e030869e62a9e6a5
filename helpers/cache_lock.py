"""One process at a time on a cache folder: an exclusive lock and the staging folders next to it.

The course caches things that take a minute to make (the de-quantised SmolLM2
of :func:`helpers.models.convert_gguf_model`, the reference classifier of
:func:`helpers.training.reference.sentiment_classifier`, taught in
``course/09_evaluation.ipynb``). Two processes (two notebooks, a notebook and
the test suite) may ask for the same one at once: the first makes it under
the lock, the others wait and reuse it. The lock is ``filelock``'s (``flock``
on Linux and macOS, which the system releases when its holder dies, even when
killed; ``msvcrt`` locking on Windows). A cache is written into a staging
folder ``.<name>-XXXXXXXX`` beside it and renamed into place, so a killed run
never leaves half a cache; :func:`staging_dirs` finds those left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LOCK_TIMEOUT", "exclusive_lock", "staging_dirs"]

LOCK_TIMEOUT = 1800.0  # seconds to wait for another process's conversion or training


@contextmanager
def exclusive_lock(
    path: Path, timeout: float = LOCK_TIMEOUT, on_wait: Callable[[], None] | None = None
) -> Iterator[bool]:
    """Hold an exclusive inter-process lock on the file ``path``; yield whether another process held it first.

    ``on_wait`` is called once if the lock is busy; ``TimeoutError`` after ``timeout`` seconds. The lock file is
    kept (deleting it would race with a process about to lock it).
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        if on_wait is not None:
            on_wait()
        try:
            lock.acquire(timeout=timeout, poll_interval=0.2)
        except Timeout:
            raise TimeoutError(f"another process held the lock {path} for more than {timeout:g} s") from None
    try:
        yield waited
    finally:
        lock.release()


def staging_dirs(target: Path) -> list[Path]:
    """Staging folders of ``target`` (``.<name>-XXXXXXXX``), in use or left by a killed run."""
    return [p for p in target.parent.glob(f".{target.name}-*") if p.is_dir()]
