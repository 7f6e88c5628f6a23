"""Knowledge-graph data: vocabularies and (h, r, t) id tensors per split.

A :class:`KG` holds an entity and a relation vocabulary (id -> name lists) and
three ``int64`` tensors ``train``, ``valid``, ``test`` of shape ``(n, 3)`` whose
columns are (head, relation, tail) ids.

Formats (DGL-KE's names):

* ``raw_udd_{hrt}``: files of names, tab separated, columns in the order the
  suffix gives (``raw_udd_hrt`` is ``head<TAB>rel<TAB>tail``, the layout of
  ``../shared/data``). Files: train, valid, test.
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
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

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
            if len(t) and (t[:, [0, 2]].min() < 0 or t[:, [0, 2]].max() >= len(self.entities)):
                raise DataError(f"KG.{split} has entity ids outside [0, {len(self.entities)})")
            if len(t) and (t[:, 1].min() < 0 or t[:, 1].max() >= len(self.relations)):
                raise DataError(f"KG.{split} has relation ids outside [0, {len(self.relations)})")
        if self._entity_index is None:
            self._entity_index = {n: i for i, n in enumerate(self.entities)}
        if self._relation_index is None:
            self._relation_index = {n: i for i, n in enumerate(self.relations)}

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
        return lookup(self._entity_index, name, "entity")

    def relation_id(self, name: str) -> int:
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
    """``index[name]``, or a ``KeyError`` that names the unknown ``kind`` (entity/relation)."""
    try:
        return index[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r}: not among the {len(index)} known {kind} names") from None


def _column_order(fmt: str) -> tuple[int, int, int]:
    """Column positions of (h, r, t) from a format suffix such as ``hrt`` or ``htr``."""
    suffix = fmt.rsplit("_", 1)[-1]
    if sorted(suffix) != ["h", "r", "t"]:
        raise DataError(f"format {fmt!r}: the suffix must be a permutation of 'hrt' (e.g. raw_udd_hrt)")
    return suffix.index("h"), suffix.index("r"), suffix.index("t")


def _read_rows(path: Path, delimiter: str, ncols: int) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` for each non-blank line; malformed lines raise with file:line."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(delimiter)
            if len(parts) != ncols:
                raise DataError(
                    f"{path}:{lineno}: expected {ncols} fields separated by {delimiter!r}, got {len(parts)}: {line[:80]!r}"
                )
            if any(not p.strip() for p in parts):
                raise DataError(f"{path}:{lineno}: empty field in {line[:80]!r}")
            rows.append((lineno, [p.strip() for p in parts]))
    return rows


def read_triples(path: str | os.PathLike, delimiter: str = "\t") -> list[tuple[str, str, str]]:
    """The ``(head, relation, tail)`` names of one file, in file order (blank lines skipped);
    a malformed line raises :class:`DataError` naming file and line."""
    return [(f[0], f[1], f[2]) for _, f in _read_rows(Path(path), delimiter, 3)]


def _split_files(data_path: Path, data_files: Sequence[str] | None, n_extra: int = 0) -> list[Path]:
    if data_files:
        if len(data_files) != n_extra + 3:
            raise DataError(f"--data_files: expected {n_extra + 3} files, got {len(data_files)}: {list(data_files)}")
        return [Path(f) if os.path.isabs(f) else data_path / f for f in data_files]
    return [data_path / f"{s}.txt" for s in _SPLITS]


def _apply_unseen_policy(
    split_rows: dict[str, list[tuple[int, tuple[str, str, str]]]],
    paths: dict[str, Path],
    unseen: str,
) -> tuple[list[str], list[str], dict[str, list[tuple[str, str, str]]]]:
    if unseen not in UNSEEN_POLICIES:
        raise ValueError(f"unseen={unseen!r}: expected one of {UNSEEN_POLICIES}")
    ent: dict[str, int] = {}
    rel: dict[str, int] = {}
    for _, (h, r, t) in split_rows["train"]:
        ent.setdefault(h, len(ent))
        rel.setdefault(r, len(rel))
        ent.setdefault(t, len(ent))
    out = {"train": [tr for _, tr in split_rows["train"]]}
    for split in ("valid", "test"):
        kept, new_names, dropped = [], [], 0
        for lineno, (h, r, t) in split_rows[split]:
            unknown = [n for n in (h, t) if n not in ent] + ([r] if r not in rel else [])
            if unknown:
                if unseen == "error":
                    raise DataError(
                        f"{paths[split]}:{lineno}: {unknown[0]!r} does not occur in the training split "
                        f"(pass unseen='keep' or 'drop' / --unseen keep|drop to accept it)"
                    )
                if unseen == "drop":
                    dropped += 1
                    continue
                new_names.extend(unknown)
                for n in (h, t):
                    if n in unknown:
                        ent.setdefault(n, len(ent))
                if r in unknown:
                    rel.setdefault(r, len(rel))
            kept.append((h, r, t))
        if dropped:
            warnings.warn(f"{paths[split]}: dropped {dropped} triples whose entity/relation is not in train (unseen='drop')")
        if new_names:
            uniq = list(dict.fromkeys(new_names))
            warnings.warn(
                f"{paths[split]}: {len(uniq)} entities/relations never occur in train (first: {uniq[:3]}); "
                "they are kept with untrained vectors (unseen='keep')"
            )
        out[split] = kept
    return list(ent), list(rel), out


def _to_tensor(triples: list[tuple[str, str, str]], e_idx: dict[str, int], r_idx: dict[str, int]) -> torch.Tensor:
    if not triples:
        return torch.empty((0, 3), dtype=torch.int64)
    return torch.tensor([(e_idx[h], r_idx[r], e_idx[t]) for h, r, t in triples], dtype=torch.int64)


def _check_nonempty(kg_splits: dict[str, list], paths: dict[str, Path]) -> None:
    for split, rows in kg_splits.items():
        if not rows:
            raise DataError(f"{paths[split]}: the {split} split is empty")


def load_raw_triples(
    data_path: str | os.PathLike,
    fmt: str = "raw_udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    unseen: str = "keep",
    name: str | None = None,
) -> KG:
    """Load a folder of name triples (``raw_udd_{hrt}``; the layout of ../shared/data)."""
    data_path = Path(data_path)
    order = _column_order(fmt)
    files = _split_files(data_path, data_files)
    paths = dict(zip(_SPLITS, files))
    split_rows = {}
    for split, path in paths.items():
        rows = _read_rows(path, delimiter, 3)
        split_rows[split] = [(ln, (f[order[0]], f[order[1]], f[order[2]])) for ln, f in rows]
    _check_nonempty(split_rows, paths)
    entities, relations, triples = _apply_unseen_policy(split_rows, paths, unseen)
    e_idx = {n: i for i, n in enumerate(entities)}
    r_idx = {n: i for i, n in enumerate(relations)}
    tensors = {s: _to_tensor(triples[s], e_idx, r_idx) for s in _SPLITS}
    return KG(entities, relations, name=name or data_path.name, _entity_index=e_idx, _relation_index=r_idx, **tensors)


def _read_dict(path: Path, delimiter: str) -> list[str]:
    rows = _read_rows(path, delimiter, 2)
    names: dict[int, str] = {}
    for lineno, (a, b) in rows:
        try:
            idx = int(a)
        except ValueError:
            raise DataError(f"{path}:{lineno}: expected '<id>{delimiter}<name>', got id {a!r}") from None
        if idx in names:
            raise DataError(f"{path}:{lineno}: id {idx} defined twice")
        names[idx] = b
    if not names:
        raise DataError(f"{path}: no entries")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: ids must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def load_udd(
    data_path: str | os.PathLike,
    fmt: str = "udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    name: str | None = None,
) -> KG:
    """Load DGL-KE's ``udd_{hrt}`` layout: entities.dict, relations.dict and id triples."""
    data_path = Path(data_path)
    order = _column_order(fmt)
    if data_files:
        files = _split_files(data_path, data_files, n_extra=2)
        ent_file, rel_file, files = files[0], files[1], files[2:]
    else:
        ent_file, rel_file = data_path / "entities.dict", data_path / "relations.dict"
        files = _split_files(data_path, None)
    entities = _read_dict(ent_file, delimiter)
    relations = _read_dict(rel_file, delimiter)
    tensors, paths = {}, dict(zip(_SPLITS, files))
    for split, path in paths.items():
        rows = _read_rows(path, delimiter, 3)
        if not rows:
            raise DataError(f"{path}: the {split} split is empty")
        out = []
        for lineno, f in rows:
            try:
                h, r, t = int(f[order[0]]), int(f[order[1]]), int(f[order[2]])
            except ValueError:
                raise DataError(f"{path}:{lineno}: expected integer ids, got {f}") from None
            if not (0 <= h < len(entities) and 0 <= t < len(entities)):
                raise DataError(f"{path}:{lineno}: entity id out of range [0, {len(entities)}) in {f}")
            if not 0 <= r < len(relations):
                raise DataError(f"{path}:{lineno}: relation id out of range [0, {len(relations)}) in {f}")
            out.append((h, r, t))
        tensors[split] = torch.tensor(out, dtype=torch.int64)
    return KG(entities, relations, name=name or data_path.name, **tensors)


