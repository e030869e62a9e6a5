"""What a server calls: ``predict(texts) -> [{label, score, probabilities}]``, whatever runs the model.

:class:`ClassifierPredictor` wraps a PyTorch classifier (fp32, or int8 from
:func:`helpers.deployment.quantization.quantize_dynamic_int8`),
:class:`OnnxPredictor` an :class:`~helpers.deployment.onnx_export.OnnxClassifier`;
the app of :mod:`helpers.deployment.app` accepts either (or any object
with a ``predict`` method of that shape). :func:`save_for_serving` writes a
folder that :func:`load_predictor` (and so the ``serve`` command) reloads:
the weights, the tokenizer, ``serving.json`` (label names, ``max_length``,
the measured numbers) and a short model card (``README.md``).
Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.evaluation.calibration import softmax

__all__ = [
    "SERVING_FILE",
    "CARD_FILE",
    "ONNX_FILE",
    "ONNX_INT8_FILE",
    "BACKENDS",
    "DEFAULT_MAX_LENGTH",
    "labels_from_config",
    "Predictor",
    "ClassifierPredictor",
    "OnnxPredictor",
    "model_card",
    "save_for_serving",
    "read_serving_metadata",
    "load_predictor",
]

SERVING_FILE = "serving.json"
CARD_FILE = "README.md"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model-int8.onnx"
BACKENDS = ("torch", "torch-int8", "onnx", "onnx-int8")
DEFAULT_MAX_LENGTH = 128


def labels_from_config(id2label: dict) -> list[str]:
    """Label names in id order from a config's ``id2label`` (keys may be ints or strings)."""
    return [str(label) for _, label in sorted((int(i), label) for i, label in id2label.items())]


class Predictor:
    """Base class: subclasses set ``backend`` and ``label_names`` and implement ``logits(texts)``."""

    backend: str = "unknown"
    label_names: list[str]

    def logits(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, texts: Sequence[str]) -> list[dict]:
        """One ``{"label", "score", "probabilities"}`` per text: the top label, its probability, all of them."""
        texts = list(texts)
        if not texts:
            return []
        probabilities = softmax(self.logits(texts))
        if probabilities.shape[-1] != len(self.label_names):
            raise ValueError(
                f"the model gives {probabilities.shape[-1]} logits but there are {len(self.label_names)} label names"
            )
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            predictions.append(
                {
                    "label": self.label_names[best],
                    "score": float(row[best]),
                    "probabilities": {name: float(p) for name, p in zip(self.label_names, row)},
                }
            )
        return predictions


