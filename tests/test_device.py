import platform
from pathlib import Path

import pytest
import torch

from helpers.device import (
    PRECISION_ENV,
    Capabilities,
    CourseEnv,
    PrecisionNotSupportedError,
    choose_device,
    choose_precision,
    describe,
    detect_capabilities,
    is_fast_mode,
    resolve_precision,
    setup,
    supported_precisions,
)

A100 = Capabilities(cuda=True, cuda_name="NVIDIA A100", cuda_bf16=True, cpu_name="x86")
T4 = Capabilities(cuda=True, cuda_name="Tesla T4", cuda_bf16=False, cpu_name="x86")
APPLE = Capabilities(mps=True, cpu_name="Apple M2")
SAPPHIRE_RAPIDS = Capabilities(cpu_name="Xeon", cpu_bf16=True)
LAPTOP = Capabilities(cpu_name="Core i5")


@pytest.mark.parametrize(
    "caps, device, precision, kwargs, scaler",
    [
        (A100, "cuda", "bf16", {"bf16": True, "fp16": False}, False),
        (T4, "cuda", "fp16", {"bf16": False, "fp16": True}, True),
        (APPLE, "mps", "fp32", {"bf16": False, "fp16": False}, False),
        (SAPPHIRE_RAPIDS, "cpu", "bf16", {"bf16": True, "fp16": False, "use_cpu": True}, False),
        (LAPTOP, "cpu", "fp32", {"bf16": False, "fp16": False, "use_cpu": True}, False),
    ],
)
def test_precision_follows_hardware(caps, device, precision, kwargs, scaler):
    assert choose_device(caps) == device
    chosen = choose_precision(caps)
    assert chosen.name == precision
    assert chosen.trainer_kwargs() == kwargs
    assert chosen.use_grad_scaler is scaler
    assert chosen.reason


def test_cpu_precision_can_be_asked_for_on_a_gpu_machine():
    assert choose_precision(T4, device="cpu").name == "fp32"


def test_fp32_autocast_is_a_no_op_and_bf16_autocast_casts():
    x = torch.ones(2, 2)
    with choose_precision(LAPTOP).autocast("cpu"):
        assert (x @ x).dtype == torch.float32
    with choose_precision(SAPPHIRE_RAPIDS).autocast("cpu"):
        assert (x @ x).dtype == torch.bfloat16


CPUINFO = Path(__file__).parent / "data" / "cpuinfo"
PLATFORM_NAME = platform.processor() or platform.machine()  # what a cpuinfo without "model name" leaves


@pytest.mark.parametrize(
    "sample, cpu_name, cpu_bf16, cpu_precision",
    [
        # A Zen 4 (EPYC Genoa) VM, named as its hypervisor names it: AVX512-BF16, no AMX.
        ("amd-epyc-genoa.txt", "AMD EPYC", True, "bf16"),
        # A Sapphire Rapids guest whose flags list AMX (amx_bf16) but not avx512_bf16: AMX alone counts.
        ("intel-xeon-sapphire-rapids-amx.txt", "Intel(R) Xeon(R) Platinum 8488C", True, "bf16"),
        # AVX-512 without its BF16 extension: bf16 is emulated, fp32 is chosen.
        ("intel-xeon-ice-lake.txt", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", False, "fp32"),
        # ARM lists "Features", no "flags" and no "model name".
        ("aws-graviton2-arm64.txt", PLATFORM_NAME, False, "fp32"),
        # No /proc/cpuinfo at all (macOS, Windows).
        ("no-such-file.txt", PLATFORM_NAME, False, "fp32"),
    ],
)
def test_cpu_capabilities_are_read_from_cpuinfo(sample, cpu_name, cpu_bf16, cpu_precision):
    caps = detect_capabilities(CPUINFO / sample)
    assert (caps.cpu_name, caps.cpu_bf16) == (cpu_name, cpu_bf16)
    assert choose_precision(caps, device="cpu").name == cpu_precision
    assert supported_precisions(caps, device="cpu")["bf16"].startswith("native" if cpu_bf16 else "emulated")


def test_detected_capabilities_agree_with_torch_and_read_this_machine():
    caps = detect_capabilities()
    assert caps.cuda == torch.cuda.is_available()
    assert caps.cuda_name == (torch.cuda.get_device_name(0) if caps.cuda else None)
    assert caps.cuda_bf16 == (caps.cuda and torch.cuda.is_bf16_supported())
    assert caps == detect_capabilities("/proc/cpuinfo")  # the default is this machine's cpuinfo
    assert caps.cpu_name


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("FTCOURSE_FAST", "1")
    assert is_fast_mode()
    monkeypatch.setenv("FTCOURSE_FAST", "0")
    assert not is_fast_mode()
    monkeypatch.delenv("FTCOURSE_FAST")
    assert not is_fast_mode()


def test_setup_seeds_reports_and_picks(monkeypatch, capsys):
    monkeypatch.setenv("FTCOURSE_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = setup(seed=7)
    printed = capsys.readouterr().out
    assert isinstance(env, CourseEnv)
    assert env.fast and env.offline and env.seed == 7
    assert env.pick(full=1000, fast=10) == 10
    assert printed.strip() == describe(env)
    assert len(printed.strip().splitlines()) == 3
    assert "torch" in printed and env.precision.name in printed and "FAST" in printed
    first = torch.rand(3)
    setup(seed=7, verbose=False)
    assert torch.equal(first, torch.rand(3))
    full = setup(seed=7, fast=False, verbose=False)
    assert full.pick(full=1000, fast=10) == 1000


def _device_available(device: str) -> bool:
    return {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }[device]


# Every precision the chooser or an override can produce, on every kind of machine (capabilities faked
# where this one lacks them). On a CPU both fp32 and bf16 really train here, native bf16 or not.
EVERY_CHOICE = [
    (caps, name) for caps in (A100, T4, APPLE, SAPPHIRE_RAPIDS, LAPTOP) for name in supported_precisions(caps)
]


@pytest.mark.parametrize(
    "caps, name",
    EVERY_CHOICE,
    ids=lambda v: v if isinstance(v, str) else v.cpu_name + (f"-{v.cuda_name}" if v.cuda else "-mps" if v.mps else ""),
)
def test_trainer_accepts_and_trains_with_every_precision_choice(caps, name, tmp_path, request):
    """Real TrainingArguments and a 2-step Trainer.train() for each (machine, precision) pair.

    This is the combination that crashed on CPUs with native bf16 (bf16=True without use_cpu=True). The
    settings, not the weights, are under test: the model is the tiny random BERT of tests/conftest.py.
    """
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    precision = resolve_precision(caps, requested=name)
    if not _device_available(precision.device):
        pytest.skip(f"needs a {precision.device} device to build TrainingArguments for it")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-4,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        **precision.trainer_kwargs(),
    )
    assert args.bf16 == (name == "bf16") and args.fp16 == (name == "fp16")
    assert args.device.type == precision.device
    model, tokenizer = request.getfixturevalue("tiny_classifier")  # a fresh model, only once the test is not skipped
    texts = ["a fine film", "dull and long", "a delight", "a mess"]
    data = Dataset.from_dict({"text": texts, "label": [1, 0, 1, 0]}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=16), batched=True, remove_columns=["text"]
    )
    before = model.classifier.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.classifier.weight.detach().cpu())  # it really updated


