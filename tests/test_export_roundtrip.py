"""kgengine.export: names and float32 values come back exactly; files appear whole or not at all."""
import errno
import os
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch

from kgengine.export import EXPORT_FORMATS, escape_w2v_name, export, unescape_w2v_name
from kgengine.models import create_model
from kgengine.saved import TrainedKGE, read_vocab

# Names that collided when whitespace became '_' (and the ones that would collide with a naive escape).
TRICKY = ["a b", "a_b", "a\tb", "a  b", "a\u00a0b", "a%20b", "a%b", "%", "%25", "", " ", "_", "a\nb",
          "a\r\nb", "a\u2028b", "nul\x00", "北京 市", "café", "#c"]
# float32 edge cases: extremes, subnormals, signed zero, values with no short decimal form.
EDGES = np.array([3.4028235e38, -3.4028235e38, 1.1754944e-38, 1e-45, -1e-45, 1.4e-44, -0.0, 0.0,
                  1 / 3, 0.1, -2.5e-8, 16777217.0, 123456789.0, np.pi, 1e10], dtype=np.float32)


def hard_floats(shape, seed=0) -> np.ndarray:
    """float32 from random bit patterns (every exponent: tiny, subnormal, huge, negative), the edges first."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2**32, size=shape, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x[~np.isfinite(x)] = 1.5  # a NaN or inf is not a trained vector
    flat = x.reshape(-1)
    flat[:len(EDGES)] = EDGES[:flat.size]
    return x


def make_trained(entities, relations=("r0", "r1"), dim=5, seed=0, reciprocal=False) -> TrainedKGE:
    m = create_model("DistMult", len(entities), len(relations), dim, reciprocal=reciprocal)
    with torch.no_grad():
        for i, t in enumerate(m.tables.values()):
            t.copy_(torch.from_numpy(hard_floats(tuple(t.shape), seed + i)))
    return TrainedKGE(m, list(entities), list(relations), {}, {"dataset": "x"})


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def read_w2v(path: Path):
    lines = path.read_bytes().decode("utf-8").split("\n")
    assert lines.pop() == ""  # the file ends with a newline
    n, d = map(int, lines[0].split(" "))
    rows = [line.split(" ") for line in lines[1:]]
    assert len(rows) == n and all(len(r) == d + 1 and len(line.split()) == d + 1 for r, line in zip(rows, lines[1:]))
    return [r[0] for r in rows], np.array([[np.float32(v) for v in r[1:]] for r in rows], dtype=np.float32)


# ---- word2vec names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, token", [
    ("new york", "new%20york"), ("a_b", "a_b"), ("5%", "5%25"), ("a\tb", "a%09b"), ("", "%"),
    ("%", "%25"), ("\u3000x", "%E3%80%80x"), ("line\nbreak", "line%0Abreak"), ("café", "café"),
])
def test_escape_w2v_name_examples(name, token):
    assert escape_w2v_name(name) == token
    assert unescape_w2v_name(token) == name
    if name:  # the escaping is plain percent-encoding: any URL decoder reverses it
        assert unquote(token) == name


def test_escape_w2v_name_is_injective_and_reversible():
    rng = np.random.default_rng(1)
    pool = list("ab_%2 \t\n\r\x0b\x0c\x1c\x85\u00a0\u2028\u3000\x00\x7f#é北") + ["%20", "%25"]
    names = {"".join(rng.choice(pool, size=rng.integers(0, 6))) for _ in range(3000)} | set(TRICKY)
    tokens = {escape_w2v_name(n): n for n in names}
    assert len(tokens) == len(names)
    for tok, name in tokens.items():
        assert tok and tok.split() == [tok] and tok.isprintable()
        assert unescape_w2v_name(tok) == name


def test_w2v_keeps_every_row_in_id_order(tmp_path):
    t = make_trained(TRICKY, dim=3)
    (path,) = export(t, tmp_path, "w2v")
    tokens, vecs = read_w2v(path)
    assert len(set(tokens)) == len(TRICKY)
    assert [unescape_w2v_name(tok) for tok in tokens] == TRICKY
    assert np.array_equal(bits(vecs), bits(t.model.entity_embeddings.numpy()))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # reversible without a mapping file


def test_w2v_refuses_duplicate_names(tmp_path):
    with pytest.raises(ValueError, match="'dup' occurs more than once"):
        export(make_trained(["x", "dup", "y", "dup"]), tmp_path / "o", "w2v")
    assert not (tmp_path / "o").exists()


def test_gensim_loads_w2v_rows_in_order(tmp_path):
    gensim = pytest.importorskip("gensim")
    t = make_trained(TRICKY, dim=4, seed=3)
    (path,) = export(t, tmp_path, "w2v")
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=False)
    assert len(kv) == len(TRICKY)
    assert [unescape_w2v_name(k) for k in kv.index_to_key] == TRICKY
    assert all(kv.get_index(escape_w2v_name(n)) == i for i, n in enumerate(TRICKY))
    assert np.array_equal(bits(kv.vectors), bits(t.model.entity_embeddings.numpy()))


# ---- float precision -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tsv_values_are_bit_exact(tmp_path, seed):
    names = [f"e{i}" for i in range(40)]
    t = make_trained(names, dim=7, seed=seed, reciprocal=True)
    export(t, tmp_path, "tsv")
    for kind in ("entity", "relation"):
        path = tmp_path / f"x_DistMult_{kind}.tsv"
        table = t.model.tables[kind].numpy()
        loaded = np.loadtxt(path, delimiter="\t", usecols=range(1, 8), dtype=np.float32, comments=None, ndmin=2)
        assert np.array_equal(bits(loaded), bits(table))
        rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
        assert np.array_equal(bits([[np.float32(v) for v in r[1:]] for r in rows]), bits(table))
    assert [r[0] for r in rows] == ["r0", "r1", "r0_inverse", "r1_inverse"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w2v_values_are_bit_exact(tmp_path, seed):
    t = make_trained([f"e{i}" for i in range(40)], dim=7, seed=seed)
    (path,) = export(t, tmp_path, "w2v")
    loaded = np.loadtxt(path, delimiter=" ", skiprows=1, usecols=range(1, 8), dtype=np.float32, comments=None)
    assert np.array_equal(bits(loaded), bits(t.model.entity_embeddings.numpy()))
    assert np.array_equal(bits(read_w2v(path)[1]), bits(t.model.entity_embeddings.numpy()))


# ---- names the TSV files cannot hold ---------------------------------------------------------------
@pytest.mark.parametrize("bad", ["a\tb", "a\nb", "a\rb", "a\u2028b", "trailing\t"])
def test_tsv_refuses_tab_and_line_break_names(tmp_path, bad):
    with pytest.raises(ValueError, match=re.escape(f"entity name {bad!r} contains a tab")):
        export(make_trained(["ok", bad, "a\tz"]), tmp_path / "o", "tsv")
    rel = "r\tx"
    with pytest.raises(ValueError, match=re.escape(f"relation name {rel!r} contains a tab")):
        export(make_trained(["ok"], relations=["r", rel]), tmp_path / "o", "tsv")
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_id_maps_keep_tabs_and_refuse_line_breaks(tmp_path, fmt):
    names = ["a\tb", "", "c d", "%"]
    export(make_trained(names), tmp_path / "ok", fmt)
    assert read_vocab(tmp_path / "ok" / "entities.tsv") == names
    with pytest.raises(ValueError, match=r"entity name 'a\\nb' contains a line break"):
        export(make_trained(["x", "a\nb"]), tmp_path / "bad", fmt)
    assert not (tmp_path / "bad").exists()


# ---- no half-written files -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_failed_write_keeps_old_files_and_leaves_no_tmp(tmp_path, fmt, monkeypatch):
    t = make_trained(["a", "b c"])
    first = export(t, tmp_path, fmt)
    before = {p: p.read_bytes() for p in first}
    err = OSError(errno.ENOSPC, "No space left on device")

    def full(fd):  # the disk fills up after the data went out, before the rename
        raise err

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        export(make_trained(["a", "b c"], seed=9), tmp_path, fmt)
    assert info.value is err
    assert sorted(tmp_path.iterdir()) == sorted(before)  # no *.tmp, nothing new
    assert {p: p.read_bytes() for p in first} == before


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_read_only_folder_raises_permission_error(tmp_path, fmt):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        try:
            (out / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("this user may write into read-only folders (root)")
        with pytest.raises(PermissionError):
            export(make_trained(["a"]), out, fmt)
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


def test_exported_files_get_the_umask_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    for fmt in EXPORT_FORMATS:
        for p in export(make_trained(["a"]), tmp_path / fmt, fmt):
            assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
