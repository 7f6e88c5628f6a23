"""Property tests of kgengine.data's readers against an independent reference parser.

Random files mix valid lines with BOMs, LF/CRLF/CR line ends, CRs inside lines, tabs and
padding in names, blank lines, wrong column counts (a trailing delimiter too), empty fields, undecodable bytes,
duplicate and self-loop triples (and, for udd, bad/duplicate/out-of-range ids and names).
Each input either loads to exactly the reference's ids, or is refused with a DataError that
names ``file:line`` (``file`` alone for an empty split or a dict with gaps) -- never another
exception, never a silent wrong mapping.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import kgengine.textread as T
from kgengine.data import DataError, load_dataset

BOM = b"\xef\xbb\xbf"
SPLITS = ("train", "valid", "test")
# each example is read by one of the vectorised readers: pyarrow's (when installed) or pandas'
READERS = ["pyarrow", "pandas"] if T.arrow_enabled() else ["pandas"]
# KGE_PROP_EXAMPLES=5000 for a deeper search than CI's
SETTINGS = settings(max_examples=int(os.environ.get("KGE_PROP_EXAMPLES", 250)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class Refused(Exception):
    def __init__(self, path: Path, line: int | None):
        self.path, self.line = path, line


# ---------------------------------------------------------------- reference parser

def ref_rows(path: Path, data: bytes, delim: str, ncols: int, header: bool) -> list[tuple[int, list[str]]]:
    """(line number, raw fields) of the non-blank lines, as the module doc defines them."""
    if data.startswith(BOM):
        data = data[3:]
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines and lines[-1] == b"":
        lines.pop()  # a final line break ends the last line, it does not start one
    rows = []
    for n, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(path, n) from None
        if not text.strip():
            continue
        if header:  # the header line is skipped unchecked
            header = False
            continue
        fields = text.split(delim)
        if len(fields) != ncols or any(not f.strip() for f in fields):
            raise Refused(path, n)
        rows.append((n, fields))
    return rows


def ref_raw(files: dict[str, tuple[Path, bytes]], delim: str, header: bool, unseen: str):
    rows = {s: ref_rows(p, b, delim, 3, header) for s, (p, b) in files.items()}
    for s in SPLITS:
        if not rows[s]:
            raise Refused(files[s][0], None)
    ent: dict[str, int] = {}
    rel: dict[str, int] = {}
    named = {s: [(n, tuple(f.strip() for f in fs)) for n, fs in rows[s]] for s in SPLITS}
    for _, (h, r, t) in named["train"]:
        ent.setdefault(h, len(ent))
        rel.setdefault(r, len(rel))
        ent.setdefault(t, len(ent))
    out = {"train": [x for _, x in named["train"]]}
    for s in ("valid", "test"):
        out[s] = []
        for n, (h, r, t) in named[s]:
            if h not in ent or t not in ent or r not in rel:
                if unseen == "error":
                    raise Refused(files[s][0], n)
                if unseen == "drop":
                    continue
            ent.setdefault(h, len(ent))
            rel.setdefault(r, len(rel))
            ent.setdefault(t, len(ent))
            out[s].append((h, r, t))
    return list(ent), list(rel), {s: [[ent[h], rel[r], ent[t]] for h, r, t in v] for s, v in out.items()}


def ref_id(field: str) -> int | None:
    """Plain ASCII decimal, trailing whitespace allowed; negative ones (even -0) are out of range,
    each its own value ('-1' and '-0' in one .dict are two ids, both missing from 0..n-1: a gap)."""
    t = field.rstrip()
    if not re.fullmatch(r"-?[0-9]+", t):
        return None
    return -1 - int(t[1:]) if t.startswith("-") else int(t)


def ref_dict(path: Path, data: bytes) -> list[str]:
    names: dict[int, str] = {}
    by_name: set[str] = set()
    for n, (i, name) in ref_rows(path, data, "\t", 2, False):
        v = ref_id(i)
        if v is None or v in names or name.strip() in by_name:
            raise Refused(path, n)
        names[v] = name.strip()
        by_name.add(name.strip())
    if not names or sorted(names) != list(range(len(names))):
        raise Refused(path, None)
    return [names[i] for i in range(len(names))]


def ref_udd(dicts: list[tuple[Path, bytes]], files: dict[str, tuple[Path, bytes]], header: bool):
    ents, rels = ref_dict(*dicts[0]), ref_dict(*dicts[1])
    out = {}
    for s in SPLITS:
        path, data = files[s]
        rows = ref_rows(path, data, "\t", 3, header)
        if not rows:
            raise Refused(path, None)
        out[s] = []
        for n, fs in rows:
            h, r, t = (ref_id(f) for f in fs)
            if None in (h, r, t) or not (0 <= h < len(ents) and 0 <= t < len(ents) and 0 <= r < len(rels)):
                raise Refused(path, n)
            out[s].append([h, r, t])
    return ents, rels, out


# ---------------------------------------------------------------- generators

NAMES = ["a", "b", "c", "d", "007", "7", "nan", "NA", "x y", "é", "\u00a0z", "#c", '"q', "a\x00b", "\ufeffbom",
         "e\x1cf"]
PADS = ["", "", "", " ", "  ", "\t", "\x0b", "\u3000"]
ENDS = ["\n", "\n", "\n", "\r\n", "\r"]


@st.composite
def text_line(draw, delim: str, fields: list[st.SearchStrategy], lead: bool, clean: bool,
              faulty: bool = False) -> bytes:
    faults = ["short", "long", "empty", "trail", "bytes", "cr", "tabname"]
    kinds = ["ok"] * 8 + ["blank"] + (["tabname"] if delim != "\t" else [])
    if not clean:
        kinds = faults if faulty else kinds + faults
    kind = draw(st.sampled_from(kinds))
    if kind == "blank":
        return draw(st.sampled_from(["", " ", "\t", " \t ", "\x0c", delim + delim]).map(str.encode))
    n = {"short": 2, "long": 4}.get(kind, 3)
    pads = st.sampled_from([p for p in PADS if p != delim])
    parts = [(draw(pads) if lead else "") + draw(fields[i % 3]) + draw(pads) for i in range(n)]
    if kind == "empty":
        parts[draw(st.integers(0, 2))] = draw(st.sampled_from(["", " "]))
    if kind == "tabname":
        parts[0] = parts[0] + "\t" + parts[0]
    line = (delim.join(parts) + (delim if kind == "trail" else "")).encode()
    if kind == "bytes":
        i = draw(st.integers(0, len(line)))
        line = line[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"])) + line[i:]
    if kind == "cr":
        i = draw(st.integers(0, len(line)))
        line = line[:i] + b"\r" + line[i:]
    return line


@st.composite
def text_file(draw, delim: str, fields: list[st.SearchStrategy], clean: bool, lead: bool = True,
              max_lines: int = 12) -> bytes:
    """Lines of ``fields``; ``clean`` files have no malformed line (but still BOMs, line-end mixes,
    padding, blank lines, and perhaps no line at all)."""
    lines = draw(st.lists(text_line(delim, fields, lead, clean), min_size=3 if clean else 0, max_size=max_lines))
    if not clean and lines and draw(st.integers(0, 2)) == 0:  # pandas sizes its table by the first line
        lines[0] = draw(text_line(delim, fields, lead, clean, faulty=True))
    ends = [draw(st.sampled_from(ENDS)).encode() for _ in lines]
    if lines and draw(st.booleans()):
        ends[-1] = b""  # no line break at the end of the file
    data = b"".join(line + end for line, end in zip(lines, ends))
    return (BOM if draw(st.integers(0, 4)) == 0 else b"") + data


def load(kind: str, d: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(data_path=d, fmt=kind, **kw)


def check(expect, run, cache: bool, chunk: int, reader: str) -> None:
    """``run()`` (twice with the cache) with ``reader`` reading chunks of ``chunk`` rows must equal
    ``expect()`` or be refused at the same place."""
    event(reader)
    old = T._CHUNK_ROWS, T._ARROW_CHUNK_ROWS, T._ARROW
    T._CHUNK_ROWS = T._ARROW_CHUNK_ROWS = chunk
    T._ARROW = reader == "pyarrow"
    try:
        try:
            ents, rels, triples = expect()
        except Refused as r:
            event("refused at file:line" if r.line else "refused at file")
            for _ in range(2 if cache else 1):
                with pytest.raises(DataError) as exc:
                    run()
                where = f"{r.path}:{r.line}:" if r.line else f"{r.path}"
                assert where in str(exc.value), (where, str(exc.value))
            return
        event("loaded")
        for _ in range(2 if cache else 1):
            kg = run()
            assert kg.entities == ents
            assert kg.relations == rels
            for s in SPLITS:
                assert kg.split(s).tolist() == triples[s], s
    finally:
        T._CHUNK_ROWS, T._ARROW_CHUNK_ROWS, T._ARROW = old


# ---------------------------------------------------------------- properties

@SETTINGS
@given(st.data())
def test_raw_udd_hrt_matches_reference(data):
    delim = data.draw(st.sampled_from(["\t", "\t", ",", " "]))
    names = st.sampled_from(NAMES)
    clean = data.draw(st.booleans())  # half the examples have no malformed line at all
    blobs = {s: data.draw(text_file(delim, [names] * 3, clean or data.draw(st.integers(0, 2)) > 0), label=s)
             for s in SPLITS}
    header = data.draw(st.integers(0, 5)) == 0
    unseen = data.draw(st.sampled_from(["keep", "drop", "error"]))
    cache, chunk = data.draw(st.booleans()), data.draw(st.sampled_from([1, 2, 3, 1 << 20]))
    reader = data.draw(st.sampled_from(READERS))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for s in SPLITS:
            (d / f"{s}.txt").write_bytes(blobs[s])
        files = {s: (d / f"{s}.txt", blobs[s]) for s in SPLITS}
        check(lambda: ref_raw(files, delim, header, unseen),
              lambda: load("raw_udd_hrt", d, delimiter=delim, header=header, unseen=unseen, cache=cache),
              cache, chunk, reader)


IDS = ["03", "5", "-1", "-0", "+3", "1_0", "\u0663", "\uff13", "9" * 25, " 1", "1 "]


@st.composite
def dict_file(draw, prefix: str, n: int, clean: bool) -> bytes:
    order = draw(st.permutations(list(range(n))))
    lines = []
    for i in order:
        ident = str(i)
        kinds = ["ok"] * 8 + ["pad", "blank"] + ([] if clean else ["id", "dupname", "gap", "bytes"])
        kind = draw(st.sampled_from(kinds))
        name = f"{prefix}{i}"
        if kind == "id":
            ident = draw(st.sampled_from(IDS))
        elif kind == "dupname":
            name = f"{prefix}{draw(st.integers(0, n - 1))}"
        elif kind == "pad":
            ident, name = ident + draw(st.sampled_from([" ", "\t", "\r"])), " " + name + "\u3000"
        elif kind == "gap":
            continue
        elif kind == "blank":
            lines.append(b"  ")
        line = f"{ident}\t{name}".encode()
        if kind == "bytes":
            line += b"\xff"
        lines.append(line)
    ends = [draw(st.sampled_from(ENDS)).encode() for _ in lines]
    return (BOM if draw(st.integers(0, 4)) == 0 else b"") + b"".join(a + b for a, b in zip(lines, ends))


def id_field(n: int, clean: bool) -> st.SearchStrategy:
    ok = st.integers(0, n - 1).map(str)
    return ok if clean else st.one_of(ok, ok, st.sampled_from(IDS + [str(n)]))


@SETTINGS
@given(st.data())
def test_udd_hrt_matches_reference(data):
    clean = data.draw(st.booleans())
    ne, nr = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    ent_dict = data.draw(dict_file("e", ne, clean or data.draw(st.booleans())), label="entities")
    rel_dict = data.draw(dict_file("r", nr, clean or data.draw(st.booleans())), label="relations")
    fields = [id_field(ne, clean), id_field(nr, clean), id_field(ne, clean)]
    blobs = {s: data.draw(text_file("\t", fields, clean, lead=False, max_lines=8), label=s) for s in SPLITS}
    header = data.draw(st.integers(0, 5)) == 0
    cache, chunk = data.draw(st.booleans()), data.draw(st.sampled_from([1, 2, 1 << 20]))
    reader = data.draw(st.sampled_from(READERS))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "entities.dict").write_bytes(ent_dict)
        (d / "relations.dict").write_bytes(rel_dict)
        for s in SPLITS:
            (d / f"{s}.txt").write_bytes(blobs[s])
        dicts = [(d / "entities.dict", ent_dict), (d / "relations.dict", rel_dict)]
        files = {s: (d / f"{s}.txt", blobs[s]) for s in SPLITS}
        check(lambda: ref_udd(dicts, files, header), lambda: load("udd_hrt", d, header=header, cache=cache),
              cache, chunk, reader)
