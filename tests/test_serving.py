"""The HTTP service, tested over real HTTP: a uvicorn server in its own process on a free loopback port."""

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the deploy extra is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")

import httpx  # noqa: E402 - after the skip

from helpers.deployment.app import DEFAULT_MAX_CHARS, DEFAULT_MAX_TEXTS, MicroBatcher, request_model  # noqa: E402
from helpers.deployment.client import load_test, predict_over_http  # noqa: E402
from helpers.deployment.predictors import ClassifierPredictor, load_predictor  # noqa: E402
from helpers.deployment.server_process import ServerStartError, port_is_free, start_server  # noqa: E402
from tests.conftest import ROOT, SERVING_MAX_LENGTH  # noqa: E402

TEXTS = [
    "A warm, funny and moving film.",
    "Dull, overlong and badly acted.",
    "The plot makes no sense, but the actors are great.",
    "I loved every minute of it.",
    "A waste of a talented cast.",
    "Visually stunning; emotionally empty.",
    "Not bad.",
    "One of the best films of the year, with a script that never takes the easy way out " * 3,
]


@pytest.fixture(scope="module")
def server(sentiment_served):
    """The tiny classifier served with the torch backend for this module's tests."""
    with start_server(sentiment_served, "torch", threads=2) as running:
        yield running


@pytest.fixture(scope="module")
def in_process(sentiment_tiny):
    """The same model's predictions computed here, without HTTP."""
    model, tokenizer = sentiment_tiny
    return ClassifierPredictor(model, tokenizer, max_length=SERVING_MAX_LENGTH)


def client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=60)


