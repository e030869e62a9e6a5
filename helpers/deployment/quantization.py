"""int8 on CPU: dynamic quantization of a model's ``nn.Linear`` layers, and how big a model is.

Dynamic quantization stores each linear layer's weights in int8 (one scale
per output channel) and quantizes the activations on the fly, per batch;
the matrix products run in int8 and the result is put back in float. No
calibration data, no retraining: a trained model goes in, a smaller and
(on CPU) faster one comes out. What stays fp32: the embeddings (about half
of MiniLM's bytes: a 30,522 x 384 table), LayerNorms and biases.

What was tried with torch 2.13 (CPU, 2 threads) on the course's MiniLM
sentiment classifier and on SmolLM2-135M, measured against the fp32 model on
the same Rotten Tomatoes test reviews (size, latency for 1 and 32 texts,
label agreement, accuracy; ``course/10_deployment.ipynb`` measures them again
on the machine that runs it):

- ``torch.ao.quantization.quantize_dynamic`` still runs in torch 2.13 and
  is the fastest PyTorch option on CPU, but warns twice: a ``DeprecationWarning``
  (``torch.ao.quantization is deprecated and will be removed in 2.10 ...
  please migrate to use torchao eager mode quantize_ API``: 2.10 has come
  and gone, the function is still there) and a ``UserWarning`` from C++
  (``torch.quantize_per_tensor, torch.quantize_per_channel and other
  quantized tensor creation functions ... are deprecated``). Its default
  qconfig scales each weight matrix with one number (per tensor); one scale
  per output channel (``per_channel_dynamic_qconfig``) costs nothing and
  agreed better with fp32, so :func:`quantize_dynamic_int8` uses it. For
  SmolLM2 it roughly halves the size (the embedding table stays fp32) and
  generates faster than fp32 on CPU.
- torchao's replacement, ``quantize_(model,
  Int8DynamicActivationInt8WeightConfig())``, agrees best with fp32 (it
  quantizes activations per token) but, without ``torch.compile``, is
  slower than fp32 for one text and twice as slow as ``torch.ao`` for 32
  (its int8 tensor subclass is written for compiled and GPU kernels), and
  merely installing torchao makes every ``import transformers`` print
  four warnings (transformers imports it when present; its CUDA extensions
  fail to load on the CPU build of torch, and it calls a deprecated
  ``register_constant``), in every notebook of the course. It is therefore not a dependency of the course.
- onnxruntime's ``quantize_dynamic`` on the exported ONNX file
  (:func:`helpers.deployment.onnx_export.quantize_onnx_int8`) quantizes the
  embeddings too: see that module.

The activations' int8 scale is computed per batch (per tensor), so an
int8 model's logits for a text depend slightly on which texts share its
batch: compare an int8 variant with fp32 on the same batches (a label can
flip near the boundary from one batching to another).

The deprecated API is wrapped here, its two known warnings silenced (and
only those); if a later torch removes it, :func:`quantize_dynamic_int8`
raises a ``RuntimeError`` that points to the onnxruntime path. A
dynamically quantized model runs on CPU only, and is not saved with
``save_pretrained``: save the fp32 model and quantize after loading (it
takes a fraction of a second). Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

__all__ = ["quantize_dynamic_int8", "quantized_linear_count"]

# The two warnings the deprecated eager-mode API emits (quoted in the module docstring).
_DEPRECATION_MESSAGES = (
    r"torch\.ao\.quantization is deprecated",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor creation",
)


def quantize_dynamic_int8(model: nn.Module, per_channel: bool = True) -> nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers run in int8 (dynamic quantization, CPU only).

    ``torch.ao.quantization.quantize_dynamic`` with int8 weights, one scale
    per output channel (``per_channel=True``, the default: it agrees better
    with the fp32 model at no cost in speed) or one per matrix
    (``per_channel=False``, torch's default qconfig). Activations are
    quantized per batch at run time. ``model`` itself is left unchanged (it
    is deep-copied; on GPU it is copied to the CPU first) and the copy is in
    eval mode.

    Works for a sequence classifier and for a causal LM alike (SmolLM2: its
    ``lm_head`` shares its weights with the input embeddings; the quantized
    copy gets its own int8 ``lm_head`` and keeps the fp32 embeddings, so the
    weights are no longer tied: fine for inference, not for training).
    The deprecation warnings of this API are silenced (see the module
    docstring). Taught in ``course/10_deployment.ipynb``.
    """
    try:
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:  # pragma: no cover - a future torch without the eager-mode API
        raise RuntimeError(
            f"this torch ({torch.__version__}) no longer has torch.ao.quantization.quantize_dynamic; "
            "quantize the exported ONNX file instead (helpers.deployment.onnx_export.quantize_onnx_int8)"
        ) from error
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    float_model = copy.deepcopy(model).to("cpu").eval()
    with warnings.catch_warnings():
        for message in _DEPRECATION_MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        quantized = quantize_dynamic(float_model, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
    return quantized.eval()


def quantized_linear_count(model: nn.Module) -> tuple[int, int]:
    """``(int8 linear layers, fp32 linear layers)`` in ``model``: what :func:`quantize_dynamic_int8` changed."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    modules = list(model.modules())
    return (sum(isinstance(m, DynamicQuantizedLinear) for m in modules), sum(type(m) is nn.Linear for m in modules))
