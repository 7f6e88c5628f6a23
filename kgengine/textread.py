"""Text readers of :mod:`kgengine.data`: delimited files of names or ids into id arrays.

Text rules (every file):

* UTF-8. A byte-order mark at the start of a file is dropped (``utf-8-sig``);
  bytes that are not UTF-8 raise :class:`~kgengine.errors.DataError` with ``file:line``.
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
  one warning naming ``file:line`` (:func:`header_warning`).
* Ids (``udd_*`` triple files and the id column of ``.dict`` files) are plain
  ASCII decimal integers: trailing whitespace is allowed, but not a leading
  ``+`` or space, ``_``, or non-ASCII digits, all of which ``int()`` would
  take (``-1`` reads as an id out of range). A name listed twice in a ``.dict``
  file is refused with ``file:line``.

Speed: with pyarrow installed, files are parsed by pyarrow's multi-threaded CSV reader in
chunks of Arrow strings, and names become ids in Arrow (``dictionary_encode`` over the
vocabulary so far and the chunk): no Python string per line, and the names become Python
strings once, at the end. Without pyarrow (or with ``KGENGINE_NO_PYARROW=1``), pandas' C reader
parses in chunks and names become ids through ``pd.factorize`` and a hashed vocabulary. Either
way there is no Python loop per line, and a file the vectorised reader cannot take exactly (a
malformed line, bad bytes, odd blank lines) is re-read line by line, which gives the
``file:line`` error or the same result.

The readers return plain lists and arrays; what a load does with them (the unseen policy, the
cache, the :class:`~kgengine.data.KG`) is :mod:`kgengine.data`'s.
"""
from __future__ import annotations

import csv
import ctypes
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import DataError

__all__ = ["read_rows", "rows_at", "header_warning", "read_name_triples", "read_dict", "read_id_triples"]

# First lines taken for a header row (lower case, any column order); nothing else is guessed.
_HEADER_WORDS = [sorted(w) for w in (("head", "relation", "tail"), ("h", "r", "t"),
                                     ("subject", "predicate", "object"), ("source", "relation", "target"))]
_CHUNK_ROWS = 1 << 20          # rows per pandas chunk: bounds the Python strings alive at once
# rows per pyarrow chunk (Arrow strings, no Python string per line); the next is parsed while one is reduced
_ARROW_CHUNK_ROWS = 1 << 21
_ARROW_CHUNK_BYTES = 1 << 27   # ... or fewer, once the chunk's parsed text reaches this
_ARROW_BLOCK = 1 << 22         # bytes pyarrow's CSV reader parses at once (blocks in parallel)
_BAD_ID = np.iinfo(np.int64).min   # an id field that is not a plain decimal integer
_HUGE_ID = 1 << 62                 # >= 19 digits: out of range for any vocabulary


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


def read_rows(path: Path, delimiter: str, ncols: int) -> list[tuple[int, list[str]]]:
    """``(line number, stripped fields)`` for each non-blank line; malformed lines raise with file:line."""
    return [(lineno, [p.strip() for p in parts]) for lineno, parts in _iter_rows(path, delimiter, ncols)]


def rows_at(path: Path, header: bool, rows: Sequence[int]) -> dict[int, tuple[int, str]]:
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


