"""The HTTP service: a FastAPI app around a predictor, with input validation and micro-batching.

``create_app(predictor, metadata)`` builds the app; the ``serve`` command
(:mod:`helpers.deployment.cli`) runs it with uvicorn. Endpoints:

- ``POST /predict`` with ``{"text": "..."}`` or ``{"texts": ["...", ...]}``:
  ``{"predictions": [{"label", "score", "probabilities"}, ...]}``, one per
  text, in order. An empty (or blank) text, more than ``max_texts`` texts,
  a text longer than ``max_chars`` characters, both or neither of ``text``
  and ``texts``: status 422 and ``{"detail": [{"loc", "msg", "type"}]}``
  whose ``msg`` says what is wrong and names the limit.
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded.
- ``GET /metadata``: the model's name, labels, backend, the measured
  numbers it was saved with, the limits, and batching statistics.

**Concurrency.** The model runs in a worker thread (``run_in_threadpool``),
never in the event loop, so the server keeps accepting requests and
answering ``/health`` during a forward pass. Only one forward pass runs at
a time: two at once would each ask torch (or onnxruntime) for every core
and slow each other down. Requests that arrive meanwhile wait in a queue,
and :class:`MicroBatcher` runs them together: when the worker is free it
takes the oldest request, waits ``max_wait_ms`` for more, and runs all the
queued texts (up to ``max_batch_texts``) in **one** forward pass, then
hands each request its own predictions. On a CPU a batch of 8 short texts
costs less than 8 batches of one (the weights are read once, the Python
and HTTP overhead is paid once per pass), so under
concurrent load the throughput rises and the queueing delay falls; alone, a
request waits only ``max_wait_ms`` more. ``batching=False`` runs each
request by itself (still one at a time), to measure the difference.
Measured with :func:`helpers.deployment.client.load_test` (requests of one
review, 8 at a time, client and server on the same 2 CPU cores), batching
raised the throughput and lowered the median and 95th-percentile latency of
both the fp32 PyTorch model and the int8 ONNX one; waiting 0 ms (taking only
what queued during the previous pass) did as well as 2 ms, and 5 ms slightly
worse. The lesson measures its own numbers.
Taught in ``course/10_deployment.ipynb``.
"""

# No ``from __future__ import annotations``: FastAPI reads the annotation of ``/predict``, a class made
# inside create_app, from the function itself (a string would be looked up in this module and not found).
import asyncio
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, model_validator
from starlette.concurrency import run_in_threadpool

__all__ = [
    "DEFAULT_MAX_TEXTS",
    "DEFAULT_MAX_CHARS",
    "Prediction",
    "PredictResponse",
    "request_model",
    "MicroBatcher",
    "create_app",
]

DEFAULT_MAX_TEXTS = 32
DEFAULT_MAX_CHARS = 2000


class Prediction(BaseModel):
    """The prediction for one text: the top label, its probability, and every label's probability."""

    label: str
    score: float
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


def request_model(max_texts: int = DEFAULT_MAX_TEXTS, max_chars: int = DEFAULT_MAX_CHARS) -> type[BaseModel]:
    """The pydantic model of a ``/predict`` body with these limits: ``text`` or ``texts``, checked.

    Its ``all_texts()`` gives the texts as a list (one for ``text``). The
    validation errors name the offending text (by position) and the limit.
    """
    if max_texts < 1 or max_chars < 1:
        raise ValueError(f"max_texts and max_chars must be at least 1, got {max_texts} and {max_chars}")

    class PredictRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {"text": "A gripping, beautifully shot film."},
                    {"texts": ["Loved it.", "Two hours I will never get back."]},
                ]
            },
        )

        text: str | None = None
        texts: list[str] | None = None

        @model_validator(mode="after")
        def _check(self):
            if (self.text is None) == (self.texts is None):
                raise ValueError("give either 'text' (one string) or 'texts' (a list of strings), not both or neither")
            texts = self.all_texts()
            if not texts:
                raise ValueError("'texts' is an empty list: give at least one text")
            if len(texts) > max_texts:
                raise ValueError(
                    f"too many texts: {len(texts)} in one request, the limit is max_texts={max_texts}; "
                    "split them into several requests"
                )
            for i, text in enumerate(texts):
                where = "'text'" if self.text is not None else f"text {i}"
                if not text.strip():
                    raise ValueError(f"{where} is empty (or only whitespace): there is nothing to classify")
                if len(text) > max_chars:
                    raise ValueError(f"{where} is too long: {len(text)} characters, the limit is max_chars={max_chars}")
            return self

        def all_texts(self) -> list[str]:
            return [self.text] if self.text is not None else list(self.texts or [])

    return PredictRequest