class ClassifierPredictor(Predictor):
    """A PyTorch sequence classifier (fp32 or dynamically quantized int8) behind ``predict(texts)``.

    ``label_names`` defaults to the model's ``config.id2label``; texts are
    truncated to ``max_length`` tokens and run by
    :func:`helpers.models.inference.predict_logits` in batches of ``batch_size``
    sorted by length. ``backend`` (shown by ``/metadata``) defaults to
    ``"torch-int8"`` for a quantized model, ``"torch-fp32"`` otherwise.
    Taught in ``course/10_deployment.ipynb``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str = "cpu",
        label_names: Sequence[str] | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
        backend: str | None = None,
    ) -> None:
        from helpers.deployment.quantization import quantized_linear_count

        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        self.label_names = list(label_names) if label_names is not None else labels_from_config(model.config.id2label)
        self.max_length, self.batch_size = max_length, batch_size
        if backend is None:
            backend = "torch-int8" if quantized_linear_count(model)[0] else "torch-fp32"
        self.backend = backend

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        from helpers.models.inference import predict_logits

        return predict_logits(
            self.model,
            self.tokenizer,
            list(texts),
            device=self.device,
            batch_size=self.batch_size,
            max_length=self.max_length,
            progress=False,
        )


class OnnxPredictor(Predictor):
    """An :class:`~helpers.deployment.onnx_export.OnnxClassifier` behind ``predict(texts)``.

    ``tokenizer`` (``None``: the classifier's own) and ``max_length`` are
    used to tokenize the texts; ``backend`` defaults to ``"onnx"``. Taught in ``course/10_deployment.ipynb``.
    """

    def __init__(
        self,
        onnx_classifier,
        tokenizer: PreTrainedTokenizerBase | None,
        label_names: Sequence[str],
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
        backend: str = "onnx",
    ) -> None:
        self.onnx_classifier, self.tokenizer, self.max_length = onnx_classifier, tokenizer, max_length
        self.label_names, self.batch_size, self.backend = list(label_names), batch_size, backend
        if len(self.label_names) != onnx_classifier.num_labels:
            raise ValueError(
                f"{len(self.label_names)} label names for a model with {onnx_classifier.num_labels} outputs"
            )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.onnx_classifier.logits(
            list(texts), batch_size=self.batch_size, tokenizer=self.tokenizer, max_length=self.max_length
        )


def model_card(metadata: dict) -> str:
    """A short model card (Markdown) from the metadata :func:`save_for_serving` writes.

    Title, what the model does, its labels and input length, how to serve
    it, and every measured number under ``metadata["metrics"]`` (a flat
    dict: name -> value) in a table.
    """
    lines = [f"# {metadata.get('model_name', 'Text classifier')}", ""]
    if metadata.get("description"):
        lines += [str(metadata["description"]), ""]
    lines += [
        f"- Labels: {', '.join(metadata.get('labels', []))}",
        f"- Input: up to {metadata.get('max_length', DEFAULT_MAX_LENGTH)} tokens (longer texts are truncated)",
    ]
    for key in ("base_model", "training_data", "trained_by"):
        if metadata.get(key):
            lines.append(f"- {key.replace('_', ' ').capitalize()}: {metadata[key]}")
    lines += ["", "Serve it on this machine: `python -m helpers.deployment.cli --model-dir <this folder>`.", ""]
    metrics = metadata.get("metrics") or {}
    if metrics:
        lines += ["## Measured", "", "| measure | value |", "| --- | --- |"]
        lines += [
            f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in metrics.items()
        ]
        lines.append("")
    return "\n".join(lines)


def save_for_serving(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    folder: str | os.PathLike,
    metadata: dict | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> Path:
    """Save a fp32 classifier as a folder the ``serve`` command can load; return the folder.

    Writes ``save_pretrained`` of the model and the tokenizer,
    ``serving.json`` (``metadata`` plus ``labels`` and ``max_length``) and
    ``README.md``, a model card made from it by :func:`model_card` (put the
    measured numbers in ``metadata["metrics"]``). Save the fp32 model: an
    int8 variant is made from it when loading (``backend="torch-int8"``),
    and ONNX files go next to it (``model.onnx``, ``model-int8.onnx``).
    Taught in ``course/10_deployment.ipynb``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {**(metadata or {}), "labels": labels_from_config(model.config.id2label), "max_length": int(max_length)}
    (folder / SERVING_FILE).write_text(json.dumps(info, indent=2, default=str))
    (folder / CARD_FILE).write_text(model_card(info))
    return folder


def read_serving_metadata(folder: str | os.PathLike) -> dict:
    """The ``serving.json`` of a saved folder, or what ``config.json`` tells (labels) when there is none."""
    folder = Path(folder)
    metadata = json.loads((folder / SERVING_FILE).read_text()) if (folder / SERVING_FILE).is_file() else {}
    if not metadata.get("labels"):
        config = folder / "config.json"
        if not config.is_file():
            raise FileNotFoundError(
                f"{folder} holds neither {SERVING_FILE} nor config.json: is it a saved model "
                "folder (helpers.deployment.predictors.save_for_serving)?"
            )
        metadata["labels"] = labels_from_config(json.loads(config.read_text()).get("id2label") or {})
    return metadata


def load_predictor(
    model_dir: str | os.PathLike,
    backend: str = "torch",
    threads: int | None = None,
    batch_size: int = 32,
    onnx_file: str | os.PathLike | None = None,
) -> tuple[Predictor, dict]:
    """Load a folder written by :func:`save_for_serving` with one backend; return ``(predictor, metadata)``.

    ``backend``: ``"torch"`` (the fp32 model), ``"torch-int8"`` (the same,
    quantized after loading), ``"onnx"`` / ``"onnx-int8"`` (onnxruntime on
    ``model.onnx`` / ``model-int8.onnx`` in the folder, or on ``onnx_file``).
    ``threads`` sets torch's or onnxruntime's thread count. ``metadata`` is
    the folder's ``serving.json`` (see :func:`read_serving_metadata`) with
    the backend added. Used by ``python -m helpers.deployment.cli``.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    metadata = read_serving_metadata(folder)
    max_length = int(metadata.get("max_length", DEFAULT_MAX_LENGTH))
    if backend.startswith("onnx"):
        from transformers import AutoTokenizer

        from helpers.deployment.onnx_export import OnnxClassifier

        path = Path(onnx_file) if onnx_file else folder / (ONNX_FILE if backend == "onnx" else ONNX_INT8_FILE)
        classifier = OnnxClassifier(path, threads=threads)
        predictor: Predictor = OnnxPredictor(
            classifier,
            AutoTokenizer.from_pretrained(str(folder)),
            metadata["labels"],
            max_length=max_length,
            batch_size=batch_size,
            backend=backend,
        )
    else:
        import torch

        from helpers.models.loading import load_classifier, saved_pooling

        if threads:
            torch.set_num_threads(int(threads))
        labels = metadata["labels"]
        model, tokenizer = load_classifier(
            str(folder), num_labels=len(labels), pooling=saved_pooling(str(folder)) or "cls"
        )
        if backend == "torch-int8":
            from helpers.deployment.quantization import quantize_dynamic_int8

            model = quantize_dynamic_int8(model)
        predictor = ClassifierPredictor(
            model, tokenizer, label_names=labels, max_length=max_length, batch_size=batch_size, backend=backend
        )
    return predictor, {**metadata, "backend": backend}
