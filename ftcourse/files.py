"""Writing files so that nothing is lost: a temporary file renamed over the target, the folder flushed.

Used for everything ``ftcourse`` writes over an instructor's data: the grades
and marks files (:mod:`ftcourse.gradebook_csv`), released and normalised
notebooks (``solutions/`` holds the only copy of the hidden tests), feedback
pages.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new file) to disk where the system allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems (and Windows) cannot sync a folder
        pass
    finally:
        os.close(descriptor)


def write_atomically(path: Path, text: str, encoding: str) -> None:
    """Write ``text`` to a temporary file in ``path``'s folder, flush it to disk, rename it over ``path``, then
    flush the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding=encoding, newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
