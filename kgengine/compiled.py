"""``torch.compile`` where it pays, with a clean fallback to eager.

A step spends most of its non-GEMM time in chains of elementwise passes over
the same few megabytes (the loss tail, the Adagrad row update); compiling
fuses each chain into one loop. Compiling needs a working C++ compiler (CPU)
or Triton (GPU) and can fail on first use; then the eager function runs,
with one warning, so ``--compile`` never stops a run.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

__all__ = ["compiled_or_eager"]


def compiled_or_eager(fn: Callable, what: str) -> Callable:
    """``torch.compile(fn)`` that falls back to ``fn`` (warning about ``what``) if compiling fails."""
    try:
        compiled = torch.compile(fn, dynamic=None)
    except Exception as e:  # e.g. no compiler backend on this platform
        warnings.warn(f"--compile: torch.compile is unavailable ({type(e).__name__}: {e}); running {what} eagerly")
        return fn
    state = {"fn": compiled}

    def call(*args, **kwargs):
        if state["fn"] is fn:
            return fn(*args, **kwargs)
        try:
            return state["fn"](*args, **kwargs)
        except Exception as e:
            warnings.warn(f"--compile: compiling {what} failed ({type(e).__name__}: {str(e)[:200]}); "
                          "running it eagerly")
            state["fn"] = fn
            return fn(*args, **kwargs)

    return call
