"""OpenMP's wait policy: passive unless the user chose otherwise, and a warning when it is too late to choose.

libgomp's default lets an idle thread spin; on a shared or busy machine each small op then waits for
a descheduled partner (a 2-thread step measured 14-30x slower than 1 thread under load,
benchmarks/README.md). Passive waiting costs little on an idle machine. libgomp reads the variable
once, when torch loads it: this module is imported first by ``import kgengine`` (and so by the
``kge`` command), which covers every run that does not import torch before kgengine.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already in this process (Linux; elsewhere: unknown, assumed not)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any(lib in maps for lib in ("libgomp", "libomp", "libiomp"))


# an OpenMP runtime already initialised (torch imported first) and nobody set the policy: it spins
SPINNING = "OMP_WAIT_POLICY" not in os.environ and _openmp_loaded()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["SPINNING", "check_wait_policy"]


def check_wait_policy(num_threads: int) -> bool:
    """Warn (and return True) when ``num_threads > 1`` would run with spinning OpenMP threads."""
    if num_threads > 1 and SPINNING:
        warnings.warn(
            f"{num_threads} threads with OpenMP's spinning wait policy: torch was imported before kgengine, so "
            "OMP_WAIT_POLICY=PASSIVE came too late; on a busy machine such threads can be ~15x slower than one. "
            "Import kgengine first, or start Python with OMP_WAIT_POLICY=PASSIVE (or use num_thread=1).",
            stacklevel=3)
        return True
    return False