def test_predict_matches_the_in_process_model(server, in_process):
    expected = in_process.predict(TEXTS)
    got = predict_over_http(server.url, TEXTS)
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    assert {p["label"] for p in expected} == {"negative", "positive"}  # the comparison can fail
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], abs=1e-4)
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-4)
    with client() as http:
        one = http.post(f"{server.url}/predict", json={"text": TEXTS[1]})
    assert one.status_code == 200
    assert [p["label"] for p in one.json()["predictions"]] == [expected[1]["label"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": ""}, "'text' is empty"),
        ({"text": "   \n"}, "'text' is empty"),
        ({"texts": ["fine", ""]}, "text 1 is empty"),
        ({"texts": []}, "empty list"),
        (
            {"texts": ["ok"] * (DEFAULT_MAX_TEXTS + 1)},
            f"too many texts: {DEFAULT_MAX_TEXTS + 1} in one request, the limit is max_texts={DEFAULT_MAX_TEXTS}",
        ),
        (
            {"text": "a" * (DEFAULT_MAX_CHARS + 1)},
            f"'text' is too long: {DEFAULT_MAX_CHARS + 1} characters, the limit is max_chars={DEFAULT_MAX_CHARS}",
        ),
        ({"texts": ["ok", "b" * (DEFAULT_MAX_CHARS + 5)]}, "text 1 is too long"),
        ({}, "either 'text' (one string) or 'texts'"),
        ({"text": "a", "texts": ["b"]}, "not both or neither"),
        ({"texts": "one string, not a list"}, "valid list"),
        ({"text": "ok", "label": "positive"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_inputs_get_422_with_a_clear_message(server, body, message):
    with client() as http:
        response = http.post(f"{server.url}/predict", json=body)
    assert response.status_code == 422
    messages = [item["msg"] for item in response.json()["detail"]]
    assert any(message in m for m in messages), messages
    assert "input" not in response.json()["detail"][0]  # a long text is not echoed back


def test_limits_exactly_at_the_bounds_are_accepted(server):
    with client() as http:
        texts = ["x" * DEFAULT_MAX_CHARS] + ["ok"] * (DEFAULT_MAX_TEXTS - 1)
        response = http.post(f"{server.url}/predict", json={"texts": texts})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == DEFAULT_MAX_TEXTS


def test_concurrent_requests_are_all_answered_in_batches(server, in_process):
    texts = [TEXTS[i % len(TEXTS)] + f" (copy {i})" for i in range(20)]
    expected = [p["label"] for p in in_process.predict(texts)]
    with client() as http:
        before = http.get(f"{server.url}/metadata").json()["batching"]

    async def send_all():
        semaphore = asyncio.Semaphore(8)
        async with httpx.AsyncClient(trust_env=False, timeout=60) as http:

            async def one(text):
                async with semaphore:
                    return await http.post(f"{server.url}/predict", json={"text": text})

            return await asyncio.gather(*(one(text) for text in texts))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 20
    assert [r.json()["predictions"][0]["label"] for r in responses] == expected
    with client() as http:
        after = http.get(f"{server.url}/metadata").json()["batching"]
    assert after["requests"] - before["requests"] == 20
    assert after["forward_passes"] - before["forward_passes"] < 20  # concurrent requests shared forward passes


def test_load_test_reports_latency_and_throughput(server):
    result = load_test(server.url, TEXTS, n_requests=24, concurrency=4, texts_per_request=2)
    assert result["ok"] == 24 and result["errors"] == 0 and result["error_examples"] == []
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["texts_per_s"] == pytest.approx(2 * result["requests_per_s"])
    assert result["wall_s"] > 0

    async def from_a_running_loop():  # as in a notebook, whose kernel runs an event loop
        return load_test(server.url, TEXTS, n_requests=4, concurrency=2)

    assert asyncio.run(from_a_running_loop())["ok"] == 4


def test_health_and_metadata(server):
    with client() as http:
        assert http.get(f"{server.url}/health").json() == {"status": "ok"}
        metadata = http.get(f"{server.url}/metadata").json()
    assert metadata["model_name"] == "minilm-sentiment-tiny"
    assert metadata["labels"] == ["negative", "positive"]
    assert metadata["backend"] == "torch"
    assert metadata["metrics"] == {"test_accuracy": 0.8}
    assert metadata["max_length"] == SERVING_MAX_LENGTH
    assert metadata["limits"] == {"max_texts": DEFAULT_MAX_TEXTS, "max_chars": DEFAULT_MAX_CHARS}
    assert metadata["batching"]["enabled"] is True


def test_onnx_server_answers_then_stops_cleanly(sentiment_served):
    # int8 activations are scaled per batch: compare on the same batches of 4 the client sends
    predictor = load_predictor(sentiment_served, "onnx-int8")[0]
    expected = [p["label"] for start in range(0, len(TEXTS), 4) for p in predictor.predict(TEXTS[start : start + 4])]
    with start_server(sentiment_served, "onnx-int8", extra_args=["--no-batching", "--max-texts", "4"]) as server:
        assert server.running and not port_is_free(server.port)
        assert [p["label"] for p in predict_over_http(server.url, TEXTS, batch_size=4)] == expected
        with pytest.raises(RuntimeError, match="max_texts=4"):
            predict_over_http(server.url, TEXTS, batch_size=5)
        with client() as http:
            assert http.get(f"{server.url}/metadata").json()["batching"]["enabled"] is False
    assert not server.running  # SIGTERM was enough: uvicorn shut down and the process was reaped
    assert server.process.returncode is not None
    assert port_is_free(server.port)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health", trust_env=False, timeout=2)
    assert server.stop() == server.process.returncode  # a second stop is harmless


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie waiting for a parent that is not ours to reap)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" in status.read_text() if status.exists() else True
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_stops_when_its_parent_dies_without_cleaning_up(sentiment_served):
    """A kernel killed hard (no atexit): the server notices its parent is gone and stops by itself."""
    script = textwrap.dedent(f"""
        import os
        from helpers.deployment.server_process import start_server
        server = start_server({str(sentiment_served)!r}, "onnx-int8")
        print(server.pid, server.port, server.log_path, flush=True)
        os._exit(0)  # no atexit, no stop(): as if the kernel crashed
    """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    pid, port, log = done.stdout.split()
    pid, port = int(pid), int(port)
    Path(log).unlink()  # its stop() never ran
    deadline = time.monotonic() + 20
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(pid), f"server {pid} still running after its parent died"
    assert port_is_free(port)


def test_start_server_with_a_missing_folder_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        start_server(tmp_path / "no-such-model")
    assert time.monotonic() - start < 1


@pytest.mark.slow  # a server process starts (imports torch and the app) before it fails: ~5 s
def test_start_server_reports_why_the_server_died(tmp_path):
    """The folder exists but holds no model: the server exits, and the error quotes its message."""
    start = time.monotonic()
    expected = r"(?s)exited with code 1.*cannot load torch model.*neither serving.json"
    with pytest.raises(ServerStartError, match=expected):
        start_server(tmp_path, timeout=60)
    assert time.monotonic() - start < 60


def test_only_loopback_addresses(tmp_path):
    from helpers.deployment.cli import main

    with pytest.raises(ValueError, match="not a loopback address"):
        start_server(tmp_path, host="0.0.0.0")
    assert main(["--model-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    with pytest.raises(ValueError, match="loopback only"):
        predict_over_http("http://192.0.2.1:8000", ["text"])  # TEST-NET-1: nothing is sent
    with pytest.raises(ValueError, match="loopback only"):
        load_test("http://example.com", ["text"], n_requests=1)


def test_request_model_limits_are_configurable():
    from pydantic import ValidationError

    Request = request_model(max_texts=2, max_chars=5)
    assert Request(text="hello").all_texts() == ["hello"]
    assert Request(texts=["a", "b"]).all_texts() == ["a", "b"]
    with pytest.raises(ValidationError, match="max_texts=2"):
        Request(texts=["a", "b", "c"])
    with pytest.raises(ValidationError, match="max_chars=5"):
        Request(text="toolong")
    with pytest.raises(ValueError, match="at least 1"):
        request_model(max_texts=0)


def test_micro_batcher_groups_concurrent_requests_and_routes_answers():
    """Six concurrent requests of 1-3 texts: fewer forward passes, each request gets its own answers in order."""
    calls: list[list[str]] = []

    def predict(texts):
        calls.append(list(texts))
        time.sleep(0.01)  # a forward pass takes time: requests queue meanwhile
        return [text.upper() for text in texts]

    async def run():
        batcher = MicroBatcher(predict, max_batch_texts=4, max_wait_ms=5)
        requests = [[f"r{i}t{j}" for j in range(1 + i % 3)] for i in range(6)]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        await batcher.stop()
        return requests, answers, batcher.describe()

    requests, answers, stats = asyncio.run(run())
    assert answers == [[text.upper() for text in texts] for texts in requests]
    assert all(len(call) <= 4 for call in calls)  # never more than max_batch_texts (no request is larger)
    assert len(calls) < 6 and stats["forward_passes"] == len(calls) and stats["requests"] == 6
    assert stats["texts"] == sum(map(len, requests)) == 12


def test_micro_batcher_failure_fails_only_its_batch():
    def predict(texts):
        if "bad" in texts:
            raise RuntimeError("model failure")
        return texts

    async def run():
        batcher = MicroBatcher(predict, enabled=False)
        results = await asyncio.gather(batcher.submit(["bad"]), batcher.submit(["good"]), return_exceptions=True)
        await batcher.stop()
        return results

    failed, ok = asyncio.run(run())
    assert isinstance(failed, RuntimeError) and ok == ["good"]
