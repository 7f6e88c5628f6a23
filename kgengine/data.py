"""Knowledge-graph data: vocabularies and (h, r, t) id tensors per split.

A :class:`KG` holds an entity and a relation vocabulary (id -> name lists) and
three ``int64`` tensors ``train``, ``valid``, ``test`` of shape ``(n, 3)`` whose
columns are (head, relation, tail) ids. :func:`load_dataset` is the entry point.

Formats (DGL-KE's names):

* ``raw_udd_{hrt}``: files of names, tab separated, columns in the order the
  suffix gives (``raw_udd_hrt`` is ``head<TAB>rel<TAB>tail``, the layout of
  ``../shared/data``). Files: train, valid, test. Ids are given in order of
  first appearance: train heads and tails interleaved row by row (relations
  likewise), then names that only valid/test use.
* ``udd_{hrt}``: ``entities.dict`` and ``relations.dict`` (``id<TAB>name``)
  then train, valid, test files of integer ids, columns as the suffix says.

Policy for entities (or relations) that occur in valid/test but never in
train (``unseen=``):

* ``"keep"`` (default, what DGL-KE and the published FB15k-237/WN18RR protocol
  do): they get ids and stay in the evaluation; their vectors are never
  trained. A warning names how many and the first few.
* ``"drop"``: the triples that use them are removed from valid/test, with a
  warning naming how many (PyKEEN's behaviour).
* ``"error"``: raise :class:`DataError` naming the file, line and name.

The rest lives beside this module, data flowing one way (``data`` uses both, neither uses ``data``):

* :mod:`kgengine.textread`: the text rules (UTF-8, line ends, blank lines, whitespace,
  header rows, plain decimal ids) and the readers: pyarrow's multi-threaded CSV reader
  (pandas' C reader where pyarrow is missing) in chunks with a hashed vocabulary, and the
  line-by-line reader that gives ``file:line`` errors.
* :mod:`kgengine.datacache`: the binary load cache (``cache=True``; ``.npy`` id
  triples memory-mapped on later loads, checked against the sources' sizes, mtimes and
  the options). Built-in datasets are not cached.

:class:`DataError` is defined in :mod:`kgengine.errors` (a ``KGEError`` and a ``ValueError``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .datacache import CACHE_DIRNAME, CACHE_VERSION, Built, load_cached  # noqa: F401  (CACHE_*: re-exported)
from .datacache import SPLITS as _SPLITS
from .errors import DataError, UnknownNameError
from .textread import header_warning, read_dict, read_id_triples, read_name_triples, read_rows, rows_at

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
UNSEEN_POLICIES = ("keep", "drop", "error")


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

    def known(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(train, valid, test)``: every known triple without a concatenated copy (2.4 GB at 100M triples);
        :func:`~kgengine.evaluate.evaluate` takes it as its filter."""
        return self.train, self.valid, self.test

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


def read_triples(path: str | os.PathLike, delimiter: str = "\t") -> list[tuple[str, str, str]]:
    """The ``(head, relation, tail)`` names of one file, in file order (blank lines skipped);
    a malformed line raises :class:`DataError` naming file and line."""
    return [(f[0], f[1], f[2]) for _, f in read_rows(Path(path), delimiter, 3)]


# ---------------------------------------------------------------- raw_udd_{hrt}

def _split_files(data_path: Path, data_files: Sequence[str] | None, n_extra: int = 0) -> list[Path]:
    if data_files:
        if len(data_files) != n_extra + 3:
            raise DataError(f"--data_files (in {data_path}): expected {n_extra + 3} files, got {len(data_files)}: "
                            f"{list(data_files)}")
        return [Path(f) if os.path.isabs(f) else data_path / f for f in data_files]
    return [data_path / f"{s}.txt" for s in _SPLITS]


def _build_raw(paths: dict[str, Path], order: tuple[int, int, int], delimiter: str, unseen: str,
               header: bool) -> Built:
    # the vocabularies' hash indexes are gone once read_name_triples returns: only the names stay
    entities, relations, arrays = read_name_triples(paths, order, delimiter, header)
    for split in _SPLITS:
        if not len(arrays[split]):
            raise DataError(f"{paths[split]}: the {split} split is empty")
    messages = []
    if not header:
        found = header_warning([paths[s] for s in _SPLITS], delimiter)
        if found:
            messages.append(found)

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
            lineno = rows_at(paths[split], header, [row])[row][0]
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
    return Built(entities, relations, arrays, messages)


def _first_new(a: np.ndarray, e0: int, e1: int, r0: int, r1: int, entities: list[str],
               relations: list[str]) -> list[str]:
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
    built = load_cached(data_path, files, opts, cache,
                        lambda: _build_raw(dict(zip(_SPLITS, files)), order, delimiter, unseen, header))
    return _to_kg(built, name or data_path.name)


# ---------------------------------------------------------------- udd_{hrt}

def _build_udd(ent_file: Path, rel_file: Path, paths: dict[str, Path], order: tuple[int, int, int],
               delimiter: str, header: bool) -> Built:
    entities = read_dict(ent_file, delimiter)
    relations = read_dict(rel_file, delimiter)
    arrays = {}
    for split, path in paths.items():
        arrays[split] = read_id_triples(path, order, delimiter, header, len(entities), len(relations))
        if not len(arrays[split]):
            raise DataError(f"{path}: the {split} split is empty")
    return Built(entities, relations, arrays, [])


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
    built = load_cached(data_path, files, opts, cache, lambda: _build_udd(
        files[0], files[1], dict(zip(_SPLITS, files[2:])), order, delimiter, header))
    return _to_kg(built, name or data_path.name)


def _to_kg(built: Built, name: str) -> KG:
    tensors = {s: torch.from_numpy(built.arrays[s]) for s in _SPLITS}
    return KG(built.entities, built.relations, name=name, **tensors)


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
    ``cache=False`` neither reads nor writes the binary cache (see :mod:`kgengine.datacache`).
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
