import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from helpers.cache_lock import exclusive_lock
from helpers.hub import hub_reachable
from helpers.models.loading import (
    ModelNotAvailableError,
    check_converted_model,
    convert_gguf_model,
    converted_model_dir,
    count_parameters,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
)
from tests.conftest import ROOT


@pytest.mark.slow
def test_minilm_classifier_shapes_and_finite_logits():
    model, tokenizer = load_classifier("minilm", num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, seed=0)
    assert model.config.model_type == "bert" and model.config.num_hidden_layers == 6
    batch = tokenizer(["A wonderful film.", "Dull and far too long, I left early."], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert 22_000_000 < count_parameters(model) < 23_500_000


@pytest.mark.slow
def test_classifier_head_is_reproducible_with_a_seed():
    first, _ = load_classifier("minilm", num_labels=2, seed=3)
    second, _ = load_classifier("minilm", num_labels=2, seed=3)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    with pytest.raises(ValueError, match="id2label has 1 entries"):
        load_classifier("minilm", num_labels=2, id2label={0: "x"})


def test_the_minilm_fixture_is_a_fresh_load(minilm, minilm_shared):
    """The shared-model fixture of tests/conftest.py hands out what a real load returns."""
    model, tokenizer = minilm
    rng_after_fixture = torch.get_rng_state()
    fresh, fresh_tokenizer = load_classifier("minilm", num_labels=2, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_after_fixture)  # the random generator where the load leaves it
    expected = fresh.state_dict()
    assert list(model.state_dict()) == list(expected)
    assert all(torch.equal(value, expected[name]) for name, value in model.state_dict().items())
    assert model.training == fresh.training and model.config.to_dict() == fresh.config.to_dict()
    assert tokenizer.get_vocab() == fresh_tokenizer.get_vocab()
    shared = dict(minilm_shared[0].named_parameters())
    assert not any(p.data_ptr() == shared[name].data_ptr() for name, p in model.named_parameters())  # a copy


def test_minilm_tokenizer_round_trip():
    tokenizer = load_tokenizer("minilm")
    text = "Fine tuning a pretrained encoder works well"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    # An uncased WordPiece model: the round trip gives the lower-cased text.
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()


def test_smollm_shapes_template_and_answer(smollm):
    model, tokenizer = smollm
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert tokenizer.pad_token is not None
    batch = tokenizer(["Hello there"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], 49152) and torch.isfinite(logits).all()
    text = "Instruction tuning teaches a format."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in prompt


def test_smollm_knows_a_general_fact(smollm):
    from helpers.models.inference import chat_reply

    model, tokenizer = smollm
    assert "Paris" in chat_reply(model, tokenizer, "What is the capital of France?", max_new_tokens=12)


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0]


def test_offline_hub_id_gives_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_classifier("bert-base-uncased", num_labels=2)
    message = str(info.value)
    assert "'bert-base-uncased' is not an embedded model" in message and "HF_HUB_OFFLINE=1" in message
    assert "minilm" in message and "smollm2-135m" in message
    # The Hub client's error is kept: chained as the cause, its first line quoted.
    cause = info.value.__cause__
    assert isinstance(cause, (OSError, ValueError)) and not isinstance(cause, ModelNotAvailableError)
    assert first_line(cause) in message
    assert info.value.__suppress_context__  # the traceback shows the cause, not the same error twice
    with pytest.raises(ModelNotAvailableError, match="minilm") as info:
        load_causal_lm("not-a-model-name")
    assert info.value.__cause__ is not None and first_line(info.value.__cause__) in str(info.value)


