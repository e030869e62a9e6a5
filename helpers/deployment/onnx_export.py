"""ONNX: export a classifier with ``torch.onnx.export``, run it with onnxruntime, check it, quantize it.

ONNX is a file format for a computation graph and its weights; onnxruntime
runs it without PyTorch (and so do other runtimes, in other languages). The
export traces the model once on an example batch; the batch and sequence
axes are declared dynamic, so the file accepts any number of texts of any
length (up to the model's 512 positions).

What replaced ``transformers.onnx`` (the export module of transformers 4,
removed): ``torch.onnx.export(..., dynamo=True)``, PyTorch's own exporter
built on ``torch.export`` (the default since torch 2.9; it needs onnx and
onnxscript), used here. Hugging Face's wrapper around exporters moved from
``optimum.exporters.onnx`` to the separate package ``optimum-onnx``; its
latest release (0.1.0) requires ``transformers<4.58`` and ``optimum~=2.1``,
so it cannot be installed next to the course's transformers 5 (checked from
its package metadata; it is not a dependency).

What was found when this module was written (torch 2.13, onnxruntime 1.32,
CPU; the lesson measures the numbers again on the machine that runs it):

- the export writes opset 20 with inputs ``input_ids``, ``token_type_ids``,
  ``attention_mask`` of shape ``(batch, sequence)`` and output ``logits`` of
  shape ``(batch, num_labels)``; onnxruntime's logits match PyTorch's to
  rounding error and every label agrees. For one text onnxruntime is faster
  (less Python overhead per call); for a batch of 32 both run the same
  matrix products at about the same speed;
- :func:`quantize_onnx_int8` (``onnxruntime.quantization.quantize_dynamic``,
  int8 weights, one scale per output channel) also quantizes the embedding
  table (a ``Gather``), which PyTorch's dynamic quantization leaves in fp32:
  the file is about four times smaller than the fp32 one. One scale per
  channel agrees better with fp32 than one scale per matrix;
- onnxruntime recommends ``quant_pre_process`` (shape inference and graph
  optimization) before quantizing, and logs a warning without it. On the
  dynamo-exported file its *symbolic* shape inference fails ("Incomplete
  symbolic shape inference"); with ``skip_symbolic_shape=True`` it works,
  and the quantized model's logits are the same as without it (the file is
  a little smaller). :func:`quantize_onnx_int8` does that.

Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.data.batching import batches_by_length

__all__ = [
    "MODEL_INPUTS",
    "EXAMPLE_TEXTS",
    "export_classifier_onnx",
    "OnnxClassifier",
    "onnx_parity",
    "quantize_onnx_int8",
]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
EXAMPLE_TEXTS = ("A short review.", "A somewhat longer review, so that the example batch needs padding.")


class _LogitsOnly(nn.Module):
    """The classifier with named tensor inputs and its logits as the only output (what the ONNX graph holds)."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's known chatter: torchvision operators it skips, and warnings about names.

    The exporter logs one line per torchvision operator it cannot register
    (torchvision is not installed: irrelevant to a text model) and warns that
    axis names shared by several inputs are merged (they are the same axes).
    """
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        logger.setLevel(level)


def export_classifier_onnx(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | os.PathLike,
    opset: int | None = None,
) -> Path:
    """Export a sequence classifier to one ONNX file at ``path``; return the path.

    ``torch.onnx.export(..., dynamo=True)`` on an example batch of two texts
    of different lengths, with the batch and sequence axes of every input
    declared dynamic (``batch``, ``sequence``). Inputs: ``input_ids``,
    ``attention_mask``, and ``token_type_ids`` when the tokenizer produces
    them (BERT's does); output: ``logits`` ``(batch, num_labels)``. The
    weights are stored inside the file (no ``.data`` side file). ``opset``
    is the ONNX operator set (``None``: the exporter's default). The model
    is exported from the CPU in eval mode (a copy is not made: it is moved
    back where it was); the file is checked with ``onnx.checker``.
    Taught in ``course/10_deployment.ipynb``.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tokenizer(list(EXAMPLE_TEXTS), padding=True, return_tensors="pt")
    names = [name for name in MODEL_INPUTS if name in example]
    inputs = {name: example[name] for name in names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in names}
    device, training = next(model.parameters()).device, model.training
    wrapper = _LogitsOnly(model.to("cpu")).eval()
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (),
                str(path),
                kwargs=inputs,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=names,
                output_names=["logits"],
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    finally:
        model.to(device).train(training)
    onnx.checker.check_model(str(path))
    return path


def _as_feed(batch: Mapping, wanted: Sequence[str]) -> dict[str, np.ndarray]:
    """The session's inputs from a tokenized batch (torch tensors or arrays), as int64 numpy arrays."""
    missing = [name for name in wanted if name not in batch]
    if missing:
        raise ValueError(f"the batch lacks the model's inputs {missing} (it has {sorted(batch)})")
    feed = {}
    for name in wanted:
        value = batch[name]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        feed[name] = np.asarray(value, dtype=np.int64)
    return feed


class OnnxClassifier:
    """An ONNX sequence classifier run by onnxruntime: ``.logits(texts)`` like the PyTorch model's.

    ``path``: a file written by :func:`export_classifier_onnx` (or
    :func:`quantize_onnx_int8`). ``tokenizer`` and ``max_length`` are used
    when ``.logits`` gets texts; ``threads`` sets onnxruntime's intra-op
    threads (``None``: its default, one per physical core). ``providers``:
    onnxruntime's execution providers, CPU by default.
    Taught in ``course/10_deployment.ipynb``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int = 128,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX file at {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def num_labels(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def logits(
        self,
        inputs: Sequence[str] | Mapping,
        batch_size: int = 32,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Logits ``(n, num_labels)`` float32 for a list of texts or one tokenized batch.

        Texts are tokenized with ``tokenizer`` (default: the classifier's),
        truncated to ``max_length`` (default: the classifier's), and run in
        batches of ``batch_size`` sorted by length (little padding), then put
        back in order, as :func:`helpers.models.inference.predict_logits` does. A
        tokenized batch (a mapping with ``input_ids``, ``attention_mask``...,
        torch tensors or numpy arrays) runs as it is, in one call.
        """
        if isinstance(inputs, Mapping):
            return self.session.run(["logits"], _as_feed(inputs, self.input_names))[0]
        if isinstance(inputs, str):
            raise TypeError("logits() takes a list of texts, not one string: wrap it in a list")
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        if tokenizer is None:
            raise ValueError("this OnnxClassifier has no tokenizer: pass tokenizer= to run it on texts")
        texts = list(inputs)
        logits = np.zeros((len(texts), self.num_labels), dtype=np.float32)
        max_length = max_length or self.max_length
        for idx, batch in batches_by_length(
            tokenizer, texts, None, batch_size, max_length, False, "onnx", return_tensors="np"
        ):
            logits[idx] = self.session.run(["logits"], _as_feed(batch, self.input_names))[0]
        return logits


def onnx_parity(
    model: PreTrainedModel,
    onnx_classifier: OnnxClassifier,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 32,
    max_length: int = 128,
    device: str = "cpu",
) -> dict:
    """How closely the ONNX file reproduces the PyTorch model on ``texts``.

    Both run the very same tokenized batches (sorted by length,
    ``batch_size`` texts, truncated to ``max_length``). Returns
    ``max_abs_diff`` (the largest |logit difference|), ``label_agreement``
    (share of texts given the same label) and ``n``. Exported in fp32, the
    two differ by float rounding only (~1e-5); an int8 file differs more.
    Taught in ``course/10_deployment.ipynb``.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("onnx_parity needs at least one text")
    model.eval()
    reference = np.zeros((len(texts), onnx_classifier.num_labels), dtype=np.float32)
    exported = np.zeros_like(reference)
    for idx, batch in batches_by_length(
        tokenizer, texts, None, batch_size, max_length, False, "onnx", return_tensors="np"
    ):
        tensors = {name: torch.from_numpy(batch[name]).to(device) for name in onnx_classifier.input_names}
        with torch.inference_mode():
            reference[idx] = model(**tensors).logits.float().cpu().numpy()
        exported[idx] = onnx_classifier.logits(batch)
    return {
        "max_abs_diff": float(np.abs(reference - exported).max()),
        "label_agreement": float((reference.argmax(-1) == exported.argmax(-1)).mean()),
        "n": len(texts),
    }


def quantize_onnx_int8(
    src: str | os.PathLike, dst: str | os.PathLike, per_channel: bool = True, preprocess: bool = True
) -> Path:
    """Quantize an ONNX file's weights to int8 with onnxruntime (dynamic quantization); return ``dst``.

    ``onnxruntime.quantization.quantize_dynamic`` with ``QInt8`` weights
    (``per_channel``: one scale per output channel, which agrees better with
    fp32) on every operator it supports, the embedding lookups included.
    With ``preprocess`` the file first goes through ``quant_pre_process``
    (graph optimization and ONNX shape inference) with its symbolic shape
    inference skipped, which fails on dynamo-exported graphs (see the module
    docstring). Activations are quantized at run time, so no calibration
    data is needed. Taught in ``course/10_deployment.ipynb``.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX file at {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        source = src
        if preprocess:
            source = Path(scratch) / "preprocessed.onnx"
            quant_pre_process(str(src), str(source), skip_symbolic_shape=True)
        root = logging.getLogger()  # without preprocessing, onnxruntime logs a recommendation to do it
        level = root.level
        if not preprocess:
            root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
        finally:
            root.setLevel(level)
    return dst
