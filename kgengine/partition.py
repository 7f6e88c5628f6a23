"""Entity partitions for worker processes: which worker owns which entity (DGL-KE's design).

``kge partition`` runs METIS through DGL (:func:`kgengine.graph.partition_entities`) on the
training graph once and saves the assignment (METIS differs run to run, so it is computed
once and reused; DGL is needed only here). A run with ``--partition FILE --num_proc P`` then
gives worker ``i`` the triples whose head entity is in part ``i`` and draws its negatives
from part ``i``'s entities (DGL-KE's local negatives), so workers touch mostly disjoint
rows of the shared tables. ``method="random"`` is the baseline a METIS partition is
measured against.

Files: ``<name>.npy`` (``int64 (num_entities,)`` part of each entity) and ``<name>.json``
(method, parts, the graph's identity, the edge cut).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .data import KG, DataError
from .errors import ConfigError
from .persist import atomic_write, atomic_write_json

__all__ = ["PARTITION_METHODS", "compute_partition", "save_partition", "load_partition", "edge_cut",
           "positives_by_part", "positives_by_relation", "default_partition_path", "row_overlap"]

PARTITION_METHODS = ("metis", "random")


def compute_partition(kg: KG, num_parts: int, method: str = "metis", seed: int = 0) -> torch.Tensor:
    """``int64 (num_entities,)``: the part (0..num_parts-1) of every entity."""
    if num_parts < 1:
        raise ConfigError(f"--num-parts must be >= 1, got {num_parts}")
    if method == "metis":
        from .graph import build_graph, partition_entities

        return partition_entities(build_graph(kg), num_parts)
    if method == "random":
        return torch.randint(0, num_parts, (kg.num_entities,), generator=torch.Generator().manual_seed(seed))
    raise ConfigError(f"--method {method!r}: expected one of {', '.join(PARTITION_METHODS)}")


def edge_cut(triples: torch.Tensor, parts: torch.Tensor) -> float:
    """The share of ``triples`` whose head and tail lie in different parts."""
    return float((parts[triples[:, 0]] != parts[triples[:, 2]]).double().mean()) if len(triples) else 0.0


def _identity(kg: KG) -> dict:
    from .train import dataset_identity  # the same fingerprint --resume checks

    return dataset_identity(kg)


def default_partition_path(data_path: str | os.PathLike, num_parts: int, method: str = "metis") -> Path:
    return Path(data_path) / "partitions" / f"{method}-{num_parts}"


def save_partition(path: str | os.PathLike, parts: torch.Tensor, kg: KG, method: str) -> dict:
    """Write ``path.npy`` and ``path.json``; returns the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_parts = int(parts.max()) + 1 if len(parts) else 0
    meta = {"format_version": 1, "method": method, "num_parts": num_parts, "dataset": kg.name,
            "graph": _identity(kg), "edge_cut": edge_cut(kg.train, parts),
            "entities_per_part": torch.bincount(parts, minlength=num_parts).tolist()}
    atomic_write(path.with_suffix(".npy"), lambda p: _save_npy(p, parts.numpy()))
    atomic_write_json(path.with_suffix(".json"), meta)
    return meta


def _save_npy(path: Path, a: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, a)


def load_partition(path: str | os.PathLike, kg: KG, num_parts: int | None = None) -> torch.Tensor:
    """The saved assignment at ``path`` (``.npy``, ``.json`` or their common stem), checked against ``kg``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".npy", ".json") else path
    npy, js = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if not npy.is_file():
        raise DataError(f"--partition {path}: no {npy.name} (write one with kge partition)")
    try:
        parts = torch.from_numpy(np.load(npy, allow_pickle=False)).to(torch.int64)
        meta = json.loads(js.read_text(encoding="utf-8")) if js.is_file() else {}
    except (OSError, ValueError) as e:
        raise DataError(f"--partition {path}: unreadable ({e})") from None
    if parts.shape != (kg.num_entities,) or (len(parts) and int(parts.min()) < 0):
        raise DataError(f"--partition {npy}: {tuple(parts.shape)} parts for a graph of {kg.num_entities} entities")
    if meta.get("graph") and meta["graph"] != _identity(kg):
        raise DataError(f"--partition {js}: computed for another graph ({meta['graph']}); rerun kge partition")
    found = int(parts.max()) + 1 if len(parts) else 0
    if num_parts is not None and found != num_parts:
        raise ConfigError(f"--partition {npy} has {found} parts but --num_proc is {num_parts}: one worker per part")
    return parts


def positives_by_part(triples: torch.Tensor, parts: torch.Tensor, num_parts: int) -> list[torch.Tensor]:
    """For each part, the indices of the ``triples`` whose head entity lies in it."""
    owner = parts[triples[:, 0]]
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=num_parts).tolist()
    return list(torch.split(order, counts))


def positives_by_relation(triples: torch.Tensor, num_relations: int, num_parts: int) -> list[torch.Tensor]:
    """DGL-KE's ``--rel_part``: each relation's triples go to one part, so no two workers update the
    same relation row. Relations are dealt largest first to the part with the fewest triples;
    an inverse relation (id ``r + num_relations`` under ``--reciprocal``) goes with ``r``."""
    rel = triples[:, 1] % num_relations
    sizes = torch.bincount(rel, minlength=num_relations)
    load, owner = [0] * num_parts, torch.empty(num_relations, dtype=torch.int64)
    for r in torch.argsort(sizes, descending=True, stable=True).tolist():  # a loop over relations, not triples
        p = min(range(num_parts), key=load.__getitem__)
        owner[r], load[p] = p, load[p] + int(sizes[r])
    return positives_by_part(torch.stack([rel, rel, rel], 1), owner, num_parts)


def row_overlap(samplers: list, steps: int) -> float:
    """Mean share, over ``steps`` simultaneous steps of ``samplers``, of the entity rows that more than one
    of them touches (the rows that Hogwild workers would update concurrently)."""
    shared = total = 0
    for _ in range(steps):
        rows = torch.cat([s.next().uniq_e for s in samplers])
        uniq, counts = torch.unique(rows, return_counts=True)
        shared += int((counts > 1).sum())
        total += len(uniq)
    return shared / max(total, 1)
