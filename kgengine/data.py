"""Knowledge-graph data: vocabularies and (h, r, t) id tensors per split.

A :class:`KG` holds an entity and a relation vocabulary (id -> name lists) and
three ``int64`` tensors ``train``, ``valid``, ``test`` of shape ``(n, 3)`` whose
columns are (head, relation, tail) ids.

Formats (DGL-KE's names):

* ``raw_udd_{hrt}``: files of names, tab separated, columns in the order the
  suffix gives (``raw_udd_hrt`` is ``head<TAB>rel<TAB>tail``, the layout of
  ``../shared/data``). Files: train, valid, test. Ids are given in order of
  first appearance: train heads and tails interleaved row by row (relations
  likewise), then names that only valid/test use.
* ``udd_{hrt}``: ``entities.dict`` and ``relations.dict`` (``id<TAB>name``)
  then train, valid, test files of integer ids, columns as the suffix says.

Text rules (every file):

* UTF-8. A byte-order mark at the start of a file is dropped (``utf-8-sig``);
  bytes that are not UTF-8 raise :class:`DataError` with ``file:line``.
* LF, CRLF and a bare CR all end a line (Python's universal newlines): a CR
  inside a line splits it in two, which the field count then usually refuses
  with ``file:line``. Line numbers count every such break.
* Blank lines (only whitespace) are skipped but counted. Whitespace around a
  field is stripped (trailing spaces, CR residue, padding); whitespace inside a
  name is kept, so with ``delimiter=","`` a tab inside a name is part of it.
  There is no quoting and no comment syntax: ``"`` and ``#`` are name characters.
* ``header=True`` skips the first non-blank line of every triple file, whatever
  it holds (not the ``.dict`` files). Without it, a first line whose fields are
  exactly one of ``head relation tail``, ``h r t``, ``subject predicate object``,
  ``source relation target`` (any case, any order) is loaded as a triple with
  one warning naming ``file:line``.
* Ids (``udd_*`` triple files and the id column of ``.dict`` files) are plain
  ASCII decimal integers: trailing whitespace is allowed, but not a leading
  ``+`` or space, ``_``, or non-ASCII digits, all of which ``int()`` would
  take (``-1`` reads as an id out of range). A name listed twice in a ``.dict``
  file is refused with ``file:line``.

Policy for entities (or relations) that occur in valid/test but never in
train (``unseen=``):

* ``"keep"`` (default, what DGL-KE and the published FB15k-237/WN18RR protocol
  do): they get ids and stay in the evaluation; their vectors are never
  trained. A warning names how many and the first few.
* ``"drop"``: the triples that use them are removed from valid/test, with a
  warning naming how many (PyKEEN's behaviour).
* ``"error"``: raise :class:`DataError` naming the file, line and name.

Speed and the cache: files are parsed in chunks by pandas' C reader and names
become ids through ``pd.factorize`` and a hashed vocabulary (no Python loop per
line); a file the vectorised reader cannot take exactly (a malformed line, bad
bytes, odd blank lines) is re-read line by line, which gives the ``file:line``
error or the same result. The result is cached (``cache=True``) in
``<data_path>/.kgengine_cache/`` when that folder may be written, else in
``$KGENGINE_CACHE_DIR/<hash>/`` or ``~/.cache/kgengine/<hash>/`` (hash of the
absolute data path): id triples as ``.npy`` (memory-mapped on later loads),
the vocabularies, and a manifest of the sources' sizes and mtimes (and CRC of
a source modified less than 2 s before it was read) and of the options that
change the result. A changed source or option, or a cache that fails its own
checks (sizes, CRCs, shapes, id ranges), is rebuilt; a cache that cannot be
written only warns, once. Built-in datasets are not cached.
"""
from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
import zlib
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .errors import UnknownNameError

__all__ = [
    "KG",
    "DataError",
    "BUILTIN_DATASETS",
    "load_dataset",
    "load_raw_triples",
    "load_udd",
    "read_triples",
]

BUILTIN_DATASETS = ("kinships", "umls", "nations")
_BUILTIN_DIR = Path(__file__).resolve().parent / "datasets"
_SPLITS = ("train", "valid", "test")
UNSEEN_POLICIES = ("keep", "drop", "error")

# First lines taken for a header row (lower case, any column order); nothing else is guessed.
_HEADER_WORDS = [sorted(w) for w in (("head", "relation", "tail"), ("h", "r", "t"),
                                     ("subject", "predicate", "object"), ("source", "relation", "target"))]

