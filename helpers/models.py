"""Load models by short name (embedded, offline) or by Hugging Face Hub id (online).

``load_classifier("minilm", num_labels=2)`` and ``load_causal_lm("smollm2-135m")``
work on any machine; ``load_classifier("bert-base-uncased", num_labels=2)``
works for online users and fails offline with one clear message naming the
embedded alternatives. The embedded SmolLM2 ships as GGUF: it is
de-quantised once and cached as a normal Hugging Face folder, guarded by a
checksum manifest. Taught in ``course/00_introduction.ipynb``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .assets import ASSETS, AssetError, cache_dir, get_asset, sha256_path, verify_asset
from .device import QUIET_ENV, is_offline, quiet_libraries

if os.environ.get(QUIET_ENV):  # setup() ran before transformers was imported
    quiet_libraries()

MANIFEST = "ftcourse-manifest.json"


class ModelNotAvailableError(OSError):
    """A model name that is neither embedded nor loadable from the Hub right now."""


def embedded_models_text() -> str:
    lines = [f"{name} (same model as {a.hub_id} on the Hub)" for name, a in ASSETS.items() if a.kind == "model"]
    return "; ".join(lines)


def _hub_error(name: str, error: Exception) -> ModelNotAvailableError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if is_offline():
        why = "the Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1)"
    else:
        why = f"loading it from the Hugging Face Hub failed ({first_line})"
    return ModelNotAvailableError(
        f"{name!r} is not an embedded model and {why}. Embedded models that work offline: "
        f"{embedded_models_text()}. Pass one of these names, or connect to the internet and try again."
    )


def _is_embedded_model(name: str) -> bool:
    return name in ASSETS and ASSETS[name].kind == "model"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host answers a TCP connection within ``timeout`` seconds."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_from_hub(loader, name: str, **kwargs):
    """Call ``loader.from_pretrained(name)`` and turn any failure into one clear error."""
    if Path(name).expanduser().is_dir():  # a local folder, e.g. a model the student saved
        return loader.from_pretrained(str(Path(name).expanduser()), **kwargs)
    if not is_offline() and not hub_reachable():
        # Without a network the Hub client retries for ~45 s before failing:
        # use what the local Hugging Face cache holds, or fail at once.
        kwargs["local_files_only"] = True
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        if kwargs.get("local_files_only") and not is_offline():
            error = OSError("the Hub cannot be reached from this machine and the model is not in the local cache")
        # `from None`: the Hub client's 40-line traceback says nothing more useful.
        raise _hub_error(name, error) from None


def converted_model_dir(name: str) -> Path:
    """Cache folder of an embedded GGUF model converted to a Hugging Face folder."""
    asset = get_asset(name)
    return cache_dir() / "models" / f"{asset.name}-{asset.version}"


def check_converted_model(folder: Path) -> str | None:
    """Return ``None`` if ``folder`` matches its checksum manifest, else what is wrong."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return f"{folder} has no {MANIFEST} (missing or partial conversion)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as error:
        return f"{manifest_path} is unreadable ({error})"
    missing = [relative for relative in files if not (folder / relative).is_file()]
    if missing:  # a partial cache: say so before spending time on hashes
        return f"{folder / missing[0]} is missing"
    for relative, expected in files.items():
        if sha256_path(folder / relative) != expected:
            return f"{folder / relative} does not match its checksum"
    return None


def convert_gguf_model(name: str, force: bool = False, verbose: bool = True) -> Path:
    """De-quantise an embedded GGUF model once into a cached Hugging Face folder.

    A missing, partial or corrupt cache (checked against the manifest's
    SHA-256 sums) is rebuilt. The folder appears atomically, so an
    interrupted conversion never leaves a half-written model behind.
    """
    asset = get_asset(name)
    target = converted_model_dir(name)
    problem = "rebuild requested" if force else check_converted_model(target)
    if problem is None:
        return target
    if target.exists() and verbose:
        print(f"Cached model {target} is not usable ({problem}); rebuilding it.")
    gguf_path = verify_asset(name)
    if verbose:
        print(f"Converting {gguf_path.name} to a Hugging Face folder in {target} (once, ~1 min)...", flush=True)
    start = time.perf_counter()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as error:
        raise AssetError(
            f"Cannot write the model cache in {target.parent} ({error}). "
            "Set FTCOURSE_CACHE to a writable folder."
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # transformers refuses to save a GGUF-loaded model; its weights are already
        # de-quantised fp32, so copy them into a plain model of the same config.
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config_dict), dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        files = {p.name: sha256_path(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {"source": gguf_path.name, "source_sha256": asset.checksums[asset.root], "files": files}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verbose:
        print(f"Converted in {time.perf_counter() - start:.0f} s.")
    return target


def model_source(name: str) -> str:
    """Where ``name`` loads from: a local folder for embedded models, else the name itself."""
    if _is_embedded_model(name):
        if ASSETS[name].is_gguf:
            return str(convert_gguf_model(name))
        return str(verify_asset(name))
    return name


def _load(loader, name: str, source: str, **kwargs):
    """``loader.from_pretrained`` from a resolved ``source``: embedded folders directly, others via the Hub."""
    if _is_embedded_model(name):
        return loader.from_pretrained(source, **kwargs)
    return _load_from_hub(loader, source, **kwargs)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Tokenizer of an embedded model (``"minilm"``, ``"smollm2-135m"``) or of a Hub id."""
    return _load(AutoTokenizer, name, model_source(name))


def load_classifier(
    name: str,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    device: str = "cpu",
    seed: int | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained encoder with a new, randomly initialised classification head.

    Returns ``(model, tokenizer)``. ``seed`` makes the random head reproducible.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    if id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels is {num_labels}")
    kwargs: dict = {"num_labels": num_labels}
    if id2label is not None:
        kwargs["id2label"] = {int(i): str(label) for i, label in id2label.items()}
        kwargs["label2id"] = {str(label): int(i) for i, label in id2label.items()}
    source = model_source(name)  # verified once, used for both
    tokenizer = _load(AutoTokenizer, name, source)
    if seed is not None:
        torch.manual_seed(seed)
    model = _load(AutoModelForSequenceClassification, name, source, **kwargs)
    return model.to(device), tokenizer


def load_causal_lm(
    name: str, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal language model and its tokenizer, ready for generation or fine-tuning.

    Returns ``(model, tokenizer)``; the tokenizer always has a pad token.
    """
    source = model_source(name)  # verified once, used for both
    tokenizer = _load(AutoTokenizer, name, source)
    model = _load(AutoModelForCausalLM, name, source, dtype=dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors, such as tied embeddings, counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total
