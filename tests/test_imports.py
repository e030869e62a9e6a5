"""Light imports: the library's entry point and the instructor tooling do not load torch or transformers."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "datasets")


@pytest.mark.parametrize(
    "statement",
    [
        "import helpers",
        "import helpers.environment",
        "import helpers.recording",
        "import helpers.deployment",
        "import helpers.data, helpers.models, helpers.training, helpers.evaluation",
        "import ftcourse.cli, ftcourse.runner, ftcourse.grading, ftcourse.paths",
        "from ftcourse.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_no_heavy_library_is_imported(statement):
    code = f"{statement}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_setup_is_still_one_import_away():
    code = "from helpers import setup\nimport sys\nprint(callable(setup), 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["True", "True"], result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import helpers

        helpers.nothing  # noqa: B018
