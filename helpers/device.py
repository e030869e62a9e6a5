"""Device and numeric precision choice, and the ``setup()`` of every notebook's first cell.

Precision is chosen from what the hardware really supports, not from what is
merely available: on a CPU without native bf16 (no AVX512-BF16 / AMX), a bf16
matmul runs about 100x slower than fp32, so autocasting to bf16 there would be
a disaster. Taught in ``course/00_introduction.ipynb``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")

FAST_ENV = "FTCOURSE_FAST"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Capabilities:
    """What the machine can do, as far as precision choice is concerned."""

    cuda: bool = False
    cuda_name: str | None = None
    cuda_bf16: bool = False  # Ampere (compute capability 8.0) and newer
    mps: bool = False
    cpu_name: str = ""
    cpu_bf16: bool = False  # native bf16 arithmetic (AVX512-BF16 or AMX)


@dataclass(frozen=True)
class Precision:
    """A training precision: its name, the autocast dtype, and whether to scale the loss."""

    name: str  # "bf16", "fp16" or "fp32"
    reason: str
    autocast_dtype: torch.dtype | None = None
    use_grad_scaler: bool = False  # fp16 needs loss scaling against gradient underflow

    def trainer_kwargs(self) -> dict[str, bool]:
        """Arguments for ``transformers.TrainingArguments`` (``bf16=True``, ``fp16=True`` or none)."""
        return {"bf16": True} if self.name == "bf16" else {"fp16": True} if self.name == "fp16" else {}

    def autocast(self, device: str) -> contextlib.AbstractContextManager:
        """Autocast context for a forward pass on ``device`` (a no-op in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def detect_capabilities() -> Capabilities:
    """Read this machine's capabilities (CUDA, Apple MPS, native CPU bf16)."""
    cuda = torch.cuda.is_available()
    flags = _cpu_flags()
    return Capabilities(
        cuda=cuda,
        cuda_name=torch.cuda.get_device_name(0) if cuda else None,
        cuda_bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        mps=bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        cpu_name=_cpu_name(),
        cpu_bf16=bool({"avx512_bf16", "amx_bf16"} & flags),
    )


def choose_device(caps: Capabilities) -> str:
    """``"cuda"`` if a CUDA GPU is there, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    return "cuda" if caps.cuda else "mps" if caps.mps else "cpu"


def choose_precision(caps: Capabilities, device: str | None = None) -> Precision:
    """Pick the training precision for ``device`` (default: :func:`choose_device`)."""
    device = device or choose_device(caps)
    if device == "cuda":
        if caps.cuda_bf16:
            return Precision("bf16", f"{caps.cuda_name} supports bf16", torch.bfloat16)
        return Precision(
            "fp16", f"{caps.cuda_name} has no bf16: fp16 with loss scaling", torch.float16, use_grad_scaler=True
        )
    if device == "mps":
        # fp16 autocast on MPS trains unreliably (NaNs, missing kernels in older torch),
        # and fp32 is fast enough for the course's model sizes.
        return Precision("fp32", "Apple MPS: fp32 is the reliable choice for training")
    if caps.cpu_bf16:
        return Precision("bf16", "this CPU has native bf16 (AVX512-BF16/AMX)", torch.bfloat16)
    return Precision("fp32", "no native bf16 on this CPU: bf16 would be ~100x slower")


def is_fast_mode() -> bool:
    """True when ``FTCOURSE_FAST`` asks for the small, quick version of every notebook (CI)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in _TRUE


def is_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def is_grading() -> bool:
    """True while nbgrader autogrades or validates the notebook (it sets ``NBGRADER_EXECUTION``).

    Demonstration cells that earn no points skip themselves then, so grading a
    class stays fast.
    """
    return bool(os.environ.get("NBGRADER_EXECUTION"))


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

    def pick(self, full: T, fast: T) -> T:
        """``full`` normally, ``fast`` in fast mode: the same code on less data."""
        return fast if self.fast else full


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


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) in one call, like ``transformers.set_seed``."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too


QUIET_ENV = "FTCOURSE_QUIET"


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


def setup(seed: int = 42, fast: bool | None = None, threads: int | None = None, verbose: bool = True) -> CourseEnv:
    """First cell of every notebook: seeds, quiet logs, device, precision, fast mode.

    Prints a few lines worth pasting into a bug report and returns a
    :class:`CourseEnv`.
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
        precision=choose_precision(caps, device),
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
    hardware = env.capabilities.cuda_name if env.device == "cuda" else env.capabilities.cpu_name or env.device
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