def test_precision_override_from_setup_and_environment(monkeypatch, capsys):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert resolve_precision(LAPTOP).name == "fp32"
    assert resolve_precision(SAPPHIRE_RAPIDS).name == "bf16"
    # The environment variable overrides the hardware's choice, setup(precision=...) overrides both.
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    forced = resolve_precision(SAPPHIRE_RAPIDS)
    assert forced.name == "fp32" and forced.autocast_dtype is None and PRECISION_ENV in forced.reason
    assert resolve_precision(SAPPHIRE_RAPIDS, requested="bf16").name == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "AUTO")
    assert resolve_precision(SAPPHIRE_RAPIDS).name == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    emulated = resolve_precision(LAPTOP)  # possible, but slow: allowed, and the reason says so
    assert emulated.name == "bf16" and emulated.autocast_dtype == torch.bfloat16 and "emulated" in emulated.reason
    fp16_gpu = resolve_precision(A100, requested="fp16")
    assert fp16_gpu.use_grad_scaler and fp16_gpu.trainer_kwargs() == {"bf16": False, "fp16": True}
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    env = setup(seed=0)
    assert env.precision.name == "fp32" and f"{PRECISION_ENV}=fp32" in capsys.readouterr().out
    assert setup(seed=0, precision="auto", verbose=False).precision == choose_precision(detect_capabilities())


@pytest.mark.parametrize(
    "caps, name, supported",
    [
        (LAPTOP, "fp16", "fp32"),
        (SAPPHIRE_RAPIDS, "fp16", "bf16"),
        (T4, "bf16", "fp16"),
        (APPLE, "bf16", "fp32"),
    ],
)
def test_an_impossible_precision_is_a_clear_error(caps, name, supported, monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    with pytest.raises(PrecisionNotSupportedError) as error:
        resolve_precision(caps, requested=name)
    message = str(error.value)
    assert name in message and "Supported here" in message and supported in message
    monkeypatch.setenv(PRECISION_ENV, name)
    with pytest.raises(PrecisionNotSupportedError, match=PRECISION_ENV):
        resolve_precision(caps)
    with pytest.raises(ValueError, match="use one of auto, fp32, bf16, fp16"):
        resolve_precision(caps, requested="fp8")


def test_setup_refuses_fp16_on_this_cpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("fp16 is possible on a CUDA machine")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    with pytest.raises(PrecisionNotSupportedError):
        setup(precision="fp16", verbose=False)


def test_matmul_speed_and_where_it_was_measured(monkeypatch):
    from helpers.device import matmul_speed

    monkeypatch.delenv(PRECISION_ENV, raising=False)
    fp32 = matmul_speed(torch.float32, size=128, repeats=2)
    bf16 = matmul_speed(torch.bfloat16, size=128, repeats=2)
    assert 0 < fp32 < 1e6 and 0 < bf16 < 1e6
    env = setup(seed=0, verbose=False)
    label = env.measured_on()
    assert env.precision.name in label and env.device in label
    assert ("no native bf16" not in label) == env.capabilities.cpu_bf16 or env.device != "cpu"
