"""The sandbox a student's kernel runs in while ``ftcourse grade`` grades it.

Student code is untrusted. nbgrader starts one kernel per submitted notebook;
:class:`SandboxKernelManager` (given to nbgrader's executor by
:mod:`ftcourse.autograde_hooks`) starts it so that:

- on Linux with bubblewrap (``bwrap``), the kernel sees only what it needs,
  read-only: the system folders, the Python installation and virtual
  environment, the ``helpers`` package and the embedded model cache. The
  course's ``solutions/``, the gradebook, the other submissions and the rest of
  the instructor's home are absent. Its working folder and ``/tmp`` are small
  private in-memory folders; it has no network (``--unshare-net``: it talks to
  nbgrader over Unix sockets in a folder of its own, ``transport = "ipc"``), no
  capabilities, and its own process, user, IPC and UTS namespaces;
- everywhere (with or without bubblewrap), the kernel gets a scrubbed
  environment (no tokens or keys, only the variables listed in
  :func:`kernel_environment`), a memory limit and a file-size limit
  (``setrlimit`` before ipykernel starts), and a wall-clock limit for the whole
  notebook (the kernel is killed when it is reached; nbgrader's per-cell
  timeout still interrupts a single long cell).

Scores never come from the sandbox's files: nbgrader reads the kernel's
replies in the grading process and writes the gradebook outside it.
:func:`detect_sandbox` says which sandbox this machine gives (``bwrap`` or
``none``, with the reason). Used by :mod:`ftcourse.grading`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

BWRAP = "bwrap"
NONE = "none"


@dataclass(frozen=True)
class Limits:
    """What one student kernel may use."""

    memory_mb: int = 4096  # address space of the kernel (RLIMIT_AS)
    file_mb: int = 64  # largest file it may write (RLIMIT_FSIZE)
    scratch_mb: int = 256  # its working folder and /tmp (in-memory folders of the sandbox)
    notebook_seconds: int = 300  # wall clock for the whole notebook; the kernel is killed after it
    threads: int = 1  # OMP/MKL threads (students are graded in parallel)

    @classmethod
    def for_run(cls, cell_timeout: int, workers: int, memory_mb: int = 4096, notebook_seconds: int = 0) -> "Limits":
        """The limits of a grading run: a whole notebook gets 5 cell timeouts (at least 300 s) unless
        ``notebook_seconds`` is given, and the machine's cores are shared between the ``workers``."""
        return cls(memory_mb=memory_mb, notebook_seconds=notebook_seconds or max(300, 5 * cell_timeout),
                   threads=max(1, (os.cpu_count() or 1) // max(1, workers)))


@dataclass(frozen=True)
class Sandbox:
    """The sandbox in force: ``kind`` is ``"bwrap"`` or ``"none"``; ``detail`` says why (or which bwrap)."""

    kind: str
    detail: str
    bwrap: str | None = None


def _bwrap_prefix(bwrap: str, readable: list[str] = (), private_tmp: bool = False,
                  tmp_size: int | None = None) -> list[str]:
    """The start of every bwrap command: namespaces, no capabilities, an empty environment, the system folders,
    an empty in-memory /tmp when ``private_tmp`` (of ``tmp_size`` bytes if given), ``readable`` read-only,
    /proc and /dev.

    bwrap mounts in order: /tmp comes before the read-only folders, so that a Python environment or a course
    checkout that lives under /tmp stays visible instead of being covered by the empty /tmp.
    """
    args = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--clearenv"] + _system_binds()
    if private_tmp:
        args += (["--size", str(tmp_size)] if tmp_size else []) + ["--tmpfs", "/tmp"]
    for path in readable:
        args += ["--ro-bind", path, path]
    return args + ["--proc", "/proc", "--dev", "/dev"]


def detect_sandbox(wanted: bool = True) -> Sandbox:
    """The sandbox this machine gives: bubblewrap if it is installed and can create a sandbox, else none (why)."""
    if not wanted:
        return Sandbox(NONE, "turned off with --no-sandbox")
    if not sys.platform.startswith("linux"):
        return Sandbox(NONE, f"no sandbox on {sys.platform}: bubblewrap exists on Linux only")
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return Sandbox(NONE, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    probe = _bwrap_prefix(bwrap) + ["--", "/bin/sh", "-c", "exit 0"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Sandbox(NONE, f"bwrap could not start: {error}")
    if result.returncode != 0:
        return Sandbox(NONE, f"bwrap cannot create a sandbox on this machine: {result.stderr.strip()[:200]} "
                             "(user namespaces may be disabled)")
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    return Sandbox(BWRAP, version or "bubblewrap", bwrap)


# --- what the sandbox shows ---------------------------------------------------------------------

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Files of /etc that programs read to start (dynamic linker, fonts, time zone); nothing else of /etc.
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/fonts", "/etc/localtime",
        "/etc/alternatives", "/etc/mime.types")


def _system_binds() -> list[str]:
    args: list[str] = []
    for folder in _SYSTEM_DIRS:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), folder]
        elif path.is_dir():
            args += ["--ro-bind", folder, folder]
    for entry in _ETC:
        if os.path.exists(entry):
            args += ["--ro-bind", entry, entry]
    return args


def _package_dirs(name: str) -> list[Path]:
    """Folders a top-level package is imported from, without importing it (editable installs point elsewhere)."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return []
    return [Path(p) for p in (spec.submodule_search_locations or [])] or ([Path(spec.origin).parent] if spec.origin else [])


def model_cache() -> Path:
    """The course's cache of converted models (same rule as ``helpers.assets.cache_dir``, without importing it)."""
    explicit = os.environ.get("FTCOURSE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ftcourse"


@dataclass
class SandboxPlan:
    """Everything one grading worker needs to start sandboxed kernels (picklable, built by the parent)."""

    sandbox: Sandbox
    limits: Limits = field(default_factory=Limits)
    readable: list[str] = field(default_factory=list)  # extra read-only folders (Python, venv, helpers, cache)
    hidden: list[str] = field(default_factory=list)  # folders that must never be visible (checked by readable())
    passthrough_env: dict[str, str] = field(default_factory=dict)  # chosen variables passed to the kernel
    fontlist: str | None = None  # matplotlib's font cache, built once, shown read-only


def readable_paths(hidden: list[Path]) -> list[str]:
    """Read-only folders the kernel needs: Python, the environment, ``helpers``, ``PYTHONPATH``, the model cache.

    A folder that holds one of ``hidden`` (the course root, the submissions, the grading folder) is never
    shown whole; only its ``helpers`` package is.
    """
    hidden = [p.resolve() for p in hidden]
    wanted: list[Path] = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix), Path(sys.base_exec_prefix),
                          Path(os.path.realpath(sys.executable)).parent.parent]
    wanted += _package_dirs("helpers")
    wanted += [Path(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cache = model_cache()
    if cache.is_dir():
        wanted.append(cache)
    paths: list[str] = []
    for path in wanted:
        path = path.resolve() if path.exists() else path
        if not path.exists() or any(h == path or h.is_relative_to(path) for h in hidden):
            continue
        if str(path) not in paths:
            paths.append(str(path))
    return paths


# Variables the kernel may see; every other variable of the instructor's environment is dropped.
PASSED_VARIABLES = ("FTCOURSE_PRECISION", "FTCOURSE_FAST", "HF_HUB_OFFLINE", "NBGRADER_EXECUTION", "LANG", "LC_ALL",
                    "TZ", "PYTHONHASHSEED")


def kernel_environment(plan: SandboxPlan, home: str) -> dict[str, str]:
    """The kernel's whole environment: fixed values, the plan's pass-through, the variables of PASSED_VARIABLES."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": os.pathsep.join([venv_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "TMPDIR": "/tmp" if plan.sandbox.kind == BWRAP else home,
        "USER": "student",
        "LOGNAME": "student",
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLCONFIGDIR": str(Path(home) / "matplotlib"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "FTCOURSE_CACHE": str(model_cache()),
        "OMP_NUM_THREADS": str(plan.limits.threads),
        "MKL_NUM_THREADS": str(plan.limits.threads),
        "OPENBLAS_NUM_THREADS": str(plan.limits.threads),
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(plan.passthrough_env)
    for name in PASSED_VARIABLES:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


# Runs first inside the kernel's process: limits, then ipykernel (the limits bind every process it starts).
_LAUNCHER = """\
import resource, runpy, sys
memory, file_size = int(sys.argv[1]), int(sys.argv[2])
for limit, value in ((resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_size), (resource.RLIMIT_CORE, 0)):
    try:
        resource.setrlimit(limit, (value, value))
    except (ValueError, OSError):  # macOS does not enforce every limit
        pass
sys.argv = ["ipykernel_launcher"] + sys.argv[3:]
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""

# The grading process writes down why it killed a kernel (the whole-notebook limit), by working folder.
KILLED_AT_DEADLINE: set[str] = set()
PLAN: SandboxPlan | None = None  # set once per grading worker (ftcourse.grading)


# A Unix socket's path holds at most 107 bytes (Linux): the box's path plus "/ipc-" and a port number must fit.
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/kernel-xxxxxxxx/ipc-99999")


def _kernel_box(preferred: str | None) -> str:
    """A new private folder for one kernel: under ``preferred`` when its sockets' paths fit there, else under
    the system's ``/tmp`` (a deep TMPDIR would give paths too long for a Unix socket)."""
    for folder in (preferred, tempfile.gettempdir(), "/tmp"):
        if folder and len(os.fsencode(os.path.abspath(folder))) + _SOCKET_SUFFIX <= _SOCKET_PATH_MAX \
                and os.path.isdir(folder) and os.access(folder, os.W_OK):
            return tempfile.mkdtemp(prefix="kernel-", dir=folder)
    raise RuntimeError(f"no folder with a path short enough for the kernel's sockets (tried {preferred!r}, /tmp)")


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel under :data:`PLAN`: sandbox, environment, limits, deadline."""

    _box: str | None = None
    _deadline: threading.Timer | None = None

    async def _async_pre_start_kernel(self, **kw):
        plan = PLAN
        if plan is None:
            raise RuntimeError("ftcourse.sandbox.PLAN is not set: grading workers set it before nbgrader runs")
        # A private folder per kernel for its connection file and (bwrap) its Unix sockets.
        self._box = _kernel_box(os.environ.get("FTCOURSE_KERNEL_DIR") or None)
        self.connection_file = os.path.join(self._box, "connection.json")
        if plan.sandbox.kind == BWRAP:
            self.transport = "ipc"  # no network in the sandbox: Unix sockets in the bound folder
            self.ip = os.path.join(self._box, "ipc")
            home = "/tmp"
        else:
            home = os.path.join(self._box, "home")
            os.makedirs(home)
        kw["env"] = kernel_environment(plan, home)
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        plan = PLAN
        assert plan is not None and self._box is not None
        cmd = super().format_kernel_cmd(extra_arguments)
        # cmd is [python, -m, ipykernel_launcher, -f, FILE, ...]: run it through the launcher that sets the limits.
        python, args = cmd[0], cmd[3:] if cmd[1:3] == ["-m", "ipykernel_launcher"] else cmd[1:]
        limits = plan.limits
        inner = [python, "-c", _LAUNCHER, str(limits.memory_mb * 2**20), str(limits.file_mb * 2**20), *args,
                 "--no-stdout", "--no-stderr"]
        if plan.sandbox.kind != BWRAP:
            return inner
        cwd = str(self._launch_args.get("cwd") or os.getcwd())
        size = str(limits.scratch_mb * 2**20)
        bwrap = _bwrap_prefix(plan.sandbox.bwrap or "bwrap", plan.readable, private_tmp=True, tmp_size=int(size))
        bwrap += ["--dir", "/tmp/matplotlib"]
        if plan.fontlist:
            bwrap += ["--ro-bind", plan.fontlist, f"/tmp/matplotlib/{Path(plan.fontlist).name}"]
        # The working folder nbgrader names is an empty in-memory folder: nothing of the grader's folder shows.
        bwrap += ["--size", size, "--tmpfs", cwd, "--bind", self._box, self._box, "--chdir", cwd]
        for variable, value in self._launch_args["env"].items():
            bwrap += ["--setenv", variable, value]
        # bwrap itself must ignore the SIGINT that interrupts a cell (it would die and take the kernel with it);
        # ipykernel installs its own SIGINT handler while it executes a cell.
        return ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *bwrap, "--", *inner]

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        plan = PLAN
        if plan is not None and plan.limits.notebook_seconds:
            cwd = str(kw.get("cwd") or os.getcwd())
            self._deadline = threading.Timer(plan.limits.notebook_seconds, self._kill_at_deadline, args=(cwd,))
            self._deadline.daemon = True
            self._deadline.start()

    def _kill_at_deadline(self, cwd: str) -> None:
        provisioner = self.provisioner
        pgid = getattr(provisioner, "pgid", None)
        process = getattr(provisioner, "process", None)
        if process is None or process.poll() is not None:
            return
        KILLED_AT_DEADLINE.add(cwd)
        try:
            os.killpg(pgid, signal.SIGKILL) if pgid else process.kill()
        except OSError:
            pass

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        await super()._async_cleanup_resources(restart=restart)
        if self._box:
            shutil.rmtree(self._box, ignore_errors=True)


def build_fontlist(plan: SandboxPlan, folder: Path) -> str | None:
    """matplotlib's font cache built once in the sandbox, so each kernel reads it instead of rebuilding it."""
    folder.mkdir(parents=True, exist_ok=True)
    code = "import matplotlib.font_manager"
    env = kernel_environment(plan, str(folder))
    env["MPLCONFIGDIR"] = str(folder)
    if plan.sandbox.kind == BWRAP:
        cmd = _bwrap_prefix(plan.sandbox.bwrap or "bwrap", plan.readable, private_tmp=True)
        cmd += ["--bind", str(folder), str(folder)]
        for variable, value in env.items():
            cmd += ["--setenv", variable, value]
        cmd += ["--", sys.executable, "-c", code]
        result = subprocess.run(cmd, capture_output=True, timeout=300)
    else:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    found = sorted(folder.glob("fontlist-*.json"))
    return str(found[-1]) if result.returncode == 0 and found else None