CACHE_VERSION = 1
CACHE_DIRNAME = ".kgengine_cache"
_CHUNK_ROWS = 1 << 20          # rows per pandas chunk: bounds the Python strings alive at once
_RACY_NS = 2_000_000_000       # a source modified this close to its cache may change unseen by mtime: hash it
_BAD_ID = np.iinfo(np.int64).min   # an id field that is not a plain decimal integer
_HUGE_ID = 1 << 62                 # >= 19 digits: out of range for any vocabulary
_CACHE_WARNED: set[str] = set()


class DataError(ValueError):
    """Bad input data; the message names the file and line where it can."""


@dataclass
class KG:
    """A knowledge graph with named entities/relations and id triples per split.

    Attributes:
        entities: entity names, index = id.
        relations: relation names, index = id.
        train, valid, test: ``LongTensor (n, 3)`` of (head, relation, tail) ids.
        name: dataset name (used in export file names).
    """

    entities: list[str]
    relations: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    name: str = "kg"
    _entity_index: dict[str, int] = field(default=None, repr=False)  # type: ignore[assignment]
    _relation_index: dict[str, int] = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for split in _SPLITS:
            t = getattr(self, split)
            if t.dtype != torch.int64 or t.dim() != 2 or t.shape[1] != 3:
                raise DataError(f"KG.{split} must be an int64 tensor of shape (n, 3), got {tuple(t.shape)} {t.dtype}")
            if not len(t):
                continue
            # per-column min/max: no copy of a (possibly memory-mapped) table
            (h0, h1), (r0, r1), (t0, t1) = (torch.aminmax(t[:, c]) for c in range(3))
            if min(h0, t0) < 0 or max(h1, t1) >= len(self.entities):
                raise DataError(f"KG.{split} has entity ids outside [0, {len(self.entities)})")
            if r0 < 0 or r1 >= len(self.relations):
                raise DataError(f"KG.{split} has relation ids outside [0, {len(self.relations)})")
        # the name -> id indexes are built on first use (a million-name dict costs ~0.1 s per load)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: str) -> torch.Tensor:
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {_SPLITS}")
        return getattr(self, name)

    def all_triples(self) -> torch.Tensor:
        """``(n_train + n_valid + n_test, 3)``: every known triple (the ranking filter)."""
        return torch.cat([self.train, self.valid, self.test])

    def entity_id(self, name: str) -> int:
        if self._entity_index is None:
            self._entity_index = dict(zip(self.entities, range(len(self.entities))))
        return lookup(self._entity_index, name, "entity")

    def relation_id(self, name: str) -> int:
        if self._relation_index is None:
            self._relation_index = dict(zip(self.relations, range(len(self.relations))))
        return lookup(self._relation_index, name, "relation")

    def remap(self, entities: Sequence[str], relations: Sequence[str]) -> "KG":
        """The same triples expressed in another vocabulary (e.g. a saved model's).

        Raises :class:`DataError` if a name of this KG is missing from the target vocabulary.
        """
        e_idx = {n: i for i, n in enumerate(entities)}
        r_idx = {n: i for i, n in enumerate(relations)}
        missing_e = [n for n in self.entities if n not in e_idx]
        missing_r = [n for n in self.relations if n not in r_idx]
        if missing_e or missing_r:
            raise DataError(
                f"the data has {len(missing_e)} entities and {len(missing_r)} relations that the model "
                f"does not know (first: {(missing_e + missing_r)[:5]})"
            )
        e_map = torch.tensor([e_idx[n] for n in self.entities], dtype=torch.int64)
        r_map = torch.tensor([r_idx[n] for n in self.relations], dtype=torch.int64)

        def conv(t: torch.Tensor) -> torch.Tensor:
            return torch.stack([e_map[t[:, 0]], r_map[t[:, 1]], e_map[t[:, 2]]], dim=1)

        return KG(list(entities), list(relations), conv(self.train), conv(self.valid), conv(self.test), self.name)

    def __repr__(self) -> str:
        return (
            f"KG(name={self.name!r}, entities={self.num_entities}, relations={self.num_relations}, "
            f"train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)})"
        )


def lookup(index: dict[str, int], name: str, kind: str) -> int:
    """``index[name]``, or an :class:`~kgengine.errors.UnknownNameError` (a ``KeyError``) that
    names the unknown ``kind`` (entity/relation)."""
    try:
        return index[name]
    except KeyError:
        raise UnknownNameError(f"unknown {kind} {name!r}: not among the {len(index)} known {kind} names") from None