def _read_table(path: Path, delimiter: str, ncols: int, header: bool, reduce: Callable[[list], Any],
                reset: Callable[[], None] = lambda: None, arrow: bool = False) -> list:
    """``reduce(columns)`` for each chunk of rows of a delimited file (blank lines skipped,
    the first row dropped when ``header``). pyarrow (``arrow``: columns are Arrow string arrays
    of the raw fields) or pandas (columns are :data:`Column` s) parses; anything it cannot take
    exactly sends the whole file through the line reader (which raises the file:line error),
    after ``reset()`` undoes what ``reduce`` did with the chunks already read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return (_read_table_arrow if arrow else _read_table_fast)(path, delimiter, ncols, header, reduce)
    except _Fallback:
        reset()
    rows = [parts for _, parts in _iter_rows(path, delimiter, ncols, header)]
    if arrow:
        import pyarrow as pa

        return [reduce([pa.array([r[i] for r in rows], pa.string()) for i in range(ncols)])]
    cols = [np.array([r[i] for r in rows], dtype=object) for i in range(ncols)]
    return [reduce([_distinct(c) for c in cols])]


def _read_table_fast(path: Path, delimiter: str, ncols: int, header: bool,
                     reduce: Callable[[list[Column]], Any]) -> list:
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


# ---------------------------------------------------------------- pyarrow reader

# What str.strip() strips (str.isspace()); a test checks it against Python's own table.
_WS = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
       "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n|\r|\n")  # Python's universal newlines
_HEAD_BYTES = 1 << 20  # a BOM, leading blank lines and a header line must end within this
_LARGE_NAMES = 1 << 30  # a vocabulary of more bytes of names switches to Arrow's large_string
_ARROW: bool | None = None  # the pyarrow reader: None = used when pyarrow imports (tests set True/False)


def arrow_enabled(delimiter: str = "\t") -> bool:
    """Whether files with ``delimiter`` are read by pyarrow: pyarrow imports, ``KGENGINE_NO_PYARROW``
    is unset (or 0), and the delimiter is one ASCII character other than CR and LF."""
    global _ARROW
    if os.environ.get("KGENGINE_NO_PYARROW", "") not in ("", "0"):
        return False
    if _ARROW is None:
        try:
            import pyarrow.compute  # noqa: F401
            import pyarrow.csv  # noqa: F401
            _ARROW = True
        except Exception:  # absent, or broken: pandas reads
            _ARROW = False
    return _ARROW and len(delimiter) == 1 and delimiter.isascii() and delimiter not in "\r\n"


def _data_start(path: Path, header: bool) -> int:
    """Byte offset of the first data line: past a BOM, blank lines, and the header line when
    ``header``. ``_Fallback`` when those lines hold bad bytes or do not end within the first
    ``_HEAD_BYTES``, or when the data itself starts with a BOM (pyarrow would drop it)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES + 1)
    whole = len(head) <= _HEAD_BYTES
    pos = len(_BOM) if head.startswith(_BOM) else 0
    while pos < len(head):
        m = _EOL.search(head, pos)
        if m is None and not whole:
            raise _Fallback
        end = m.start() if m else len(head)
        try:
            blank = not head[pos:end].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise _Fallback from None
        if not blank:
            if not header:
                break
            header = False  # skipped unchecked, as the line reader does
        pos = m.end() if m else len(head)
    if head.startswith(_BOM, pos):
        raise _Fallback
    return pos


