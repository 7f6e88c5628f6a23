"""kgengine.dglcompat: the one place DGL is imported (without GraphBolt)."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

# DGL is optional on the training path (a lent GPU machine has none); these test the DGL layer itself
pytestmark = pytest.mark.skipif(importlib.util.find_spec("dgl") is None, reason="needs DGL")

PKG = Path(__file__).resolve().parents[1] / "kgengine"
# an import statement of dgl (or dgl.x) at the start of a line, or any sys.modules / dynamic import of dgl
GREP_PATTERN = (
    r"^[[:space:]]*(import[[:space:]]+dgl([.,[:space:]]|$)|from[[:space:]]+dgl([.[:space:]]|$))"
    r"|sys\.modules|__import__\([\"']dgl|import_module\([\"']dgl"
)


def test_import_and_version():
    from kgengine.dglcompat import dgl

    assert isinstance(dgl, types.ModuleType)
    assert dgl.__name__ == "dgl"
    assert dgl.__version__ == "2.1.0"
    assert sys.modules["dgl"] is dgl


def test_graphbolt_is_the_placeholder():
    from kgengine import dglcompat
    from kgengine.dglcompat import GRAPHBOLT_STUBBED, dgl

    assert GRAPHBOLT_STUBBED is True
    assert isinstance(dgl.graphbolt, dglcompat._GraphBoltUnavailable)
    assert sys.modules["dgl.graphbolt"] is dgl.graphbolt


@pytest.mark.parametrize("attr", ["ItemSampler", "DataLoader", "load_from_shared_memory", "_private"])
def test_graphbolt_attribute_access_raises_clear_import_error(attr):
    from kgengine.dglcompat import dgl

    with pytest.raises(ImportError) as exc:
        getattr(dgl.graphbolt, attr)
    msg = str(exc.value)
    assert f"dgl.graphbolt.{attr} is unavailable" in msg
    assert "GraphBolt" in msg and "use_graphbolt=False" in msg


def test_graphbolt_from_import_raises_import_error():
    from kgengine.dglcompat import dgl  # noqa: F401  (ensures the placeholder is registered)

    with pytest.raises(ImportError, match="dgl.graphbolt.SampledSubgraph is unavailable"):
        from dgl.graphbolt import SampledSubgraph  # noqa: F401


def test_graphbolt_dunder_lookups_are_attribute_errors():
    from kgengine.dglcompat import dgl

    assert not hasattr(dgl.graphbolt, "__path__")
    assert not hasattr(dgl.graphbolt, "__wrapped__")


def test_graphbolt_fused_csc_class_only_for_isinstance():
    from kgengine.dglcompat import dgl

    cls = dgl.graphbolt.FusedCSCSamplingGraph
    assert isinstance(cls, type)
    assert not isinstance(object(), cls)
    with pytest.raises(ImportError, match="FusedCSCSamplingGraph is unavailable"):
        cls()


def test_fresh_interpreter_imports_kgengine_with_stub():
    code = (
        "import sys, kgengine.graph\n"
        "from kgengine import dglcompat\n"
        "assert 'dgl' in sys.modules\n"
        "assert isinstance(sys.modules['dgl.graphbolt'], dglcompat._GraphBoltUnavailable)\n"
        "assert dglcompat.GRAPHBOLT_STUBBED is True\n"
        "print(sys.modules['dgl'].__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "2.1.0"


def _source_files():
    files = sorted(p for p in PKG.rglob("*.py") if p.name != "dglcompat.py")
    assert files, PKG
    return files


def test_no_other_module_imports_dgl_or_touches_sys_modules_grep():
    """grep (in a subprocess) every kgengine source file except dglcompat.py."""
    out = subprocess.run(["grep", "-nE", GREP_PATTERN, *map(str, _source_files())], capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr  # 1: no match; 2: grep error
    assert out.stdout == "", "modules other than dglcompat.py import dgl / touch sys.modules:\n" + out.stdout


def test_no_other_module_imports_dgl_ast():
    """The same check on the syntax tree (catches imports inside functions, aliases, etc.)."""
    bad = []
    for path in _source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad += [f"{path}:{node.lineno}" for a in node.names if a.name == "dgl" or a.name.startswith("dgl.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    node.module == "dgl" or node.module.startswith("dgl.")):
                bad.append(f"{path}:{node.lineno}")
            elif isinstance(node, ast.Attribute) and node.attr == "modules" and isinstance(node.value, ast.Name) \
                    and node.value.id == "sys":
                bad.append(f"{path}:{node.lineno}")
    assert not bad, bad
