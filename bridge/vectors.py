"""A table of knowledge-graph entity vectors with their names, from any file kgengine writes.

Sources (see :func:`load_kg_vectors`, which picks one by what it finds):

* a kgengine saved-model folder (``kge train --save-path``): the entity table as stored,
  so ComplEx and RotatE rows are ``[real parts | imaginary parts]`` (``2 * hidden_dim`` columns);
* ``kge export`` files: ``{dataset}_{model}_entity.npy`` + ``entities.tsv`` (id<TAB>name),
  ``..._entity.tsv`` (name<TAB>v1<TAB>...), ``..._entity.w2v.txt`` (word2vec text, ``n d`` header),
  ``{dataset}_{model}.safetensors`` (table ``entity``) + ``entities.tsv``;
* a folder written by :meth:`KGVectors.save_pretrained` (``vectors.safetensors`` + ``entities.tsv``).

Bad input fails with the file and the line (or row) at fault: wrong column count, a value
that is not a number, NaN/inf, a dimension that disagrees with the header or the first row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["KGVectors", "load_kg_vectors", "VECTORS_FILE", "NAMES_FILE"]

VECTORS_FILE = "vectors.safetensors"
NAMES_FILE = "entities.tsv"


@dataclass(eq=False)
class KGVectors:
    """Entity names and their vectors.

    Attributes:
        names: ``n`` distinct entity names; row ``i`` of ``vectors`` belongs to ``names[i]``.
        vectors: ``float32 (n, d)``, finite.
        source: where the table came from (used in error messages).
    """

    names: list[str]
    vectors: torch.Tensor
    source: str = ""
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.names = list(self.names)
        v = torch.as_tensor(self.vectors)
        if v.dim() != 2:
            raise ValueError(f"{self._where()}vectors must be 2-D (n, d), got shape {tuple(v.shape)}")
        if v.shape[0] != len(self.names):
            raise ValueError(f"{self._where()}{len(self.names)} names but {v.shape[0]} vector rows")
        self.vectors = v.detach().to(torch.float32).contiguous()
        bad = ~torch.isfinite(self.vectors).all(dim=1)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"{self._where()}row {i} ({self.names[i]!r}) has a NaN or infinite value")
        self._index = {n: i for i, n in enumerate(self.names)}
        if len(self._index) != len(self.names):
            seen: set[str] = set()
            dup = next(n for n in self.names if n in seen or seen.add(n))
            raise ValueError(f"{self._where()}entity name {dup!r} occurs more than once")

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    # ---- lookups -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        """``d``, the number of columns."""
        return int(self.vectors.shape[1])

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """Row of ``name``; ``KeyError`` naming the entity if it is not in the table."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown entity {name!r} (not among the {len(self)} KG vectors"
                           f"{' of ' + self.source if self.source else ''})") from None

    def indices(self, names: Sequence[str]) -> torch.Tensor:
        """``int64 (k,)`` rows of ``names`` (KeyError on the first unknown one)."""
        return torch.tensor([self.index(n) for n in names], dtype=torch.long)

    def __repr__(self) -> str:
        return f"KGVectors(n={len(self)}, dim={self.dim}{', source=' + repr(self.source) if self.source else ''})"

    # ---- constructors --------------------------------------------------------
    @classmethod
    def from_kgengine(cls, path: str | os.PathLike) -> "KGVectors":
        """The entity table of a kgengine saved-model folder (ComplEx/RotatE: real | imaginary columns)."""
        from kgengine.saved import TrainedKGE

        trained = TrainedKGE.from_pretrained(path)
        return cls(list(trained.entities), trained.model.entity_embeddings.detach().clone(), str(path))

    @classmethod
    def from_npy(cls, npy_path: str | os.PathLike, entities_tsv: str | os.PathLike | None = None) -> "KGVectors":
        """``kge export --format npy``: a ``(n, d)`` .npy table and ``entities.tsv`` (id<TAB>name).

        ``entities_tsv`` defaults to the ``entities.tsv`` next to the .npy file.
        """
        npy_path = Path(npy_path)
        tsv = Path(entities_tsv) if entities_tsv is not None else npy_path.with_name(NAMES_FILE)
        try:
            arr = np.load(npy_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{npy_path}: not a readable .npy array ({e})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{npy_path}: expected a numeric 2-D array (n, d), got {arr.dtype} {arr.shape}")
        names = _read_id_names(tsv)
        if len(names) != arr.shape[0]:
            raise ValueError(f"{npy_path}: {arr.shape[0]} rows but {tsv} names {len(names)} entities")
        return cls(names, torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), str(npy_path))

    @classmethod
    def from_safetensors(cls, st_path: str | os.PathLike, entities_tsv: str | os.PathLike | None = None,
                         table: str = "entity") -> "KGVectors":
        """``kge export --format safetensors`` (table ``entity``) or :meth:`save_pretrained`'s file."""
        from safetensors import safe_open

        st_path = Path(st_path)
        tsv = Path(entities_tsv) if entities_tsv is not None else st_path.with_name(NAMES_FILE)
        with safe_open(str(st_path), framework="pt") as f:
            keys = list(f.keys())
            if table not in keys:
                raise ValueError(f"{st_path}: no table {table!r} (has {keys})")
            vec = f.get_tensor(table)
        names = _read_id_names(tsv)
        if len(names) != vec.shape[0]:
            raise ValueError(f"{st_path}: {vec.shape[0]} rows but {tsv} names {len(names)} entities")
        return cls(names, vec, str(st_path))

    @classmethod
    def from_tsv(cls, path: str | os.PathLike) -> "KGVectors":
        """``name<TAB>v1<TAB>v2...`` per line (``kge export --format tsv``); blank lines are skipped."""
        path = Path(path)
        linenos, names, cols = [], [], []
        for lineno, line in _lines(path):
            parts = line.split("\t")
            if len(parts) < 2:
                raise ValueError(f"{path}:{lineno}: expected 'name<TAB>v1<TAB>...', got {len(parts)} column(s)")
            if cols and len(parts) - 1 != len(cols[0]):
                raise ValueError(f"{path}:{lineno}: {len(parts) - 1} values, but line {linenos[0]} has "
                                 f"{len(cols[0])} (dimension mismatch)")
            linenos.append(lineno)
            names.append(parts[0])
            cols.append(parts[1:])
        if not names:
            raise ValueError(f"{path}: no vectors in the file")
        return cls(names, _parse_floats(path, cols, linenos, names), str(path))

    @classmethod
    def from_word2vec(cls, path: str | os.PathLike, unescape: bool = True) -> "KGVectors":
        """word2vec text: an ``n d`` header, then ``name v1 ... vd`` per line (whitespace separated).

        ``unescape``: decode the percent-encoding that ``kge export --format w2v`` applies to names
        (whitespace and ``%`` become ``%XX``); pass ``False`` for a file whose names hold literal ``%XX``.
        """
        from kgengine.export import unescape_w2v_name

        path = Path(path)
        it = _lines(path)
        first = next(it, None)
        if first is None:
            raise ValueError(f"{path}: empty file, expected a word2vec 'n d' header")
        head = first[1].split()
        if len(head) != 2 or not all(h.isdigit() for h in head):
            raise ValueError(f"{path}:{first[0]}: expected the word2vec header 'n d', got {first[1][:60]!r}")
        n, d = int(head[0]), int(head[1])
        linenos, names, cols = [], [], []
        for lineno, line in it:
            parts = line.split()
            if len(parts) != d + 1:
                raise ValueError(f"{path}:{lineno}: expected a name and {d} values (header says d={d}), "
                                 f"got {len(parts)} field(s) (dimension mismatch)")
            linenos.append(lineno)
            names.append(parts[0])
            cols.append(parts[1:])
        if len(names) != n:
            raise ValueError(f"{path}: header says {n} vectors, the file has {len(names)}")
        if unescape:
            try:
                names = [unescape_w2v_name(x) for x in names]
            except UnicodeDecodeError:
                raise ValueError(f"{path}: a name is not valid percent-encoding; load it with unescape=False") from None
        vec = _parse_floats(path, cols, linenos, names) if names else torch.empty((0, d))
        return cls(names, vec, str(path))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "KGVectors":
        """Reload a folder written by :meth:`save_pretrained`."""
        path = Path(path)
        return cls.from_safetensors(path / VECTORS_FILE, path / NAMES_FILE, table="vectors")

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``vectors.safetensors`` (table ``vectors``) and ``entities.tsv`` (id<TAB>name) into ``path``."""
        from kgengine.persist import save_tensors
        from kgengine.saved import write_vocab

        bad = next((n for n in self.names if "\n" in n or "\r" in n), None)
        if bad is not None:
            raise ValueError(f"entity name {bad!r} contains a line break; entities.tsv cannot store it")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_tensors(path / VECTORS_FILE, {"vectors": self.vectors})
        write_vocab(path / NAMES_FILE, self.names)


# ---- parsing helpers -----------------------------------------------------------
def _lines(path: Path):
    """``(line number, line without its newline)`` for each non-blank line."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot open ({e.strerror})") from None
    with f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text (binary word2vec files are not supported)") from None


