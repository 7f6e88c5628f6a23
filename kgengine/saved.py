"""The saved-model folder: everything needed to use a trained model without retraining.

Layout of ``save_path``::

    config.json          training configuration (TrainConfig) + dataset name
    model_config.json    model class and sizes
    model.safetensors    embedding tables
    entities.tsv         id<TAB>name
    relations.tsv        id<TAB>name
    triples.safetensors  train / valid / test id triples (the ranking filter, "known" facts)
    manifest.json        size and SHA-256 of each file above (checked on load)
    metrics.json         {"test": {...}, "valid": {...}} once evaluated
    train_log.jsonl      one JSON record per log / validation interval
    checkpoints/         step_XXXXXXXXX.pt for --resume
    .kgengine.lock       held by the run that owns the folder

The model files are written as one unit (:func:`kgengine.persist.commit_folder`):
a crash during a save leaves the old model or the new one, never a mix; a save
drops ``metrics.json``, which describes the previous model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import KG, lookup
from .errors import ModelFolderError
from .models import KGEModel, read_json_object
from .persist import atomic_write_text, commit_folder, verify_folder

__all__ = ["TrainedKGE", "write_vocab", "read_vocab", "vocab_text", "atomic_write_text"]


def vocab_text(names: list[str]) -> str:
    """``id<TAB>name`` lines, the format of ``entities.tsv`` / ``relations.tsv``."""
    return "".join(f"{i}\t{n}\n" for i, n in enumerate(names))


def write_vocab(path: Path, names: list[str]) -> None:
    atomic_write_text(path, vocab_text(names))


def read_vocab(path: Path) -> list[str]:
    """``id<TAB>name`` lines with ids 0, 1, 2, ...; anything else raises :class:`ModelFolderError` at file:line."""
    names = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t", 1)
                if len(parts) != 2 or parts[0] != str(len(names)):
                    raise ModelFolderError(f"{path}:{lineno}: expected '{len(names)}<TAB>name'")
                names.append(parts[1])
    except UnicodeDecodeError as e:
        raise ModelFolderError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
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
        """Write the saved-model folder (see the module docstring) as one unit."""
        from safetensors.torch import save_file

        files = self.model._files()
        ent, rel, cfg = vocab_text(self.entities), vocab_text(self.relations), json.dumps(self.config, indent=2)
        files["entities.tsv"] = lambda p: p.write_text(ent, encoding="utf-8")
        files["relations.tsv"] = lambda p: p.write_text(rel, encoding="utf-8")
        files["config.json"] = lambda p: p.write_text(cfg, encoding="utf-8")
        if self.triples:
            triples = {k: v.contiguous() for k, v in self.triples.items()}
            files["triples.safetensors"] = lambda p: save_file(triples, str(p))
        commit_folder(path, files, remove=["metrics.json"])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "TrainedKGE":
        """Load a folder written by ``kge train`` / :meth:`save_pretrained`.

        Refuses with :class:`ModelFolderError`, naming the file: a folder whose files disagree with
        its manifest, vocabularies whose sizes differ from the tables, stored triples outside the
        vocabularies, unreadable or malformed files, non-finite vectors.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise ModelFolderError(f"{path}: no model.safetensors; not a kgengine model folder "
                                   "(kge train --save-path)")
        verify_folder(path)
        model = KGEModel.from_pretrained(path, device, verify=False)
        entities, relations = read_vocab(path / "entities.tsv"), read_vocab(path / "relations.tsv")
        if len(entities) != model.num_entities or len(relations) != model.num_relations:
            raise ModelFolderError(
                f"{path}: entities.tsv has {len(entities)} names and relations.tsv {len(relations)}, but the "
                f"tables have {model.num_entities} entity and {model.num_relations} relation rows")
        triples = {}
        if (path / "triples.safetensors").is_file():
            try:
                triples = load_file(str(path / "triples.safetensors"))
            except (SafetensorError, OSError, ValueError) as e:
                raise ModelFolderError(f"{path / 'triples.safetensors'}: not a readable safetensors file ({e})") \
                    from None
            for split, t in triples.items():
                ok = t.dtype == torch.int64 and t.dim() == 2 and t.shape[1] == 3
                if ok and len(t):
                    ok = (0 <= int(t[:, [0, 2]].min()) and int(t[:, [0, 2]].max()) < len(entities)
                          and 0 <= int(t[:, 1].min()) and int(t[:, 1].max()) < len(relations))
                if not ok:
                    raise ModelFolderError(f"{path / 'triples.safetensors'}: split {split!r} is not an (n, 3) "
                                           "table of ids within the vocabularies")
        config = read_json_object(path / "config.json") if (path / "config.json").is_file() else {}
        return cls(model, entities, relations, triples, config)
