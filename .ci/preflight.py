"""Checks that `make setup` runs before it downloads anything; exit 1 with one paragraph per problem.

Run by `make setup` with $(PYTHON) (the interpreter that creates the venv):

    python3 .ci/preflight.py --venv .venv

It checks, and explains how to fix:

- the Python version (>= --min-python, 3.11): Ubuntu 22.04's python3 is 3.10;
- the ``venv`` and ``ensurepip`` modules (Debian and Ubuntu ship them apart, in python3-venv);
- the free disk space on the venv's filesystem, and on the caches' filesystem when that is another one.

Where the venv exists already, its own interpreter's version is checked instead, the venv modules
are not needed, and the venv's current size is deducted from the space needed (a re-run of setup
only adds what changed).

Disk space, measured on a CPU-only machine (Debian 12, Python 3.11, torch's CPU build): .venv/
2.5 GB; the course cache after `ftcourse install-assets` 0.5 GB (the converted SmolLM2), 1.0 GB
after `make test`; pip's cache of the downloaded wheels about 1 GB (their sizes). About 4.5 GB in all after
`make test`: the threshold is 6 GB (a third more). With a CUDA GPU, torch's CUDA build and its
NVIDIA libraries add several GB to the venv and to pip's cache (an estimate from the wheels' sizes,
not measured here): 16 GB. --min-free-gb overrides the threshold.

Standard library only, and written for the old Pythons it must be able to refuse (3.6 and later).
"""

import argparse
import os
import shutil
import subprocess
import sys

GB = 1024**3
CPU_FREE_GB = 6.0
CUDA_FREE_GB = 16.0
CACHE_FREE_GB = 2.5  # caches on another filesystem: the converted model, course outputs, pip's wheels
MIN_LEFT_GB = 1.0  # what a re-run of setup needs at least, whatever is installed already


def has_cuda_gpu():
    """The Makefile's rule (install-torch): a CUDA GPU where `nvidia-smi -L` succeeds."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return (
            subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        )
    except OSError:
        return False


def cache_folders():
    """The caches setup fills: the course's (as helpers.assets.cache_dir, not importable before setup) and pip's."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    course = os.environ.get("FTCOURSE_CACHE") or os.path.join(base, "ftcourse")
    pip = os.environ.get("PIP_CACHE_DIR") or os.path.join(base, "pip")
    return [os.path.expanduser(course), os.path.expanduser(pip)]


def existing_parent(path):
    """The nearest folder of ``path`` that exists (where it will be created)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def folder_size(path):
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def python_version_of(python):
    """``(major, minor, micro)`` of another interpreter, or None if it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            universal_newlines=True,  # noqa: UP021 - text= is new in 3.7, and this must run on older Pythons
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return tuple(int(part) for part in out.stdout.strip().split("."))


def check_python(venv, minimum, problems):
    venv_python = os.path.join(venv, "bin", "python")
    wanted = ".".join(map(str, minimum))
    if os.path.exists(venv_python):
        version = python_version_of(venv_python)
        if version is None:
            problems.append(
                f"{venv_python} exists but does not run (a venv made by a Python that was removed or upgraded since?). "
                f"Delete the folder and run setup again: rm -rf {venv} && make setup (with PYTHON=python{wanted} "
                f"if python3 is older than {wanted})."
            )
        elif version[:2] < minimum:
            problems.append(
                "{0} is Python {1}, the course needs Python >= {2}. Delete it and make it again with a newer "
                "Python: rm -rf {3} && make setup PYTHON=python{2}.".format(
                    venv_python, ".".join(map(str, version)), wanted, venv
                )
            )
        return
    version = sys.version_info[:3]
    if version[:2] < minimum:
        problems.append(
            "Python {0} ({1}) is too old: the course needs Python >= {2}. Install a newer one and name it to "
            "make: make setup PYTHON=python{2}. Ubuntu 22.04, whose python3 is 3.10: sudo apt-get install "
            "python{2} python{2}-venv; macOS: brew install python@{2}; or any Python >= {2} from python.org, "
            "pyenv or conda.".format(".".join(map(str, version)), sys.executable, wanted)
        )


