"""Print pip constraints that pin every declared dependency at its lower bound.

Used by ``make check-lower-bounds``::

    python .ci/lower_bounds.py [--extras dev] [--constraints constraints.txt] > lower.txt
    pip install -c lower.txt -e ".[dev]"

Reads ``[project] dependencies`` and the named extras of pyproject.toml (a
self-reference such as ``llm-finetuning-course[instructor,lab]`` pulls those
extras in), and writes ``name==X`` for each ``name>=X``. Exception: torch is
pinned to the tested version from constraints.txt, not to its lower bound.
Only one torch build lies on the course's machines; any other version would be
a multi-GB download, so the torch bound is the one bound this check does not
test. Transitive dependencies stay free (the newest that fit), as for
``uv --resolution lowest-direct``.

Exits 1 naming any dependency without a ``>=`` bound: every dependency the
code imports must say the oldest version it works with.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Not pinned at the lower bound but at the tested version of constraints.txt (see above).
KEEP_TESTED = {"torch"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?\s*([^;]*?)\s*(?:;(.*))?$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tested_versions(constraints: Path) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a constraints file."""
    versions = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[canonical(name)] = version.strip()
    return versions


def requirements(project: dict, extras: list[str]) -> list[str]:
    """The base dependencies plus those of ``extras``, following self-references."""
    own = canonical(project["name"])
    optional = project.get("optional-dependencies", {})
    found, seen, todo = list(project.get("dependencies", [])), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            sys.exit(f"lower_bounds: no extra {extra!r} in pyproject.toml")
        seen.add(extra)
        for req in optional[extra]:
            match = REQUIREMENT.match(req)
            if match and canonical(match.group(1)) == own:
                todo += [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
            else:
                found.append(req)
    return found


def lower_bound_pins(reqs: list[str], tested: dict[str, str]) -> tuple[list[str], list[str]]:
    pins, problems = {}, []
    for req in reqs:
        match = REQUIREMENT.match(req)
        if not match:
            problems.append(f"cannot parse {req!r}")
            continue
        name, _, spec, marker = match.groups()
        key = canonical(name)
        if key in KEEP_TESTED:
            if key not in tested:
                problems.append(f"{name}: no {name}==... line in the constraints file")
                continue
            version = tested[key]
        else:
            bounds = re.findall(r">=\s*([^,\s]+)", spec)
            if not bounds:
                problems.append(f"{req!r} has no >= lower bound")
                continue
            version = bounds[0]
        pins[key] = f"{name}=={version}" + (f"; {marker.strip()}" if marker else "")
    return sorted(pins.values(), key=str.lower), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default="dev", help="comma-separated extras to include (default: dev)")
    parser.add_argument(
        "--constraints",
        default=str(ROOT / "constraints.txt"),
        help="tested versions, for the packages kept at them (default: constraints.txt)",
    )
    parser.add_argument("--pyproject", default=str(ROOT / "pyproject.toml"))
    args = parser.parse_args(argv)
    project = tomllib.loads(Path(args.pyproject).read_text())["project"]
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    pins, problems = lower_bound_pins(requirements(project, extras), tested_versions(Path(args.constraints)))
    if problems:
        for problem in problems:
            print(f"lower_bounds: {problem}", file=sys.stderr)
        return 1
    print(
        f"# Every direct dependency of .[{','.join(extras)}] at its lower bound "
        f"(torch at its tested version); made by .ci/lower_bounds.py"
    )
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
