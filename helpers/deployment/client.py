"""Calling the server with a real HTTP client (httpx): one request, or a bounded concurrent load test.

:func:`load_test` sends ``n_requests`` requests, at most ``concurrency`` in
flight at once (an ``asyncio.Semaphore`` around an ``httpx.AsyncClient``),
and reports the latency percentiles a user would see (p50, p95, p99, in
ms, from sending a request to reading its answer) and the throughput. The
client runs on the same machine as the server and takes CPU from it:
numbers measured on 2 cores are a lower bound of what the server alone
would do. Only loopback addresses are accepted unless ``allow_remote=True``
(the course sends nothing over the network); proxies set in the
environment are ignored (``trust_env=False``). Both functions work in a
notebook, whose event loop is already running (the load test then runs in
a thread with its own loop). Taught in ``course/10_deployment.ipynb``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

__all__ = ["predict_over_http", "load_test_async", "load_test"]


def _check_url(url: str, allow_remote: bool) -> str:
    from helpers.deployment.cli import is_loopback

    host = urlsplit(url).hostname or ""
    if not allow_remote and not is_loopback(host):
        raise ValueError(f"{url} is not on this machine (loopback only); pass allow_remote=True to call it anyway")
    return url.rstrip("/")


def _error_text(response) -> str:
    """A readable reason for a failed request: the server's validation messages, else the body's start."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):
        return "; ".join(str(item.get("msg", item)) for item in detail)
    return str(detail) if detail else response.text[:300]


def predict_over_http(
    url: str, texts: Sequence[str], batch_size: int = 32, timeout: float = 60.0, allow_remote: bool = False
) -> list[dict]:
    """Predictions for ``texts`` from the server at ``url`` (its base URL), ``batch_size`` texts per request.

    Returns one ``{"label", "score", "probabilities"}`` per text, in order.
    A refused request raises ``RuntimeError`` with the server's message
    (e.g. which limit a text broke). Taught in ``course/10_deployment.ipynb``.
    """
    import httpx

    base = _check_url(url, allow_remote)
    texts = list(texts)
    predictions: list[dict] = []
    with httpx.Client(trust_env=False, timeout=timeout) as client:
        for start in range(0, len(texts), batch_size):
            response = client.post(f"{base}/predict", json={"texts": texts[start : start + batch_size]})
            if response.status_code != 200:
                raise RuntimeError(f"the server refused the request ({response.status_code}): {_error_text(response)}")
            predictions.extend(response.json()["predictions"])
    return predictions


async def load_test_async(
    url: str,
    texts: Sequence[str],
    n_requests: int = 200,
    concurrency: int = 8,
    texts_per_request: int = 1,
    timeout: float = 60.0,
    warmup: int = 2,
    allow_remote: bool = False,
) -> dict:
    """The coroutine behind :func:`load_test` (``await`` it where an event loop runs)."""
    import httpx

    base = _check_url(url, allow_remote)
    if not texts:
        raise ValueError("load_test needs at least one text")
    if n_requests < 1 or concurrency < 1 or texts_per_request < 1:
        raise ValueError("n_requests, concurrency and texts_per_request must be at least 1")
    texts = list(texts)
    bodies = [
        {"texts": [texts[(i * texts_per_request + j) % len(texts)] for j in range(texts_per_request)]}
        for i in range(n_requests)
    ]
    latencies: list[float] = []
    errors: list[str] = []
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(trust_env=False, timeout=timeout, limits=limits) as client:
        for body in bodies[:warmup]:  # not timed: first connections, the server's first batches
            await client.post(f"{base}/predict", json=body)

        async def one(body: dict) -> None:
            async with semaphore:
                start = time.perf_counter()
                try:
                    response = await client.post(f"{base}/predict", json=body)
                except httpx.HTTPError as error:
                    errors.append(f"{type(error).__name__}: {error}")
                    return
                elapsed = time.perf_counter() - start
                if response.status_code == 200 and len(response.json()["predictions"]) == len(body["texts"]):
                    latencies.append(elapsed)
                else:
                    errors.append(f"{response.status_code}: {_error_text(response)}")

        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "n_requests": n_requests,
        "concurrency": concurrency,
        "texts_per_request": texts_per_request,
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "requests_per_s": len(latencies) / wall,
        "texts_per_s": len(latencies) * texts_per_request / wall,
        "wall_s": wall,
    }


def load_test(
    url: str,
    texts: Sequence[str],
    n_requests: int = 200,
    concurrency: int = 8,
    texts_per_request: int = 1,
    timeout: float = 60.0,
    warmup: int = 2,
    allow_remote: bool = False,
) -> dict:
    """Send ``n_requests`` POST ``/predict`` to ``url``, at most ``concurrency`` at a time; measure them.

    Request ``i`` carries ``texts_per_request`` texts taken in turn from
    ``texts``. ``warmup`` requests are sent first and not counted. Returns
    a flat dict: ``n_requests``, ``concurrency``, ``texts_per_request``,
    ``ok``, ``errors`` (failed requests: transport errors, non-200 answers
    or a wrong number of predictions) with up to 3 ``error_examples``,
    ``p50_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms``, ``max_ms`` (latency of
    the successful requests), ``requests_per_s`` and ``texts_per_s``
    (successful ones over the wall time) and ``wall_s``.
    Taught in ``course/10_deployment.ipynb``.
    """
    coroutine = load_test_async(
        url,
        texts,
        n_requests=n_requests,
        concurrency=concurrency,
        texts_per_request=texts_per_request,
        timeout=timeout,
        warmup=warmup,
        allow_remote=allow_remote,
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running here (a script, a test): run one
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # a notebook: its loop is busy running us
        return pool.submit(asyncio.run, coroutine).result()