def check_venv_modules(venv, problems):
    if os.path.exists(os.path.join(venv, "bin", "python")):
        return
    missing = []
    for module in ("venv", "ensurepip"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        short = "{}.{}".format(*sys.version_info[:2])
        problems.append(
            "Python {0} ({1}) lacks the module{2} {3}, which `python -m venv` needs to create {4} with pip "
            "in it. Debian and Ubuntu ship {3} in a package of their own: sudo apt-get install python3-venv "
            "(or python{0}-venv for this exact version), then run make setup again. Elsewhere, use a Python "
            "from python.org, pyenv or conda, which include them.".format(
                short, sys.executable, "s" if len(missing) > 1 else "", " and ".join(missing), venv
            )
        )


def check_disk(venv, min_free_gb, cache_free_gb, problems):
    """Free space for the venv (less what it holds already) and, elsewhere, for the caches."""
    where = existing_parent(venv)
    have = folder_size(venv) if os.path.isdir(venv) else 0
    need = max(min_free_gb * GB - have, min(MIN_LEFT_GB * GB, min_free_gb * GB))
    needs = {os.stat(where).st_dev: [where, need, f"the venv ({os.path.abspath(venv)})"]}
    for cache in cache_folders():
        parent = existing_parent(cache)
        device = os.stat(parent).st_dev
        if device not in needs:
            needs[device] = [parent, cache_free_gb * GB, f"the caches ({cache})"]
    for folder, need, what in needs.values():
        free = shutil.disk_usage(folder).free
        if free < need:
            problems.append(
                "Not enough free disk space for {}: {:.1f} GB free on the filesystem of {}, setup needs "
                "about {:.1f} GB there (the venv with torch and the course's libraries, the embedded models, "
                "pip's and the course's caches{}). Free some space, or put the checkout (and its .venv) on a "
                "larger disk; the caches move with FTCOURSE_CACHE and PIP_CACHE_DIR. To go on with less "
                "(at your own risk): make setup PREFLIGHT_ARGS='--min-free-gb N'.".format(
                    what,
                    free / GB,
                    folder,
                    need / GB,
                    f"; {have / GB:.1f} GB are there already" if have else "",
                )
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=".venv", help="the venv setup creates or updates (default: .venv)")
    parser.add_argument("--min-python", default="3.11", help="oldest Python the course supports (default: 3.11)")
    parser.add_argument(
        "--min-free-gb",
        type=float,
        default=None,
        help=f"free space needed for the venv and caches (default: {CPU_FREE_GB:g} GB, {CUDA_FREE_GB:g} GB with a CUDA GPU)",
    )
    parser.add_argument(
        "--cache-free-gb",
        type=float,
        default=CACHE_FREE_GB,
        help=f"free space needed for the caches when they lie on another filesystem (default: {CACHE_FREE_GB:g} GB)",
    )
    args = parser.parse_args(argv)
    minimum = tuple(int(part) for part in args.min_python.split("."))
    gpu = args.min_free_gb is None and has_cuda_gpu()
    min_free_gb = args.min_free_gb if args.min_free_gb is not None else CUDA_FREE_GB if gpu else CPU_FREE_GB

    problems = []
    check_python(args.venv, minimum, problems)
    check_venv_modules(args.venv, problems)
    check_disk(args.venv, min_free_gb, args.cache_free_gb, problems)
    if problems:
        sys.stderr.write("make setup cannot start; nothing was downloaded or installed:\n\n")
        sys.stderr.write("\n\n".join("- " + problem for problem in problems) + "\n")
        return 1
    if os.path.exists(os.path.join(args.venv, "bin", "python")):
        python = f"existing venv {args.venv}"
    else:
        python = f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.executable}) with venv and ensurepip"
    free = shutil.disk_usage(existing_parent(args.venv)).free / GB
    print(
        f"preflight OK: {python}; {free:.0f} GB free for the venv (threshold {min_free_gb:g} GB{', CUDA GPU found' if gpu else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
