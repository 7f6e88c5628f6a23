"""Put projected KG vectors into a BERT-family model, two ways, plus the MLM collator for it.

(a) :class:`KGBridge`: through ``inputs_embeds``. A batch carries ``entity_ids (B, L)``: a KG row
    at an *entity slot*, -1 elsewhere; the slot's input embedding becomes the projected KG vector.
    E-BERT's two encodings differ only on the data side: "replace" puts the slot on the
    mention's wordpiece, "concat" adds a slot token right after the mention
    (``paris / [ENT]``) whose embedding is replaced. The KG table stays outside the model's
    parameters (a non-persistent buffer), so it can hold millions of entities without growing
    the LM's vocabulary or its checkpoints.
(b) :func:`add_entity_tokens`: vocabulary rows. One new token per entity, its embedding row set to
    the projected vector: plain HF, round-trips through ``save_pretrained``/``from_pretrained``.

:class:`EntityMLMCollator` pads and applies BERT masking but never masks an entity slot; with
``mask_mentions=True`` it masks every mention wordpiece, so the model must recover the mention
from the entity vector (map-tuning, E-BERT / KnowBert style).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from .project import EntityProjector
from .vectors import KGVectors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["KGBridge", "add_entity_tokens", "EntityMLMCollator"]

BRIDGE_CONFIG = "bridge_config.json"
LM_DIR, PROJECTOR_DIR, KG_DIR = "lm", "projector", "kg"


def _hidden_size(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


class KGBridge(nn.Module):
    """An HF BERT-family model (``AutoModelForMaskedLM`` or a base model) reading KG vectors.

    Args:
        model: the HF model; must accept ``inputs_embeds``.
        projector: ``d_kg -> hidden`` (:class:`EntityProjector`).
        kg: the KG table: :class:`KGVectors`, or a ``(n, d_kg)`` tensor (then ``names`` may name rows).
        names: row names when ``kg`` is a bare tensor.

    The table is a non-persistent buffer ``kg_table (n, d_kg)``: it follows ``.to(device)`` but
    is not a parameter (never trained) and not in ``state_dict()``; :meth:`save_pretrained`
    writes it separately.
    """

    # Trainer: the wrapped MLM heads average their loss themselves and ignore num_items_in_batch,
    # so let Trainer do the gradient-accumulation scaling.
    accepts_loss_kwargs = False

    def __init__(self, model: nn.Module, projector: EntityProjector, kg: KGVectors | torch.Tensor,
                 names: Sequence[str] | None = None) -> None:
        super().__init__()
        if isinstance(kg, KGVectors):
            table, names = kg.vectors, kg.names
        else:
            table = torch.as_tensor(kg).detach().float()
            if table.dim() != 2:
                raise ValueError(f"kg table must be (n, d_kg), got {tuple(table.shape)}")
            names = [str(i) for i in range(table.shape[0])] if names is None else list(names)
            if len(names) != table.shape[0]:
                raise ValueError(f"{len(names)} names for {table.shape[0]} KG rows")
        hidden = _hidden_size(model)
        if projector.hidden != hidden:
            raise ValueError(f"projector outputs {projector.hidden} dims, the model's embeddings have {hidden}")
        if projector.d_kg != table.shape[1]:
            raise ValueError(f"projector expects {projector.d_kg}-dim KG vectors, the table has {table.shape[1]}")
        self.model = model
        self.projector = projector
        self.register_buffer("kg_table", table, persistent=False)
        self.kg_names: list[str] = list(names)

    @property
    def config(self):
        """The wrapped model's config (Trainer and pipelines look for ``model.config``)."""
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def kg_vectors(self) -> KGVectors:
        """The table as :class:`KGVectors` (on CPU)."""
        return KGVectors(self.kg_names, self.kg_table.detach().cpu())

    def entity_index(self, names: Sequence[str]) -> torch.Tensor:
        """``int64 (k,)`` KG rows of ``names`` (KeyError naming an unknown entity)."""
        if not hasattr(self, "_name_index"):
            self._name_index = {n: i for i, n in enumerate(self.kg_names)}
        try:
            return torch.tensor([self._name_index[n] for n in names], dtype=torch.long)
        except KeyError as e:
            raise KeyError(f"unknown entity {e.args[0]!r} (not among the {len(self.kg_names)} KG vectors)") from None

    def embed(self, input_ids: torch.Tensor, entity_ids: torch.Tensor | None = None) -> torch.Tensor:
        """``inputs_embeds (B, L, hidden)``: word embeddings, with the projected KG vector at every
        position where ``entity_ids (B, L) >= 0``."""
        emb = self.model.get_input_embeddings()(input_ids)
        if entity_ids is None:
            return emb
        if entity_ids.shape != input_ids.shape:
            raise ValueError(f"entity_ids {tuple(entity_ids.shape)} must have input_ids' shape "
                             f"{tuple(input_ids.shape)}")
        slot = entity_ids >= 0
        if not bool(slot.any()):
            return emb
        rows = entity_ids[slot]  # (k,) in row-major order, the order index_put fills
        top, n = int(rows.max()), self.kg_table.shape[0]
        if top >= n:
            raise IndexError(f"entity id {top} out of range: the KG table has {n} rows")
        vec = self.projector(self.kg_table[rows].to(self.projector.linear.weight.dtype))
        return emb.index_put((slot,), vec.to(emb.dtype))  # out of place: autograd reaches both sides

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                entity_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                mention_mask: torch.Tensor | None = None, **kw: Any):
        """Run the model with entity slots filled in; returns the model's own output.

        Args:
            input_ids: ``(B, L)``.
            attention_mask: ``(B, L)`` or None.
            entity_ids: ``(B, L)`` KG row per entity slot, ``-1`` (any negative) elsewhere; None or
                all negative runs the plain model on ``input_ids``.
            labels: ``(B, L)`` MLM labels (-100 where not predicted), passed to the model.
            mention_mask: ``(B, L)`` accepted and ignored here (listed so that Trainer keeps the
                column for losses that need the mention, e.g. distillation).
            **kw: passed to the model (``token_type_ids``, ``output_hidden_states``, ...).
        """
        kw.pop("num_items_in_batch", None)
        if labels is not None:
            kw["labels"] = labels
        if entity_ids is None or not bool((entity_ids >= 0).any()):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)
        return self.model(inputs_embeds=self.embed(input_ids, entity_ids), attention_mask=attention_mask, **kw)

    # ---- state dict: one entry per tied tensor ------------------------------------------
    # Trainer checkpoints a non-PreTrainedModel with safetensors' save_file(model.state_dict()),
    # which refuses tensors that share memory (BERT's tied word embeddings / MLM decoder). So the
    # state dict keeps the first name of each tied group, and loading fills the aliases back in.
    def _tied_groups(self) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for k, p in self.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(k)
        return [g for g in groups.values() if len(g) > 1]

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        sd = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for group in self._tied_groups():
            for k in group[1:]:
                sd.pop(prefix + k, None)
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        sd = dict(state_dict)
        for group in self._tied_groups():
            present = next((k for k in group if k in sd), None)
            if present is not None:
                for k in group:
                    sd.setdefault(k, sd[present])
        return super().load_state_dict(sd, strict=strict, assign=assign)

    # ---- persistence -----------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """Write ``lm/`` (the HF model's own ``save_pretrained``, plus ``tokenizer`` if given),
        ``projector/``, ``kg/`` (``vectors.safetensors`` + ``entities.tsv``) and ``bridge_config.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path / LM_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(path / LM_DIR)
        self.projector.save_pretrained(path / PROJECTOR_DIR)
        self.kg_vectors().save_pretrained(path / KG_DIR)
        cfg = {"lm_class": type(self.model).__name__, "lm": LM_DIR, "projector": PROJECTOR_DIR, "kg": KG_DIR,
               "num_entities": len(self.kg_names), "d_kg": self.projector.d_kg, "hidden": self.projector.hidden}
        from kgengine.persist import write_config

        write_config(path / BRIDGE_CONFIG, cfg)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, model_cls: type | None = None,
                        device: str | torch.device = "cpu", **hf_kwargs: Any) -> "KGBridge":
        """Restore a bridge written by :meth:`save_pretrained`.

        ``model_cls`` defaults to the saved model's class (e.g. ``BertForMaskedLM``); ``hf_kwargs``
        go to its ``from_pretrained``.
        """
        import transformers

        path = Path(path)
        if not (path / BRIDGE_CONFIG).is_file():
            raise FileNotFoundError(f"{path / BRIDGE_CONFIG}: missing; not a KGBridge folder")
        from kgengine.persist import read_config

        cfg = read_config(path / BRIDGE_CONFIG)
        if model_cls is None:
            model_cls = getattr(transformers, cfg.get("lm_class", ""), None) or transformers.AutoModel
        model = model_cls.from_pretrained(path / cfg.get("lm", LM_DIR), **hf_kwargs)
        projector = EntityProjector.from_pretrained(path / cfg.get("projector", PROJECTOR_DIR))
        kg = KGVectors.from_pretrained(path / cfg.get("kg", KG_DIR))
        return cls(model, projector, kg).to(device)


