from pathlib import Path

import pytest
import torch

from helpers.device import (
    Capabilities,
    CourseEnv,
    choose_device,
    choose_precision,
    describe,
    detect_capabilities,
    is_fast_mode,
    setup,
)

A100 = Capabilities(cuda=True, cuda_name="NVIDIA A100", cuda_bf16=True, cpu_name="x86")
T4 = Capabilities(cuda=True, cuda_name="Tesla T4", cuda_bf16=False, cpu_name="x86")
APPLE = Capabilities(mps=True, cpu_name="Apple M2")
SAPPHIRE_RAPIDS = Capabilities(cpu_name="Xeon", cpu_bf16=True)
LAPTOP = Capabilities(cpu_name="Core i5")


@pytest.mark.parametrize(
    "caps, device, precision, kwargs, scaler",
    [
        (A100, "cuda", "bf16", {"bf16": True}, False),
        (T4, "cuda", "fp16", {"fp16": True}, True),
        (APPLE, "mps", "fp32", {}, False),
        (SAPPHIRE_RAPIDS, "cpu", "bf16", {"bf16": True}, False),
        (LAPTOP, "cpu", "fp32", {}, False),
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


def test_detected_capabilities_match_this_machine():
    caps = detect_capabilities()
    assert caps.cuda == torch.cuda.is_available()
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = cpuinfo.read_text()
    assert caps.cpu_bf16 == ("avx512_bf16" in flags or "amx_bf16" in flags)
    if not caps.cuda and not caps.mps and not caps.cpu_bf16:
        assert choose_precision(caps).name == "fp32"


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