def _parse_floats(path: Path, cols: list[list[str]], linenos: list[int], names: list[str]) -> torch.Tensor:
    """``(n, d)`` float32 from equal-length string rows; errors name the line of the bad value."""
    try:
        arr = np.array(cols, dtype=np.float64)
    except ValueError:
        for lineno, row in zip(linenos, cols):  # only on the error path: find the offending line
            for j, s in enumerate(row, 1):
                try:
                    float(s)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: value {j} {s!r} is not a number") from None
        raise
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}:{linenos[i]}: entity {names[i]!r} has a NaN or infinite value")
    return torch.from_numpy(arr.astype(np.float32))


def _read_id_names(path: Path) -> list[str]:
    """``entities.tsv`` (id<TAB>name, ids 0..n-1 in order), with file:line errors."""
    from kgengine.saved import read_vocab

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no entity names file (id<TAB>name), needed next to the vectors")
    return read_vocab(path)


def load_kg_vectors(path: str | os.PathLike, entities_tsv: str | os.PathLike | None = None) -> KGVectors:
    """Load a KG vector table from whatever ``path`` is.

    Folders: a kgengine saved-model folder (``model.safetensors`` + ``model_config.json``); a
    :meth:`KGVectors.save_pretrained` folder; a ``kge export`` folder (one ``*_entity.npy``,
    ``*.safetensors``, ``*_entity.tsv`` or ``*_entity.w2v.txt``, tried in that order).
    Files: ``.npy`` / ``.safetensors`` (names from ``entities_tsv`` or the ``entities.tsv`` beside it),
    text with an ``n d`` first line (word2vec) or tab-separated ``name<TAB>v1...`` rows.
    """
    p = Path(path)
    if p.is_dir():
        if (p / "model.safetensors").is_file() and (p / "model_config.json").is_file():
            return KGVectors.from_kgengine(p)
        if (p / VECTORS_FILE).is_file():
            return KGVectors.from_pretrained(p)
        for pattern in ("*_entity.npy", "*.safetensors", "*_entity.tsv", "*_entity.w2v.txt"):
            found = sorted(p.glob(pattern))
            if len(found) > 1:
                raise ValueError(f"{p}: several {pattern} files ({', '.join(f.name for f in found)}); pass one")
            if found:
                return load_kg_vectors(found[0], entities_tsv)
        raise FileNotFoundError(f"{p}: no KG vectors found (expected a kgengine model folder, "
                                f"{VECTORS_FILE}, *_entity.npy, *.safetensors, *_entity.tsv or *_entity.w2v.txt)")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.suffix == ".npy":
        return KGVectors.from_npy(p, entities_tsv)
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            table = "vectors" if "vectors" in f.keys() else "entity"
        return KGVectors.from_safetensors(p, entities_tsv, table=table)
    first = next(_lines(p), None)
    if first is None:
        raise ValueError(f"{p}: empty file")
    head = first[1].split()
    if len(head) == 2 and all(h.isdigit() for h in head) and "\t" not in first[1]:
        return KGVectors.from_word2vec(p)
    if "\t" in first[1]:
        return KGVectors.from_tsv(p)
    raise ValueError(f"{p}:{first[0]}: neither a word2vec header 'n d' nor a tab-separated 'name<TAB>v1...' row")