def _read_table_arrow(path: Path, delimiter: str, ncols: int, header: bool, reduce: Callable[[list], Any]) -> list:
    """``reduce(columns)`` per chunk of rows read by pyarrow's CSV reader, the columns being
    Arrow string (chunked) arrays of the raw fields. The reader takes no quotes, escapes, nulls
    or header row, checks UTF-8, and ends lines at LF, CRLF and CR, as the line reader does;
    it skips empty lines only, so a whitespace line, like a wrong field count or bad bytes,
    stops it (``_Fallback``). Empty fields are for ``reduce`` to refuse (``_Fallback``)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    start = _data_start(path, header)
    names = [str(i) for i in range(ncols)]
    read = pcsv.ReadOptions(use_threads=True, block_size=_ARROW_BLOCK, column_names=names)
    parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=False, double_quote=False, escape_char=False,
                              newlines_in_values=False, ignore_empty_lines=True)
    convert = pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, check_utf8=True, null_values=[],
                                  true_values=[], false_values=[], strings_can_be_null=False,
                                  quoted_strings_can_be_null=False)

    out: list = []
    try:
        with pa.OSFile(str(path)) as f:
            f.seek(start)
            with pcsv.open_csv(f, read_options=read, parse_options=parse, convert_options=convert) as reader, \
                    ThreadPoolExecutor(1, thread_name_prefix="kgengine-read") as ahead:
                stop = threading.Event()
                carry: list = []

                def next_chunk() -> Any:
                    """The next chunk of rows as a Table (None at the end); runs while the last is reduced."""
                    batches, rows, nbytes = carry[:], sum(b.num_rows for b in carry), sum(b.nbytes for b in carry)
                    carry.clear()
                    while rows < _ARROW_CHUNK_ROWS and nbytes < _ARROW_CHUNK_BYTES and not stop.is_set():
                        try:
                            batch = reader.read_next_batch()
                        except StopIteration:
                            break
                        batches.append(batch)
                        rows, nbytes = rows + batch.num_rows, nbytes + batch.nbytes
                    if not rows:
                        return None
                    table = pa.Table.from_batches(batches, reader.schema)
                    if rows > _ARROW_CHUNK_ROWS:
                        carry.extend(table.slice(_ARROW_CHUNK_ROWS).to_batches())
                        table = table.slice(0, _ARROW_CHUNK_ROWS)
                    return table

                try:
                    job = ahead.submit(next_chunk)
                    while (table := job.result()) is not None:
                        job = ahead.submit(next_chunk)  # parse the next chunk while this one is reduced
                        out.append(reduce([table.column(i) for i in range(ncols)]))
                        del table
                finally:
                    stop.set()
    except (pa.ArrowException, OSError):  # a wrong field count, bad bytes, no data, unreadable
        raise _Fallback from None
    if not out:
        raise _Fallback  # the line reader's view of "no rows"
    return out


def _chunks(col: Any) -> list:
    import pyarrow as pa

    return col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def _arrow_empty(strings: Any) -> bool:
    """Any empty string among ``strings``?"""
    import pyarrow.compute as pc

    return len(strings) > 0 and pc.min(pc.binary_length(strings)).as_py() == 0


def _arrow_strip(col: Any) -> Any:
    """The fields stripped as ``str.strip()`` does; ``_Fallback`` for an empty one."""
    import pyarrow.compute as pc

    s = pc.utf8_trim(col, _WS)
    if _arrow_empty(s):
        raise _Fallback
    return s


def _arrow_ids(col: Any) -> np.ndarray:
    """int64 value of each id field (an Arrow string array), as :func:`_plain_id` gives it;
    ``_Fallback`` for an empty field."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(col):
        return np.zeros(0, np.int64)
    t = pc.utf8_rtrim(col, _WS)
    length = pc.binary_length(t)
    if pc.min(length).as_py() == 0:
        raise _Fallback
    if pc.all(pc.ascii_is_decimal(col)).as_py() and pc.max(length).as_py() < 19:
        return pc.cast(col, pa.int64()).to_numpy()  # the usual case: all plain, no padding
    ok = pc.match_substring_regex(t, "^-?[0-9]+$")  # RE2: [0-9] is ASCII, $ only the end
    neg = pc.starts_with(t, "-")
    small = pc.and_(ok, pc.less(pc.subtract(length, pc.cast(neg, length.type)), 19))  # < 19 digits: an int64
    v = pc.cast(pc.if_else(small, t, "0"), pa.int64()).to_numpy()
    ok, neg, small = (a.to_numpy(zero_copy_only=False) for a in (ok, neg, small))
    mag = np.where(small, np.abs(v), _HUGE_ID)
    out = np.where(neg, -1 - mag, mag)  # negative (even '-0'): reported as out of range
    out[~ok] = _BAD_ID
    return out


