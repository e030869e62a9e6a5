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
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from helpers.assets import ASSETS, AssetError, cache_dir, get_asset, sha256_path, verify_asset
from helpers.cache_lock import exclusive_lock, staging_dirs
from helpers.device import quiet_libraries
from helpers.environment import QUIET_ENV, is_offline
from helpers.hub import hub_reachable

__all__ = [
    "MANIFEST",
    "ModelNotAvailableError",
    "embedded_models_text",
    "converted_model_dir",
    "check_converted_model",
    "convert_gguf_model",
    "model_source",
    "load_tokenizer",
    "POOLINGS",
    "saved_pooling",
    "load_classifier",
    "load_encoder",
    "load_causal_lm",
    "count_parameters",
]

if os.environ.get(QUIET_ENV):  # setup() ran before transformers was imported
    quiet_libraries()

MANIFEST = "ftcourse-manifest.json"


class ModelNotAvailableError(OSError):
    """A model name that is neither embedded nor loadable from the Hub right now."""


def embedded_models_text() -> str:
    lines = [f"{name} (same model as {a.hub_id} on the Hub)" for name, a in ASSETS.items() if a.kind == "model"]
    return "; ".join(lines)


def _hub_error(name: str, error: Exception, reason: str | None = None) -> ModelNotAvailableError:
    """The one clear error for a Hub id that cannot be loaded; it quotes ``error``'s first line."""
    text = str(error).strip()
    first_line = f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__
    if reason:
        why = reason
    elif is_offline():
        why = "the Hugging Face Hub is switched off here (HF_HUB_OFFLINE=1)"
    else:
        why = "loading it from the Hugging Face Hub failed"
    return ModelNotAvailableError(
        f"{name!r} is not an embedded model and {why}. Embedded models that work offline: "
        f"{embedded_models_text()}. Pass one of these names, or connect to the internet and try again. "
        f"(Hub client error: {first_line})"
    )


def _is_embedded_model(name: str) -> bool:
    return name in ASSETS and ASSETS[name].kind == "model"


