"""Export trained vectors with their names: .npy (DGL-KE file names), TSV, safetensors, word2vec text.

ComplEx and RotatE entity vectors are exported as stored: real parts then
imaginary parts, ``2 * hidden_dim`` columns.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

import numpy as np

from .persist import atomic_write
from .saved import TrainedKGE, vocab_text

__all__ = ["export", "EXPORT_FORMATS", "escape_w2v_name", "unescape_w2v_name"]

EXPORT_FORMATS = ("npy", "tsv", "safetensors", "w2v")

# word2vec readers split a line on whitespace (gensim: on " "; word2vec.c and most others: on any
# whitespace), and a control character such as NUL ends a C string, so these are percent-encoded.
_W2V_UNSAFE = re.compile(r"[%\s\x00-\x1f\x7f-\x9f]")
_W2V_EMPTY = "%"  # an empty name; a lone '%' never occurs otherwise, as every escaped '%' is '%25'
# Characters that end a line for str.splitlines(), which many readers of a TSV file use.
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def escape_w2v_name(name: str) -> str:
    """The word2vec token for ``name``: every whitespace or control character and ``%`` becomes
    ``%XX`` per UTF-8 byte (``"new york"`` -> ``"new%20york"``, ``"5%"`` -> ``"5%25"``); an empty
    name becomes ``"%"``. Distinct names give distinct tokens; :func:`unescape_w2v_name` inverts it."""
    if not name:
        return _W2V_EMPTY
    return _W2V_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), name)


def unescape_w2v_name(token: str) -> str:
    """The name behind a token written by :func:`escape_w2v_name` (``urllib.parse.unquote``, and ``"%"`` -> ``""``)."""
    return "" if token == _W2V_EMPTY else unquote(token, errors="strict")


def _prefix(trained: TrainedKGE) -> str:
    return f"{trained.dataset}_{trained.model.name}"


def _tables(trained: TrainedKGE) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy() for k, v in trained.model.tables.items()}


def _rows_text(names: list[str], vectors: np.ndarray, sep: str) -> str:
    # 9 significant digits are enough for any float32 to parse back to the same bits (7 are not).
    row = sep.join(["%.9g"] * vectors.shape[1])
    return "".join(f"{n}{sep}{row % tuple(v)}\n" for n, v in zip(names, vectors.tolist()))


def _save_npy(path: Path, a: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save on a path would append ".npy" to the temporary name
        np.save(f, a)


def _refuse(kind: str, names: list[str], chars: str, why: str) -> None:
    bad = next((n for n in names if any(c in n for c in chars)), None)
    if bad is not None:
        raise ValueError(f"{kind} name {bad!r} contains {why}")


def export(trained: TrainedKGE, out_dir: str | os.PathLike, fmt: str = "npy") -> list[Path]:
    """Write the vectors of ``trained`` into ``out_dir`` in format ``fmt``; returns the files written.

    * ``npy``: ``{dataset}_{model}_entity.npy`` and ``..._relation.npy`` (DGL-KE's names;
      TransR adds ``..._projection.npy``) plus ``entities.tsv`` / ``relations.tsv`` (id<TAB>name).
    * ``tsv``: ``..._entity.tsv`` / ``..._relation.tsv``, one ``name<TAB>v1<TAB>v2...`` row each.
      Names are written as they are, so a name containing a tab or a line break is refused
      (ValueError); export ``w2v``, ``npy`` or ``safetensors`` instead.
    * ``safetensors``: ``{dataset}_{model}.safetensors`` with every table, plus the two id maps.
    * ``w2v``: word2vec text of the entities (``n d`` header, ``name v1 v2 ...``). The format
      splits on whitespace, so names are percent-encoded by :func:`escape_w2v_name`: whitespace,
      control characters and ``%`` become ``%XX`` (UTF-8 bytes), an empty name becomes ``%``;
      ``urllib.parse.unquote`` (or :func:`unescape_w2v_name`) gives the name back. Row i is entity i.

    Text values have 9 significant digits, so they parse back to exactly the float32 stored.
    Each file is written to a temporary file in ``out_dir`` and renamed into place, so an
    interrupted or failed export leaves no half-written file; the OSError is raised unchanged.
    The id maps refuse names with a line break (ValueError), which ``entities.tsv`` cannot store.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    relation_names = list(trained.relations)
    if trained.model.reciprocal:  # the relation table's second half: one row per inverse relation
        relation_names += [f"{n}_inverse" for n in trained.relations]
    # Check every name before writing anything, so a refused export writes no file.
    if fmt == "tsv":
        for kind, names in (("entity", trained.entities), ("relation", relation_names)):
            _refuse(kind, names, "\t" + _LINE_BREAKS, "a tab or a line break, which a TSV row cannot store")
    elif fmt in ("npy", "safetensors"):
        for kind, names in (("entity", trained.entities), ("relation", relation_names)):
            # read_vocab reads lines as open() splits them: at \n and \r only
            _refuse(kind, names, "\n\r", "a line break, which the id<TAB>name maps cannot store")
    elif len(set(trained.entities)) != len(trained.entities):  # gensim would keep one row of each
        dup = next(n for n, c in Counter(trained.entities).items() if c > 1)
        raise ValueError(f"entity name {dup!r} occurs more than once; word2vec rows are looked up by name")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre, tables, written = _prefix(trained), _tables(trained), []

    def put(name: str, write: Callable[[Path], None]) -> None:
        atomic_write(out / name, write)
        written.append(out / name)

    def put_text(name: str, text: str) -> None:
        put(name, lambda p: p.write_bytes(text.encode("utf-8")))

    def maps() -> None:
        put_text("entities.tsv", vocab_text(trained.entities))
        put_text("relations.tsv", vocab_text(relation_names))

    if fmt == "npy":
        for k, v in tables.items():
            put(f"{pre}_{k}.npy", lambda p, v=v: _save_npy(p, v))
        maps()
    elif fmt == "safetensors":
        from safetensors.numpy import save

        meta = {"model": trained.model.name, "dataset": trained.dataset,
                "config": json.dumps(trained.model.config())}
        put(f"{pre}.safetensors", lambda p: p.write_bytes(save(tables, metadata=meta)))
        maps()
    elif fmt == "tsv":
        for k, names in (("entity", trained.entities), ("relation", relation_names)):
            put_text(f"{pre}_{k}.tsv", _rows_text(names, tables[k], "\t"))
    else:
        E = tables["entity"]
        tokens = [escape_w2v_name(n) for n in trained.entities]
        put_text(f"{pre}_entity.w2v.txt", f"{E.shape[0]} {E.shape[1]}\n" + _rows_text(tokens, E, " "))
    return written