@pytest.fixture
def no_proxy_settings(monkeypatch):
    """An environment without proxy settings, whatever the machine has."""
    for variable in list(os.environ):
        if variable.lower().endswith("_proxy"):
            monkeypatch.delenv(variable)


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1 that answers every request 200 and keeps the request lines it saw.

    Asked through it as a proxy, a client sends the whole URL (``HEAD http://hub.invalid/ HTTP/1.1``).
    """
    seen: list[str] = []

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (the name http.server calls)
            seen.append(self.requestline)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reachable_in_a_fresh_process(timeout: float = 2.0, **environment: str) -> bool:
    """``hub_reachable()`` in a new interpreter with ``environment``: the Hub client reads its settings
    (``HF_HUB_OFFLINE`` among them, which this test session sets) once, at import."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "HF_HUB_OFFLINE"}
    code = f"from helpers.hub import hub_reachable; print(hub_reachable(timeout={timeout}))"
    result = subprocess.run([sys.executable, "-c", code], env=env | environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "True"


def test_unreachable_hub_fails_fast_with_the_same_message(monkeypatch, no_proxy_settings):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{closed_port()}")
    assert not hub_reachable()
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="cannot be reached.*minilm") as info:
        load_tokenizer("bert-base-uncased")
    assert time.monotonic() - start < 30
    assert isinstance(info.value.__cause__, OSError) and first_line(info.value.__cause__) in str(info.value)


def test_hub_reachable_asks_the_endpoint_over_http(http_server):
    port, seen = http_server
    assert reachable_in_a_fresh_process(HF_ENDPOINT=f"http://127.0.0.1:{port}")
    assert seen == ["HEAD / HTTP/1.1"]
    assert not reachable_in_a_fresh_process(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    # the same server, but the Hub client is switched off: no request leaves
    assert not reachable_in_a_fresh_process(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_OFFLINE="1")
    assert len(seen) == 1


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_hub_reachable_goes_through_the_proxy_as_downloads_do(http_server, variable):
    # hub.invalid never resolves: only the proxy can answer for it
    port, seen = http_server
    assert not reachable_in_a_fresh_process(HF_ENDPOINT="http://hub.invalid")
    assert reachable_in_a_fresh_process(HF_ENDPOINT="http://hub.invalid", **{variable: f"http://127.0.0.1:{port}"})
    assert seen == ["HEAD http://hub.invalid/ HTTP/1.1"]


def test_hub_reachable_is_false_at_once_when_the_proxy_is_down(http_server):
    port, seen = http_server
    start = time.monotonic()
    assert not reachable_in_a_fresh_process(
        timeout=3, HF_ENDPOINT=f"http://127.0.0.1:{port}", HTTP_PROXY=f"http://127.0.0.1:{closed_port()}"
    )
    assert time.monotonic() - start < 10 and seen == []  # refused by the proxy's port, not timed out


def test_no_proxy_exempts_the_hub_host(http_server):
    port, seen = http_server
    proxy_down = f"http://127.0.0.1:{closed_port()}"
    assert not reachable_in_a_fresh_process(HF_ENDPOINT=f"http://127.0.0.1:{port}", HTTP_PROXY=proxy_down)
    assert reachable_in_a_fresh_process(
        HF_ENDPOINT=f"http://127.0.0.1:{port}", HTTP_PROXY=proxy_down, NO_PROXY="example.org, 127.0.0.1"
    )
    assert seen == ["HEAD / HTTP/1.1"]


def test_local_folder_loads_like_a_hub_id(tmp_path, minilm_shared):
    model, tokenizer = minilm_shared
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again, _ = load_classifier(str(tmp_path), num_labels=2)
    assert torch.equal(again.classifier.weight, model.classifier.weight)


@pytest.mark.slow
def test_corrupt_or_partial_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, capsys):
    source = convert_gguf_model("smollm2-135m", verbose=False)
    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    target = converted_model_dir("smollm2-135m")
    assert target.parent.parent == tmp_path
    shutil.copytree(source, target)
    assert check_converted_model(target) is None

    weights = target / "model.safetensors"
    with open(weights, "r+b") as handle:
        handle.seek(os.path.getsize(weights) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert "does not match its checksum" in check_converted_model(target)

    (target / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" in check_converted_model(target)
    (target / "ftcourse-manifest.json").unlink()
    assert "no ftcourse-manifest.json" in check_converted_model(target)

    # A staging folder left behind by a killed conversion goes with the next conversion.
    leftover = target.parent / f".{target.name}-killed99"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half a model")

    rebuilt = convert_gguf_model("smollm2-135m")
    assert "not usable" in capsys.readouterr().out
    assert rebuilt == target and check_converted_model(target) is None
    hidden = [p.name for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")]
    assert hidden == [f".{target.name}.lock"]  # no staging folders, only the (kept) lock file


def test_exclusive_lock_excludes_waits_and_times_out(tmp_path):
    """filelock's lock, as the caches use it: a second holder waits (told once), or gives up after its timeout."""
    path = tmp_path / ".model.lock"
    outcome = {}

    def second_holder():
        with exclusive_lock(
            path, timeout=30, on_wait=lambda: outcome.setdefault("waiting", time.monotonic())
        ) as waited:
            outcome["waited"] = waited

    with exclusive_lock(path) as waited:
        assert waited is False and path.exists()
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"more than 0\.3 s"):
            with exclusive_lock(path, timeout=0.3):
                pass
        assert time.monotonic() - start < 5
        thread = threading.Thread(target=second_holder)
        thread.start()
        while "waiting" not in outcome and thread.is_alive():
            time.sleep(0.05)
        assert "waiting" in outcome and "waited" not in outcome
    thread.join(10)
    assert outcome["waited"] is True


def test_a_lock_held_by_a_killed_process_is_released(tmp_path):
    """A process killed while it holds the lock (a notebook interrupted mid-conversion) does not block the next."""
    path = tmp_path / ".model.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom helpers.cache_lock import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
            str(path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            with exclusive_lock(path, timeout=0.3):
                pass
        holder.kill()
        holder.wait(10)
        with exclusive_lock(path, timeout=5) as waited:
            assert waited is False
    finally:
        holder.kill()
        holder.stdout.close()


CONVERT = (
    "import sys\n"
    "from helpers.models.loading import convert_gguf_model\n"
    "print('RESULT', convert_gguf_model('smollm2-135m', force=sys.argv[1] == 'force'), flush=True)\n"
)


@pytest.mark.slow
def test_concurrent_conversions_wait_for_the_lock_and_reuse_the_result(tmp_path, monkeypatch):
    """Two converter processes find the lock held: they wait, then use the cache the holder made."""
    fcntl = pytest.importorskip("fcntl")
    source = convert_gguf_model("smollm2-135m", verbose=False)
    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path))
    target = converted_model_dir("smollm2-135m")
    target.parent.mkdir(parents=True)
    leftover = target.parent / f".{target.name}-killed42"  # from a conversion killed earlier
    leftover.mkdir()
    (leftover / "config.json").write_text("{")

    env = {**os.environ, "FTCOURSE_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    lock_fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # as a converting process does
    processes, outputs, readers = [], [], []
    try:
        for mode in ("reuse", "force"):
            process = subprocess.Popen(
                [sys.executable, "-c", CONVERT, mode],
                cwd=ROOT,
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            lines: list[str] = []
            reader = threading.Thread(target=lambda p=process, out=lines: out.extend(p.stdout), daemon=True)
            reader.start()
            processes.append(process)
            outputs.append(lines)
            readers.append(reader)

        deadline = time.monotonic() + 300  # importing torch and transformers on a busy machine
        while not all(any("waiting for it" in line for line in lines) for lines in outputs):
            assert all(p.poll() is None for p in processes), outputs
            assert time.monotonic() < deadline, outputs
            time.sleep(0.2)
        time.sleep(1)
        assert not target.exists() and leftover.exists()  # nobody converted behind the lock's back

        shutil.copytree(source, target)  # the holder's conversion, finished
        inode = (target / "model.safetensors").stat().st_ino
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        released = time.monotonic()
        for process in processes:
            process.wait(timeout=180)
        took = time.monotonic() - released
    finally:
        os.close(lock_fd)
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for reader in readers:
        reader.join(10)

    for process, lines in zip(processes, outputs):
        text = "".join(lines)
        assert process.returncode == 0, text
        assert f"RESULT {target}\n" in lines, text
        assert "Converting" not in text, text
    assert took < 120  # two checksum passes, not two ~45 s conversions
    assert check_converted_model(target) is None
    assert (target / "model.safetensors").stat().st_ino == inode  # used as it was, not rebuilt
    assert not leftover.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [f".{target.name}.lock", target.name]


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_half_precision_checkpoint_loads_with_fp32_weights(tmp_path, pooling):
    """transformers 5 keeps a checkpoint's dtype by default; the course trains fp32 master weights (autocast
    gives bf16/fp16 speed): an fp16 checkpoint, as many Hub models are stored, must come back in fp32."""
    model, tokenizer = load_classifier("minilm", num_labels=2, seed=0, pooling=pooling)
    half = tmp_path / "half"
    model.half().save_pretrained(half)
    tokenizer.save_pretrained(half)
    reloaded, _ = load_classifier(str(half), num_labels=2, pooling=pooling)
    assert {p.dtype for p in reloaded.parameters()} == {torch.float32}
    original = dict(model.named_parameters())
    assert all(torch.equal(p, original[name].float()) for name, p in reloaded.named_parameters())
