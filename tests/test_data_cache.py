"""kgengine.data's binary load cache: where it goes, when it is used, rebuilt, or given up on."""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import kgengine.data as D
import kgengine.datacache as C
import kgengine.textread as T
from kgengine.data import CACHE_DIRNAME, DataError, load_dataset, load_raw_triples, load_udd

TRAIN = [("a", "r1", "b"), ("b", "r1", "c"), ("c", "r2", "d"), ("d", "r2", "e"), ("e", "r3", "a")]
VALID = [("a", "r2", "c"), ("b", "r3", "d")]
TEST = [("c", "r1", "e"), ("d", "r1", "zz")]  # zz: unseen in train

pytestmark = pytest.mark.filterwarnings("ignore:.*never occur in train")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A private fallback cache folder and a fresh warn-once memory for every test."""
    monkeypatch.setenv("KGENGINE_CACHE_DIR", str(tmp_path / "home-cache"))
    monkeypatch.setattr(C, "_CACHE_WARNED", set())


def _lines(triples):
    return "".join("\t".join(t) + "\n" for t in triples)


def _kg_dir(root: Path, name="kg") -> Path:
    d = root / name
    d.mkdir()
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        (d / f"{split}.txt").write_text(_lines(triples))
    return d


def _load(d, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(data_path=d, **kw)


def _named(kg, split):
    return [(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in kg.split(split).tolist()]


def _entries(d: Path) -> list[Path]:
    root = d / CACHE_DIRNAME
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def _same(a, b):
    assert a.entities == b.entities and a.relations == b.relations and a.name == b.name
    for s in ("train", "valid", "test"):
        assert torch.equal(a.split(s), b.split(s))


@pytest.fixture
def no_parse(monkeypatch):
    """Make any parse fail: a load that succeeds came from the cache."""
    def boom(*a, **k):
        raise AssertionError("parsed the text again")

    def arm():
        monkeypatch.setattr(T, "_read_table", boom)
    return arm


def test_first_load_writes_manifest_arrays_and_vocabularies(tmp_path):
    d = _kg_dir(tmp_path)
    kg = _load(d)
    (entry,) = _entries(d)
    m = json.loads((entry / "manifest.json").read_text())
    assert m["version"] == C.CACHE_VERSION
    assert m["options"] == {"kind": "raw_udd", "format": "raw_udd_hrt", "delimiter": "\t", "unseen": "keep",
                            "header": False, "data_files": None}
    srcs = {Path(s["path"]).name: s for s in m["sources"]}
    assert set(srcs) == {"train.txt", "valid.txt", "test.txt"}
    st = (d / "train.txt").stat()
    assert (srcs["train.txt"]["size"], srcs["train.txt"]["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert np.array_equal(np.load(entry / "train.npy"), kg.train.numpy())
    assert (entry / "entities.txt").read_text().split("\n") == kg.entities
    assert m["rows"] == {"train": 5, "valid": 2, "test": 2}
    assert not [p for p in (d / CACHE_DIRNAME).iterdir() if p.name.startswith(".")]  # no temp folders left


def test_second_load_skips_parsing_and_maps_the_arrays(tmp_path, no_parse):
    d = _kg_dir(tmp_path)
    first = _load(d)
    no_parse()
    second = _load(d)
    _same(first, second)
    if Path("/proc/self/maps").exists():
        (entry,) = _entries(d)
        assert str(entry / "train.npy") in Path("/proc/self/maps").read_text()  # memory-mapped, not read
    second.train[0, 0] = 3  # writable (copy-on-write): the cache file is not changed
    _same(first, _load(d))


def test_cached_load_replays_warnings(tmp_path):
    d = _kg_dir(tmp_path)
    for _ in range(2):
        with pytest.warns(UserWarning, match=r"1 entities/relations never occur in train \(first: \['zz'\]\)"):
            load_dataset(data_path=d)
    assert len(_entries(d)) == 1


@pytest.mark.parametrize("change", ["append", "same_size_same_mtime", "touch"])
def test_changed_source_invalidates(tmp_path, change):
    d = _kg_dir(tmp_path)
    _load(d)
    f = d / "valid.txt"
    st = f.stat()
    if change == "append":
        f.write_text(_lines(VALID + [("e", "r1", "a")]))
    elif change == "same_size_same_mtime":  # caught by the content hash of a just-written source
        f.write_text(_lines([("b", "r2", "c"), ("b", "r3", "d")]))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert f.stat().st_size == st.st_size
    else:
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    kg = _load(d)
    assert _named(kg, "valid") == _named(_load(d, cache=False), "valid")
    if change != "touch":
        assert _named(kg, "valid") != VALID


def test_old_sources_are_not_hashed(tmp_path):
    d = _kg_dir(tmp_path)
    old = 1_600_000_000
    for f in d.iterdir():
        os.utime(f, (old, old))
    _load(d)
    (entry,) = _entries(d)
    assert not any("crc32" in s for s in json.loads((entry / "manifest.json").read_text())["sources"])


@pytest.mark.parametrize("opts", [dict(unseen="drop"), dict(header=True), dict(fmt="raw_udd_htr"),
                                  dict(delimiter=","), dict(data_files=["train.txt", "valid.txt", "test.txt"])])
def test_other_options_do_not_reuse_the_cache(tmp_path, opts):
    d = _kg_dir(tmp_path)
    if opts.get("delimiter") == ",":  # lines of three fields by tab and by comma alike
        for f in d.glob("*.txt"):
            f.write_text("".join(f"{h},{h}\t{r},{r}\t{t}\n" for h, r, t in
                                 (line.split("\t") for line in f.read_text().splitlines())))
    base = _load(d)
    other = _load(d, **opts)
    assert len(_entries(d)) == 2
    _same(other, _load(d, cache=False, **opts))  # the cached and the parsed result of these options agree
    _same(_load(d, **opts), other)
    if opts.get("unseen") == "drop":
        assert len(other.test) == 1 and len(base.test) == 2


@pytest.mark.parametrize("damage", ["truncate_npy", "flip_npy_byte", "garble_manifest", "drop_vocab_line",
                                    "remove_npy", "foreign_manifest", "out_of_range_ids"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    d = _kg_dir(tmp_path)
    good = _load(d)
    (entry,) = _entries(d)
    npy, man = entry / "train.npy", entry / "manifest.json"
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:-8])
    elif damage == "flip_npy_byte":
        b = bytearray(npy.read_bytes())
        b[-1] ^= 1
        npy.write_bytes(bytes(b))
    elif damage == "garble_manifest":
        man.write_text(man.read_text()[:40])
    elif damage == "drop_vocab_line":
        (entry / "entities.txt").write_text("\n".join((entry / "entities.txt").read_text().split("\n")[:-1]))
    elif damage == "remove_npy":
        npy.unlink()
    elif damage == "foreign_manifest":
        man.write_text(json.dumps({"version": C.CACHE_VERSION, "hello": 1}))
    else:  # ids past the vocabulary, with a manifest that agrees: the range check catches it
        a = np.load(npy)
        a[0, 0] = 999
        np.save(npy, a)
        m = json.loads(man.read_text())
        m["files"]["train.npy"] = {"size": npy.stat().st_size, "crc32": C._crc32(npy)}
        man.write_text(json.dumps(m))
    _same(_load(d), good)
    (entry,) = _entries(d)  # and the entry is whole again
    stamps = [C._stamp(d / f"{s}.txt") for s in ("train", "valid", "test")]
    assert C._cache_read(entry, json.loads(man.read_text())["options"], stamps)


def test_read_only_data_folder_uses_the_fallback_cache(tmp_path, no_parse):
    d = _kg_dir(tmp_path)
    d.chmod(0o555)
    try:
        first = _load(d)
        assert not (d / CACHE_DIRNAME).exists()
        (home,) = list((tmp_path / "home-cache").iterdir())
        assert len(home.name) == 16 and (home / next(home.iterdir()).name / "manifest.json").is_file()
        no_parse()
        _same(_load(d), first)
    finally:
        d.chmod(0o755)


def test_unwritable_cache_warns_once_and_loads(tmp_path, monkeypatch):
    d = _kg_dir(tmp_path)
    d.chmod(0o555)
    (tmp_path / "blocker").write_text("a file, not a folder")
    monkeypatch.setenv("KGENGINE_CACHE_DIR", str(tmp_path / "blocker"))
    try:
        with pytest.warns(UserWarning, match="could not write the load cache") as rec:
            kg = load_dataset(data_path=d)
        assert str(d) in str([w.message for w in rec])
        assert _named(kg, "train") == TRAIN
        with warnings.catch_warnings(record=True) as again:
            warnings.simplefilter("always")
            load_dataset(data_path=d)
        assert not [w for w in again if "load cache" in str(w.message)]
    finally:
        d.chmod(0o755)


def test_cache_false_neither_reads_nor_writes(tmp_path, monkeypatch):
    d = _kg_dir(tmp_path)
    _load(d, cache=False)
    assert not (d / CACHE_DIRNAME).exists()
    _load(d)
    monkeypatch.setattr(C, "_cache_read", lambda *a: pytest.fail("read the cache"))
    _load(d, cache=False)
    load_raw_triples(d, cache=False)


def test_builtin_datasets_are_not_cached():
    kg = load_dataset("nations")
    assert not (Path(D.__file__).parent / "datasets" / "nations" / CACHE_DIRNAME).exists()
    assert kg.num_entities == 14


def test_rewrite_replaces_the_entry_atomically(tmp_path):
    d = _kg_dir(tmp_path)
    _load(d)
    (d / "train.txt").write_text(_lines(TRAIN + [("a", "r3", "e")]))
    kg = _load(d)
    assert len(kg.train) == 6 and len(_entries(d)) == 1
    assert not [p for p in (d / CACHE_DIRNAME).iterdir() if p.name.startswith(".")]  # no .tmp-/.old- left


def test_errors_are_not_cached(tmp_path):
    d = _kg_dir(tmp_path)
    (d / "test.txt").write_text("c\tr1\n")
    for _ in range(2):
        with pytest.raises(DataError, match="test.txt:1: expected 3 fields"):
            _load(d)
    assert not _entries(d)


def test_udd_is_cached(tmp_path, no_parse):
    d = tmp_path / "udd"
    d.mkdir()
    (d / "entities.dict").write_text("0\tx\n1\ty\n2\tz\n")
    (d / "relations.dict").write_text("0\tr\n")
    for s in ("train", "valid", "test"):
        (d / f"{s}.txt").write_text("0\t0\t1\n2\t0\t0\n")
    first = load_udd(d)
    assert len(_entries(d)) == 1
    no_parse()
    _same(load_udd(d), first)
    _same(load_dataset(data_path=d, fmt="udd_hrt"), load_udd(d, name="udd"))


READERS = ["pyarrow", "pandas"] if T.arrow_enabled() else ["pandas"]


@pytest.mark.parametrize("reader", READERS)
def test_generated_graph_cached_equals_parsed(tmp_path, monkeypatch, reader):
    rng = np.random.default_rng(1)
    d = tmp_path / "big"
    d.mkdir()
    for s, n in (("train", 20000), ("valid", 500), ("test", 500)):
        h, r, t = rng.integers(0, 3000, n), rng.integers(0, 40, n), rng.integers(0, 3000, n)
        (d / f"{s}.txt").write_text("".join(f"e{a}\t{b:03d}\t{c}\n" for a, b, c in zip(h, r, t)))
    parsed = {}
    for other in READERS:  # both readers parse alike
        monkeypatch.setattr(T, "_ARROW", other == "pyarrow")
        parsed[other] = _load(d, cache=False)
        _same(parsed[other], parsed[READERS[0]])
    monkeypatch.setattr(T, "_ARROW", reader == "pyarrow")
    _same(_load(d), parsed[reader])  # written by this reader
    _same(_load(d), parsed[reader])
