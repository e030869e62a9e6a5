"""Taking a fine-tuned model out of the notebook: smaller, faster, behind an HTTP API.

Taught in ``course/10_deployment.ipynb``. One module per concern:

- :mod:`helpers.deployment.quantization`: dynamic int8 quantization of a PyTorch model's ``nn.Linear``
  layers (classifier or causal LM), and the serialized size of a model or of a saved file/folder.
- :mod:`helpers.deployment.onnx_export`: export to ONNX (``torch.onnx.export``, dynamo exporter, dynamic
  batch and sequence axes), :class:`~helpers.deployment.onnx_export.OnnxClassifier` around an
  onnxruntime session, parity with PyTorch, int8 quantization of the ONNX file.
- :mod:`helpers.deployment.benchmark`: latency per batch, label agreement, generation speed (tokens/s).
- :mod:`helpers.deployment.predictors`: the objects a server calls, ``predict(texts) -> [{label, score,
  probabilities}]``, for a PyTorch model (fp32 or int8) and for an ONNX file; saving a model folder
  ready to serve (weights, tokenizer, ``serving.json`` metadata, a short model card).
- :mod:`helpers.deployment.serving`: the FastAPI app (``/predict``, ``/health``, ``/metadata``), input
  validation, and the micro-batcher that groups concurrent requests into one forward pass.
- :mod:`helpers.deployment.serve`: the command line that serves a saved folder with uvicorn
  (``python -m helpers.deployment.serve --model-dir ... --backend ...``), on 127.0.0.1 only.
- :mod:`helpers.deployment.server`: start that command in a background process from a notebook, wait
  until it answers, stop it cleanly (:func:`~helpers.deployment.server.start_server`).
- :mod:`helpers.deployment.client`: call the server with httpx, one request or a bounded concurrent load
  test (latency percentiles, throughput).

The optional dependencies (onnx, onnxscript, onnxruntime, fastapi, uvicorn, httpx) are the ``deploy``
extra: ``pip install -e ".[deploy]"``. They are imported by the modules that need them, so
``import helpers.deployment`` is light.
"""
