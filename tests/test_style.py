"""flake8 over the packages, tests and benchmarks (settings in setup.cfg), so CI runs it."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_flake8_is_clean():
    pytest.importorskip("flake8")
    r = subprocess.run([sys.executable, "-m", "flake8", "kgengine", "bridge", "tests", "benchmarks"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