def _load_from_hub(loader, name: str, **kwargs):
    """Call ``loader.from_pretrained(name)`` and turn any failure into one clear error.

    The error quotes the first line of the Hub client's error and chains it
    (``__cause__``), so its full traceback stays available.
    """
    if Path(name).expanduser().is_dir():  # a local folder, e.g. a model the student saved
        return loader.from_pretrained(str(Path(name).expanduser()), **kwargs)
    if not is_offline() and not hub_reachable():
        # Without a network the Hub client retries for ~45 s before failing:
        # use what the local Hugging Face cache holds, or fail at once.
        kwargs["local_files_only"] = True
    try:
        return loader.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as error:
        reason = None
        if kwargs.get("local_files_only") and not is_offline():
            reason = "the Hub cannot be reached from this machine and the model is not in the local cache"
        raise _hub_error(name, error, reason) from error


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
    SHA-256 sums) is rebuilt. The model is written into a staging folder next
    to the cache folder and renamed into place, so an interrupted conversion
    never leaves a half-written model behind; staging folders left by a
    killed conversion are removed by the next one. Conversions hold an
    exclusive lock (``.<folder name>.lock`` next to the folder): a process
    that had to wait for another one's conversion checks the cache again and
    uses that result (even with ``force``) instead of converting twice.
    """
    asset = get_asset(name)
    target = converted_model_dir(name)
    problem = "rebuild requested" if force else check_converted_model(target)
    if problem is None:
        return target

    def say_waiting() -> None:
        if verbose:
            print(f"Another process is converting {target}; waiting for it...", flush=True)

    with ExitStack() as stack:
        lock_path = target.parent / f".{target.name}.lock"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            waited = stack.enter_context(exclusive_lock(lock_path, on_wait=say_waiting))
        except TimeoutError as error:
            raise AssetError(
                f"Timed out waiting for another conversion of {name!r} ({error}). If no other "
                f"process is converting it, delete {lock_path} and try again."
            ) from None
        except OSError as error:
            raise AssetError(
                f"Cannot write the model cache in {target.parent} ({error}). Set FTCOURSE_CACHE to a writable folder."
            ) from None
        for leftover in staging_dirs(target):  # we hold the lock: these are left by killed conversions
            shutil.rmtree(leftover, ignore_errors=True)
        if waited or not force:  # another process may have finished a conversion meanwhile
            problem = check_converted_model(target)
            if problem is None:
                return target
        if target.exists() and verbose:
            print(f"Cached model {target} is not usable ({problem}); rebuilding it.")
        _convert_into(asset, target, verbose)
    return target


def _convert_into(asset, target: Path, verbose: bool) -> None:
    """Convert ``asset``'s GGUF file into ``target`` via a staging folder (call with the lock held)."""
    gguf_path = verify_asset(asset.name)
    if verbose:
        print(f"Converting {gguf_path.name} to a Hugging Face folder in {target} (once, ~1 min)...", flush=True)
    start = time.perf_counter()
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as error:
        raise AssetError(
            f"Cannot write the model cache in {target.parent} ({error}). Set FTCOURSE_CACHE to a writable folder."
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
            # A directory cannot be renamed over a non-empty one: move the old
            # cache aside under a staging name (removed below, or by the next
            # conversion if this process is killed), then rename the new one in.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            os.replace(target, old / "old")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verbose:
        print(f"Converted in {time.perf_counter() - start:.0f} s.")


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


POOLINGS = ("cls", "mean")


def saved_pooling(source: str) -> str | None:
    """The pooling of a classifier saved in folder ``source`` (``"cls"`` or ``"mean"``), ``None`` if it holds none."""
    from helpers.models.heads import MEAN_POOLING_ARCHITECTURE

    config_file = Path(source).expanduser() / "config.json"
    if not config_file.is_file():
        return None
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    if MEAN_POOLING_ARCHITECTURE in architectures:
        return "mean"
    return "cls" if any(a.endswith("ForSequenceClassification") for a in architectures) else None


def load_classifier(
    name: str,
    num_labels: int,
    id2label: dict[int, str] | None = None,
    device: str = "cpu",
    seed: int | None = None,
    config_overrides: dict | None = None,
    pooling: str = "cls",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A pretrained encoder with a new, randomly initialised classification head.

    Returns ``(model, tokenizer)``. ``seed`` makes the random head reproducible.
    ``config_overrides`` changes fields of the model's configuration before
    the model is built, e.g. ``{"hidden_dropout_prob": 0.3,
    "attention_probs_dropout_prob": 0.3}`` for another dropout rate
    (``course/07_overfitting_imbalance.ipynb``).

    ``pooling`` is what the head reads: ``"cls"`` (default) is
    ``AutoModelForSequenceClassification``, the ``[CLS]`` vector through the
    pooler layer; ``"mean"`` is
    :class:`helpers.models.heads.BertMeanPoolingForSequenceClassification`, the mean
    of the last hidden states over the real tokens, as sentence-transformers
    trained MiniLM (BERT-style encoders only). A folder saved with
    ``save_pretrained`` reloads with the pooling it was trained with; asking
    for the other one raises ``ValueError``. Compared in
    ``course/01_strategies.ipynb``. The weights are always fp32 (a checkpoint
    stored in fp16 or bf16 is converted), as the course's precisions expect.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    if id2label is not None and len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries but num_labels is {num_labels}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    kwargs: dict = {**(config_overrides or {}), "num_labels": num_labels}
    if id2label is not None:
        kwargs["id2label"] = {int(i): str(label) for i, label in id2label.items()}
        kwargs["label2id"] = {str(label): int(i) for i, label in id2label.items()}
    source = model_source(name)  # verified once, used for both
    saved = saved_pooling(source)
    if saved is not None and saved != pooling:
        raise ValueError(
            f"{name!r} holds a classifier trained with pooling={saved!r}: "
            f"load it with pooling={saved!r} (its head would read the wrong vector)"
        )
    tokenizer = _load(AutoTokenizer, name, source)
    loader = AutoModelForSequenceClassification
    if pooling == "mean":
        from helpers.models.heads import BertMeanPoolingForSequenceClassification

        config = _load(AutoConfig, name, source, **kwargs)
        if config.model_type != "bert":
            raise ValueError(
                f"pooling='mean' is implemented for BERT-style encoders; {name!r} is a {config.model_type!r} model"
            )
        loader, kwargs = BertMeanPoolingForSequenceClassification, {"config": config}
    if seed is not None:
        torch.manual_seed(seed)
    # fp32 master weights whatever the checkpoint's dtype: transformers 5 loads a half-precision checkpoint in
    # half precision by default, and training fp16 weights directly fails (GradScaler) or stalls (bf16 rounding);
    # autocast gives the speed of bf16/fp16 where the machine has it (helpers.device).
    model = _load(loader, name, source, dtype=torch.float32, **kwargs)
    return model.to(device), tokenizer


def load_encoder(
    name: str, device: str = "cpu", seed: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The pretrained encoder of ``name`` alone (no head, no pooler), fp32, and its tokenizer.

    The body that several task heads share in ``course/08_multitask.ipynb``
    (:class:`helpers.training.multitask.MultiTaskModel`). ``seed`` is set
    before loading, so that what the caller initialises next is reproducible.
    """
    from transformers import AutoModel

    source = model_source(name)
    tokenizer = _load(AutoTokenizer, name, source)
    if seed is not None:
        torch.manual_seed(seed)
    encoder = _load(AutoModel, name, source, dtype=torch.float32, add_pooling_layer=False)
    return encoder.to(device), tokenizer


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