class _ArrowVocab:
    """Names -> ids in first-seen order, grown chunk by chunk, all in Arrow.

    A chunk's fields are dictionary-encoded together with the names so far, which come first
    and so keep their ids; the names the chunk adds are put in reading order (row by row, then
    column by column). Fields are stripped only when a new name needs it. The names become
    Python strings once, in :meth:`tolist`."""

    def __init__(self) -> None:
        import pyarrow as pa

        self._names = pa.array([], pa.string())

    def __len__(self) -> int:
        return len(self._names)

    def tolist(self) -> list[str]:
        return self._names.to_pylist()

    def ids(self, cols: list) -> list[np.ndarray]:
        """Per-row ids of each column (Arrow string arrays of raw fields, of one length); names not
        yet known get the next ids in reading order. ``_Fallback`` for an empty field."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        n, nv = len(cols[0]), len(self._names)
        if not n:
            return [np.zeros(0, np.int64) for _ in cols]
        if self._names.type == pa.string() and self._names.nbytes > _LARGE_NAMES:
            self._names = self._names.cast(pa.large_string())  # 64-bit offsets before the names pass 2 GB
        kind = self._names.type
        for stripped in (False, True):
            if stripped:  # some name has whitespace around it: strip every field, encode again
                cols = [pc.utf8_trim(c, _WS) for c in cols]
            parts = [c if c.type == kind else c.cast(kind) for col in cols for c in _chunks(col)]
            enc = pc.dictionary_encode(pa.chunked_array([self._names, *parts], kind))
            dictionary = enc.chunk(enc.num_chunks - 1).dictionary  # all chunks share the final one
            new = dictionary.slice(nv)
            if not len(new) or stripped or pc.utf8_trim(new, _WS).equals(new):
                break  # a known name was stripped when it was new: padding shows among the new ones
        if _arrow_empty(new):  # "" is never a name: an empty (or whitespace) field is new
            raise _Fallback
        codes = np.concatenate([c.indices.to_numpy() for c in enc.chunks])[nv:]
        out = [codes[i * n:(i + 1) * n] for i in range(len(cols))]
        if len(new):
            if len(cols) > 1:  # new names numbered in the order h0, t0, h1, t1, ... (one column: already)
                x = np.stack(out, axis=1).ravel()
                order = pd.unique(x[x >= nv])
                perm = np.arange(len(dictionary), dtype=codes.dtype)
                perm[order] = np.arange(nv, nv + len(order), dtype=codes.dtype)
                out = [perm[c] for c in out]
                new = dictionary.take(pa.array(order))
            self._names = pa.concat_arrays([self._names, new])
        return out

    def truncate(self, n: int) -> None:
        """Forget the names from id ``n`` on (a file is being read again)."""
        self._names = self._names.slice(0, n)


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

    def __len__(self) -> int:
        return len(self.names)

    def tolist(self) -> list[str]:
        return self.names

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
            get = self._dict.get  # type: ignore[union-attr]
            known = [np.fromiter(map(get, s, repeat(-1)), np.int64, len(s)) for s in strs]
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


# ---------------------------------------------------------------- header rows

def _header_like(fields: Sequence[str]) -> bool:
    return sorted(f.strip().lower() for f in fields) in _HEADER_WORDS


def header_warning(paths: Sequence[Path], delimiter: str) -> str | None:
    """The warning for triple files whose first non-blank line looks like a header row, or None.
    Each file must have a non-blank line."""
    first = [(p, *rows_at(p, False, [0])[0]) for p in paths]  # reads up to the first non-blank line
    found = [(p, ln, line) for p, ln, line in first if _header_like(line.split(delimiter))]
    if not found:
        return None
    where = ", ".join(f"{p}:{ln}" for p, ln, _ in found)
    return (f"{where}: the first line {found[0][2][:80]!r} looks like a header row and is loaded as a triple; "
            "pass header=True to skip the first line of each triple file")


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(chunks)``, emptying ``chunks`` as it goes: each chunk is freed once copied,
    while the result's pages are only touched as it fills, so the two are not held in full at once."""
    if len(chunks) == 1:
        return chunks.pop()
    out = np.empty((sum(map(len, chunks)), *chunks[0].shape[1:]), chunks[0].dtype)
    at = 0
    for i in range(len(chunks)):
        c, chunks[i] = chunks[i], None
        out[at:at + len(c)] = c
        at += len(c)
        del c
    return out