@torch.no_grad()
def add_entity_tokens(model: nn.Module, tokenizer: PreTrainedTokenizerBase, kg_vectors: KGVectors,
                      projector: EntityProjector, names: Sequence[str] | None = None, token_format: str = "[E:{name}]",
                      chunk_size: int = 65536) -> torch.Tensor:
    """Add one token per entity and write its projected KG vector into the new embedding row.

    Tokens are ``AddedToken(token_format.format(name=...), normalized=False, single_word=True)``:
    not normalised, so an uncased tokenizer neither lowercases them (which would merge
    ``[E:Apple]`` and ``[E:apple]``, or split them into [UNK] pieces in older tokenizers) nor
    strips accents. Adding again is idempotent: existing entity tokens keep their ids and get
    their rows rewritten. With tied input/output embeddings (BERT MLM) the output rows follow.

    Args:
        model: an HF model (resized in place with ``resize_token_embeddings(len(tokenizer))``).
        tokenizer: an HF tokenizer (tokens added in place).
        kg_vectors: the table; projector: ``d_kg -> hidden``.
        names: entities to add (default: all, in table order).
        token_format: must contain ``{name}``.
    Returns:
        ``int64 (k,)`` the token ids, aligned with ``names``.
    """
    from transformers import AddedToken

    if "{name}" not in token_format:
        raise ValueError(f"token_format {token_format!r} must contain '{{name}}'")
    if projector.hidden != _hidden_size(model) or projector.d_kg != kg_vectors.dim:
        raise ValueError(f"projector maps {projector.d_kg} -> {projector.hidden}, but the KG vectors have "
                         f"{kg_vectors.dim} dims and the model's embeddings {_hidden_size(model)}")
    names = kg_vectors.names if names is None else list(names)
    rows = kg_vectors.indices(names)
    tokens = [token_format.format(name=n) for n in names]
    vocab = tokenizer.get_vocab()
    added = {str(t) for t in tokenizer.added_tokens_decoder.values() if not t.special}
    clash = next((t for t in tokens if t in vocab and t not in added), None)
    if clash is not None:  # else the word's own embedding row would be overwritten
        raise ValueError(f"entity token {clash!r} is already a vocabulary token; "
                         "choose a token_format that cannot clash")
    tokenizer.add_tokens([AddedToken(t, normalized=False, single_word=True, special=False) for t in tokens])
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(tokens), dtype=torch.long)
    if tokenizer.unk_token_id is not None and bool((ids == tokenizer.unk_token_id).any()):
        raise RuntimeError("some entity tokens map to the unknown token after adding them")
    emb = model.get_input_embeddings()
    if len(tokenizer) > emb.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are overwritten below
        emb = model.get_input_embeddings()
    p = projector.linear.weight
    for s in range(0, len(rows), chunk_size):  # chunks bound memory for millions of entities
        vec = projector(kg_vectors.vectors[rows[s:s + chunk_size]].to(p.device, p.dtype))
        emb.weight[ids[s:s + chunk_size].to(emb.weight.device)] = vec.to(emb.weight.dtype)
    return ids