def _column_order(fmt: str, data_path: Path | None = None) -> tuple[int, int, int]:
    """Column positions of (h, r, t) from a format suffix such as ``hrt`` or ``htr``."""
    suffix = fmt.rsplit("_", 1)[-1]
    if sorted(suffix) != ["h", "r", "t"]:
        where = f" for {data_path}" if data_path is not None else ""
        raise DataError(f"format {fmt!r}{where}: the suffix must be a permutation of 'hrt' (e.g. raw_udd_hrt)")
    return suffix.index("h"), suffix.index("r"), suffix.index("t")


# ---------------------------------------------------------------- line-by-line reader (reference)

def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` without the line break; BOM dropped; bad bytes raise with file:line."""
    try:
        f = open(path, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    with f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")  # newline=None has turned CRLF and CR into LF
            if not line.isascii():
                try:
                    line.encode("utf-8")  # surrogateescape kept each undecodable byte as a lone surrogate
                except UnicodeEncodeError as e:
                    byte = line[e.start].encode("utf-8", "surrogateescape")[0]
                    raw = line.encode("utf-8", "surrogateescape")
                    raise DataError(
                        f"{path}:{lineno}: not UTF-8: byte 0x{byte:02x} at character {e.start + 1} in {raw[:80]!r}"
                    ) from None
            yield lineno, line


def _iter_rows(path: Path, delimiter: str, ncols: int, header: bool = False) -> Iterator[tuple[int, list[str]]]:
    """``(line number, raw fields)`` for each non-blank line; malformed lines raise with file:line.
    ``header``: the first non-blank line is skipped unchecked."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        if header:
            header = False
            continue
        parts = line.split(delimiter)
        if len(parts) != ncols:
            raise DataError(
                f"{path}:{lineno}: expected {ncols} fields separated by {delimiter!r}, got {len(parts)}: {line[:80]!r}"
            )
        if any(not p.strip() for p in parts):
            raise DataError(f"{path}:{lineno}: empty field in {line[:80]!r}")
        yield lineno, parts


def _read_rows(path: Path, delimiter: str, ncols: int) -> list[tuple[int, list[str]]]:
    """``(line number, stripped fields)`` for each non-blank line; malformed lines raise with file:line."""
    return [(lineno, [p.strip() for p in parts]) for lineno, parts in _iter_rows(path, delimiter, ncols)]


def read_triples(path: str | os.PathLike, delimiter: str = "\t") -> list[tuple[str, str, str]]:
    """The ``(head, relation, tail)`` names of one file, in file order (blank lines skipped);
    a malformed line raises :class:`DataError` naming file and line."""
    return [(f[0], f[1], f[2]) for _, f in _read_rows(Path(path), delimiter, 3)]


def _rows_at(path: Path, header: bool, rows: Sequence[int]) -> dict[int, tuple[int, str]]:
    """``row -> (line number, line)`` for data rows (0-based, after a skipped header) of a
    file the vectorised reader has parsed: its rows are exactly the non-blank lines."""
    want, out, k = set(rows), {}, -1 - int(header)
    for lineno, line in _iter_lines(path):
        if line.strip():
            k += 1
            if k in want:
                out[k] = (lineno, line)
                if len(out) == len(want):
                    break
    return out


# ---------------------------------------------------------------- vectorised reader

class _Fallback(Exception):
    """The vectorised reader met something it does not take exactly; the line reader decides."""


_strip = np.frompyfunc(str.strip, 1, 1)


def _plain_id(s: str) -> int:
    t = s.rstrip()
    d = t[1:] if t[:1] == "-" else t
    if not (d.isascii() and d.isdigit()):  # int() would also take '+3', '1_0', ' 7', '٣'
        return _BAD_ID
    v = int(d) if len(d) < 19 else _HUGE_ID
    return -1 - v if t[:1] == "-" else v  # negative (even '-0'): reported as out of range


_id_values = np.frompyfunc(_plain_id, 1, 1)


def _ids(raw: np.ndarray) -> np.ndarray:
    """int64 value of each (unique) id string; ``_BAD_ID`` where it is not a plain integer."""
    return _id_values(raw).astype(np.int64) if len(raw) else np.zeros(0, np.int64)


# A column of a chunk: (codes, raw, stripped) with field i = raw[codes[i]]; raw holds distinct
# str objects (equal strings may still occur twice: consumers must not assume unique names).
Column = tuple[np.ndarray, np.ndarray, np.ndarray]


def _distinct(values: np.ndarray) -> Column:
    import pandas as pd

    values = np.ascontiguousarray(values, dtype=object)
    if not len(values):
        return np.zeros(0, np.int64), values, values
    # pandas' parser gives equal fields of a column chunk one shared str object (low_memory=False
    # makes that the whole chunk): factorizing the object addresses as integers is several times
    # faster than hashing every string, and leaves only the distinct objects to look up by name.
    addr = np.frombuffer((ctypes.c_ssize_t * len(values)).from_address(values.ctypes.data), dtype=np.intp)
    codes, _ = pd.factorize(addr)
    del addr  # a view of values' buffer: it must not outlive values
    raw = values[_first_index(codes)]
    return codes, raw, _strip(raw)  # only the distinct strings are stripped


def _read_table(path: Path, delimiter: str, ncols: int, header: bool, reduce: Callable[[list[Column]], Any],
                reset: Callable[[], None] = lambda: None) -> list:
    """``reduce(columns)`` for each chunk of rows of a delimited file (blank lines skipped,
    the first row dropped when ``header``). pandas parses; anything it cannot take exactly
    sends the whole file through the line reader (which raises the file:line error), after
    ``reset()`` undoes what ``reduce`` did with the chunks already read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return _read_table_fast(path, delimiter, ncols, header, reduce)
    except _Fallback:
        reset()
    rows = [parts for _, parts in _iter_rows(path, delimiter, ncols, header)]
    cols = [np.array([r[i] for r in rows], dtype=object) for i in range(ncols)]
    return [reduce([_distinct(c) for c in cols])]


def _read_table_fast(path: Path, delimiter: str, ncols: int, header: bool, reduce: Callable[[list[Column]], Any]) -> list:
    import pandas as pd

    if len(delimiter) != 1 or delimiter in "\r\n":
        raise _Fallback  # the C engine takes one-character separators only
    # pandas sizes its table by the first line it reads: a first line of more fields (even empty
    # trailing ones, "a<TAB>b<TAB>c<TAB>") makes it drop the extra fields of every line silently.
    # So check the lines up to the first data row here; a wide header goes to the line reader.
    rows = _iter_rows(path, delimiter, ncols, header)
    try:
        next(rows, None)
    finally:
        rows.close()
    if header:
        first = next((line for _, line in _iter_lines(path) if line.strip()), "")
        if len(first.split(delimiter)) > ncols:
            raise _Fallback
    out: list = []
    skip = header
    with warnings.catch_warnings():
        # a first line with too many fields only warns, and pandas drops the extra ones: refuse it
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            reader = pd.read_csv(
                path, sep=delimiter, header=None, names=list(range(ncols)), index_col=False,
                dtype=object,                                  # names stay strings ('007', 'nan', '1e5')
                quoting=csv.QUOTE_NONE, escapechar=None, comment=None,  # '"' and '#' are name characters
                na_filter=False, keep_default_na=False,        # no NaN guessing; a missing field reads as ''
                skip_blank_lines=True, engine="c", encoding="utf-8", encoding_errors="strict",  # drops a BOM
                chunksize=_CHUNK_ROWS, low_memory=False,       # a chunk is parsed in one go (see _distinct)
            )
            with reader:
                for df in reader:
                    if skip and len(df):
                        if all(not str(v).strip() for v in df.iloc[0]):
                            raise _Fallback  # a whitespace line pandas kept: the header is further down
                        df, skip = df.iloc[1:], False  # dropped unchecked, as the line reader does
                    cols = [_distinct(df[i].to_numpy(dtype=object)) for i in range(ncols)]
                    del df
                    # an empty field: a short row, an empty value, or a whitespace line pandas kept
                    if any((s == "").any() for _, _, s in cols):
                        raise _Fallback
                    out.append(reduce(cols))
        except (ValueError, OSError, pd.errors.ParserWarning):  # too many fields, bad bytes, no data, unreadable
            raise _Fallback from None
    if not out:  # pandas raises on an empty file; keep the line reader's view of "no rows" anyway
        raise _Fallback
    return out


def _first_index(codes: np.ndarray) -> np.ndarray:
    """Index of the first occurrence of each code of ``pd.factorize`` (codes in first-seen order)."""
    seen = np.maximum.accumulate(codes)  # a new code raises the running max
    return np.flatnonzero(np.concatenate([[True], seen[1:] > seen[:-1]]))


class _Collision(Exception):
    """Two different names with one 64-bit hash."""


class _Vocab:
    """Names -> ids in first-seen order, grown chunk by chunk.

    A chunk's distinct strings are looked up by their 64-bit ``hash()`` in a pandas Int64 index,
    then compared once with the name found: ~3x faster than a dict of a million names, whose
    lookups are cache misses. A true collision (two names, one hash) switches to a dict."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._arr = np.empty(0, dtype=object)   # names again, for vectorised comparison
        self._hashes = np.empty(0, dtype=np.int64)
        self._index: Any = None                 # pd.Index over _hashes
        self._dict: dict[str, int] | None = None

    def ids(self, cols: list[Column]) -> list[np.ndarray]:
        """Per-row ids of each column; names not yet known get the next ids in reading
        order (row by row, then column by column)."""
        if self._dict is None:
            try:
                return self._ids(cols, hashed=True)
            except _Collision:
                self._dict = dict(zip(self.names, range(len(self.names))))
        return self._ids(cols, hashed=False)

    def _ids(self, cols: list[Column], hashed: bool) -> list[np.ndarray]:
        import pandas as pd

        strs = [s for _, _, s in cols]
        if hashed:
            keys = [np.fromiter(map(_str_hash, s), np.int64, len(s)) for s in strs]
            known = []
            for k, s in zip(keys, strs):
                g = self._index.get_indexer(k) if self._index is not None else np.full(len(k), -1, np.int64)
                hit = np.flatnonzero(g >= 0)
                if not (self._arr[g[hit]] == s[hit]).all():
                    raise _Collision
                known.append(g)
        else:
            keys = strs
            known = [np.fromiter(map(self._dict.get, s, repeat(-1)), np.int64, len(s)) for s in strs]  # type: ignore[union-attr]
        new = [np.flatnonzero(k < 0) for k in known]
        if sum(map(len, new)):
            # the same new name in two columns (or two objects) becomes one
            nid, ukeys = pd.factorize(np.concatenate([k[i] for k, i in zip(keys, new)]))
            new_strs = np.concatenate([s[i] for s, i in zip(strs, new)])
            names = new_strs[_first_index(nid)]
            if hashed and not (names[nid] == new_strs).all():
                raise _Collision
            local, off = [], 0
            for k, i in zip(known, new):
                m = np.full(len(k), -1, np.int64)
                m[i] = nid[off:off + len(i)]
                local.append(m)
                off += len(i)
            x = np.stack([m[c] for m, (c, _, _) in zip(local, cols)], axis=1).ravel()
            order = pd.unique(x[x >= 0])  # new names in reading order
            base = len(self.names)
            gid = np.empty(len(names), np.int64)
            gid[order] = np.arange(base, base + len(order))
            for k, i, m in zip(known, new, local):
                k[i] = gid[m[i]]
            self._grow(names[order], ukeys[order] if hashed else None)
        return [k[c] for k, (c, _, _) in zip(known, cols)]

    def _grow(self, names: np.ndarray, hashes: np.ndarray | None) -> None:
        import pandas as pd

        base = len(self.names)
        self.names.extend(names.tolist())
        self._arr = np.concatenate([self._arr, names])
        if self._dict is not None:
            self._dict.update(zip(names.tolist(), range(base, base + len(names))))
        else:
            self._hashes = np.concatenate([self._hashes, hashes])
            self._index = pd.Index(self._hashes)  # rebuilding costs ~40 ms per million names

    def truncate(self, n: int) -> None:
        """Forget the names from id ``n`` on (a file is being read again)."""
        if len(self.names) > n:
            import pandas as pd

            del self.names[n:]
            self._arr, self._hashes = self._arr[:n], self._hashes[:n]
            self._index = pd.Index(self._hashes) if n else None
            if self._dict is not None:
                self._dict = dict(zip(self.names, range(n)))


_str_hash = hash  # tests swap in a weak hash to exercise the collision path


def _header_like(fields: Sequence[str]) -> bool:
    return sorted(f.strip().lower() for f in fields) in _HEADER_WORDS


def _header_warning(found: list[tuple[Path, int, str]]) -> str:
    where = ", ".join(f"{p}:{ln}" for p, ln, _ in found)
    return (f"{where}: the first line {found[0][2][:80]!r} looks like a header row and is loaded as a triple; "
            "pass header=True to skip the first line of each triple file")


# ---------------------------------------------------------------- raw_udd_{hrt}

@dataclass
class _Built:
    entities: list[str]
    relations: list[str]
    arrays: dict[str, np.ndarray]
    messages: list[str]  # warnings, replayed on cached loads


def _split_files(data_path: Path, data_files: Sequence[str] | None, n_extra: int = 0) -> list[Path]:
    if data_files:
        if len(data_files) != n_extra + 3:
            raise DataError(f"--data_files (in {data_path}): expected {n_extra + 3} files, got {len(data_files)}: "
                            f"{list(data_files)}")
        return [Path(f) if os.path.isabs(f) else data_path / f for f in data_files]
    return [data_path / f"{s}.txt" for s in _SPLITS]


def _build_raw(paths: dict[str, Path], order: tuple[int, int, int], delimiter: str, unseen: str, header: bool) -> _Built:
    ents, rels = _Vocab(), _Vocab()

    def reduce(cols: list[Column]) -> np.ndarray:
        h, r, t = (cols[i] for i in order)
        hg, tg = ents.ids([h, t])  # entity ids in the order h0, t0, h1, t1, ...
        (rg,) = rels.ids([r])
        return np.stack([hg, rg, tg], axis=1)

    arrays = {}
    for split, path in paths.items():
        mark = len(ents.names), len(rels.names)
        chunks = _read_table(path, delimiter, 3, header, reduce,
                             reset=lambda: (ents.truncate(mark[0]), rels.truncate(mark[1])))
        arrays[split] = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        del chunks
    for split in _SPLITS:
        if not len(arrays[split]):
            raise DataError(f"{paths[split]}: the {split} split is empty")
    entities, relations = ents.names, rels.names
    del ents, rels
    messages = []
    if not header:
        ln = {s: _rows_at(paths[s], False, [0])[0] for s in _SPLITS}  # reads up to the first non-blank line
        found = [(paths[s], *ln[s]) for s in _SPLITS if _header_like(ln[s][1].split(delimiter))]
        if found:
            messages.append(_header_warning(found))

    # Unseen policy. Names first seen in a split hold the ids right after those of earlier splits.
    tr = arrays["train"]
    ne = ne_train = int(max(tr[:, 0].max(), tr[:, 2].max())) + 1
    nr = nr_train = int(tr[:, 1].max()) + 1
    for split in ("valid", "test"):
        a = arrays[split]
        unknown = (a[:, 0] >= ne) | (a[:, 2] >= ne) | (a[:, 1] >= nr)
        if not unknown.any():
            continue
        if unseen == "error":
            row = int(np.argmax(unknown))
            h, r, t = a[row].tolist()
            name = entities[h] if h >= ne else entities[t] if t >= ne else relations[r]
            lineno = _rows_at(paths[split], header, [row])[row][0]
            raise DataError(f"{paths[split]}:{lineno}: {name!r} does not occur in the training split "
                            "(pass unseen='keep' or 'drop' / --unseen keep|drop to accept it)")
        if unseen == "drop":
            arrays[split] = a[~unknown]
            messages.append(f"{paths[split]}: dropped {int(unknown.sum())} triples whose entity/relation is not "
                            "in train (unseen='drop')")
            continue
        ne2 = max(ne, int(a[:, 0].max()) + 1, int(a[:, 2].max()) + 1)
        nr2 = max(nr, int(a[:, 1].max()) + 1)
        new = set(entities[ne:ne2]) | set(relations[nr:nr2])
        messages.append(
            f"{paths[split]}: {len(new)} entities/relations never occur in train (first: "
            f"{_first_new(a, ne, ne2, nr, nr2, entities, relations)}); they are kept with untrained vectors "
            "(unseen='keep')"
        )
        ne, nr = ne2, nr2
    if unseen != "keep":
        entities, relations = entities[:ne_train], relations[:nr_train]
    return _Built(entities, relations, arrays, messages)


def _first_new(a: np.ndarray, e0: int, e1: int, r0: int, r1: int, entities: list[str], relations: list[str]) -> list[str]:
    """The first three new names of a split in reading order (row, then head, tail, relation)."""
    cands = []
    ht = a[:, [0, 2]].ravel()
    for e in range(e0, min(e1, e0 + 3)):
        i = int(np.argmax(ht == e))
        cands.append((i // 2, i % 2, entities[e]))
    for r in range(r0, min(r1, r0 + 3)):  # three of each suffice even when a name is both
        cands.append((int(np.argmax(a[:, 1] == r)), 2, relations[r]))
    return list(dict.fromkeys(n for *_, n in sorted(cands)))[:3]


def load_raw_triples(
    data_path: str | os.PathLike,
    fmt: str = "raw_udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    unseen: str = "keep",
    name: str | None = None,
    header: bool = False,
    cache: bool = True,
) -> KG:
    """Load a folder of name triples (``raw_udd_{hrt}``; the layout of ../shared/data)."""
    data_path = Path(data_path)
    order = _column_order(fmt, data_path)
    if unseen not in UNSEEN_POLICIES:
        raise ValueError(f"unseen={unseen!r}: expected one of {UNSEEN_POLICIES}")
    files = _split_files(data_path, data_files)
    opts = {"kind": "raw_udd", "format": fmt, "delimiter": delimiter, "unseen": unseen, "header": bool(header),
            "data_files": list(data_files) if data_files else None}
    built = _load_cached(data_path, files, opts, cache,
                         lambda: _build_raw(dict(zip(_SPLITS, files)), order, delimiter, unseen, header))
    return _to_kg(built, name or data_path.name)


# ---------------------------------------------------------------- udd_{hrt}

def _row_error(path: Path, header: bool, row: int, what: Callable[[str], str]) -> DataError:
    lineno, line = _rows_at(path, header, [row])[row]
    return DataError(f"{path}:{lineno}: {what(line)}")


def _read_dict(path: Path, delimiter: str) -> list[str]:
    """Names by id from an ``id<delimiter>name`` file; ids 0..n-1, each id and name once."""
    import pandas as pd

    def reduce(cols: list[Column]) -> tuple[np.ndarray, np.ndarray]:
        (ic, iraw, _), (nc, _, ns) = cols
        return _ids(iraw)[ic], ns[nc]

    chunks = _read_table(path, delimiter, 2, False, reduce)
    ids = np.concatenate([c[0] for c in chunks])
    names = np.concatenate([c[1] for c in chunks])
    if not len(ids):
        raise DataError(f"{path}: no entries")
    bad = ids == _BAD_ID
    dup_id = pd.Series(ids).duplicated().to_numpy()
    dup_name = pd.Series(names).duplicated().to_numpy()
    if (bad | dup_id | dup_name).any():  # the first such line, checks in line-reader order
        row = int(np.argmax(bad | dup_id | dup_name))
        if bad[row]:
            raise _row_error(path, False, row, lambda line: (
                f"expected '<id>{delimiter}<name>' with a plain decimal id (ASCII digits 0-9), "
                f"got id {line.split(delimiter)[0]!r}"))
        first = int(np.argmax(ids == ids[row])) if dup_id[row] else int(np.argmax(names == names[row]))
        lines = _rows_at(path, False, [first, row])
        if dup_id[row]:
            raise DataError(f"{path}:{lines[row][0]}: id {ids[row]} defined twice (first at line {lines[first][0]})")
        raise DataError(f"{path}:{lines[row][0]}: name {names[row]!r} listed twice, as ids {ids[first]} and "
                        f"{ids[row]} (first at line {lines[first][0]})")
    n = len(ids)
    if ids.min() < 0 or ids.max() != n - 1:
        present = np.zeros(n, dtype=bool)
        present[ids[(ids >= 0) & (ids < n)]] = True
        raise DataError(f"{path}: ids must be 0..{n - 1} without gaps (id {int(np.argmin(present))} is missing)")
    by_id = np.empty(n, dtype=object)
    by_id[ids] = names
    return by_id.tolist()


def _build_udd(ent_file: Path, rel_file: Path, paths: dict[str, Path], order: tuple[int, int, int],
               delimiter: str, header: bool) -> _Built:
    entities = _read_dict(ent_file, delimiter)
    relations = _read_dict(rel_file, delimiter)
    ne, nr = len(entities), len(relations)

    def reduce(cols: list[Column]) -> np.ndarray:
        return np.stack([_ids(cols[i][1])[cols[i][0]] for i in order], axis=1)

    arrays, messages = {}, []
    for split, path in paths.items():
        chunks = _read_table(path, delimiter, 3, header, reduce)
        a = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if not len(a):
            raise DataError(f"{path}: the {split} split is empty")
        bad = (a == _BAD_ID).any(axis=1)
        bad_e = (a[:, 0] < 0) | (a[:, 0] >= ne) | (a[:, 2] < 0) | (a[:, 2] >= ne)
        bad_r = (a[:, 1] < 0) | (a[:, 1] >= nr)
        if (bad | bad_e | bad_r).any():  # the first such line, checks in line-reader order
            row = int(np.argmax(bad | bad_e | bad_r))

            def what(line: str) -> str:
                f = [p.strip() for p in line.split(delimiter)]
                if bad[row]:
                    hint = "; it looks like a header row: pass header=True" if row == 0 and _header_like(f) else ""
                    return f"expected integer ids (plain ASCII digits), got {f}{hint}"
                if bad_e[row]:
                    return f"entity id out of range [0, {ne}) in {f}"
                return f"relation id out of range [0, {nr}) in {f}"
            raise _row_error(path, header, row, what)
        arrays[split] = a
    return _Built(entities, relations, arrays, messages)


def load_udd(
    data_path: str | os.PathLike,
    fmt: str = "udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    name: str | None = None,
    header: bool = False,
    cache: bool = True,
) -> KG:
    """Load DGL-KE's ``udd_{hrt}`` layout: entities.dict, relations.dict and id triples."""
    data_path = Path(data_path)
    order = _column_order(fmt, data_path)
    if data_files:
        files = _split_files(data_path, data_files, n_extra=2)
    else:
        files = [data_path / "entities.dict", data_path / "relations.dict", *_split_files(data_path, None)]
    opts = {"kind": "udd", "format": fmt, "delimiter": delimiter, "header": bool(header),
            "data_files": list(data_files) if data_files else None}
    built = _load_cached(data_path, files, opts, cache, lambda: _build_udd(
        files[0], files[1], dict(zip(_SPLITS, files[2:])), order, delimiter, header))
    return _to_kg(built, name or data_path.name)


def _to_kg(built: _Built, name: str) -> KG:
    tensors = {s: torch.from_numpy(built.arrays[s]) for s in _SPLITS}
    return KG(built.entities, built.relations, name=name, **tensors)


# ---------------------------------------------------------------- cache

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


def _load_cached(data_path: Path, files: list[Path], opts: dict, cache: bool, build: Callable[[], _Built]) -> _Built:
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


def _cache_read(entry: Path, opts: dict, stamps: list[dict]) -> _Built | None:
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
        for s in _SPLITS:
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
        return _Built(vocab[0], vocab[1], arrays, list(m["messages"]))
    except Exception:  # whatever is wrong with a cache (truncated, garbled, foreign), it is rebuilt
        return None


def _ids_in_range(a: np.ndarray, ne: int, nr: int) -> bool:
    if not len(a):
        return True
    lo, hi = a.min(axis=0), a.max(axis=0)
    return bool(lo.min() >= 0 and max(hi[0], hi[2]) < ne and hi[1] < nr)


def _cache_write(roots: list[Path], key: str, manifest: dict, built: _Built, data_path: Path) -> None:
    """Write the cache entry into the first root that takes it, atomically (temp folder + rename)."""
    errors = []
    for root in roots:
        tmp = None
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
            os.chmod(tmp, root.stat().st_mode & 0o777)  # mkdtemp's 0700 would hide a shared folder's cache
            for s in _SPLITS:
                np.save(tmp / f"{s}.npy", np.ascontiguousarray(built.arrays[s]), allow_pickle=False)
            (tmp / "entities.txt").write_bytes("\n".join(built.entities).encode("utf-8"))
            (tmp / "relations.txt").write_bytes("\n".join(built.relations).encode("utf-8"))
            files = {p.name: {"size": p.stat().st_size, "crc32": _crc32(p)} for p in sorted(tmp.iterdir())}
            manifest = dict(manifest, files=files, rows={s: len(built.arrays[s]) for s in _SPLITS},
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


# ---------------------------------------------------------------- entry point

def load_dataset(
    dataset: str | None = None,
    data_path: str | os.PathLike | None = None,
    fmt: str = "raw_udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    unseen: str = "keep",
    header: bool = False,
    cache: bool = True,
) -> KG:
    """Load a KG the way DGL-KE's ``--dataset/--data_path/--format/--data_files`` do.

    * ``load_dataset("kinships")``: a built-in dataset shipped in the package
      (one of :data:`BUILTIN_DATASETS`; never cached).
    * ``load_dataset(data_path="../shared/data/fb15k-237")``: any folder of
      train/valid/test.txt; with ``dataset`` too, ``data_path/dataset`` is used
      when that folder exists (DGL-KE's layout).

    ``header=True`` skips the first non-blank line of each triple file;
    ``cache=False`` neither reads nor writes the binary cache (see the module doc).
    """
    if data_path is None:
        if dataset is None:
            raise ValueError("give a built-in --dataset name or a --data_path")
        if dataset.lower() not in BUILTIN_DATASETS:
            raise DataError(
                f"--dataset {dataset!r} is not built in (built-in: {', '.join(BUILTIN_DATASETS)}); "
                "pass --data_path to a folder with train/valid/test.txt"
            )
        data_path, dataset, cache = _BUILTIN_DIR / dataset.lower(), dataset.lower(), False
    data_path = Path(data_path)
    if dataset and (data_path / dataset).is_dir():
        data_path = data_path / dataset
    if not data_path.is_dir():
        raise DataError(f"--data_path {data_path}: not a folder")
    name = dataset or data_path.name
    if fmt.startswith("raw_udd_"):
        return load_raw_triples(data_path, fmt, data_files, delimiter, unseen, name, header, cache)
    if fmt.startswith("udd_"):
        return load_udd(data_path, fmt, data_files, delimiter, name, header, cache)
    raise DataError(f"--format {fmt!r} (for {data_path}): expected raw_udd_{{hrt}} or udd_{{hrt}} (any column order)")
