"""The one place kgengine imports DGL.

Why this module exists: the newest DGL wheel for Python 3.11 is dgl 2.1.0. Its
top-level ``import dgl`` fails on current PyTorch for two reasons, neither of
which touches the parts kgengine uses (graph storage, degrees, sampling, METIS,
``dgl.distributed.partition_graph``):

1. ``dgl.distributed`` imports ``dgl.graphbolt``, whose C++ extension is
   compiled per torch release (2.1.0 ships builds up to torch 2.2.1) and whose
   Python side needs ``torchdata.datapipes`` (removed from torchdata 0.10).
   We register a placeholder module under ``dgl.graphbolt`` *before* DGL is
   imported. It carries the one name DGL's partition code reads at import or
   in ``isinstance`` checks (``FusedCSCSamplingGraph``) and raises a clear
   ``ImportError`` for anything else, so GraphBolt-only paths fail loudly
   instead of silently.
2. ``dgl.utils`` falls back to ``setuptools.extern.packaging`` (gone in
   setuptools >= 71) when ``packaging`` is missing; ``packaging`` is a
   dependency of kgengine, so that fallback is never taken.

Everything else in kgengine does ``from kgengine.dglcompat import dgl``; no
other module imports dgl or touches ``sys.modules``.
"""
from __future__ import annotations

import importlib
import os
import sys
import types

__all__ = ["dgl", "GRAPHBOLT_STUBBED"]

_STUB_NAME = "dgl.graphbolt"


class _GraphBoltUnavailable(types.ModuleType):
    """Stand-in for ``dgl.graphbolt``: importable, unusable."""

    class FusedCSCSamplingGraph:  # only ever the right-hand side of isinstance()
        def __init__(self, *args, **kwargs):
            raise ImportError(_GraphBoltUnavailable._message("FusedCSCSamplingGraph"))

    @staticmethod
    def _message(name: str) -> str:
        return (
            f"dgl.graphbolt.{name} is unavailable: kgengine imports dgl 2.1.0 without "
            "GraphBolt, whose compiled extension does not match this torch release. "
            "Use the non-GraphBolt DGL APIs (use_graphbolt=False)."
        )

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(self._message(name))


def _import_dgl() -> tuple[types.ModuleType, bool]:
    os.environ.setdefault("DGLBACKEND", "pytorch")
    if "dgl" in sys.modules:  # already imported (by us earlier, or by the user)
        return sys.modules["dgl"], isinstance(sys.modules.get(_STUB_NAME), _GraphBoltUnavailable)
    stubbed = False
    if _STUB_NAME not in sys.modules:
        sys.modules[_STUB_NAME] = _GraphBoltUnavailable(_STUB_NAME)
        stubbed = True
    try:
        module = importlib.import_module("dgl")
    except Exception:
        if stubbed:
            sys.modules.pop(_STUB_NAME, None)
        raise
    if stubbed:
        module.graphbolt = sys.modules[_STUB_NAME]
    return module, stubbed


dgl, GRAPHBOLT_STUBBED = _import_dgl()
