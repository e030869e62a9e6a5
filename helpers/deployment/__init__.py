"""Taking a fine-tuned model out of the notebook: smaller, faster, behind an HTTP API.

Taught in ``course/10_deployment.ipynb``. One module per concern:

- :mod:`helpers.deployment.quantization`: dynamic int8 quantization of a PyTorch model's ``nn.Linear``
  layers (classifier or causal LM); the serialized size of a model is :func:`helpers.measure.model_size_bytes`.
- :mod:`helpers.deployment.onnx_export`: export to ONNX (``torch.onnx.export``, dynamo exporter, dynamic
  batch and sequence axes), :class:`~helpers.deployment.onnx_export.OnnxClassifier` around an
  onnxruntime session, parity with PyTorch, int8 quantization of the ONNX file.
- :mod:`helpers.deployment.benchmark`: latency per batch, label agreement, generation speed (tokens/s).
- :mod:`helpers.deployment.predictors`: the objects a server calls, ``predict(texts) -> [{label, score,
  probabilities}]``, for a PyTorch model (fp32 or int8) and for an ONNX file; saving a model folder
  ready to serve (weights, tokenizer, ``serving.json`` metadata, a short model card).
- :mod:`helpers.deployment.app`: the FastAPI app (``/predict``, ``/health``, ``/metadata``), input
  validation, and the micro-batcher that groups concurrent requests into one forward pass.
- :mod:`helpers.deployment.cli`: the command line that serves a saved folder with uvicorn
  (``python -m helpers.deployment.cli --model-dir ... --backend ...``), on 127.0.0.1 only.
- :mod:`helpers.deployment.server_process`: start that command in a background process from a notebook, wait
  until it answers, stop it cleanly (:func:`~helpers.deployment.server_process.start_server`).
- :mod:`helpers.deployment.client`: call the server with httpx, one request or a bounded concurrent load
  test (latency percentiles, throughput).

The optional dependencies (onnx, onnxscript, onnxruntime, fastapi, uvicorn, httpx) are the ``deploy``
extra: ``pip install -e ".[deploy]"``. They are imported by the modules that need them, so
``import helpers.deployment`` is light.
"""

from helpers.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "benchmark": ["SpeedUp", "generation_call", "interleaved_timings", "label_agreement", "speedup"],
        "client": ["load_test", "predict_over_http"],
        "onnx_export": ["OnnxClassifier", "export_classifier_onnx", "onnx_parity", "quantize_onnx_int8"],
        "predictors": ["ONNX_FILE", "ONNX_INT8_FILE", "load_predictor", "save_for_serving"],
        "quantization": ["quantize_dynamic_int8", "quantized_linear_count"],
        "server_process": ["start_server"],
    },
)
