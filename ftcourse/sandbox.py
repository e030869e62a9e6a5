"""The sandbox a student's kernel runs in while ``ftcourse grade`` grades it.

Student code is untrusted. nbgrader starts one kernel per submitted notebook;
:class:`SandboxKernelManager` (given to nbgrader's executor by
:mod:`ftcourse.autograde_hooks`) starts it so that, with bubblewrap (``bwrap``,
Linux):

- the kernel sees only what it needs, read-only: the system folders, the Python
  installation and virtual environment, the ``helpers`` package and the
  embedded model cache. The course's ``solutions/``, the gradebook, the other
  submissions and the rest of the instructor's home are absent;
- everything it can write is in memory folders of fixed size that exist only in
  the sandbox: its working folder and ``/tmp`` (one folder of ``scratch_mb``),
  ``/dev/shm`` (``shm_mb``) and a 1 MB folder for its sockets. Nothing of the
  host is writable: the folder that holds its connection file is shown
  read-only, and the grading process reaches the kernel's Unix sockets through
  ``/proc/<pid>/root``. The secret key of the grader's report is copied into
  the sandbox from a file deleted on the host before the kernel starts;
- it has no network (``--unshare-net``), no capabilities, its own process,
  user, IPC and UTS namespaces, and cannot create further user namespaces
  (``--disable-userns`` where bwrap has it);
- its processes and memory are limited: in a cgroup of their own (pids and
  memory controllers) where the grading user may create one (root, or a
  writable cgroup v1 hierarchy), and always by ``setrlimit`` before ipykernel
  starts: ``RLIMIT_NPROC`` (counted per user namespace, so it is the sandbox's
  own count, except for root, whom the kernel exempts: hence the cgroup),
  ``RLIMIT_DATA`` (private writable memory: a CUDA build of torch still
  imports, unlike under ``RLIMIT_AS``), ``RLIMIT_FSIZE`` and no core files;
- it gets a scrubbed environment (no tokens or keys, only the variables listed
  in :func:`kernel_environment`) and a wall-clock limit for the whole notebook
  (the kernel is killed when it is reached; nbgrader's per-cell timeout still
  interrupts a single long cell).

A kernel that reaches its process or memory limit (cgroup counters) is named
in :data:`LIMITS_REACHED` for the grading worker. Scores never come from the
sandbox's files: nbgrader reads the kernel's replies in the grading process
and writes the gradebook outside it. :func:`detect_sandbox` says which sandbox
this machine gives, or why none; ``ftcourse grade`` refuses to run student
code without one unless ``--no-sandbox`` is given (:mod:`ftcourse.grading`).
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

BWRAP = "bwrap"
NONE = "none"
CGROUP = "cgroup"
RLIMIT = "rlimit"


def available_cpus() -> int:
    """CPUs this process may run on (affinity, as a container or ``taskset`` sets it), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS has no affinity
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """What one student kernel may use."""

    memory_mb: int = 4096  # private writable memory (RLIMIT_DATA) and, in a cgroup, all its memory
    file_mb: int = 64  # largest file it may write (RLIMIT_FSIZE)
    scratch_mb: int = 256  # its working folder and /tmp together (one in-memory folder of the sandbox)
    shm_mb: int = 64  # its /dev/shm (in memory, in the sandbox)
    processes: int = 256  # processes and threads (cgroup pids.max, and RLIMIT_NPROC)
    notebook_seconds: int = 300  # wall clock for the whole notebook; the kernel is killed after it
    threads: int = 1  # OMP/MKL threads (students are graded in parallel)

    @classmethod
    def for_run(cls, cell_timeout: int, workers: int, memory_mb: int = 4096, notebook_seconds: int = 0) -> Limits:
        """The limits of a grading run: a whole notebook gets 5 cell timeouts (at least 300 s) unless
        ``notebook_seconds`` is given, and the CPUs this process may use are shared between the ``workers``."""
        return cls(
            memory_mb=memory_mb,
            notebook_seconds=notebook_seconds or max(300, 5 * cell_timeout),
            threads=max(1, available_cpus() // max(1, workers)),
        )

    @property
    def writable_mb(self) -> int:
        """The most a kernel can write in all: its scratch folder, /dev/shm and its 1 MB socket folder."""
        return self.scratch_mb + self.shm_mb + 1


@dataclass(frozen=True)
class Sandbox:
    """The sandbox in force: ``kind`` is ``"bwrap"`` or ``"none"``; ``detail`` says why (or which bwrap);
    ``fix`` says what to do when there is none."""

    kind: str
    detail: str
    bwrap: str | None = None
    fix: str = ""
    disable_userns: bool = False


class SandboxUnavailable(RuntimeError):
    """A sandbox was asked for (the default) and this machine cannot give one: nothing was run."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        super().__init__(f"no sandbox: {sandbox.detail}")


# In the sandbox: the folder of the kernel's sockets (a 1 MB memory folder) and where its secret key is copied.
SOCKET_DIR = "/ftcourse"
SECRET_PATH = f"{SOCKET_DIR}/secret"

_INSTALL_BWRAP = (
    "install bubblewrap: Debian/Ubuntu `sudo apt-get install bubblewrap`, Fedora `sudo dnf install "
    "bubblewrap`, Arch `sudo pacman -S bubblewrap`"
)
_FIX_USERNS = (
    "bubblewrap needs unprivileged user namespaces. Ubuntu 24.04 and later restrict them with AppArmor: "
    "`sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for "
    "/usr/bin/bwrap that allows `userns`); other kernels: `sudo sysctl kernel.unprivileged_userns_clone=1` "
    "and a non-zero `user.max_user_namespaces`. In Docker, start the container with "
    "`--security-opt seccomp=unconfined --security-opt apparmor=unconfined`"
)
_FIX_NOT_LINUX = (
    "grade on Linux: a Linux virtual machine, or a container started with `--security-opt "
    "seccomp=unconfined --security-opt apparmor=unconfined`, with bubblewrap installed"
)


def _bwrap_prefix(
    bwrap: str,
    readable: list[str] = (),
    private_tmp: bool = False,
    tmp_size: int | None = None,
    shm_size: int | None = None,
    disable_userns: bool = False,
) -> list[str]:
    """The start of every bwrap command: namespaces, no capabilities, an empty environment, the system folders,
    an empty in-memory /tmp when ``private_tmp`` (of ``tmp_size`` bytes if given), ``readable`` read-only,
    /proc, /dev with a /dev/shm of ``shm_size`` bytes.

    bwrap mounts in order: /tmp comes before the read-only folders, so that a Python environment or a course
    checkout that lives under /tmp stays visible instead of being covered by the empty /tmp.
    """
    args = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--clearenv",
    ]
    if disable_userns:
        args.append("--disable-userns")
    args += _system_binds()
    if private_tmp:
        args += (["--size", str(tmp_size)] if tmp_size else []) + ["--tmpfs", "/tmp"]
    for path in readable:
        args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if shm_size:
        args += ["--size", str(shm_size), "--tmpfs", "/dev/shm"]  # bwrap's own /dev/shm has no size: host RAM
    return args


def bwrap_program() -> str | None:
    """The bwrap to use: ``FTCOURSE_BWRAP`` if set (a path), else ``bwrap`` on the PATH."""
    explicit = os.environ.get("FTCOURSE_BWRAP")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    return shutil.which("bwrap")


def detect_sandbox(wanted: bool = True) -> Sandbox:
    """The sandbox this machine gives: bubblewrap if it is installed and can create a sandbox with every option
    the kernels get, else none, with why and what to do."""
    if not wanted:
        return Sandbox(NONE, "turned off with --no-sandbox")
    if not sys.platform.startswith("linux"):
        return Sandbox(NONE, f"no sandbox on {sys.platform}: bubblewrap exists on Linux only", fix=_FIX_NOT_LINUX)
    bwrap = bwrap_program()
    if not bwrap:
        where = os.environ.get("FTCOURSE_BWRAP") or "on the PATH"
        return Sandbox(NONE, f"bubblewrap is not installed (no bwrap {where})", fix=_INSTALL_BWRAP)
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return Sandbox(NONE, f"bwrap could not start: {error}", fix=_INSTALL_BWRAP)
    disable_userns = "--disable-userns" in usage
    probe = _bwrap_prefix(bwrap, private_tmp=True, tmp_size=2**20, shm_size=2**20, disable_userns=disable_userns)
    probe += ["--size", str(2**20), "--tmpfs", SOCKET_DIR, "--", "/bin/sh", "-c", "exit 0"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Sandbox(NONE, f"bwrap could not start: {error}", fix=_INSTALL_BWRAP)
    if result.returncode != 0:
        return Sandbox(
            NONE, f"bwrap cannot create a sandbox on this machine: {result.stderr.strip()[:200]}", fix=_FIX_USERNS
        )
    version = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.strip()
    return Sandbox(BWRAP, version or "bubblewrap", bwrap, disable_userns=disable_userns)


# --- process and memory limits: a cgroup where the grading user may create one ------------------------

_CGROUP_V1 = "/sys/fs/cgroup"
_CONTROLLERS = ("pids", "memory")


def _own_cgroup_v1(controller: str) -> Path | None:
    """This process's cgroup folder of a cgroup v1 ``controller``, if that hierarchy is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            folder = Path(_CGROUP_V1) / controller / path.lstrip("/")
            return folder if (folder / "cgroup.procs").exists() else None
    return None


@dataclass(frozen=True)
class Confinement:
    """How the kernels' processes and memory are limited: ``kind`` is ``"cgroup"`` (``folders`` holds one
    folder per controller, made for this run) or ``"rlimit"``; ``detail`` says why."""

    kind: str
    detail: str
    folders: tuple[str, ...] = ()


def make_confinement() -> Confinement:
    """A cgroup folder for this run under this process's own cgroup, per controller (pids, memory), where this
    user may create one (cgroup v1: root, or a delegated hierarchy); else the rlimits alone."""
    folders = []
    for controller in _CONTROLLERS:
        own = _own_cgroup_v1(controller)
        if own is None:
            _remove_confinement(folders)
            return Confinement(RLIMIT, f"no writable cgroup v1 {controller} controller: setrlimit only")
        _remove_stale_cgroups(own)
        folder = own / f"ftcourse-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            folder.mkdir()
        except OSError as error:
            _remove_confinement(folders)
            return Confinement(RLIMIT, f"cannot create a {controller} cgroup ({error.strerror}): setrlimit only")
        folders.append(str(folder))
    return Confinement(CGROUP, "cgroup v1 " + " + ".join(_CONTROLLERS), tuple(folders))


def _remove_stale_cgroups(own: Path) -> None:
    """Remove the cgroup folders of earlier runs whose grading process is gone (killed before it cleaned up)."""
    for folder in own.glob("ftcourse-*-*"):
        try:
            pid = int(folder.name.split("-")[1])
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            _remove_cgroup(folder)


def _remove_confinement(folders) -> None:
    for folder in folders:
        _remove_cgroup(Path(folder))


def remove_confinement(confinement: Confinement) -> None:
    """Remove the run's cgroup folders (after every kernel is gone)."""
    _remove_confinement(confinement.folders)


def _remove_cgroup(folder: Path) -> None:
    """Kill what is left in a cgroup folder and its children, then remove them."""
    if not folder.is_dir():
        return
    for child in [p for p in folder.iterdir() if p.is_dir()]:
        _remove_cgroup(child)
    for _ in range(50):
        try:
            pids = [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            folder.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def _kernel_cgroups(confinement: Confinement, limits: Limits, name: str) -> list[Path]:
    """One cgroup folder per controller for one kernel, with its limits written (none without cgroups)."""
    if confinement.kind != CGROUP:
        return []
    made = []
    for parent in confinement.folders:
        folder = Path(parent) / name
        folder.mkdir()
        made.append(folder)
        if (folder / "pids.max").exists():
            (folder / "pids.max").write_text(str(limits.processes))
        if (folder / "memory.limit_in_bytes").exists():
            (folder / "memory.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
            if (folder / "memory.memsw.limit_in_bytes").exists():  # swap too, where the kernel accounts it
                try:
                    (folder / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_mb * 2**20))
                except OSError:
                    pass
    return made


def _entering(cgroups: list[Path]) -> str:
    """Shell commands that move the shell (and so all it starts) into ``cgroups``; a failure stops it."""
    return "".join(f'echo $$ > "{folder}/cgroup.procs" || exit 97; ' for folder in cgroups)


def _launcher(python: str, limits: Limits, arguments: list[str]) -> list[str]:
    """The command that sets a kernel's rlimits, then runs ipykernel (or, with ``--code``, a piece of code)."""
    return [
        python,
        "-c",
        _LAUNCHER,
        str(limits.memory_mb * 2**20),
        str(limits.file_mb * 2**20),
        str(limits.processes),
        *arguments,
    ]


def _kernel_bwrap(plan: SandboxPlan) -> list[str]:
    """The start of a kernel's bwrap command: its read-only folders and its sized private /tmp and /dev/shm."""
    return _bwrap_prefix(
        plan.sandbox.bwrap or "bwrap",
        plan.readable,
        private_tmp=True,
        tmp_size=plan.limits.scratch_mb * 2**20,
        shm_size=plan.limits.shm_mb * 2**20,
        disable_userns=plan.sandbox.disable_userns,
    )


def _limits_reached(folders: list[Path], limits: Limits) -> list[str]:
    """The limits a kernel's cgroups recorded as reached: processes (pids.events), memory (an OOM kill)."""
    reached = []
    for folder in folders:
        try:
            if (folder / "pids.events").exists():
                events = dict(line.split() for line in (folder / "pids.events").read_text().splitlines())
                if int(events.get("max", 0)) > 0:
                    reached.append(f"process limit ({limits.processes})")
            if (folder / "memory.oom_control").exists():
                control = dict(line.split() for line in (folder / "memory.oom_control").read_text().splitlines())
                if int(control.get("oom_kill", 0)) > 0:
                    reached.append(f"memory limit ({limits.memory_mb} MB)")
        except (OSError, ValueError):
            pass
    return reached


# --- what the sandbox shows ---------------------------------------------------------------------

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Files of /etc that programs read to start (dynamic linker, fonts, time zone); nothing else of /etc.
_ETC = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/fonts",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/mime.types",
)


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
    return [Path(p) for p in (spec.submodule_search_locations or [])] or (
        [Path(spec.origin).parent] if spec.origin else []
    )


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
    confinement: Confinement = field(default_factory=lambda: Confinement(RLIMIT, "setrlimit only"))


def readable_paths(hidden: list[Path]) -> list[str]:
    """Read-only folders the kernel needs: Python, the environment, ``helpers``, ``PYTHONPATH``, the model cache.

    A folder that holds one of ``hidden`` (the course root, the submissions, the grading folder) is never
    shown whole; only its ``helpers`` package is.
    """
    hidden = [p.resolve() for p in hidden]
    wanted: list[Path] = [
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(sys.exec_prefix),
        Path(sys.base_exec_prefix),
        Path(os.path.realpath(sys.executable)).parent.parent,
    ]
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
PASSED_VARIABLES = (
    "FTCOURSE_PRECISION",
    "FTCOURSE_FAST",
    "HF_HUB_OFFLINE",
    "NBGRADER_EXECUTION",
    "LANG",
    "LC_ALL",
    "TZ",
    "PYTHONHASHSEED",
)


# Where the kernel finds the grader's secret key (a path, not the key): read and deleted by the grader's first cell.
SECRET_VARIABLE = "FTCOURSE_GRADER_SECRET"


def kernel_environment(plan: SandboxPlan, home: str, secret_file: str | None = None) -> dict[str, str]:
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
    if secret_file:
        env[SECRET_VARIABLE] = secret_file
    env.update(plan.passthrough_env)
    for name in PASSED_VARIABLES:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


# Runs first inside the kernel's process: limits, then ipykernel (the limits bind every process it starts).
# RLIMIT_DATA, not RLIMIT_AS: a CUDA build of torch maps gigabytes of address space it never writes.
_LAUNCHER = """\
import resource, runpy, sys
memory, file_size, processes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for name, value in (("RLIMIT_DATA", memory), ("RLIMIT_FSIZE", file_size), ("RLIMIT_CORE", 0),
                    ("RLIMIT_NPROC", processes)):
    try:
        resource.setrlimit(getattr(resource, name), (value, value))
    except (AttributeError, ValueError, OSError):  # macOS does not enforce every limit
        pass
if sys.argv[4:5] == ["--code"]:  # ftcourse doctor --grading: a piece of code under the same limits
    exec(compile(sys.argv[5], "<ftcourse doctor>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = ["ipykernel_launcher"] + sys.argv[4:]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""

# The grading process writes down why it stopped a kernel, by working folder: the whole-notebook limit, and the
# cgroup limits a kernel reached (read when it is cleaned up).
KILLED_AT_DEADLINE: set[str] = set()
LIMITS_REACHED: dict[str, list[str]] = {}
PLAN: SandboxPlan | None = None  # set once per grading worker (ftcourse.grading)


# A Unix socket's path holds at most 107 bytes (Linux): the box's path plus "/ipc-" and a port number must fit
# (without bwrap the sockets are in the box; with it, in the sandbox, reached through /proc/<pid>/root).
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX = len("/kernel-xxxxxxxx/ipc-99999")


def _kernel_box(preferred: str | None) -> str:
    """A new private folder for one kernel: under ``preferred`` when its sockets' paths fit there, else under
    the system's ``/tmp`` (a deep TMPDIR would give paths too long for a Unix socket)."""
    for folder in (preferred, tempfile.gettempdir(), "/tmp"):
        if (
            folder
            and len(os.fsencode(os.path.abspath(folder))) + _SOCKET_SUFFIX <= _SOCKET_PATH_MAX
            and os.path.isdir(folder)
            and os.access(folder, os.W_OK)
        ):
            return tempfile.mkdtemp(prefix="kernel-", dir=folder)
    raise RuntimeError(f"no folder with a path short enough for the kernel's sockets (tried {preferred!r}, /tmp)")


def _children(pid: int) -> list[str]:
    """The pids of ``pid``'s children: /proc's list where the kernel keeps one, else a scan of /proc."""
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rindex(")") + 2 :].split()[1] == str(pid):  # after "pid (name) state": the parent's pid
                found.append(entry.name)
    return found


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel under :data:`PLAN`: sandbox, environment, limits, deadline.

    ``grader_secret`` (set by the grader's executor) is handed to the kernel in a file that only the kernel
    sees, and that its first cell deletes."""

    _box: str | None = None
    _deadline: threading.Timer | None = None
    _cgroups: list | None = None
    _cwd: str | None = None
    grader_secret: bytes | None = None

    async def _async_pre_start_kernel(self, **kw):
        plan = PLAN
        if plan is None:
            raise RuntimeError("ftcourse.sandbox.PLAN is not set: grading workers set it before nbgrader runs")
        # A private folder per kernel for its connection file (and, without bwrap, its Unix sockets).
        self._box = _kernel_box(os.environ.get("FTCOURSE_KERNEL_DIR") or None)
        self.connection_file = os.path.join(self._box, "connection.json")
        secret_file = None
        if self.grader_secret is not None:
            host_secret = os.path.join(self._box, "secret")
            descriptor = os.open(host_secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(self.grader_secret)
            secret_file = SECRET_PATH if plan.sandbox.kind == BWRAP else host_secret
        if plan.sandbox.kind == BWRAP:
            self.transport = "ipc"  # no network in the sandbox: Unix sockets in its own socket folder
            self.ip = f"{SOCKET_DIR}/ipc"
            # CurveZMQ adds nothing to sockets only this user reaches, and the sandboxed kernel fails to start
            # with it over these sockets: it is for the TCP sockets of a kernel without bwrap.
            self.transport_encryption = "disabled"
            home = "/tmp"
        else:
            home = os.path.join(self._box, "home")
            os.makedirs(home)
        kw["env"] = kernel_environment(plan, home, secret_file)
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        plan = PLAN
        assert plan is not None and self._box is not None
        cmd = super().format_kernel_cmd(extra_arguments)
        # cmd is [python, -m, ipykernel_launcher, -f, FILE, ...]: run it through the launcher that sets the limits.
        python, args = cmd[0], cmd[3:] if cmd[1:3] == ["-m", "ipykernel_launcher"] else cmd[1:]
        limits = plan.limits
        inner = _launcher(python, limits, [*args, "--no-stdout", "--no-stderr", "--HistoryManager.enabled=False"])
        # Into the kernel's cgroups first (every process it starts stays there), then bwrap; a failure stops here.
        self._cgroups = _kernel_cgroups(plan.confinement, limits, os.path.basename(self._box))
        enter = _entering(self._cgroups)
        if plan.sandbox.kind != BWRAP:
            return ["/bin/sh", "-c", enter + 'exec "$@"', "sh", *inner] if enter else inner
        self._cwd = str(self._launch_args.get("cwd") or os.getcwd())
        bwrap = _kernel_bwrap(plan)
        # No terminal: the grader's own terminal would otherwise be /dev/tty in the sandbox (escape sequences,
        # typed input), and the kernel's standard streams go nowhere (see the shell command below).
        bwrap += ["--dev-bind", "/dev/null", "/dev/tty", "--dir", "/tmp/matplotlib"]
        if plan.fontlist:
            bwrap += ["--ro-bind", plan.fontlist, f"/tmp/matplotlib/{Path(plan.fontlist).name}"]
        # The kernel works in a folder of the sandbox's /tmp, not in the one nbgrader names: nothing of the
        # grader's folder shows, and what the kernel writes there counts in the same scratch size as /tmp.
        bwrap += ["--dir", "/tmp/work", "--chdir", "/tmp/work"]
        # The connection file, read-only; the sockets in a 1 MB folder of the sandbox; the secret copied in.
        bwrap += ["--ro-bind", self._box, self._box, "--size", str(2**20), "--tmpfs", SOCKET_DIR]
        for variable, value in self._launch_args["env"].items():
            bwrap += ["--setenv", variable, value]
        secret = os.path.join(self._box, "secret")
        if self.grader_secret is not None:
            # The shell opens the key and deletes it on the host; bwrap copies it from that descriptor.
            bwrap += ["--file", "3", SECRET_PATH]
            enter += f'exec 3< "{secret}" && rm -f "{secret}" || exit 97; '
        # bwrap itself must ignore the SIGINT that interrupts a cell (it would die and take the kernel with it);
        # ipykernel installs its own SIGINT handler while it executes a cell. Its standard streams are the
        # grader's (a log file, a terminal): the kernel gets /dev/null instead.
        quiet = "exec </dev/null >/dev/null 2>&1; "
        return ["/bin/sh", "-c", enter + quiet + 'trap "" INT; exec "$@"', "sh", *bwrap, "--", *inner]

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        await super()._async_launch_kernel(kernel_cmd, **kw)
        plan = PLAN
        if plan is not None and plan.sandbox.kind == BWRAP:
            # The kernel's sockets are in its sandbox: reach them through the sandbox's root, seen from here.
            self.ip = f"/proc/{self._sandbox_pid()}/root{SOCKET_DIR}/ipc"
        if plan is not None and plan.limits.notebook_seconds:
            cwd = str(kw.get("cwd") or os.getcwd())
            self._deadline = threading.Timer(plan.limits.notebook_seconds, self._kill_at_deadline, args=(cwd,))
            self._deadline.daemon = True
            self._deadline.start()

    def _sandbox_pid(self, seconds: float = 60) -> int:
        """The pid (here) of bwrap's child once it lives in the sandbox's mounts (its socket folder is there)."""
        process = getattr(self.provisioner, "process", None)
        pid = process.pid if process is not None else None
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + seconds
        while pid is not None and time.monotonic() < deadline:
            for child in _children(pid):
                try:
                    if os.readlink(f"/proc/{child}/ns/mnt") != ours and os.path.isdir(
                        f"/proc/{child}/root{SOCKET_DIR}"
                    ):
                        return int(child)
                except OSError:  # gone, or not ours to look at yet
                    continue
            if process.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError("the sandboxed kernel did not start")

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
        if self._cgroups:
            plan = PLAN
            reached = _limits_reached(self._cgroups, plan.limits if plan else Limits())
            if reached:
                LIMITS_REACHED[str(self._launch_args.get("cwd") or self._cwd or "")] = reached
            for folder in self._cgroups:
                _remove_cgroup(folder)
            self._cgroups = None
        if self._box:
            shutil.rmtree(self._box, ignore_errors=True)


def run_like_a_kernel(plan: SandboxPlan, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -c code`` as ``ftcourse grade`` runs a student kernel: the same sandbox, cgroups, limits
    and environment (for ``ftcourse doctor --grading``)."""
    limits = plan.limits
    inner = _launcher(sys.executable, limits, ["--code", code])
    with tempfile.TemporaryDirectory(prefix="ftcourse-doctor-") as folder:
        cgroups = _kernel_cgroups(plan.confinement, limits, "doctor")
        enter = _entering(cgroups)
        try:
            if plan.sandbox.kind == BWRAP:
                env = kernel_environment(plan, "/tmp")
                command = _kernel_bwrap(plan)
                for variable, value in env.items():
                    command += ["--setenv", variable, value]
                command += ["--chdir", "/tmp", "--", *inner]
                env = None
            else:
                command, env = inner, kernel_environment(plan, folder)
            return subprocess.run(
                ["/bin/sh", "-c", enter + 'exec "$@"', "sh", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=folder,
            )
        finally:
            for group in cgroups:
                _remove_cgroup(group)


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
