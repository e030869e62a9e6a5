"""Start the HTTP server in a background process from a notebook, and stop it cleanly.

A server started inside the notebook's own process would block the kernel
(uvicorn runs its own event loop) or share its threads with the notebook.
:func:`start_server` runs ``python -m helpers.deployment.cli`` as a
separate process instead: on 127.0.0.1 only, on a free port, its output in a
log file; it returns once ``/health`` answers, or raises an error that
quotes the end of the server's log. :meth:`ServerProcess.stop` sends
SIGTERM (uvicorn finishes the requests in flight and exits), waits, and
kills it if it does not exit in time. No server outlives the notebook:
``stop`` is registered with ``atexit`` (a kernel that exits or restarts),
and the server itself watches its parent process and stops when it is gone
(a kernel that crashed or was killed). Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["HOST", "ServerStartError", "free_port", "port_is_free", "ServerProcess", "start_server"]

HOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """The server process exited, or did not answer in time; the message ends with its log."""


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` now: the system picks one for a socket bound to port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a socket can bind ``host:port`` now (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class ServerProcess:
    """A running ``helpers.deployment.cli`` process: its ``url``, ``port``, ``pid``, log, and ``stop()``.

    Use it as a context manager (``with start_server(...) as server:``) or
    call :meth:`stop` when done; stopping twice is harmless.
    """

    def __init__(
        self, process: subprocess.Popen, port: int, log_path: Path, host: str = HOST, remove_log: bool = False
    ) -> None:
        self.process, self.port, self.host, self.log_path = process, port, host, log_path
        self.remove_log = remove_log  # a temporary log file is deleted by stop()
        self.url = f"http://{host}:{port}"
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's output (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        """Poll ``/health`` until it answers 200; :class:`ServerStartError` if the process exits or time runs out."""
        import httpx

        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServerStartError(
                        f"the server exited with code {code} before answering. Its log ends with:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise ServerStartError(
                        f"the server did not answer {self.url}/health within {timeout:g} s "
                        f"(stopped). Its log ends with:\n{tail}"
                    )
                time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns its exit code."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.remove_log:
            self.log_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped (exit code {self.process.returncode})"
        return f"ServerProcess({self.url}, pid {self.pid}, {state})"


def start_server(
    model_dir: str | os.PathLike,
    backend: str = "torch",
    port: int | None = None,
    host: str = HOST,
    threads: int | None = None,
    timeout: float = 120.0,
    extra_args: list[str] | tuple[str, ...] = (),
    log_path: str | os.PathLike | None = None,
) -> ServerProcess:
    """Serve ``model_dir`` with ``backend`` in a background process; return once it answers.

    Runs ``python -m helpers.deployment.cli`` (same Python as this
    process) on ``host`` (a loopback address) and ``port`` (``None``: a free
    port picked now). ``threads``: torch's or onnxruntime's threads in the
    server; ``extra_args``: more options of the command (``["--no-batching"]``,
    ``["--max-texts", "8"]``...). Its output goes to ``log_path`` (by
    default a temporary file, deleted by ``stop``). Raises ``FileNotFoundError`` at once for a
    missing folder, :class:`ServerStartError` (with the end of the server's
    log) if the server exits or does not answer ``/health`` within
    ``timeout`` seconds. Taught in ``course/10_deployment.ipynb``.
    """
    from helpers.deployment.cli import is_loopback

    model_dir = Path(model_dir).expanduser().resolve()
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"model folder {model_dir} does not exist (save one with helpers.deployment.predictors.save_for_serving)"
        )
    if not is_loopback(host):
        raise ValueError(f"host {host!r} is not a loopback address: the course serves on 127.0.0.1 only")
    port = free_port(host) if port is None else int(port)
    command = [
        sys.executable,
        "-m",
        "helpers.deployment.cli",
        "--model-dir",
        str(model_dir),
        "--backend",
        backend,
        "--host",
        host,
        "--port",
        str(port),
        "--parent-pid",
        str(os.getpid()),
        *map(str, extra_args),
    ]
    if threads:
        command += ["--threads", str(threads)]
    temporary_log = log_path is None
    if temporary_log:
        handle, name = tempfile.mkstemp(prefix=f"ftcourse-server-{port}-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding ``helpers``: importable from any cwd
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(process, port, log_path, host, remove_log=temporary_log)
    try:
        server.wait_until_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server
