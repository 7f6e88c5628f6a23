"""The binary load cache of :mod:`kgengine.data`: parse a text data set once, map it thereafter.

A load's result (a :class:`Built`: vocabularies, id arrays per split, warnings) is cached
(``cache=True``) in ``<data_path>/.kgengine_cache/`` when that folder may be written, else in
``$KGENGINE_CACHE_DIR/<hash>/`` or ``~/.cache/kgengine/<hash>/`` (hash of the absolute data
path): id triples as ``.npy`` (memory-mapped on later loads), the vocabularies, and a manifest
of the sources' sizes and mtimes (and CRC of a source modified less than 2 s before it was read)
and of the options that change the result. A changed source or option, or a cache that fails
its own checks (sizes, CRCs, shapes, id ranges), is rebuilt; a cache that cannot be written
only warns, once. An entry is written into a temporary folder and renamed into place, so a
concurrent or killed load never leaves a half-written entry behind.

This module knows nothing of text formats: the caller passes the source files, the options
that shape the result, and a ``build()`` that parses them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["CACHE_VERSION", "CACHE_DIRNAME", "SPLITS", "Built", "load_cached"]

CACHE_VERSION = 1
CACHE_DIRNAME = ".kgengine_cache"
SPLITS = ("train", "valid", "test")  # the splits of every data set, in order; an entry holds one array each
_RACY_NS = 2_000_000_000       # a source modified this close to its cache may change unseen by mtime: hash it
_CACHE_WARNED: set[str] = set()


@dataclass
class Built:
    """What a load builds from text, and what a cache entry holds."""

    entities: list[str]
    relations: list[str]
    arrays: dict[str, np.ndarray]  # split -> int64 (n, 3) of (head, relation, tail) ids
    messages: list[str]  # warnings, replayed on cached loads


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.absolute()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _writable(d: Path) -> bool:
    """May we write in ``d``? As root os.access says yes to everything, so a folder whose
    mode lets nobody write (a read-only data set) counts as read-only all the same."""
    try:
        return os.access(d, os.W_OK | os.X_OK) and bool(d.stat().st_mode & 0o222)
    except OSError:
        return False


def _cache_roots(data_path: Path) -> tuple[list[Path], list[Path]]:
    """(folders to look in, folders to write to), best first."""
    local = data_path / CACHE_DIRNAME
    local_ok = _writable(local) if local.is_dir() else _writable(data_path)
    try:
        base = Path(os.environ.get("KGENGINE_CACHE_DIR") or Path.home() / ".cache" / "kgengine")
    except RuntimeError:  # no home directory
        return [local], [local] if local_ok else []
    other = base / hashlib.sha256(str(data_path.absolute()).encode()).hexdigest()[:16]
    return [local, other], ([local] if local_ok else []) + [other]


def load_cached(data_path: Path, files: list[Path], opts: dict, cache: bool, build: Callable[[], Built]) -> Built:
    """``build()``, or its cached result when the sources and options are those it was built from."""
    stamps = None
    if cache and all(f.is_file() for f in files):  # a missing file: let the reader raise, in its order
        stamps = [_stamp(f) for f in files]
        key = "v%d-%s" % (CACHE_VERSION, hashlib.sha256(json.dumps(
            [opts, [s["path"] for s in stamps]], sort_keys=True).encode()).hexdigest()[:20])
        look, write = _cache_roots(data_path)
        for root in look:
            built = _cache_read(root / key, opts, stamps)
            if built is not None:
                for m in built.messages:
                    warnings.warn(m, stacklevel=4)
                return built
        now = time.time_ns()
        try:
            for s in stamps:  # mtime alone cannot tell a same-size rewrite within its clock tick
                if s["mtime_ns"] >= now - _RACY_NS:
                    s["crc32"] = _crc32(Path(s["path"]))
        except OSError:
            stamps = None  # unreadable: the reader reports it
    built = build()
    for m in built.messages:
        warnings.warn(m, stacklevel=4)
    if stamps is not None and [_stamp(f) for f in files] == [{k: s[k] for k in ("path", "size", "mtime_ns")}
                                                             for s in stamps]:  # unchanged while we read it
        _cache_write(write, key, {"version": CACHE_VERSION, "options": opts, "sources": stamps}, built, data_path)
    return built


def _cache_read(entry: Path, opts: dict, stamps: list[dict]) -> Built | None:
    """The cached result in ``entry``, or None if it is absent, stale or fails any check."""
    try:
        m = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        if m.get("version") != CACHE_VERSION or m.get("options") != opts:
            return None
        if [{k: s[k] for k in ("path", "size", "mtime_ns")} for s in m["sources"]] != stamps:
            return None
        if any("crc32" in s and _crc32(Path(s["path"])) != s["crc32"] for s in m["sources"]):
            return None
        for fname, info in m["files"].items():
            p = entry / fname
            if p.stat().st_size != info["size"] or _crc32(p) != info["crc32"]:
                return None
        arrays = {}
        for s in SPLITS:
            n = m["rows"][s]
            a = np.load(entry / f"{s}.npy", mmap_mode="c", allow_pickle=False) if n else np.empty((0, 3), np.int64)
            if a.dtype != np.int64 or a.shape != (n, 3):
                return None
            arrays[s] = a  # copy-on-write map: writable for torch, the file itself never changes
        vocab = []
        for kind in ("entities", "relations"):
            text = (entry / f"{kind}.txt").read_bytes().decode("utf-8")
            names = text.split("\n") if m[kind] else []
            if len(names) != m[kind]:
                return None
            vocab.append(names)
        if not all(_ids_in_range(a, len(vocab[0]), len(vocab[1])) for a in arrays.values()):
            return None  # ids in range: a cache that passes this cannot index out of bounds
        return Built(vocab[0], vocab[1], arrays, list(m["messages"]))
    except Exception:  # whatever is wrong with a cache (truncated, garbled, foreign), it is rebuilt
        return None


def _ids_in_range(a: np.ndarray, ne: int, nr: int) -> bool:
    if not len(a):
        return True
    lo, hi = a.min(axis=0), a.max(axis=0)
    return bool(lo.min() >= 0 and max(hi[0], hi[2]) < ne and hi[1] < nr)


def _cache_write(roots: list[Path], key: str, manifest: dict, built: Built, data_path: Path) -> None:
    """Write the cache entry into the first root that takes it, atomically (temp folder + rename)."""
    errors = []
    for root in roots:
        tmp = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
            os.chmod(tmp, root.stat().st_mode & 0o777)  # mkdtemp's 0700 would hide a shared folder's cache
            for s in SPLITS:
                np.save(tmp / f"{s}.npy", np.ascontiguousarray(built.arrays[s]), allow_pickle=False)
            (tmp / "entities.txt").write_bytes("\n".join(built.entities).encode("utf-8"))
            (tmp / "relations.txt").write_bytes("\n".join(built.relations).encode("utf-8"))
            files = {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in sorted(tmp.iterdir())}
            manifest = dict(manifest, files=files, rows={s: len(built.arrays[s]) for s in SPLITS},
                            entities=len(built.entities), relations=len(built.relations), messages=built.messages)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            final, old = root / key, root / f".old-{key}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(final, old)  # a directory cannot be replaced in one rename
            except FileNotFoundError:
                old = None
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # a concurrent load wrote it first
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)  # open memory maps of it stay valid
            for left in root.glob(f".*-{key}-*"):  # what killed loads left behind
                if time.time() - left.stat().st_mtime > 3600:
                    shutil.rmtree(left, ignore_errors=True)
            return
        except (OSError, ValueError) as e:  # never fail a load over its cache
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            errors.append(f"{root}: {getattr(e, 'strerror', None) or e}")
    if str(data_path) not in _CACHE_WARNED:
        _CACHE_WARNED.add(str(data_path))
        warnings.warn(f"{data_path}: could not write the load cache ({'; '.join(errors)}); the data loaded, "
                      "but the next load parses the text again (set KGENGINE_CACHE_DIR or pass cache=False)",
                      stacklevel=5)
