"""Measurement utilities: what a model weighs, stored or serialized, and the peak memory of the process.

Used by the lessons that compare costs (``course/10_deployment.ipynb``,
``course/11_peft.ipynb``): :func:`model_size_bytes` (serialized size of a
model or of a saved file/folder), :func:`stored_bytes` (what must be stored
per task), :func:`peak_rss` (the peak resident memory of the process during a
block, above what it held before).
"""

from __future__ import annotations

import ctypes
import gc
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["model_size_bytes", "release_freed_memory", "PeakMemory", "peak_rss", "stored_bytes"]


def model_size_bytes(model_or_path: nn.Module | str | os.PathLike) -> int:
    """Serialized size in bytes of a model (its ``state_dict`` saved with ``torch.save``), a file or a folder.

    For a module the state dict is written to memory, so quantized weights
    count at their packed int8 size and tied weights once; for a folder
    (``save_pretrained``) every file under it is counted. Taught in
    ``course/10_deployment.ipynb``.
    """
    if isinstance(model_or_path, nn.Module):
        buffer = io.BytesIO()
        torch.save(model_or_path.state_dict(), buffer)
        return buffer.tell()
    path = Path(model_or_path)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    raise FileNotFoundError(f"{path} is neither a file nor a folder")


def _current_rss() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def _linux_peak_rss() -> int | None:
    """The process's peak resident set (``VmHWM``), in bytes, or ``None`` where ``/proc`` does not give it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc's ``malloc_trim``).

    Without it, memory freed by an earlier run stays in the process, the next
    run reuses it, and its peak above the start under-counts what it needed.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


def _reset_linux_peak() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux 4.0+: write 5 to ``clear_refs``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _linux_peak_rss() is not None


@dataclass
class PeakMemory:
    """Filled by :func:`peak_rss` when its block ends: ``start`` and ``peak`` resident bytes, and how."""

    start: int | None = None
    peak: int | None = None
    method: str = ""

    @property
    def above_start(self) -> int | None:
        """Peak minus start: the memory the block added at its worst moment."""
        return None if self.start is None or self.peak is None else max(0, self.peak - self.start)


@contextmanager
def peak_rss(interval: float = 0.005) -> Iterator[PeakMemory]:
    """The peak resident memory of this process during the block.

    On Linux the kernel's own high-water mark is reset at the start
    (``/proc/self/clear_refs``) and read at the end: exact. Elsewhere a thread
    samples the resident set every ``interval`` seconds (needs ``psutil``; a
    peak shorter than the interval can be missed). The result has ``None``
    fields where neither is available. Freed memory is released first
    (:func:`release_freed_memory`), so that the block's own needs show.
    """
    release_freed_memory()
    result = PeakMemory(start=_current_rss())
    if _reset_linux_peak():
        result.method = "VmHWM"
        result.start = result.start if result.start is not None else _linux_peak_rss()
        try:
            yield result
        finally:
            result.peak = _linux_peak_rss()
        return
    if result.start is None:
        result.method = "unavailable"
        yield result
        return
    result.method = f"sampled every {interval * 1000:.0f} ms"
    peak, stop = [result.start], threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _current_rss() or 0)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.peak = max(peak[0], _current_rss() or 0)


def stored_bytes(model: nn.Module) -> int:
    """What one task costs on disk: ``save_pretrained``'s files, which for a PEFT model are the adapter alone."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return model_size_bytes(folder)
