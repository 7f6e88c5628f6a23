"""The saved-model folder: everything needed to use a trained model without retraining.

Layout of ``save_path``::

    config.json          training configuration (TrainConfig) + dataset name
    model_config.json    model class and sizes
    model.safetensors    embedding tables
    entities.tsv         id<TAB>name
    relations.tsv        id<TAB>name
    triples.safetensors  train / valid / test id triples (the ranking filter, "known" facts)
    metrics.json         {"test": {...}, "valid": {...}} once evaluated
    train_log.jsonl      one JSON record per log / validation interval
    checkpoints/         step_XXXXXXXX.pt for --resume
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import KG, lookup
from .models import KGEModel

__all__ = ["TrainedKGE", "write_vocab", "read_vocab", "atomic_write_text"]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_vocab(path: Path, names: list[str]) -> None:
    atomic_write_text(path, "".join(f"{i}\t{n}\n" for i, n in enumerate(names)))


def read_vocab(path: Path) -> list[str]:
    names = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t", 1)
            if len(parts) != 2 or parts[0] != str(len(names)):
                raise ValueError(f"{path}:{lineno}: expected '{len(names)}<TAB>name'")
            names.append(parts[1])
    return names


@dataclass
class TrainedKGE:
    """A trained model with its vocabularies and known triples.

    ``TrainedKGE.from_pretrained("runs/kin")`` reloads a folder written by
    ``kge train``; :meth:`save_pretrained` writes one.
    """

    model: KGEModel
    entities: list[str]
    relations: list[str]
    triples: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.entities) != self.model.num_entities or len(self.relations) != self.model.num_relations:
            raise ValueError("vocabulary sizes do not match the model's tables")
        self._e = {n: i for i, n in enumerate(self.entities)}
        self._r = {n: i for i, n in enumerate(self.relations)}

    @classmethod
    def from_kg(cls, model: KGEModel, kg: KG, config: dict | None = None) -> "TrainedKGE":
        return cls(model, list(kg.entities), list(kg.relations),
                   {"train": kg.train, "valid": kg.valid, "test": kg.test}, dict(config or {}, dataset=kg.name))

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", "kg"))

    def entity_id(self, name: str) -> int:
        return lookup(self._e, name, "entity")

    def relation_id(self, name: str) -> int:
        return lookup(self._r, name, "relation")

    def known_triples(self) -> torch.Tensor:
        """``int64 (n, 3)``: every stored triple (empty if none were saved)."""
        order = ["train", "valid", "test"] + sorted(set(self.triples) - {"train", "valid", "test"})
        ts = [self.triples[k] for k in order if k in self.triples and len(self.triples[k])]
        return torch.cat(ts) if ts else torch.empty((0, 3), dtype=torch.int64)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        write_vocab(path / "entities.tsv", self.entities)
        write_vocab(path / "relations.tsv", self.relations)
        if self.triples:
            tmp = path / "triples.safetensors.tmp"
            save_file({k: v.contiguous() for k, v in self.triples.items()}, str(tmp))
            os.replace(tmp, path / "triples.safetensors")
        atomic_write_text(path / "config.json", json.dumps(self.config, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "TrainedKGE":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path}: no model.safetensors; not a kgengine model folder (kge train --save-path)")
        model = KGEModel.from_pretrained(path, device)
        triples = load_file(str(path / "triples.safetensors")) if (path / "triples.safetensors").is_file() else {}
        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return cls(model, read_vocab(path / "entities.tsv"), read_vocab(path / "relations.tsv"), triples, config)
