"""Serve a saved classifier over HTTP on this machine: ``python -m helpers.deployment.cli --model-dir DIR``.

Loads the folder written by
:func:`helpers.deployment.predictors.save_for_serving` with one backend
(``torch``, ``torch-int8``, ``onnx``, ``onnx-int8``), builds the app of
:func:`helpers.deployment.app.create_app` and runs it with uvicorn on
``127.0.0.1`` (a loopback address is required: the course never opens a
port to the network). ``--threads`` sets torch's or onnxruntime's thread
count. ``--parent-pid`` makes the server stop by itself when that process
is gone (a notebook kernel that crashed or was killed), checked every half
second. Run ``python -m helpers.deployment.cli --help`` for every option;
:func:`helpers.deployment.server_process.start_server` runs this command in the
background from a notebook. Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["is_loopback", "parse_args", "watch_parent", "main"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from helpers.deployment.app import DEFAULT_MAX_CHARS, DEFAULT_MAX_TEXTS
    from helpers.deployment.predictors import BACKENDS

    parser = argparse.ArgumentParser(prog="python -m helpers.deployment.cli", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="folder written by save_for_serving")
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument(
        "--onnx-file",
        default=None,
        help="ONNX file to serve (default: model.onnx or model-int8.onnx in the model folder)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: theirs)")
    parser.add_argument("--max-texts", type=int, default=DEFAULT_MAX_TEXTS, help="texts per request at most")
    parser.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="characters per text at most")
    parser.add_argument("--no-batching", action="store_true", help="run each request alone (no micro-batching)")
    parser.add_argument("--max-batch-texts", type=int, default=32, help="texts per forward pass at most")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is gone")
    parser.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    return parser.parse_args(argv)


def watch_parent(parent_pid: int, interval: float = 0.5) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM once ``parent_pid`` is no longer its parent."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        print(f"parent process {parent_pid} is gone: stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="watch-parent", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_loopback(args.host):
        print(
            f"error: --host {args.host} is not a loopback address; this server only listens on this machine "
            "(127.0.0.1)",
            file=sys.stderr,
        )
        return 2
    if not Path(args.model_dir).is_dir():
        print(
            f"error: model folder {args.model_dir} does not exist (save one with "
            "helpers.deployment.predictors.save_for_serving)",
            file=sys.stderr,
        )
        return 2
    if args.parent_pid:
        watch_parent(args.parent_pid)

    from helpers.device import quiet_libraries

    quiet_libraries()
    import uvicorn

    from helpers.deployment.app import create_app
    from helpers.deployment.predictors import load_predictor

    start = time.perf_counter()
    try:
        predictor, metadata = load_predictor(
            args.model_dir,
            args.backend,
            threads=args.threads,
            batch_size=args.max_batch_texts,
            onnx_file=args.onnx_file,
        )
    except Exception as error:  # noqa: BLE001 - one readable line for start_server's error message
        print(
            f"error: cannot load {args.backend} model from {args.model_dir}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 1
    app = create_app(
        predictor,
        metadata,
        max_texts=args.max_texts,
        max_chars=args.max_chars,
        batching=not args.no_batching,
        max_batch_texts=args.max_batch_texts,
        max_wait_ms=args.max_wait_ms,
    )
    print(
        f"loaded {args.backend} model from {args.model_dir} in {time.perf_counter() - start:.1f} s; serving on "
        f"http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=5
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