class EntityMLMCollator:
    """Pad entity-annotated features and apply BERT MLM masking that spares entity slots.

    Each feature has ``input_ids`` (length ``l``), optionally ``entity_ids`` (length ``l``, KG row at
    an entity slot, -1 elsewhere; default all -1), ``mention_mask`` (1 on the mention's wordpieces),
    ``attention_mask`` and ``token_type_ids``.

    Masking: each maskable token is chosen with ``mlm_probability``; chosen tokens become
    [MASK] 80%, a random vocabulary token 10%, unchanged 10%. Never chosen: padding, special
    tokens (including added special tokens such as an ``[ENT]`` slot token), entity slots
    (``entity_ids >= 0``), and ``protected_ids`` (default: the tokenizer's added non-special tokens,
    e.g. :func:`add_entity_tokens`' entity tokens; pass ``[]`` to let them be masked). With ``mask_mentions=True``
    every mention wordpiece (that is not an entity slot) is also chosen and always becomes [MASK],
    so it can only be recovered from the entity vector.

    Returns ``input_ids``, ``attention_mask``, ``entity_ids`` (padding -1), ``labels`` (-100 where not
    predicted), all ``int64 (B, L)``; plus ``token_type_ids`` when the features have them and
    ``mention_mask`` with ``return_mention_mask=True``.

    Args:
        seed: seeds a private generator (reproducible masks); None uses torch's global RNG, which
            Trainer seeds.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, mask_mentions: bool = False,
                 pad_to_multiple_of: int | None = None, protected_ids: Iterable[int] | None = None,
                 return_mention_mask: bool = False, seed: int | None = None) -> None:
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a mask token and a pad token for MLM")
        self.tokenizer = tokenizer
        self.mlm_probability, self.mask_mentions = float(mlm_probability), bool(mask_mentions)
        self.pad_to_multiple_of, self.return_mention_mask = pad_to_multiple_of, return_mention_mask
        self.pad_id, self.mask_id = int(tokenizer.pad_token_id), int(tokenizer.mask_token_id)
        self.padding_side = getattr(tokenizer, "padding_side", "right")
        added = tokenizer.added_tokens_decoder
        # special: the named ones plus added special tokens (an [ENT] slot token added with special=True)
        special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
        self.special = torch.tensor(sorted(special), dtype=torch.long)
        if protected_ids is None:
            protected_ids = [i for i, t in added.items() if not t.special]
        self.protected = torch.tensor(sorted(set(int(i) for i in protected_ids)), dtype=torch.long)
        # random replacements come from the base vocabulary minus special tokens: never an entity token
        pool = torch.arange(tokenizer.vocab_size)
        self.random_pool = pool[~torch.isin(pool, torch.cat([self.special, self.protected]))]
        if len(self.random_pool) == 0:  # a vocabulary of special tokens only: "random" means [MASK]
            self.random_pool = torch.tensor([self.mask_id])
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _pad(self, seqs: list[torch.Tensor], value: int, length: int) -> torch.Tensor:
        out = pad_sequence(seqs, batch_first=True, padding_value=value, padding_side=self.padding_side)
        extra = length - out.shape[1]
        if extra:
            pad = (extra, 0) if self.padding_side == "left" else (0, extra)
            out = nn.functional.pad(out, pad, value=value)
        return out

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("empty batch")

        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long).reshape(-1) for f in features]
        lens = [len(t) for t in ids]
        length = max(lens)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def column(key: str, fill: int, pad: int) -> torch.Tensor:
            """``(B, length)``: ``key`` of every feature (``fill`` where absent), padded with ``pad``."""
            seqs = []
            for i, (f, n) in enumerate(zip(features, lens)):
                v = f.get(key)
                t = torch.full((n,), fill, dtype=torch.long) if v is None else torch.as_tensor(v, dtype=torch.long)
                if t.numel() != n:
                    raise ValueError(f"feature {i}: {key} has {t.numel()} entries, input_ids has {n}")
                seqs.append(t.reshape(-1))
            return self._pad(seqs, pad, length)

        input_ids = self._pad(ids, self.pad_id, length)
        attention = column("attention_mask", 1, 0)
        entity_ids = column("entity_ids", -1, -1)
        mention = column("mention_mask", 0, 0)
        batch = {}
        if any("token_type_ids" in f for f in features):
            batch["token_type_ids"] = column("token_type_ids", 0, 0)

        slot = entity_ids >= 0
        fixed = (attention == 0) | slot | torch.isin(input_ids, self.special) | torch.isin(input_ids, self.protected)
        chosen = (torch.rand(input_ids.shape, generator=self.generator) < self.mlm_probability) & ~fixed
        forced = (mention > 0) & ~fixed if self.mask_mentions else torch.zeros_like(chosen)
        labels = torch.where(chosen | forced, input_ids, torch.full_like(input_ids, -100))
        r = torch.rand(input_ids.shape, generator=self.generator)
        to_mask = forced | (chosen & (r < 0.8))
        to_random = chosen & ~forced & (r >= 0.8) & (r < 0.9)
        rand_tok = self.random_pool[torch.randint(len(self.random_pool), input_ids.shape, generator=self.generator)]
        input_ids = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        input_ids = torch.where(to_random, rand_tok, input_ids)
        batch.update(input_ids=input_ids, attention_mask=attention, entity_ids=entity_ids, labels=labels)
        if self.return_mention_mask:
            batch["mention_mask"] = mention
        return batch
