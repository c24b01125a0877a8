"""checkpatch.pl is the judge for C in guests/ and for every file under patches/; ruff and
mypy are the judges for Python."""

import subprocess
import sys

import pytest

from conftest import ROOT
from s2fault import lint


@pytest.mark.slow
def test_patches_and_guests_are_checkpatch_clean():
    problems = lint.run()
    assert problems == [], "\n".join(f"{p}: {text}" for p, text in problems)


def test_python_is_ruff_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "bench"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_is_mypy_clean():
    """[tool.mypy] in pyproject.toml: src/s2fault, strict.
    The cache under .mypy_cache keeps a second run well under a second."""
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