def load_dataset(
    dataset: str | None = None,
    data_path: str | os.PathLike | None = None,
    fmt: str = "raw_udd_hrt",
    data_files: Sequence[str] | None = None,
    delimiter: str = "\t",
    unseen: str = "keep",
) -> KG:
    """Load a KG the way DGL-KE's ``--dataset/--data_path/--format/--data_files`` do.

    * ``load_dataset("kinships")``: a built-in dataset shipped in the package
      (one of :data:`BUILTIN_DATASETS`).
    * ``load_dataset(data_path="../shared/data/fb15k-237")``: any folder of
      train/valid/test.txt; with ``dataset`` too, ``data_path/dataset`` is used
      when that folder exists (DGL-KE's layout).
    """
    if data_path is None:
        if dataset is None:
            raise ValueError("give a built-in --dataset name or a --data_path")
        if dataset.lower() not in BUILTIN_DATASETS:
            raise DataError(
                f"--dataset {dataset!r} is not built in (built-in: {', '.join(BUILTIN_DATASETS)}); "
                "pass --data_path to a folder with train/valid/test.txt"
            )
        data_path, dataset = _BUILTIN_DIR / dataset.lower(), dataset.lower()
    data_path = Path(data_path)
    if dataset and (data_path / dataset).is_dir():
        data_path = data_path / dataset
    if not data_path.is_dir():
        raise DataError(f"--data_path {data_path}: not a folder")
    name = dataset or data_path.name
    if fmt.startswith("raw_udd_"):
        return load_raw_triples(data_path, fmt, data_files, delimiter, unseen, name)
    if fmt.startswith("udd_"):
        return load_udd(data_path, fmt, data_files, delimiter, name)
    raise DataError(f"--format {fmt!r}: expected raw_udd_{{hrt}} or udd_{{hrt}} (any column order)")
