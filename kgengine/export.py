"""Export trained vectors with their names: .npy (DGL-KE file names), TSV, safetensors, word2vec text.

ComplEx and RotatE entity vectors are exported as stored: real parts then
imaginary parts, ``2 * hidden_dim`` columns.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .saved import TrainedKGE, write_vocab

__all__ = ["export", "EXPORT_FORMATS"]

EXPORT_FORMATS = ("npy", "tsv", "safetensors", "w2v")


def _prefix(trained: TrainedKGE) -> str:
    return f"{trained.dataset}_{trained.model.name}"


def _tables(trained: TrainedKGE) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().float().numpy() for k, v in trained.model.tables.items()}


def _rows_text(names: list[str], vectors: np.ndarray, sep: str) -> str:
    body = np.char.mod("%.7g", vectors)
    return "".join(n + sep + sep.join(row) + "\n" for n, row in zip(names, body))


def export(trained: TrainedKGE, out_dir: str | os.PathLike, fmt: str = "npy") -> list[Path]:
    """Write the vectors of ``trained`` into ``out_dir`` in format ``fmt``; returns the files written.

    * ``npy``: ``{dataset}_{model}_entity.npy`` and ``..._relation.npy`` (DGL-KE's names;
      TransR adds ``..._projection.npy``) plus ``entities.tsv`` / ``relations.tsv`` (id<TAB>name).
    * ``tsv``: ``..._entity.tsv`` / ``..._relation.tsv``, one ``name<TAB>v1<TAB>v2...`` row each.
    * ``safetensors``: ``{dataset}_{model}.safetensors`` with every table, plus the two id maps.
    * ``w2v``: word2vec text (``n d`` header, ``name v1 v2 ...``); whitespace inside a
      name becomes ``_`` because the format splits on it.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre, tables, written = _prefix(trained), _tables(trained), []
    relation_names = list(trained.relations)
    if trained.model.reciprocal:  # the relation table's second half: one row per inverse relation
        relation_names += [f"{n}_inverse" for n in trained.relations]

    def maps() -> None:
        write_vocab(out / "entities.tsv", trained.entities)
        write_vocab(out / "relations.tsv", relation_names)
        written.extend([out / "entities.tsv", out / "relations.tsv"])

    if fmt == "npy":
        for k, v in tables.items():
            np.save(out / f"{pre}_{k}.npy", v)
            written.append(out / f"{pre}_{k}.npy")
        maps()
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        meta = {"model": trained.model.name, "dataset": trained.dataset,
                "config": json.dumps(trained.model.config())}
        save_file(tables, str(out / f"{pre}.safetensors"), metadata=meta)
        written.append(out / f"{pre}.safetensors")
        maps()
    elif fmt == "tsv":
        for k, names in (("entity", trained.entities), ("relation", relation_names)):
            p = out / f"{pre}_{k}.tsv"
            p.write_text(_rows_text(names, tables[k], "\t"), encoding="utf-8")
            written.append(p)
    else:
        E = tables["entity"]
        names = [re.sub(r"\s+", "_", n) for n in trained.entities]
        p = out / f"{pre}_entity.w2v.txt"
        p.write_text(f"{E.shape[0]} {E.shape[1]}\n" + _rows_text(names, E, " "), encoding="utf-8")
        written.append(p)
    return written