class MicroBatcher:
    """Runs ``predict`` for concurrent requests one forward pass at a time, grouping them into batches.

    ``await submit(texts)`` queues a request and returns its predictions. A
    single worker task takes the oldest request, sleeps ``max_wait_ms`` so
    that concurrent requests can join (no sleep when it is 0: it takes what
    is already queued), adds queued requests while the batch holds at most
    ``max_batch_texts`` texts (a request is never split; a larger one runs
    alone), and calls ``predict`` on all their texts in a worker thread. With
    ``enabled=False`` every request runs alone. ``stats`` counts requests,
    forward passes and texts. A failing ``predict`` fails the requests of
    its batch only. Taught in ``course/10_deployment.ipynb``.
    """

    def __init__(
        self,
        predict: Callable[[list[str]], list],
        max_batch_texts: int = 32,
        max_wait_ms: float = 2.0,
        enabled: bool = True,
    ) -> None:
        if max_batch_texts < 1 or max_wait_ms < 0:
            raise ValueError(
                f"max_batch_texts must be >= 1 and max_wait_ms >= 0, got {max_batch_texts} and {max_wait_ms}"
            )
        self.predict, self.enabled = predict, enabled
        self.max_batch_texts, self.max_wait_ms = max_batch_texts, max_wait_ms
        self.stats = {"requests": 0, "forward_passes": 0, "texts": 0, "largest_batch": 0}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._carry: tuple | None = None  # a request that did not fit in the previous batch

    def describe(self) -> dict:
        """The settings and statistics (``mean_batch_texts``: texts per forward pass so far)."""
        passes = self.stats["forward_passes"]
        return {
            "enabled": self.enabled,
            "max_batch_texts": self.max_batch_texts,
            "max_wait_ms": self.max_wait_ms,
            **self.stats,
            "mean_batch_texts": self.stats["texts"] / passes if passes else None,
        }

    async def submit(self, texts: Sequence[str]) -> list:
        """Queue one request's texts; return their predictions once its batch has run."""
        if self._worker is None or self._worker.done():
            self._queue = self._queue or asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((list(texts), future))
        return await future

    async def stop(self) -> None:
        """Cancel the worker; requests still queued fail with ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        pending = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for _, future in pending:
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))

    async def _next_batch(self) -> list[tuple]:
        first, self._carry = self._carry or await self._queue.get(), None
        batch, size = [first], len(first[0])
        if not self.enabled:
            return batch
        if self.max_wait_ms > 0:
            await asyncio.sleep(self.max_wait_ms / 1000)
        while size < self.max_batch_texts and not self._queue.empty():
            item = self._queue.get_nowait()
            if size + len(item[0]) > self.max_batch_texts:
                self._carry = item
                break
            batch.append(item)
            size += len(item[0])
        return batch

    async def _run(self) -> None:
        while True:
            batch = [item for item in await self._next_batch() if not item[1].done()]  # done: client gone
            if not batch:
                continue
            texts = [text for item in batch for text in item[0]]
            try:
                results = await run_in_threadpool(self.predict, texts)
            except Exception as error:  # noqa: BLE001 - handed to the requests of this batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.stats["requests"] += len(batch)
            self.stats["forward_passes"] += 1
            self.stats["texts"] += len(texts)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(texts))
            start = 0
            for item_texts, future in batch:
                if not future.done():
                    future.set_result(results[start : start + len(item_texts)])
                start += len(item_texts)


def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """422 with each error's location, message and type (the input is not echoed back)."""
    details = []
    for item in error.errors():
        message = str(item.get("msg", ""))
        details.append(
            {
                "loc": list(item.get("loc", ())),
                "msg": message.removeprefix("Value error, "),
                "type": item.get("type", ""),
            }
        )
    return JSONResponse(status_code=422, content={"detail": details})


def create_app(
    predictor,
    metadata: dict | None = None,
    max_texts: int = DEFAULT_MAX_TEXTS,
    max_chars: int = DEFAULT_MAX_CHARS,
    batching: bool = True,
    max_batch_texts: int = 32,
    max_wait_ms: float = 2.0,
) -> FastAPI:
    """The FastAPI app that serves ``predictor`` (see the module docstring for the endpoints).

    ``predictor``: any object with ``predict(texts: list[str]) ->
    list[{"label", "score", "probabilities"}]`` (a
    :class:`~helpers.deployment.predictors.ClassifierPredictor` or
    :class:`~helpers.deployment.predictors.OnnxPredictor`); its
    ``label_names`` and ``backend`` attributes, if any, are shown by
    ``/metadata`` next to ``metadata`` (JSON-serializable: model name,
    measured numbers...). ``max_texts`` and ``max_chars`` are the limits of
    one request; ``batching``, ``max_batch_texts`` and ``max_wait_ms``
    configure the :class:`MicroBatcher`. Taught in ``course/10_deployment.ipynb``.
    """
    PredictRequest = request_model(max_texts, max_chars)
    batcher = MicroBatcher(
        predictor.predict, max_batch_texts=max_batch_texts, max_wait_ms=max_wait_ms, enabled=batching
    )
    info = {
        "backend": getattr(predictor, "backend", "unknown"),
        "labels": list(getattr(predictor, "label_names", [])),
        **(metadata or {}),
    }

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        await batcher.stop()

    app = FastAPI(
        title=str(info.get("model_name", "Text classifier")),
        lifespan=lifespan,
        exception_handlers={RequestValidationError: _validation_error},
    )
    app.state.batcher = batcher

    @app.post("/predict", response_model=PredictResponse)
    async def predict(request: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
        """Classify one text (``text``) or several (``texts``)."""
        return PredictResponse(predictions=await batcher.submit(request.all_texts()))

    @app.get("/health")
    async def health() -> dict:
        """Answers as soon as the server is up (the model is loaded before it starts)."""
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> JSONResponse:
        """The model, its labels and backend, the measured numbers, the limits, batching statistics."""
        return JSONResponse(
            jsonable_encoder(
                {**info, "limits": {"max_texts": max_texts, "max_chars": max_chars}, "batching": batcher.describe()}
            )
        )

    return app
