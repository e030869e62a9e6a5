"""`make setup`'s preflight (.ci/preflight.py): it passes here, and refuses, before any download, a Python
that is too old, a Python without the venv/ensurepip modules, and too little free disk space.

Every case runs the real script (or the real `make setup`) as a subprocess, with real interpreters: the
thresholds are arguments, so "too little disk" and "too old" are also tested on this machine by asking
for more than it has. A Python older than 3.11 and a Python without ensurepip are used where they can be
had for real: an older interpreter found on this machine (skipped otherwise), and a copy of this
interpreter whose standard library lacks ``ensurepip``, which is what Debian and Ubuntu install without
python3-venv (``python -m venv`` is checked to fail with it first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PREFLIGHT = ROOT / ".ci" / "preflight.py"


def preflight(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, str(PREFLIGHT), *args], capture_output=True, text=True, cwd=ROOT, timeout=300, env=os.environ.copy()
    )


def make_setup(venv: Path, *variables: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "setup", f"VENV={venv}", *variables],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _version(python: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return None
    return tuple(map(int, out.stdout.split())) if out.returncode == 0 else None


@pytest.fixture(scope="module")
def old_python() -> str:
    """A real Python 3.6 to 3.10 on this machine (on PATH, or one of pyenv's), else skip."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(10, 5, -1)]
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = {
        tuple(map(int, re.findall(r"\d+", p.parent.parent.name)[:2])): p for p in pyenv.glob("3.*/bin/python3")
    }
    candidates += [str(installed[version]) for version in sorted(installed, reverse=True)]
    for candidate in filter(None, candidates):
        version = _version(candidate)
        if version and (3, 6) <= version < (3, 11):
            return candidate
    pytest.skip("no Python from 3.6 to 3.10 on this machine to run the preflight with")


@pytest.fixture(scope="module")
def python_without_ensurepip(tmp_path_factory) -> str:
    """This interpreter with a standard library that lacks ensurepip (Debian's python3 without python3-venv).

    The binary is copied into a new prefix whose lib/pythonX.Y links every entry of the real standard
    library but ensurepip (and site-packages); Python finds its library from where its binary lies."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stdlib = Path(sysconfig.get_path("stdlib"))
    if not (stdlib / "ensurepip").is_dir():
        pytest.skip(f"{stdlib} has no ensurepip to leave out")
    prefix = tmp_path_factory.mktemp("no-ensurepip")
    (prefix / "bin").mkdir()
    library = prefix / "lib" / stdlib.name
    library.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("ensurepip", "site-packages", "dist-packages"):
            (library / entry.name).symlink_to(entry)
    python = prefix / "bin" / base.name
    shutil.copy2(base, python)
    probe = subprocess.run(
        [str(python), "-c", "import sys, venv; print(sys.prefix)"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0 or Path(probe.stdout.strip()) != prefix:
        pytest.skip(f"a copy of {base} does not run from its own prefix: {probe.stdout}{probe.stderr}")
    return str(python)


def test_passes_here(tmp_path):
    result = preflight("--venv", str(tmp_path / "venv"), "--min-free-gb", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("preflight OK: Python 3.") and "with venv and ensurepip" in result.stdout
    assert not (tmp_path / "venv").exists()


def test_an_existing_venv_is_checked_instead(tmp_path, old_python):
    """With the venv there already, its Python is what counts (and the venv modules are not needed)."""
    venv = tmp_path / "venv"
    subprocess.run([old_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    result = preflight("--venv", str(venv), "--min-free-gb", "0.5")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{venv}/bin/python is Python 3." in result.stderr
    assert f"rm -rf {venv} && make setup PYTHON=python3.11" in result.stderr


def test_too_little_disk_space_is_refused(tmp_path):
    result = preflight("--venv", str(tmp_path / "venv"), "--min-free-gb", "100000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("make setup cannot start; nothing was downloaded or installed:")
    assert "Not enough free disk space for the venv" in result.stderr and "about 100000.0 GB" in result.stderr
    assert "PREFLIGHT_ARGS='--min-free-gb N'" in result.stderr
    assert result.stdout == ""


def test_a_python_below_the_minimum_is_refused(tmp_path):
    """The threshold as an argument: this interpreter is older than 99.0."""
    result = preflight("--venv", str(tmp_path / "venv"), "--min-free-gb", "0.5", "--min-python", "99.0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is too old: the course needs Python >= 99.0" in result.stderr
    assert "make setup PYTHON=python99.0" in result.stderr


def test_a_real_older_python_is_refused(tmp_path, old_python):
    result = preflight("--venv", str(tmp_path / "venv"), "--min-free-gb", "0.5", python=old_python)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is too old: the course needs Python >= 3.11" in result.stderr
    assert "make setup PYTHON=python3.11" in result.stderr and "Ubuntu 22.04" in result.stderr


def test_a_python_without_ensurepip_is_refused(tmp_path, python_without_ensurepip):
    # The condition is real: venv cannot make an environment with pip with this interpreter.
    venv = subprocess.run(
        [python_without_ensurepip, "-m", "venv", str(tmp_path / "made")], capture_output=True, text=True, timeout=120
    )
    assert venv.returncode != 0, venv.stdout + venv.stderr
    result = preflight("--venv", str(tmp_path / "venv"), "--min-free-gb", "0.5", python=python_without_ensurepip)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lacks the module ensurepip" in result.stderr and "sudo apt-get install python3-venv" in result.stderr


def test_make_setup_stops_at_the_preflight_before_creating_anything(tmp_path):
    venv = tmp_path / "venv"
    result = make_setup(venv, f"PYTHON={sys.executable}", "PREFLIGHT_ARGS=--min-free-gb 100000")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Not enough free disk space" in result.stderr
    assert not venv.exists() and "pip install" not in result.stdout


def test_make_setup_names_a_missing_python(tmp_path):
    result = make_setup(tmp_path / "venv", "PYTHON=python3.99-not-here")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "make setup: python3.99-not-here not found" in result.stderr and "PYTHON=python3.11" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_make_setup_refuses_an_old_python(tmp_path, old_python):
    result = make_setup(tmp_path / "venv", f"PYTHON={old_python}")
    assert result.returncode != 0, result.stdout + result.stderr
    assert "is too old: the course needs Python >= 3.11" in result.stderr
    assert not (tmp_path / "venv").exists()
