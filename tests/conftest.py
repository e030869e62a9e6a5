import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, python: list[str] | None = None):
    """Run ``ftcourse`` in a subprocess (the real console entry point's module)."""
    command = (python or [sys.executable]) + ["-m", "helpers.cli", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=600
    )


@pytest.fixture
def site_without(tmp_path):
    """Build a site-packages view in which one embedded asset is missing or damaged.

    Every entry of the real site-packages is linked in, except the asset's
    package (and, for ``mode="missing"``, its metadata); ``mode="corrupt"``
    puts a copy whose checked file has one byte changed. Returns the Python
    command to run in that view (``python -S`` with ``PYTHONPATH``).
    """
    from helpers.assets import get_asset, package_dir

    def build(asset_name: str, mode: str = "missing") -> tuple[list[str], dict]:
        asset = get_asset(asset_name)
        real_pkg = package_dir(asset)
        site = Path(sysconfig.get_paths()["purelib"])
        view = tmp_path / "site"
        view.mkdir()
        dist_prefix = asset.distribution.replace("-", "_").lower() + "-"
        for entry in site.iterdir():
            if entry.name == asset.module:
                continue
            if mode == "missing" and entry.name.lower().startswith(dist_prefix) and entry.name.endswith(".dist-info"):
                continue
            (view / entry.name).symlink_to(entry)
        if mode == "corrupt":
            copy = view / asset.module
            for file in real_pkg.rglob("*"):
                target = copy / file.relative_to(real_pkg)
                if file.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(file)
            checked = copy / next(iter(asset.checksums))
            if checked.is_dir():
                checked = sorted(p for p in checked.rglob("*") if p.is_file())[0]
            data = bytearray(checked.read_bytes())
            data[len(data) // 2] ^= 0xFF
            checked.unlink()
            checked.write_bytes(bytes(data))
        return [sys.executable, "-S"], {"PYTHONPATH": f"{ROOT}{os.pathsep}{view}"}

    return build
