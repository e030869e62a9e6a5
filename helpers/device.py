"""Device and numeric precision choice, and the ``setup()`` of every notebook's first cell.

Precision is chosen from what the hardware really supports, not from what is
merely available: on a CPU without native bf16 (no AVX512-BF16 / AMX), bf16
matrix products are emulated in software and far slower than fp32, so the
course never autocasts to bf16 there; on a CPU with native bf16 they are faster
than fp32. The choice can be overridden with ``FTCOURSE_PRECISION`` or
``setup(precision=...)``; a request the machine cannot honour is a clear error.
Taught in ``course/00_introduction.ipynb``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from helpers.environment import PRECISION_ENV, QUIET_ENV, is_fast_mode, is_grading, is_offline

__all__ = [
    "PRECISION_NAMES",
    "Capabilities",
    "Precision",
    "detect_capabilities",
    "choose_device",
    "choose_precision",
    "PrecisionNotSupportedError",
    "supported_precisions",
    "resolve_precision",
    "CourseEnv",
    "library_versions",
    "matmul_speed",
    "synchronize",
    "set_seed",
    "quiet_libraries",
    "setup",
    "describe",
    "FP32",
    "to_device",
]

T = TypeVar("T")

PRECISION_NAMES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Capabilities:
    """What the machine can do, as far as precision choice is concerned."""

    cuda: bool = False
    cuda_name: str | None = None
    cuda_bf16: bool = False  # Ampere (compute capability 8.0) and newer
    mps: bool = False
    cpu_name: str = ""
    cpu_bf16: bool = False  # native bf16 arithmetic (AVX512-BF16 or AMX)

    def hardware(self, device: str) -> str:
        """The name of what ``device`` runs on: the GPU's name on CUDA, else the CPU's."""
        return (self.cuda_name if device == "cuda" else self.cpu_name) or device


@dataclass(frozen=True)
class Precision:
    """A training precision: its name, the autocast dtype, and whether to scale the loss."""

    name: str  # "bf16", "fp16" or "fp32"
    reason: str
    autocast_dtype: torch.dtype | None = None
    use_grad_scaler: bool = False  # fp16 needs loss scaling against gradient underflow
    device: str = "cpu"  # the device type this precision was chosen for

    def trainer_kwargs(self) -> dict[str, bool]:
        """Arguments that select this precision on this device in ``TrainingArguments`` (and TRL's configs).

        Both flags are always explicit (some configs default to ``bf16=True``),
        and on a CPU ``use_cpu=True`` is required: transformers refuses
        ``bf16=True`` on a CPU without it, and it keeps ``Trainer`` off a GPU
        the course chose not to use.
        """
        kwargs = {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}
        if self.device == "cpu":
            kwargs["use_cpu"] = True
        return kwargs

    def autocast(self, device: str) -> contextlib.AbstractContextManager:
        """Autocast context for a forward pass on ``device`` (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)


def _cpu_flags(cpuinfo: str) -> set[str]:
    """The x86 feature flags of the first processor listed in ``cpuinfo`` (the file's text); none on ARM."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_name(cpuinfo: str) -> str:
    """The ``model name`` in ``cpuinfo`` (the file's text), else what :mod:`platform` says."""
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def detect_capabilities(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> Capabilities:
    """Read this machine's capabilities (CUDA, Apple MPS, native CPU bf16).

    The CPU's name and bf16 support are read from ``cpuinfo``, a path to a
    ``/proc/cpuinfo``-style file (default: this machine's); a missing or
    unreadable file means no native bf16 and the name :mod:`platform` gives.
    """
    cuda = torch.cuda.is_available()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # no such file on macOS and Windows
        text = ""
    return Capabilities(
        cuda=cuda,
        cuda_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        mps=bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        cpu_name=_cpu_name(text),
        cpu_bf16=bool({"avx512_bf16", "amx_bf16"} & _cpu_flags(text)),
    )


def choose_device(caps: Capabilities) -> str:
    """``"cuda"`` if a CUDA GPU is there, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    return "cuda" if caps.cuda else "mps" if caps.mps else "cpu"


def choose_precision(caps: Capabilities, device: str | None = None) -> Precision:
    """Pick the training precision for ``device`` (default: :func:`choose_device`) from the hardware alone."""
    device = device or choose_device(caps)
    if device == "cuda":
        if caps.cuda_bf16:
            return Precision("bf16", f"{caps.cuda_name} supports bf16", torch.bfloat16, device="cuda")
        return Precision(
            "fp16", f"{caps.cuda_name} has no bf16: fp16 with loss scaling", torch.float16, True, device="cuda"
        )
    if device == "mps":
        # fp16 autocast on MPS trains unreliably (NaNs, missing kernels in older torch),
        # and fp32 is fast enough for the course's model sizes.
        return Precision("fp32", "Apple MPS: fp32 is the reliable choice for training", device="mps")
    if caps.cpu_bf16:
        return Precision("bf16", "this CPU has native bf16 (AVX512-BF16/AMX)", torch.bfloat16, device="cpu")
    return Precision("fp32", "no native bf16 on this CPU: bf16 would be emulated, far slower", device="cpu")


class PrecisionNotSupportedError(ValueError):
    """A precision was asked for that this machine's device cannot train in."""


def supported_precisions(caps: Capabilities, device: str | None = None) -> dict[str, str]:
    """The precisions ``device`` can train in here, each with a short note (what ``FTCOURSE_PRECISION`` accepts)."""
    device = device or choose_device(caps)
    if device == "cuda":
        supported = {"fp32": "full precision", "fp16": "with loss scaling"}
        if caps.cuda_bf16:
            supported["bf16"] = "native on this GPU"
        return supported
    if device == "mps":
        return {"fp32": "the only precision the course trains in on Apple MPS"}
    return {
        "fp32": "full precision",
        "bf16": "native on this CPU" if caps.cpu_bf16 else "emulated on this CPU: correct but far slower than fp32",
    }


def resolve_precision(caps: Capabilities, device: str | None = None, requested: str | None = None) -> Precision:
    """The precision to use: ``requested`` if given, else ``FTCOURSE_PRECISION``, else the hardware's choice.

    ``"auto"`` (or nothing) means :func:`choose_precision`. A name this device
    cannot train in raises :class:`PrecisionNotSupportedError` naming what it
    supports; an unknown name raises ``ValueError``.
    """
    device = device or choose_device(caps)
    source = f"setup(precision={requested!r})"
    if requested is None:
        requested, source = os.environ.get(PRECISION_ENV, ""), f"{PRECISION_ENV}={os.environ.get(PRECISION_ENV, '')}"
    name = requested.strip().lower()
    if name in ("", "auto"):
        return choose_precision(caps, device)
    if name not in PRECISION_NAMES:
        raise ValueError(f"unknown precision {requested!r} ({source}): use one of auto, {', '.join(PRECISION_NAMES)}")
    supported = supported_precisions(caps, device)
    if name not in supported:
        listing = "; ".join(f"{key} ({note})" for key, note in supported.items())
        raise PrecisionNotSupportedError(
            f"{name} was asked for ({source}) but {device} on this machine cannot train in it. "
            f"Supported here: {listing}. Use one of these, or auto."
        )
    auto = choose_precision(caps, device)
    if name == auto.name:
        return replace(auto, reason=f"{auto.reason}; also asked for by {source}")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    return Precision(
        name,
        f"asked for by {source} ({supported[name]}); auto would choose {auto.name}",
        dtype,
        use_grad_scaler=name == "fp16",
        device=device,
    )


@dataclass
class CourseEnv:
    """What ``setup()`` decided: pass ``env.device`` and ``env.precision`` to the helpers."""

    device: str
    precision: Precision
    fast: bool
    seed: int
    offline: bool
    threads: int
    capabilities: Capabilities
    versions: dict[str, str] = field(default_factory=dict)
    grading: bool = False  # nbgrader is executing the notebook
    results: dict[str, dict] = field(default_factory=dict)  # what env.record kept, by name

    def record(
        self,
        name: str,
        value: Any,
        *,
        n: int | None = None,
        seeds: int | None = None,
        holm_verdict: str | None = None,
        unit: str | None = None,
        higher_is_better: bool = True,
    ) -> Any:
        """Keep ``value`` as one of the numbers this lesson concludes from, and return it unchanged.

        Written at once to the file ``FTCOURSE_RESULTS`` names, when it names one
        (:mod:`helpers.recording`: ``benchmarks/course_times.py`` gathers them into
        ``RESULTS.md``); kept in ``env.results`` otherwise. Recording a name again replaces it.
        ``higher_is_better=False`` (a loss, an error) records a comparison's verdict as a judgement:
        ``"better"`` then means lower.
        Taught in ``course/00_introduction.ipynb``.
        """
        from helpers.recording import result_entry, results_path, write_results

        if not name or not name.strip():
            raise ValueError("a record needs a name")
        self.results[name] = result_entry(
            value, n=n, seeds=seeds, holm_verdict=holm_verdict, unit=unit, higher_is_better=higher_is_better
        )
        path = results_path()
        if path is not None:
            header = {
                "mode": "fast" if self.fast else "full",
                "device": self.device,
                "precision": self.precision.name,
                "measured_on": self.measured_on(),
                "seed": self.seed,
            }
            write_results(path, header, self.results)
        return value

    def pick(self, full: T, fast: T) -> T:
        """``full`` normally, ``fast`` in fast mode: the same code on less data."""
        return fast if self.fast else full

    def measured_on(self, with_precision: bool = True) -> str:
        """Where (and in which precision) a speed was measured, to print next to it."""
        caps, hardware = self.capabilities, self.capabilities.hardware(self.device)
        if self.device != "cuda":
            hardware += f", {'native bf16' if caps.cpu_bf16 else 'no native bf16'}, {self.threads} threads"
        where = f"{self.device} ({hardware})"
        return f"{where}, {self.precision.name}" if with_precision else where


def library_versions() -> dict[str, str]:
    """Versions of the libraries the course depends on."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ["llm-finetuning-course", "torch", "transformers", "datasets", "accelerate", "scikit-learn"]:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def matmul_speed(dtype: torch.dtype, size: int = 512, repeats: int = 3, device: str = "cpu") -> float:
    """GFLOP/s of a ``size`` x ``size`` matrix product in ``dtype`` on ``device`` (best of ``repeats``).

    Taught in ``course/00_introduction.ipynb``: whether bf16 is faster or far
    slower than fp32 depends on the processor, so the course measures it.
    """
    import time

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up: kernel selection, allocations
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def synchronize(device: str | torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer reads the work done (CPU work is never queued)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) in one call, like ``transformers.set_seed``."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too


def quiet_libraries() -> None:
    """Keep notebook outputs readable: library chatter and per-file progress bars go, the course's own stay.

    Works before or after transformers and datasets are imported (environment
    variables for later imports), so ``setup()`` does not pay for importing them.
    """
    os.environ[QUIET_ENV] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()  # per-weight loading bars
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()


def setup(
    seed: int = 42,
    fast: bool | None = None,
    threads: int | None = None,
    verbose: bool = True,
    precision: str | None = None,
) -> CourseEnv:
    """First cell of every notebook: seeds, quiet logs, device, precision, fast mode.

    ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``) overrides
    the hardware's choice, as ``FTCOURSE_PRECISION`` does; ``setup`` raises a
    clear error for one this machine cannot train in. Prints a few lines worth
    pasting into a bug report and returns a :class:`CourseEnv`.
    """
    if fast is None:
        fast = is_fast_mode()
    if threads:
        torch.set_num_threads(threads)
    set_seed(seed)
    quiet_libraries()

    caps = detect_capabilities()
    device = choose_device(caps)
    env = CourseEnv(
        device=device,
        precision=resolve_precision(caps, device, precision),
        fast=fast,
        seed=seed,
        offline=is_offline(),
        threads=torch.get_num_threads(),
        capabilities=caps,
        versions=library_versions(),
        grading=is_grading(),
    )
    if verbose:
        print(describe(env))
    return env


def describe(env: CourseEnv) -> str:
    """The few lines ``setup()`` prints."""
    v = env.versions
    hardware = env.capabilities.hardware(env.device)
    mode = "FAST (small subsets, few steps)" if env.fast else "full lesson"
    hub = "offline (HF_HUB_OFFLINE=1): embedded models and data only" if env.offline else "online allowed"
    return "\n".join(
        [
            f"course {v.get('llm-finetuning-course')} | Python {v['python']} | torch {v['torch']} | "
            f"transformers {v['transformers']} | datasets {v['datasets']}",
            f"device: {env.device} ({hardware}, {env.threads} CPU threads) | precision: {env.precision.name} "
            f"({env.precision.reason})",
            f"mode: {mode} | seed: {env.seed} | Hub: {hub}",
        ]
    )


if __name__ == "__main__":  # pragma: no cover - handy for bug reports
    setup()
    sys.exit(0)


FP32 = Precision("fp32", "default")


def to_device(batch: dict, device: str | torch.device) -> dict:
    """The batch with every tensor moved to ``device`` (other values kept as they are)."""
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}