# ---------------------------------------------------------------- raw_udd_{hrt}: name triples

def read_name_triples(paths: dict[str, Path], order: tuple[int, int, int], delimiter: str,
                      header: bool) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """``(entities, relations, arrays)``: names by id and an int64 ``(n, 3)`` (head, relation,
    tail) array per file of ``paths`` (read in that order), ``order`` giving the columns of h, r, t.
    Ids follow first appearance: heads and tails interleaved row by row (relations likewise),
    file after file. The vocabularies' hash indexes are freed on return; only the names stay."""
    arrow = arrow_enabled(delimiter)
    ents, rels = (_ArrowVocab(), _ArrowVocab()) if arrow else (_Vocab(), _Vocab())

    def reduce(cols: list) -> np.ndarray:
        h, r, t = (cols[i] for i in order)
        hg, tg = ents.ids([h, t])  # entity ids in the order h0, t0, h1, t1, ...
        (rg,) = rels.ids([r])
        out = np.empty((len(hg), 3), np.int64)
        out[:, 0], out[:, 1], out[:, 2] = hg, rg, tg
        return out

    arrays = {}
    for split, path in paths.items():
        mark = len(ents), len(rels)
        chunks = _read_table(path, delimiter, 3, header, reduce,
                             reset=lambda: (ents.truncate(mark[0]), rels.truncate(mark[1])), arrow=arrow)
        arrays[split] = _concat(chunks)
        del chunks
    return ents.tolist(), rels.tolist(), arrays


# ---------------------------------------------------------------- udd_{hrt}: .dict files and id triples

def _row_error(path: Path, header: bool, row: int, what: Callable[[str], str]) -> DataError:
    lineno, line = rows_at(path, header, [row])[row]
    return DataError(f"{path}:{lineno}: {what(line)}")


def read_dict(path: Path, delimiter: str) -> list[str]:
    """Names by id from an ``id<delimiter>name`` file; ids 0..n-1, each id and name once."""
    import pandas as pd

    def reduce(cols: list[Column]) -> tuple[np.ndarray, np.ndarray]:
        (ic, iraw, _), (nc, _, ns) = cols
        return _ids(iraw)[ic], ns[nc]

    def reduce_arrow(cols: list) -> tuple[np.ndarray, np.ndarray]:
        ids, names = _arrow_ids(cols[0]), _arrow_strip(cols[1])
        return ids, names.to_numpy(zero_copy_only=False) if len(names) else np.empty(0, object)

    arrow = arrow_enabled(delimiter)
    chunks = _read_table(path, delimiter, 2, False, reduce_arrow if arrow else reduce, arrow=arrow)
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
        lines = rows_at(path, False, [first, row])
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


def read_id_triples(path: Path, order: tuple[int, int, int], delimiter: str, header: bool,
                    ne: int, nr: int) -> np.ndarray:
    """The int64 ``(n, 3)`` (head, relation, tail) ids of a file of integer ids, ``order`` giving
    the columns of h, r, t; an id that is not a plain integer or is outside ``[0, ne)`` (entities)
    or ``[0, nr)`` (relations) raises :class:`DataError` with ``file:line``."""

    def reduce(cols: list[Column]) -> np.ndarray:
        return np.stack([_ids(cols[i][1])[cols[i][0]] for i in order], axis=1)

    def reduce_arrow(cols: list) -> np.ndarray:
        return np.stack([_arrow_ids(cols[i]) for i in order], axis=1)

    arrow = arrow_enabled(delimiter)
    chunks = _read_table(path, delimiter, 3, header, reduce_arrow if arrow else reduce, arrow=arrow)
    a = _concat(chunks)
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
    return a
