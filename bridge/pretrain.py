"""Knowledge-enhanced pre-training (KEP) of a bridged BERT-family model with HF ``Trainer``.

Three modes, each a :class:`KGBridge` subclass whose ``forward`` returns a :class:`KEPOutput`
(``loss`` plus its parts), so HF ``Trainer`` (5.x: ``processing_class``, ``eval_strategy``,
``use_cpu``) trains it as it is:

* ``inject`` (:class:`InjectKEP`, map-tuning): the mention's wordpieces are hidden and must be
  recovered from the injected entity vector. Concat encoding (default): ``[MASK] [ENT]``, the
  slot carries the projected KG vector; replace encoding: the mention's own positions carry it and
  are the prediction targets. The loss is the MLM loss on those mention wordpieces only. The LM
  may be frozen (``freeze_lm``; then only the :class:`EntityProjector` trains).
* ``distill`` (:class:`DistillKEP`): ``L = L_MLM + lambda_kd * L_KD``; the teacher is the KG model
  (a kgengine :class:`~kgengine.saved.TrainedKGE`). *Feature* KD: ``1 - cos(W s_m, e_m)`` with
  ``s_m`` the mention's LM state (mean over its wordpieces) and ``e_m`` its KG vector. *Logit* KD:
  for triples ``(h, r, t)`` whose head is mentioned, ``KL(teacher || student) * tau^2`` between the
  softmax over a candidate set of tails (the true tail + sampled ones) of the teacher's score and
  of the same KGE score with ``h`` replaced by ``W s_m`` -- both through kgengine's
  ``score_tails_emb``.
* ``multitask`` (:class:`MultitaskKEP`, KEPLER-style): ``L = L_MLM + mu_kg * L_KG``, ``L_KG`` the
  kgengine trainer's logsigmoid loss with negatives on entity representations produced by the LM
  (mention states through a projection) and trainable relation embeddings (a kgengine
  ``create_model`` relation table, scored with its ``score_emb`` / ``score_tails_emb``).

Data: :func:`tokenize_records` turns corpus records (``{"text", "mentions": [{"start", "end",
"entity"}]}``, character spans) into features with a fast tokenizer's offset mapping;
:class:`KEPCollator` batches them (MLM masking that never touches entity slots).
:func:`run_pretraining` wires it all: dataset, collator, :class:`KEPTrainer`, a ``loss_log.jsonl``
(and ``loss_curve.png`` when matplotlib is importable), checkpoints, resume, ``save_pretrained``.
:func:`load_lm_with_mlm_head` loads an encoder that may lack an MLM head (sentence-transformers
checkpoints) and says so in the logs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inject import BRIDGE_CONFIG, KG_DIR, LM_DIR, PROJECTOR_DIR, EntityMLMCollator, KGBridge
from .project import EntityProjector
from .vectors import KGVectors, load_kg_vectors

if TYPE_CHECKING:
    from kgengine.saved import TrainedKGE
    from transformers import PreTrainedTokenizerBase

__all__ = [  # noqa: F822 -- KEPOutput and KEPTrainer come from the module __getattr__ (transformers' Trainer)
           "KEPConfig", "KEPOutput", "KEPModel", "InjectKEP", "DistillKEP", "MultitaskKEP", "build_kep_model",
           "KEPCollator", "KEPTrainer", "PretrainResult", "tokenize_records", "add_slot_token",
           "load_lm_with_mlm_head", "warmup_mlm_head", "run_pretraining", "pool_mentions", "feature_kd_loss",
           "logit_kd_loss", "kge_logsigmoid_loss", "plot_loss_curve", "MODES", "ENCODINGS"]

logger = logging.getLogger(__name__)

MODES = ("inject", "distill", "multitask")
KG_ENTITIES = ("mentions", "descriptions")
KD_KINDS = ("feature", "logit", "both")
ENCODINGS = ("replace", "concat", "none")
KEP_DIR, KEP_CONFIG, KEP_HEADS = "kep", "kep_config.json", "heads.safetensors"
LOSS_LOG, LOSS_PNG = "loss_log.jsonl", "loss_curve.png"
PART_KEYS = ("mlm_loss", "kd_loss", "feature_kd_loss", "logit_kd_loss", "kg_loss")
# logged as per-step means beside the loss parts (not plotted): how much KG signal a batch carried
COUNT_KEYS = ("num_mentions", "num_triples")


# ---- configuration ------------------------------------------------------------------------------
@dataclass
class KEPConfig:
    """What a KEP run optimises.

    Attributes:
        mode: ``"inject"`` | ``"distill"`` | ``"multitask"``.
        freeze_lm: keep every LM weight fixed (the LM also stays in eval mode: no dropout); only
            the projector / KD / KG heads train.
        encoding: how entity vectors enter the input: ``"concat"`` (an ``[ENT]`` slot after the
            mention), ``"replace"`` (on the mention's wordpieces) or ``"none"`` (text only).
            ``None``: ``"concat"`` for inject, ``"none"`` for distill and multitask (the student
            must learn the knowledge from text, not read it off an injected vector).
        mask_mentions: mask every mention wordpiece (``None``: only in inject mode).
        mlm_probability: random MLM masking rate for distill / multitask. Inject mode predicts
            the mention wordpieces only (no random masking).
        lambda_kd, kd_kind, temperature: distillation weight, ``"feature"`` | ``"logit"`` |
            ``"both"`` (summed), and the logit-KD temperature ``tau``.
        kd_queries_per_mention: logit KD uses at most this many of a mentioned head's triples
            (all when it has fewer, else sampled with replacement).
        mu_kg, kg_model_name, kg_dim, gamma: multitask weight, KGE score function
            (``TransE_l2``, ``DistMult``, ``ComplEx``, ... any kgengine model), its dimension
            (``None``: the teacher's when it is the same model, else 64) and margin.
        num_negatives: candidate tails besides the true one (logit KD: sampled from all teacher
            entities, ``<= 0`` or ``>= #entities - 1``: all entities; multitask: other entities
            of the batch).
        max_kg_triples: cap on positive triples per batch in multitask.
        kg_splits: which of the teacher's stored triple splits are known facts for logit KD and
            multitask (default train only: valid/test facts must not leak into pre-training).
        train_projector: train the :class:`EntityProjector` (when the encoding uses it).
        head_learning_rate: learning rate of the KD / KG heads, which start from scratch (``None``:
            the LM's ``learning_rate``).
        projector_learning_rate: learning rate of the projector (``None``, the default: the LM's
            ``learning_rate``). It starts from a closed-form fit that is already useful; at the
            heads' 1e-3 it drifted 29% in norm in 40 steps, before the LM adapted, and injection
            scored below text-only (issue 10).
        kg_entities: where multitask's entity vectors come from. ``"mentions"``: the mean state of
            the entity's mentions in the MLM batch, positives = known triples between the batch's
            entities (few per batch: ~6 for 16 WordNet records), negatives among the ~20 other
            batch entities. ``"descriptions"`` (KEPLER): each entity's description (a WordNet
            gloss) encoded by the LM (mean state); ``kg_triples_per_step`` known triples sampled
            from the whole KG per step, ``num_negatives`` tails per triple drawn from every entity
            that has a description.
        kg_triples_per_step, description_length: KEPLER's triples per step and the wordpieces kept
            per description.
        max_length, slot_token, slot_separator: tokenisation (``slot_separator="/"`` gives
            E-BERT's ``mention / [ENT]``).
        mlm_head_warmup_steps: head-only MLM steps before the run when the LM had no MLM head.
    """

    mode: str = "inject"
    freeze_lm: bool = False
    encoding: str | None = None
    mask_mentions: bool | None = None
    mlm_probability: float = 0.15
    lambda_kd: float = 1.0
    kd_kind: str = "both"
    temperature: float = 2.0
    kd_queries_per_mention: int = 4
    mu_kg: float = 1.0
    kg_model_name: str = "TransE_l2"
    kg_dim: int | None = None
    gamma: float = 12.0
    num_negatives: int = 32
    max_kg_triples: int = 512
    kg_splits: tuple[str, ...] = ("train",)
    train_projector: bool = True
    head_learning_rate: float | None = 1e-3
    projector_learning_rate: float | None = None
    kg_entities: str = "mentions"
    kg_triples_per_step: int = 16
    description_length: int = 32
    max_length: int = 128
    slot_token: str = "[ENT]"
    slot_separator: str | None = None
    mlm_head_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.kd_kind not in KD_KINDS:
            raise ValueError(f"kd_kind {self.kd_kind!r}: expected one of {', '.join(KD_KINDS)}")
        if self.encoding is None:
            self.encoding = "concat" if self.mode == "inject" else "none"
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding {self.encoding!r}: expected one of {', '.join(ENCODINGS)}")
        if self.mode == "inject" and self.encoding == "none":
            raise ValueError("mode inject needs an entity encoding ('concat' or 'replace'), not 'none'")
        if self.mask_mentions is None:
            self.mask_mentions = self.mode == "inject"
        if not 0.0 <= self.mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must be in [0, 1], got {self.mlm_probability}")
        for name in ("lambda_kd", "mu_kg"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {v}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("kd_queries_per_mention", "max_kg_triples", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kg_entities not in KG_ENTITIES:
            raise ValueError(f"kg_entities {self.kg_entities!r}: expected one of {', '.join(KG_ENTITIES)}")
        if self.kg_entities == "descriptions" and self.mode != "multitask":
            raise ValueError(f"kg_entities 'descriptions' is multitask's; mode {self.mode!r} has no KG task")
        for name in ("kg_triples_per_step", "description_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kg_dim is not None and self.kg_dim < 1:
            raise ValueError(f"kg_dim must be >= 1, got {self.kg_dim}")
        if self.mlm_head_warmup_steps < 0:
            raise ValueError(f"mlm_head_warmup_steps must be >= 0, got {self.mlm_head_warmup_steps}")
        self.kg_splits = tuple(self.kg_splits)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---- loss functions ---------------------------------------------------------------------------
def feature_kd_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos(student_i, target_i)``: ``student (G, d)``, ``target (G, d)`` -> scalar.

    Scale-free: only the direction of the projected state is asked to match the KG vector.
    """
    return (1.0 - F.cosine_similarity(student, target.to(student.dtype), dim=-1, eps=1e-8)).mean()


def logit_kd_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/tau) || softmax(s/tau)) * tau^2``, averaged over rows.

    Args:
        student_scores, teacher_scores: ``(Q, N)`` scores of ``N`` candidates per query.
    The ``tau^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    log_p = F.log_softmax(teacher_scores.detach().float() / temperature, dim=-1)
    log_q = F.log_softmax(student_scores.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * temperature ** 2


def kge_logsigmoid_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """kgengine's training loss: ``(-mean logsigmoid(pos) - mean logsigmoid(-neg)) / 2``.

    ``pos (P,)`` scores of true triples, ``neg (P, K)`` of their corrupted versions.
    """
    return (-F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean()) / 2


def pool_mentions(hidden: torch.Tensor, mention_mask: torch.Tensor,
                  mention_entity_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean LM state of each mention.

    A mention is a maximal run of wordpieces with ``mention_mask > 0`` and the same
    ``mention_entity_ids >= 0`` (two adjacent mentions of the same entity merge; harmless: same
    target).

    Args:
        hidden: ``(B, L, h)``; mention_mask, mention_entity_ids: ``(B, L)``.
    Returns:
        ``states (G, h)`` and ``entity (G,)`` (KG rows), mentions in row-major order.
    """
    ent = mention_entity_ids
    m = (mention_mask > 0) & (ent >= 0)
    prev_m = F.pad(m[:, :-1], (1, 0), value=False)
    prev_e = F.pad(ent[:, :-1], (1, 0), value=-1)
    start = m & ~(prev_m & (prev_e == ent))
    gid = (torch.cumsum(start.flatten().long(), 0) - 1).view_as(m)  # row-major, as start's order below
    g = gid[m]
    n = int(start.sum())
    states = hidden.new_zeros(n, hidden.shape[-1]).index_add_(0, g, hidden[m])
    counts = torch.bincount(g, minlength=n).clamp_min(1).to(hidden.dtype)
    return states / counts[:, None], ent[start]


# ---- model output ------------------------------------------------------------------------------
def _build_output() -> type:
    from transformers.utils import ModelOutput

    @dataclass
    class KEPOutput(ModelOutput):
        """What a KEP model's forward returns (scalars; ``None`` parts are absent).

        Attributes:
            loss: the total the optimiser sees.
            mlm_loss: masked-LM cross-entropy (inject: on the mention wordpieces only).
            kd_loss: ``feature_kd_loss + logit_kd_loss`` (distill), unweighted.
            kg_loss: the KGE loss (multitask), unweighted.
            num_mentions, num_triples: how many mentions / (query or positive) triples the batch gave.
        """

        loss: torch.Tensor | None = None
        mlm_loss: torch.Tensor | None = None
        kd_loss: torch.Tensor | None = None
        feature_kd_loss: torch.Tensor | None = None
        logit_kd_loss: torch.Tensor | None = None
        kg_loss: torch.Tensor | None = None
        num_mentions: torch.Tensor | None = None
        num_triples: torch.Tensor | None = None

    return KEPOutput


# ---- the models ------------------------------------------------------------------------------------
def _mlm_head_name(model: nn.Module) -> str | None:
    """The attribute holding the module that maps final hidden states to vocabulary logits
    (BERT ``cls``, RoBERTa ``lm_head``); None for other layouts."""
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    return None


def _triple_index(triples: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR by head: ``ptr (num_heads + 1,)`` and ``rt (T, 2)`` = (relation, tail) sorted by head."""
    triples = triples.long()
    order = torch.argsort(triples[:, 0], stable=True)
    t = triples[order]
    ptr = torch.zeros(num_heads + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(t[:, 0], minlength=num_heads), 0)
    return ptr, t[:, 1:].contiguous()


def _known_triples(teacher: "TrainedKGE", splits: Sequence[str]) -> torch.Tensor:
    ts = [teacher.triples[s] for s in splits if s in teacher.triples and len(teacher.triples[s])]
    return torch.cat(ts).long() if ts else torch.empty((0, 3), dtype=torch.long)


def _as_teacher(teacher: "TrainedKGE | str | os.PathLike | None") -> "TrainedKGE | None":
    if teacher is None or not isinstance(teacher, (str, os.PathLike)):
        return teacher
    from kgengine.saved import TrainedKGE

    return TrainedKGE.from_pretrained(teacher)


class KEPModel(KGBridge):
    """Base of the three modes: a :class:`KGBridge` (sharing the given bridge's LM, projector and
    KG table) plus the mode's heads. Subclasses define :meth:`extra_losses`.

    ``forward`` accepts the :class:`KEPCollator` batch; every tensor is ``(B, L)``. The LM must have
    an MLM head (``*ForMaskedLM``; see :func:`load_lm_with_mlm_head`).
    """

    mode: ClassVar[str] = ""

    def __init__(self, bridge: KGBridge, config: KEPConfig) -> None:
        super().__init__(bridge.model, bridge.projector, bridge.kg_table, names=bridge.kg_names)
        if config.mode != self.mode:
            raise ValueError(f"{type(self).__name__} is mode {self.mode!r}, the config says {config.mode!r}")
        config = dataclasses.replace(config)  # a copy: resolved fields (kg_dim) must not leak into the caller's
        self.kep_config = config
        # a name, not the module: assigning the module would register it twice in the state dict
        self._head_name = _mlm_head_name(self.model)
        if self.model.get_output_embeddings() is None:
            raise ValueError(f"{type(self.model).__name__} has no MLM head (a base encoder?); "
                             "load it with load_lm_with_mlm_head() to get a *ForMaskedLM with a tied head")
        if config.freeze_lm:
            self.model.requires_grad_(False)
        # the projector only matters when vectors are injected
        self.projector.requires_grad_(config.train_projector and config.encoding != "none")

    # -- train/eval: a frozen LM stays in eval mode (no dropout), as it will be used
    def train(self, mode: bool = True) -> "KEPModel":
        super().train(mode)
        if self.kep_config.freeze_lm:
            self.model.eval()
        return self

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Trainable parameters outside the LM (projector, KD / KG heads)."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad and not n.startswith("model.")]

    def _zero(self) -> torch.Tensor:
        """A 0 loss attached to the graph of a trainable parameter (so backward() never finds no grad)."""
        p = next((p for p in self.parameters() if p.requires_grad), None)
        return p.sum() * 0.0 if p is not None else torch.zeros((), device=self.kg_table.device)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               entity_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states ``(B, L, h)`` and the MLM loss (mean over ``labels != -100``; None
        without labels). Vocabulary logits are computed for the labelled positions only
        (``(n, V)`` instead of ``(B, L, V)``: for MiniLM on 32 x 128 tokens, 60 MB instead of 500 MB)."""
        embeds = self.embed(input_ids, entity_ids)
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        sel = None if labels is None else labels != -100
        if self._head_name is not None:
            hidden = self.model.base_model(inputs_embeds=embeds, attention_mask=attention_mask, **kw).last_hidden_state
            if sel is None:
                return hidden, None
            if not bool(sel.any()):
                return hidden, hidden.sum() * 0.0
            logits = getattr(self.model, self._head_name)(hidden[sel])
        else:  # generic *ForMaskedLM: full logits
            out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, output_hidden_states=True, **kw)
            hidden = out.hidden_states[-1]
            if sel is None:
                return hidden, None
            if not bool(sel.any()):
                return hidden, hidden.sum() * 0.0
            logits = out.logits[sel]
        return hidden, F.cross_entropy(logits.float(), labels[sel])

    def extra_losses(self, hidden: torch.Tensor, mention_mask: torch.Tensor | None,
                     mention_entity_ids: torch.Tensor | None) -> tuple[torch.Tensor | None, dict]:
        """The mode's weighted extra loss and its parts (for the output); none by default."""
        return None, {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                entity_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                mention_mask: torch.Tensor | None = None, mention_entity_ids: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, **kw: Any):
        """The mode's loss on one batch.

        Args:
            input_ids, attention_mask, token_type_ids: ``(B, L)`` as usual.
            entity_ids: ``(B, L)`` KG row at entity slots (injected), -1 elsewhere.
            labels: ``(B, L)`` MLM targets, -100 where not predicted.
            mention_mask: ``(B, L)`` 1 on mention wordpieces.
            mention_entity_ids: ``(B, L)`` the mentioned entity's KG row on its wordpieces, -1 elsewhere.
        """
        kw.pop("num_items_in_batch", None)
        hidden, mlm = self.encode(input_ids, attention_mask, entity_ids, labels, token_type_ids)
        if mlm is None:
            mlm = self._zero()
        extra, parts = self.extra_losses(hidden, mention_mask, mention_entity_ids)
        loss = mlm if extra is None else mlm + extra
        return _lazy("KEPOutput")(loss=loss, mlm_loss=mlm.detach(), **parts)

    # ---- persistence ----------------------------------------------------------------------------
    def _saved_extra(self) -> dict:
        return {}

    def save_pretrained(self, path: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """The bridge folder (:meth:`KGBridge.save_pretrained`: ``lm/``, ``projector/``, ``kg/``) plus
        ``kep/kep_config.json`` and ``kep/heads.safetensors`` (the mode's heads). A plain
        ``KGBridge.from_pretrained`` reads the folder too (for probing)."""
        from kgengine.persist import save_tensors, write_config

        super().save_pretrained(path, tokenizer)
        d = Path(path) / KEP_DIR
        d.mkdir(parents=True, exist_ok=True)
        save_tensors(d / KEP_HEADS, {k: v for k, v in self.state_dict().items()
                                     if not k.startswith(("model.", "projector."))})
        write_config(d / KEP_CONFIG, {"mode": self.mode, "class": type(self).__name__,
                                      "config": self.kep_config.to_dict(), **self._saved_extra()})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, teacher: "TrainedKGE | str | os.PathLike | None" = None,
                        triples: torch.Tensor | None = None, device: str | torch.device = "cpu",
                        **hf_kwargs: Any) -> "KEPModel":
        """Reload a folder written by :meth:`save_pretrained`; ``teacher`` / ``triples`` are
        needed only to keep training (logit KD, the KG loss)."""
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file = path / KEP_DIR / KEP_CONFIG
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file}: missing; not a KEP model folder")
        from kgengine.persist import read_config

        saved = read_config(cfg_file)
        config = KEPConfig(**saved["config"])
        bridge = KGBridge.from_pretrained(path, **hf_kwargs)
        model = build_kep_model(bridge, config, teacher=teacher, triples=triples,
                                num_relations=saved.get("num_relations"), _require_targets=False)
        heads = load_file(str(path / KEP_DIR / KEP_HEADS))
        res = model.load_state_dict(heads, strict=False)
        missing = [k for k in res.missing_keys if not k.startswith(("model.", "projector."))]
        if missing or res.unexpected_keys:
            raise ValueError(f"{path / KEP_DIR / KEP_HEADS}: heads do not fit the config "
                             f"(missing {missing}, unexpected {list(res.unexpected_keys)})")
        return model.to(device)


class InjectKEP(KEPModel):
    """Map-tuning: the MLM loss on the mention wordpieces, recovered from the injected vector.

    The collator (:class:`KEPCollator` with ``mask_mentions=True``) masks the mention; with the
    replace encoding the mention's positions carry the entity vector and are labelled with their
    own wordpieces.
    """

    mode = "inject"


class DistillKEP(KEPModel):
    """``L = L_MLM + lambda_kd * (feature KD + logit KD)`` with a KG teacher.

    Args:
        bridge, config: as :class:`KEPModel`.
        teacher: the kgengine model (needed for logit KD); its stored triples of
            ``config.kg_splits`` are the known facts, and its entity size must equal the bridge's
            KG vector size (true when the vectors come from the teacher's folder).

    Heads: ``mention_proj`` (hidden -> d_kg), shared by both KD kinds. Teacher tables are
    non-persistent buffers (follow ``.to()``, never trained, never saved).
    """

    mode = "distill"

    def __init__(self, bridge: KGBridge, config: KEPConfig, teacher: "TrainedKGE | None" = None,
                 _require_targets: bool = True) -> None:
        super().__init__(bridge, config)
        d_kg = int(self.kg_table.shape[1])
        self.mention_proj = nn.Linear(self.projector.hidden, d_kg)
        self.use_feature = config.kd_kind in ("feature", "both")
        self.use_logit = config.kd_kind in ("logit", "both")
        self._teacher_fn = None  # the teacher's KGEModel, for its score functions (not a submodule)
        self._teacher_is_table = False
        if teacher is not None:
            self._attach_teacher(teacher)
        elif self.use_logit and _require_targets:
            raise ValueError("logit KD (kd_kind 'logit' or 'both') needs the teacher: a kgengine TrainedKGE")

    def _attach_teacher(self, teacher: "TrainedKGE") -> None:
        tm = teacher.model
        d_kg = int(self.kg_table.shape[1])
        if tm.entity_dim != d_kg:
            raise ValueError(f"the teacher's entities have {tm.entity_dim} dims, the bridge's KG vectors {d_kg}: "
                             "logit KD puts the projected mention state in the teacher's head slot")
        object.__setattr__(self, "_teacher_fn", tm)  # plain attribute: not registered, not in state_dict
        ent = tm.entity_embeddings.detach()
        same = list(teacher.entities) == self.kg_names and torch.equal(ent.to(self.kg_table), self.kg_table)
        # the usual case (vectors from the teacher's folder): no second copy of the table
        self._teacher_is_table = same
        self.register_buffer("_teacher_entity", None if same else ent.clone(), persistent=False)
        self._teacher_rel_names = [k for k in tm.relation_tables()]
        for k, v in tm.relation_tables().items():
            self.register_buffer(f"teacher_rel_{k}", v.detach().clone(), persistent=False)
        # bridge row -> teacher id (-1: entity unknown to the teacher)
        t_index = {n: i for i, n in enumerate(teacher.entities)}
        tid = torch.tensor([t_index.get(n, -1) for n in self.kg_names], dtype=torch.long)
        self.register_buffer("row_to_teacher", tid, persistent=False)
        triples = _known_triples(teacher, self.kep_config.kg_splits)
        if self.use_logit and len(triples) == 0:
            raise ValueError(f"the teacher stores no triples in splits {list(self.kep_config.kg_splits)}; "
                             "logit KD needs known facts (h, r, t)")
        ptr, rt = _triple_index(triples, tm.num_entities)
        self.register_buffer("kd_ptr", ptr, persistent=False)
        self.register_buffer("kd_rt", rt, persistent=False)

    @property
    def teacher_entity(self) -> torch.Tensor:
        """``(n_teacher, d)`` the teacher's entity vectors."""
        return self.kg_table if self._teacher_is_table else self._teacher_entity

    def teacher_relations(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"teacher_rel_{k}") for k in self._teacher_rel_names}

    def logit_kd_from_candidates(self, student_h: torch.Tensor, teacher_h: torch.Tensor, r: torch.Tensor,
                                 cand: torch.Tensor) -> torch.Tensor:
        """Logit KD for ``Q`` queries ``(h, r, ?)``.

        Args:
            student_h: ``(Q, d)`` projected mention states; teacher_h: ``(Q, d)`` the teacher's head vectors.
            r: ``(Q,)`` relation ids (teacher's).
            cand: ``(Q, N)`` candidate tails per query, or ``(N,)`` one set shared by all (teacher ids).
        Both score matrices come from the teacher's ``score_tails_emb``; the student's differs only
        in its head vector.
        """
        fn, rel, E = self._teacher_fn, self.teacher_relations(), self.teacher_entity
        Q = student_h.shape[0]
        if cand.dim() == 1:  # one shared set: one chunk of Q queries
            ce, hs, ht, rq = E[cand][None], student_h[None], teacher_h[None], r[None]
        else:  # a set per query: Q chunks of one query
            ce, hs, ht, rq = E[cand], student_h[:, None], teacher_h[:, None], r[:, None]
        with torch.no_grad():
            s_t = fn.score_tails_emb(ht.to(E.dtype), rq, rel, ce).reshape(Q, -1)
        s_s = fn.score_tails_emb(hs.to(E.dtype), rq, rel, ce).reshape(Q, -1)
        return logit_kd_loss(s_s, s_t, self.kep_config.temperature)

    def sample_kd_queries(self, entity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Known triples whose head is a mentioned entity.

        Args:
            entity: ``(G,)`` KG rows of the mentions.
        Returns:
            ``group (Q,)`` (which mention), ``head (Q,)``, ``r (Q,)``, ``t (Q,)`` (teacher ids): each
            mention's triples, all of them up to ``kd_queries_per_mention``, else that many drawn
            with replacement.
        """
        k = self.kep_config.kd_queries_per_mention
        tid = self.row_to_teacher[entity]
        safe = tid.clamp_min(0)
        start = self.kd_ptr[safe]
        deg = torch.where(tid >= 0, self.kd_ptr[safe + 1] - start, torch.zeros_like(start))
        ar = torch.arange(k, device=entity.device)
        draw = (torch.rand(len(entity), k, device=entity.device) * deg[:, None]).long()
        offs = torch.where(deg[:, None] <= k, ar[None], draw)
        group, slot = (ar[None] < deg[:, None]).nonzero(as_tuple=True)
        idx = start[group] + offs[group, slot]
        return group, tid[group], self.kd_rt[idx, 0], self.kd_rt[idx, 1]

    def sample_candidates(self, t: torch.Tensor) -> torch.Tensor:
        """``(Q, 1 + num_negatives)`` candidates with the true tail ``t (Q,)`` in column 0, or all
        teacher entities ``(n,)`` when that is no bigger."""
        n, k = self.teacher_entity.shape[0], self.kep_config.num_negatives
        if k <= 0 or k + 1 >= n:
            return torch.arange(n, device=t.device)
        neg = torch.randint(n, (len(t), k), device=t.device)
        return torch.cat([t[:, None], neg], 1)

    def extra_losses(self, hidden, mention_mask, mention_entity_ids):
        cfg = self.kep_config
        if mention_mask is None or mention_entity_ids is None:
            raise ValueError("distill needs mention_mask and mention_entity_ids in the batch (KEPCollator)")
        states, entity = pool_mentions(hidden, mention_mask, mention_entity_ids)
        parts: dict[str, torch.Tensor] = {"num_mentions": torch.tensor(len(entity))}
        if len(entity) == 0:
            kd = self._zero()
            parts.update(kd_loss=kd.detach())
            return kd, parts
        pred = self.mention_proj(states)  # (G, d_kg)
        kd = pred.new_zeros(())
        if self.use_feature:
            f = feature_kd_loss(pred, self.kg_table[entity])
            kd = kd + f
            parts["feature_kd_loss"] = f.detach()
        if self.use_logit and self._teacher_fn is not None:
            group, head, r, t = self.sample_kd_queries(entity)
            parts["num_triples"] = torch.tensor(len(group))
            if len(group):
                lk = self.logit_kd_from_candidates(pred[group], self.teacher_entity[head], r, self.sample_candidates(t))
            else:
                lk = pred.sum() * 0.0
            kd = kd + lk
            parts["logit_kd_loss"] = lk.detach()
        parts["kd_loss"] = kd.detach()
        return cfg.lambda_kd * kd, parts

    def _saved_extra(self) -> dict:
        return {"d_kg": int(self.kg_table.shape[1])}


class MultitaskKEP(KEPModel):
    """KEPLER-style ``L = L_MLM + mu_kg * L_KG``.

    Entity representations are produced by the LM, through ``mention_proj`` (hidden -> the KGE's
    entity size), from one of two sources (``config.kg_entities``):

    * ``"mentions"``: the mean state of an entity's mentions in the batch. Positive triples are
      known facts ``(h, r, t)`` with both ``h`` and ``t`` mentioned in the batch; each gets
      ``num_negatives`` corrupted tails drawn from the batch's other entities.
    * ``"descriptions"`` (KEPLER): the mean state of the entity's description encoded alone.
      ``kg_triples_per_step`` known triples are drawn from the whole KG each step, each with
      ``num_negatives`` tails drawn from all entities that have a description.

    Scores come from a kgengine model (``create_model(kg_model_name, 1, num_relations, kg_dim)``:
    its relation tables are this model's trainable relation embeddings; its entity table is unused).

    Args:
        bridge, config: as :class:`KEPModel`.
        teacher: a kgengine TrainedKGE giving the known triples (``config.kg_splits``) and, when it
            is the same KGE model and dimension, the relation tables' initial values.
        triples: alternatively ``(T, 3)`` (head row, relation, tail row) in the bridge's KG rows.
        num_relations: with ``triples`` (default ``max relation + 1``).
        descriptions: with ``kg_entities="descriptions"``: one text per KG row (None or empty:
            none; triples touching such a row are not used), and ``tokenizer`` to encode them.
    """

    mode = "multitask"

    def __init__(self, bridge: KGBridge, config: KEPConfig, teacher: "TrainedKGE | None" = None,
                 triples: torch.Tensor | None = None, num_relations: int | None = None,
                 _require_targets: bool = True, descriptions: Sequence[str | None] | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        from kgengine.models import create_model

        super().__init__(bridge, config)
        config = self.kep_config
        n_rows = int(self.kg_table.shape[0])
        if teacher is not None and triples is None:
            t = _known_triples(teacher, config.kg_splits)
            to_row = torch.tensor([self._row_of(n) for n in teacher.entities], dtype=torch.long)
            h, tt = to_row[t[:, 0]], to_row[t[:, 2]]
            keep = (h >= 0) & (tt >= 0)
            triples = torch.stack([h[keep], t[keep, 1], tt[keep]], 1)
            num_relations = len(teacher.relations) if num_relations is None else num_relations
        if triples is not None:
            triples = torch.as_tensor(triples, dtype=torch.long).reshape(-1, 3)
            if len(triples) and (triples[:, [0, 2]].min() < 0 or triples[:, [0, 2]].max() >= n_rows):
                raise ValueError(f"triples must hold KG rows in [0, {n_rows})")
            if num_relations is None:
                num_relations = int(triples[:, 1].max()) + 1 if len(triples) else 1
        if num_relations is None:
            raise ValueError("multitask needs known triples: pass teacher= (a kgengine TrainedKGE) or triples=")
        if _require_targets and (triples is None or len(triples) == 0):
            raise ValueError("multitask found no known triple among the bridge's entities")
        same = teacher is not None and teacher.model.name.lower() == config.kg_model_name.lower()
        if config.kg_dim is None:  # resolved once, so that a saved config rebuilds the same shapes
            config.kg_dim = int(teacher.model.dim) if same else 64
        self.kge = create_model(config.kg_model_name, 1, int(num_relations), int(config.kg_dim), gamma=config.gamma)
        rel_names = [k for k, v in self.kge.table_index.items() if v == "relation"]
        with torch.no_grad():
            if same and teacher.model.dim == config.kg_dim and teacher.model.num_relations == num_relations:
                for k in rel_names:  # warm start: the teacher's relation embeddings (forward rows)
                    self.kge.tables[k].copy_(teacher.model.tables[k][:num_relations])
        for k in rel_names:
            self.kge.tables[k].requires_grad_(True)  # kgengine keeps tables frozen for its own sparse optimiser
        self.num_relations = int(num_relations)
        self.mention_proj = nn.Linear(self.projector.hidden, self.kge.entity_dim)
        trip = triples if triples is not None else torch.empty((0, 3), dtype=torch.long)
        if config.kg_entities == "descriptions":
            trip = self._set_descriptions(trip, descriptions, tokenizer, n_rows, _require_targets)
        ptr, rt = _triple_index(trip, n_rows)
        self.register_buffer("kg_ptr", ptr, persistent=False)
        self.register_buffer("kg_rt", rt, persistent=False)

    def _set_descriptions(self, trip: torch.Tensor, descriptions, tokenizer, n_rows: int,
                          require: bool) -> torch.Tensor:
        """Tokenise every description once (``desc_ids (n, Ld)``, ``desc_len (n,)`` buffers) and
        keep the triples whose two ends have one."""
        if (descriptions is None or tokenizer is None) and not require:  # loaded for probing: no KG task
            self.register_buffer("desc_rows", torch.zeros(0, dtype=torch.long), persistent=False)
            return trip
        if descriptions is None or tokenizer is None:
            raise ValueError("kg_entities='descriptions' needs descriptions (one per KG row) and a tokenizer")
        if len(descriptions) != n_rows:
            raise ValueError(f"{len(descriptions)} descriptions for {n_rows} KG rows")
        texts = [d or "" for d in descriptions]
        enc = tokenizer(texts, truncation=True, max_length=self.kep_config.description_length,
                        padding="max_length", return_tensors="pt")
        has = torch.tensor([bool(t.strip()) for t in texts])
        length = enc["attention_mask"].sum(1) * has
        self.register_buffer("desc_ids", enc["input_ids"].to(torch.int32), persistent=False)
        self.register_buffer("desc_len", length, persistent=False)
        self.register_buffer("desc_rows", torch.nonzero(has).flatten(), persistent=False)
        keep = has[trip[:, 0]] & has[trip[:, 2]] if len(trip) else torch.zeros(0, dtype=torch.bool)
        trip = trip[keep]
        if require and (len(trip) == 0 or len(self.desc_rows) < 2):
            raise ValueError("kg_entities='descriptions' found no known triple whose two entities have a description")
        return trip

    def _row_of(self, name: str) -> int:
        if not hasattr(self, "_name_index"):
            self._name_index = {n: i for i, n in enumerate(self.kg_names)}
        return self._name_index.get(name, -1)

    def batch_triples(self, uniq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Known triples among the batch's entities ``uniq (U,)`` (KG rows, sorted).

        Returns ``h (P,)``, ``r (P,)``, ``t (P,)`` with ``h``, ``t`` indices into ``uniq``, at most
        ``max_kg_triples`` (a random subset beyond that).
        """
        dev = uniq.device
        pos_of = torch.full((self.kg_table.shape[0],), -1, dtype=torch.long, device=dev)
        pos_of[uniq] = torch.arange(len(uniq), device=dev)
        start = self.kg_ptr[uniq]
        deg = self.kg_ptr[uniq + 1] - start
        total = int(deg.sum())
        h_u = torch.repeat_interleave(torch.arange(len(uniq), device=dev), deg)
        within = torch.arange(total, device=dev) - torch.repeat_interleave(torch.cumsum(deg, 0) - deg, deg)
        idx = start[h_u] + within
        r, t_u = self.kg_rt[idx, 0], pos_of[self.kg_rt[idx, 1]]
        keep = t_u >= 0
        h_u, r, t_u = h_u[keep], r[keep], t_u[keep]
        if len(h_u) > self.kep_config.max_kg_triples:
            pick = torch.randperm(len(h_u), device=dev)[: self.kep_config.max_kg_triples]
            h_u, r, t_u = h_u[pick], r[pick], t_u[pick]
        return h_u, r, t_u

    def kg_loss(self, rep: torch.Tensor, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor,
                neg_idx: torch.Tensor | None = None) -> torch.Tensor:
        """The KGE loss on LM-produced entity vectors.

        Args:
            rep: ``(U, d)`` entity representations; h, t: ``(P,)`` indices into ``rep``; r: ``(P,)``.
            neg_idx: ``(P, K)`` negative tails (indices into ``rep``); default: for each positive,
                ``K = num_negatives`` tails drawn uniformly from the other ``U - 1`` entities
                (never the true tail).
        Scored with the kgengine model's ``score_emb`` (positives) and ``score_tails_emb``
        (negatives, ``P`` chunks of one query).
        """
        U, K = rep.shape[0], max(1, self.kep_config.num_negatives)
        rel = self.kge.relation_tables()
        pos = self.kge.score_emb(rep[h], r, rel, rep[t])  # (P,)
        if neg_idx is None:
            neg_idx = (t[:, None] + torch.randint(1, U, (len(t), K), device=rep.device)) % U  # skips t itself
        K = neg_idx.shape[1]
        neg = self.kge.score_tails_emb(rep[h][:, None], r[:, None], rel, rep[neg_idx])  # (P, 1, K)
        return kge_logsigmoid_loss(pos, neg.reshape(len(t), K))

    def sample_kepler(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """KEPLER's batch: ``kg_triples_per_step`` known triples drawn uniformly from the whole KG
        and ``num_negatives`` tails each, drawn uniformly from the rows that have a description
        (a drawn tail may be the true one, as in uniform corruption). Returns KG rows ``h, r, t
        (P,)`` and ``neg (P, K)``."""
        dev = self.kg_rt.device
        total = len(self.kg_rt)
        idx = torch.randint(total, (self.kep_config.kg_triples_per_step,), device=dev)
        h = torch.searchsorted(self.kg_ptr, idx, right=True) - 1  # CSR: the head owning slot idx
        r, t = self.kg_rt[idx, 0], self.kg_rt[idx, 1]
        K = max(1, self.kep_config.num_negatives)
        neg = self.desc_rows[torch.randint(len(self.desc_rows), (len(idx), K), device=dev)]
        return h, r, t, neg

    def encode_descriptions(self, rows: torch.Tensor) -> torch.Tensor:
        """``(U, hidden)``: the mean final state of each row's description (text only, no slot)."""
        L = int(self.desc_len[rows].max())
        ids = self.desc_ids[rows, :L].long()
        mask = (torch.arange(L, device=ids.device) < self.desc_len[rows, None]).long()
        hidden, _ = self.encode(ids, mask)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)

    def _kepler_losses(self) -> tuple[torch.Tensor, dict]:
        h, r, t, neg = self.sample_kepler()
        uniq, inv = torch.unique(torch.cat([h, t, neg.flatten()]), return_inverse=True)
        rep = self.mention_proj(self.encode_descriptions(uniq))
        P = len(h)
        kg = self.kg_loss(rep, inv[:P], r, inv[P:2 * P], inv[2 * P:].view(P, -1))
        parts = {"kg_loss": kg.detach(), "num_triples": torch.tensor(P), "num_mentions": torch.tensor(len(uniq))}
        return self.kep_config.mu_kg * kg, parts

    def extra_losses(self, hidden, mention_mask, mention_entity_ids):
        if self.kep_config.kg_entities == "descriptions":
            return self._kepler_losses()
        if mention_mask is None or mention_entity_ids is None:
            raise ValueError("multitask needs mention_mask and mention_entity_ids in the batch (KEPCollator)")
        states, entity = pool_mentions(hidden, mention_mask, mention_entity_ids)
        parts: dict[str, torch.Tensor] = {"num_mentions": torch.tensor(len(entity))}
        uniq, inv = torch.unique(entity, return_inverse=True)
        U = len(uniq)
        h = r = t = None
        if U >= 2:
            h, r, t = self.batch_triples(uniq)
        if h is None or len(h) == 0:
            kg = self._zero()
            parts.update(kg_loss=kg.detach(), num_triples=torch.tensor(0))
            return self.kep_config.mu_kg * kg, parts
        # one vector per entity: its mentions' mean state, projected (mean then linear = linear then mean)
        summed = states.new_zeros(U, states.shape[1]).index_add_(0, inv, states)
        counts = torch.bincount(inv, minlength=U).to(states.dtype)
        rep = self.mention_proj(summed / counts[:, None])
        kg = self.kg_loss(rep, h, r, t)
        parts.update(kg_loss=kg.detach(), num_triples=torch.tensor(len(h)))
        return self.kep_config.mu_kg * kg, parts

    def _saved_extra(self) -> dict:
        return {"num_relations": self.num_relations}


def build_kep_model(bridge: KGBridge, config: KEPConfig, teacher: "TrainedKGE | str | os.PathLike | None" = None,
                    triples: torch.Tensor | None = None, num_relations: int | None = None,
                    _require_targets: bool = True, descriptions: Sequence[str | None] | None = None,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> KEPModel:
    """The mode's model around ``bridge`` (sharing its LM, projector and KG table).

    ``teacher`` (a TrainedKGE or its folder) is needed by distill's logit KD and gives multitask
    its known triples (or pass ``triples``, KG rows); ``descriptions`` (one per KG row) and
    ``tokenizer`` serve multitask with ``kg_entities="descriptions"``."""
    teacher = _as_teacher(teacher)
    if config.mode == "inject":
        return InjectKEP(bridge, config)
    if config.mode == "distill":
        return DistillKEP(bridge, config, teacher=teacher, _require_targets=_require_targets)
    return MultitaskKEP(bridge, config, teacher=teacher, triples=triples, num_relations=num_relations,
                        _require_targets=_require_targets, descriptions=descriptions, tokenizer=tokenizer)


# ---- tokenisation ------------------------------------------------------------------------------
def add_slot_token(tokenizer: PreTrainedTokenizerBase, model: nn.Module | None = None, token: str = "[ENT]") -> int:
    """Make ``token`` (the concat encoding's entity slot) a special token; returns its id.

    Special and ``normalized=False``: an uncased tokenizer keeps it whole and the MLM collator never
    masks it. If it is new, ``model``'s embeddings are resized (its row is replaced by the projected
    vector wherever it is used, so its initial value does not matter).
    """
    from transformers import AddedToken

    specials = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    tid = tokenizer.get_vocab().get(token)
    if tid is None or tid not in specials:
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
        tid = tokenizer.convert_tokens_to_ids(token)
    if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return int(tid)


def _entity_lookup(entities: Mapping[str, int] | KGBridge | KGVectors | Sequence[str]) -> Mapping[str, int]:
    if isinstance(entities, KGBridge):
        return {n: i for i, n in enumerate(entities.kg_names)}
    if isinstance(entities, KGVectors):
        return entities._index
    if isinstance(entities, Mapping):
        return entities
    return {n: i for i, n in enumerate(entities)}


def _token_id(tokenizer, token: str, what: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = tokenizer.unk_token_id
    if tid is None or (unk is not None and tid == unk and token != tokenizer.unk_token):
        raise ValueError(f"the {what} {token!r} is not a token of the tokenizer"
                         + (" (add it with add_slot_token)" if what == "slot token" else ""))
    return int(tid)


def tokenize_records(records: Iterable[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase,
                     entities: Mapping[str, int] | KGBridge | KGVectors | Sequence[str], encoding: str = "replace",
                     max_length: int = 128, slot_token: str = "[ENT]", slot_separator: str | None = None,
                     on_unknown: str = "skip", drop_unlinked: bool = True, chunk_size: int = 1024,
                     stats: dict | None = None) -> list[dict[str, np.ndarray]]:
    """Corpus records -> KEP features, with a fast tokenizer's offset mapping.

    A record is ``{"text": str, "mentions": [{"start", "end", "entity"}]}`` (character spans,
    ``entity`` a KG entity name). A wordpiece belongs to a mention when their character ranges
    overlap (special tokens have empty ranges and never do); a wordpiece covered by several
    mentions belongs to the first one listed.

    Features (``int64`` arrays of the sequence length ``l``):

    * ``input_ids``;
    * ``entity_ids``: the KG row at entity slots, -1 elsewhere. ``"replace"``: every wordpiece of
      the mention; ``"concat"``: an inserted ``slot_token`` right after the mention's last
      wordpiece (``slot_separator``, e.g. ``"/"``, goes before it); ``"none"``: all -1;
    * ``mention_mask``: 1 on the mention's wordpieces (never on inserted tokens);
    * ``mention_entity_ids``: the mention's KG row on its wordpieces, -1 elsewhere.

    Sequences longer than ``max_length`` (after insertion) are cut, keeping the trailing special
    token(s); a mention cut partly (or its slot) loses its marks and stays plain text.

    Args:
        entities: name -> KG row (a mapping, a :class:`KGBridge`, :class:`KGVectors` or a name list).
        on_unknown: ``"skip"`` mentions of entities not in ``entities`` or ``"error"``.
        drop_unlinked: leave out records with no mention left.
        stats: if given, filled with counts (records, kept, mentions, unknown, empty, truncated).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("tokenize_records needs a fast tokenizer (offset mapping)")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    if on_unknown not in ("skip", "error"):
        raise ValueError(f"on_unknown must be 'skip' or 'error', got {on_unknown!r}")
    index = _entity_lookup(entities)
    insert: list[int] = []
    if encoding == "concat":
        if slot_separator is not None:
            insert.append(_token_id(tokenizer, slot_separator, "slot separator"))
        insert.append(_token_id(tokenizer, slot_token, "slot token"))
    n_ins = len(insert)
    counts: Counter = Counter()
    out: list[dict[str, np.ndarray]] = []
    chunk: list[Mapping[str, Any]] = []

    def flush() -> None:
        enc = tokenizer([r["text"] for r in chunk], add_special_tokens=True, return_offsets_mapping=True,
                        return_special_tokens_mask=True, return_attention_mask=False, return_token_type_ids=False)
        for rec, ids, off, spec in zip(chunk, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
            feat = _encode_one(rec, np.asarray(ids, dtype=np.int64), np.asarray(off, dtype=np.int64).reshape(-1, 2),
                               np.asarray(spec, dtype=bool), index, encoding, insert, n_ins, max_length, on_unknown,
                               counts)
            if feat is not None or not drop_unlinked:
                out.append(feat if feat is not None else _plain(ids, max_length))
        chunk.clear()

    for rec in records:
        counts["records"] += 1
        chunk.append(rec)
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    counts["kept"] = len(out)
    logger.info("tokenised %d records -> %d features (%d mentions linked; skipped: %d unknown entity, "
                "%d empty span, %d cut by max_length=%d)", counts["records"], counts["kept"], counts["mentions"],
                counts["unknown"], counts["empty"], counts["truncated"], max_length)
    if stats is not None:
        stats.update(counts)
    return out


def _plain(ids: Sequence[int], max_length: int) -> dict[str, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > max_length:
        ids = np.concatenate([ids[: max_length - 1], ids[-1:]])
    neg = np.full(len(ids), -1, dtype=np.int64)
    return {"input_ids": ids, "entity_ids": neg, "mention_mask": np.zeros(len(ids), np.int64),
            "mention_entity_ids": neg.copy()}


def _encode_one(rec: Mapping[str, Any], ids: np.ndarray, off: np.ndarray, special: np.ndarray,
                index: Mapping[str, int], encoding: str, insert: list[int], n_ins: int, max_length: int,
                on_unknown: str, counts: Counter) -> dict[str, np.ndarray] | None:
    """One record's features (see :func:`tokenize_records`); None if no mention survives."""
    spans, rows = [], []
    text_len = len(rec["text"])
    for m in rec.get("mentions") or ():  # per mention, not per character
        row = index.get(m["entity"])
        if row is None:
            if on_unknown == "error":
                raise KeyError(f"unknown entity {m['entity']!r} in a mention of {rec['text'][:60]!r}")
            counts["unknown"] += 1
            continue
        s, e = int(m["start"]), int(m["end"])
        if not 0 <= s < e <= text_len:
            counts["empty"] += 1
            continue
        spans.append((s, e))
        rows.append(int(row))
    if not rows:
        return None
    sp, rw = np.asarray(spans, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    L = len(ids)
    real = off[:, 1] > off[:, 0]
    ov = (off[None, :, 0] < sp[:, 1:2]) & (off[None, :, 1] > sp[:, 0:1]) & real[None]  # (M, L)
    covered = ov.any(0)
    owner = np.where(covered, ov.argmax(0), -1)  # first listed mention wins a shared wordpiece
    present = np.zeros(len(rw), dtype=bool)
    present[owner[covered]] = True
    counts["empty"] += int((~present).sum())
    ment_ent = np.where(covered, rw[np.maximum(owner, 0)], -1)
    mmask = covered.astype(np.int64)
    if encoding == "replace":
        ent = ment_ent.copy()
    else:
        ent = np.full(L, -1, dtype=np.int64)
    if n_ins:  # concat: [separator] [ENT] after each mention's last wordpiece
        pos = np.flatnonzero(covered)
        last = np.full(len(rw), -1, dtype=np.int64)
        np.maximum.at(last, owner[pos], pos)
        pm = np.flatnonzero(present)
        at = np.repeat(last[pm] + 1, n_ins)  # np.insert is stable: a separator stays before its slot
        ins_ent = np.full((len(pm), n_ins), -1, dtype=np.int64)
        ins_ent[:, -1] = rw[pm]
        ids = np.insert(ids, at, np.tile(np.asarray(insert, dtype=np.int64), len(pm)))
        ent = np.insert(ent, at, ins_ent.ravel())
        mmask = np.insert(mmask, at, 0)
        ment_ent = np.insert(ment_ent, at, -1)
        owner = np.insert(owner, at, np.repeat(pm, n_ins))
        special = np.insert(special, at, False)
    if len(ids) > max_length:
        n_tail = 0  # trailing special tokens ([SEP]) are kept
        while n_tail < len(special) and special[len(special) - 1 - n_tail]:
            n_tail += 1
        n_tail = min(n_tail, max_length - 1)
        cut = max_length - n_tail
        dropped = owner[cut:len(ids) - n_tail]
        bad = np.unique(dropped[dropped >= 0])
        if len(bad):
            counts["truncated"] += len(bad)
            clear = np.isin(owner, bad)
            ent[clear], mmask[clear], ment_ent[clear] = -1, 0, -1
            present[bad] = False
        keep = np.r_[0:cut, len(ids) - n_tail:len(ids)]
        ids, ent, mmask, ment_ent = ids[keep], ent[keep], mmask[keep], ment_ent[keep]
    n_linked = int(present.sum())
    if n_linked == 0:
        return None
    counts["mentions"] += n_linked
    return {"input_ids": ids, "entity_ids": ent, "mention_mask": mmask, "mention_entity_ids": ment_ent}


# ---- collator ------------------------------------------------------------------------------------
class KEPCollator:
    """Batches :func:`tokenize_records` features for a KEP model.

    Wraps :class:`EntityMLMCollator` (padding; BERT masking that never touches entity slots, with
    ``mask_mentions``) and adds ``mention_mask`` and ``mention_entity_ids`` (padded 0 / -1). With
    ``label_slots=True`` (inject mode, replace encoding) the mention's slot positions are labelled
    with their own wordpieces: the slot's input is the entity vector, so the word must be recovered
    from it.

    Returns ``input_ids``, ``attention_mask``, ``entity_ids``, ``labels``, ``mention_mask``,
    ``mention_entity_ids`` (``int64 (B, L)``).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15, mask_mentions: bool = False,
                 label_slots: bool = False, pad_to_multiple_of: int | None = None, seed: int | None = None) -> None:
        self.mlm = EntityMLMCollator(tokenizer, mlm_probability=mlm_probability, mask_mentions=mask_mentions,
                                     pad_to_multiple_of=pad_to_multiple_of, return_mention_mask=True, seed=seed)
        self.tokenizer = tokenizer  # Trainer saves data_collator.tokenizer when it has no processing_class
        self.label_slots = label_slots

    @classmethod
    def for_config(cls, tokenizer: PreTrainedTokenizerBase, config: KEPConfig,
                   seed: int | None = None) -> "KEPCollator":
        """The collator a mode needs: inject predicts the mention only (no random masking)."""
        inject = config.mode == "inject"
        return cls(tokenizer, mlm_probability=0.0 if inject else config.mlm_probability,
                   mask_mentions=bool(config.mask_mentions), label_slots=inject and config.encoding == "replace",
                   seed=seed)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.mlm(features)
        length = batch["input_ids"].shape[1]
        seqs = []
        for f in features:
            v = f.get("mention_entity_ids")
            n = len(f["input_ids"])
            seqs.append(torch.full((n,), -1, dtype=torch.long) if v is None else torch.as_tensor(v, dtype=torch.long))
        batch["mention_entity_ids"] = self.mlm._pad(seqs, -1, length)
        if self.label_slots:
            # slots were never masked, so input_ids still hold the mention's own wordpieces there
            pick = (batch["entity_ids"] >= 0) & (batch["mention_mask"] > 0)
            batch["labels"] = torch.where(pick, batch["input_ids"], batch["labels"])
        return batch


# ---- the MLM head loader -----------------------------------------------------------------------
def _hf_folder(path: str | os.PathLike) -> str | os.PathLike:
    """A sentence-transformers folder -> its Transformer module's folder (where config.json is)."""
    p = Path(path)
    if p.is_dir() and not (p / "config.json").is_file() and (p / "modules.json").is_file():
        for mod in json.loads((p / "modules.json").read_text()):
            if "Transformer" in str(mod.get("type", "")) and (p / mod.get("path", "") / "config.json").is_file():
                return p / mod.get("path", "")
    return path


def load_lm_with_mlm_head(path: str | os.PathLike, **hf_kwargs: Any) -> nn.Module:
    """An ``AutoModelForMaskedLM`` from ``path``, also when the checkpoint has no MLM head.

    A sentence-transformers BERT (e.g. all-MiniLM-L6-v2) stores the encoder only: the encoder
    weights load into ``BertForMaskedLM``, the head's transform is freshly initialised, its decoder
    is tied to the word embeddings (so the head starts as a similarity to the input vocabulary) and
    its bias is zero. That case is logged as a warning; warm the head up before trusting MLM
    losses (:func:`warmup_mlm_head`, ``KEPConfig.mlm_head_warmup_steps``). The returned model has
    ``mlm_head_was_missing`` (bool).
    """
    from transformers import AutoModelForMaskedLM

    folder = _hf_folder(path)
    model, info = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True, **hf_kwargs)
    prefix = model.base_model_prefix + "."
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(prefix))
    head_missing = bool(missing)
    if head_missing:
        out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out_emb is not None and out_emb.weight is not in_emb.weight:
            out_emb.weight = in_emb.weight  # tie, whatever the checkpoint's config said
            model.config.tie_word_embeddings = True
        logger.warning("%s has no MLM head (missing: %s): initialised %s from the base weights with a new head, "
                       "decoder tied to the word embeddings; warm it up (mlm_head_warmup_steps) before relying on "
                       "MLM losses", path, ", ".join(missing), type(model).__name__)
    model.mlm_head_was_missing = head_missing
    return model


def warmup_mlm_head(model: nn.Module, tokenizer: PreTrainedTokenizerBase, features: Sequence[Mapping[str, Any]],
                    steps: int, learning_rate: float = 1e-3, batch_size: int = 16,
                    mlm_probability: float = 0.15, seed: int = 0) -> list[float]:
    """Train only a freshly initialised MLM head (not the encoder, not the tied word embeddings) with
    plain MLM on ``features``' text for ``steps`` steps; returns the losses."""
    if steps <= 0 or not features:
        return []
    name = _mlm_head_name(model)
    head = getattr(model, name) if name else None
    if head is None:
        raise ValueError(f"{type(model).__name__}: no MLM head module (cls / lm_head) to warm up")
    tied = model.get_input_embeddings().weight
    params = [p for p in head.parameters() if p is not tied]
    was = {id(p): p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=learning_rate)
    collate = EntityMLMCollator(tokenizer, mlm_probability=mlm_probability, seed=seed)
    g = torch.Generator().manual_seed(seed)
    dev = tied.device
    losses: list[float] = []
    training = model.training
    model.train()
    try:
        for _ in range(steps):
            pick = torch.randint(len(features), (min(batch_size, len(features)),), generator=g).tolist()
            batch = collate([{"input_ids": features[i]["input_ids"]} for i in pick])
            if not bool((batch["labels"] != -100).any()):
                continue
            out = model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                        labels=batch["labels"].to(dev))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
    finally:
        for p in model.parameters():
            p.requires_grad_(was[id(p)])
        model.train(training)
    if losses:
        logger.info("MLM head warm-up: %d steps, loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    return losses


# ---- Trainer -----------------------------------------------------------------------------------------
def _build_trainer() -> type:
    from transformers import Trainer

    class KEPTrainer(Trainer):
        """HF ``Trainer`` that also logs the loss parts (``mlm_loss``, ``kd_loss``, ``kg_loss``, ...)
        and the KG signal per step (``num_mentions``, ``num_triples``), means over the logging
        window; the projector / heads can have their own learning rate.

        Args:
            head_learning_rate: for the KD / KG heads; ``None``: ``args.learning_rate``.
            projector_learning_rate: for the projector; ``None``: ``args.learning_rate``.
            Everything else as ``transformers.Trainer``.
        """

        def __init__(self, *args: Any, head_learning_rate: float | None = None,
                     projector_learning_rate: float | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.head_learning_rate = head_learning_rate
            self.projector_learning_rate = projector_learning_rate
            self._parts: dict[str, torch.Tensor] = {}
            self._part_counts: Counter = Counter()

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            loss = outputs["loss"]
            if model.training:  # accumulate on device: no host sync per step
                for k in PART_KEYS + COUNT_KEYS:
                    v = outputs.get(k)
                    if v is not None:
                        self._parts[k] = self._parts.get(k, 0.0) + v.detach().float()
                        self._part_counts[k] += 1
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._parts:
                for k, v in self._parts.items():
                    logs[k] = float(v) / max(1, self._part_counts[k])
                self._parts, self._part_counts = {}, Counter()
            super().log(logs, start_time)

        def create_optimizer(self, model=None):
            if self.optimizer is not None or (self.head_learning_rate is None
                                              and self.projector_learning_rate is None):
                return super().create_optimizer(model)
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            base = self.args.learning_rate

            def part(n: str) -> str:
                return "lm" if n.startswith("model.") else "projector" if n.startswith("projector.") else "head"

            groups = []
            for which, lr in (("lm", base), ("projector", self.projector_learning_rate or base),
                              ("head", self.head_learning_rate or base)):
                for wd in (True, False):
                    ps = [p for n, p in opt_model.named_parameters()
                          if p.requires_grad and part(n) == which and (n in decay) == wd]
                    if ps:
                        groups.append({"params": ps, "lr": lr, "weight_decay": self.args.weight_decay if wd else 0.0})
            cls, kw = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            kw.pop("lr", None)
            self.optimizer = cls(groups, lr=self.args.learning_rate, **kw)
            return self.optimizer

    return KEPTrainer


def _build_log_callback() -> type:
    from transformers import TrainerCallback

    class LossLogCallback(TrainerCallback):
        """Writes every log record to ``loss_log.jsonl`` as it happens; on (re)start the file is
        rewritten from the Trainer state, so a resumed run continues one consistent log."""

        def __init__(self, path: Path) -> None:
            self.path = Path(path)

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.write_text("".join(json.dumps(r) + "\n" for r in state.log_history), encoding="utf-8")

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({**logs, "step": state.global_step}) + "\n")

    return LossLogCallback


# transformers' Trainer (~4 s to import) and ModelOutput are imported on first use, not with the package
_BUILDERS = {"KEPOutput": _build_output, "KEPTrainer": _build_trainer, "LossLogCallback": _build_log_callback}
_LAZY: dict[str, type] = {}


def _lazy(name: str) -> type:
    if name not in _LAZY:
        cls = _BUILDERS[name]()
        cls.__module__, cls.__qualname__ = __name__, name  # picklable by name, via __getattr__
        _LAZY[name] = cls
    return _LAZY[name]


def __getattr__(name: str) -> Any:  # PEP 562
    if name in _BUILDERS:
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def plot_loss_curve(records: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                    title: str | None = None) -> Path | None:
    """The loss (and its parts) against the step, as a PNG; None when matplotlib is not importable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # optional: no dependency is added for a picture
        return None
    rows = [r for r in records if "loss" in r and "step" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss",) + PART_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key, lw=1.5 if key == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
    return Path(path)


# ---- the run ---------------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    """What :func:`run_pretraining` returns."""

    model: KEPModel
    tokenizer: Any
    output_dir: Path
    log: list[dict] = field(default_factory=list)
    loss_png: Path | None = None
    train_output: Any = None


def _read_records(records: Iterable[Mapping[str, Any]] | str | os.PathLike) -> Iterable[Mapping[str, Any]]:
    if not isinstance(records, (str, os.PathLike)):
        return records
    out = []
    with open(records, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{records}:{lineno}: not a JSON record ({e.msg})") from None
    return out


def _projector_for(kv: KGVectors, tokenizer, model: nn.Module) -> EntityProjector:
    """E-BERT's closed-form initialisation, or (too few anchors) a default linear map at the
    word embeddings' norm."""
    emb = model.get_input_embeddings()
    try:
        return EntityProjector.fit_from_anchors(kv, tokenizer, emb)
    except ValueError as e:
        logger.warning("projector: %s; starting from a random linear map scaled to the word embeddings' norm", e)
        proj = EntityProjector(kv.dim, int(emb.weight.shape[1]))
        proj.rescale_to(emb, kv.vectors[: min(len(kv), 4096)])
        return proj


def _resolve(source: Any, tokenizer: Any) -> tuple[KGBridge, Any, Any]:
    """(bridge, tokenizer, teacher path guess) from a KGBridge, a bridge folder, or {lm, kg} paths."""
    from transformers import AutoTokenizer

    if isinstance(source, KGBridge):
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a KGBridge instance")
        return source, tokenizer, None
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not (p / BRIDGE_CONFIG).is_file():
            raise FileNotFoundError(f"{p / BRIDGE_CONFIG}: missing; pass a KGBridge folder or {{'lm': ..., 'kg': ...}}")
        from kgengine.persist import read_config

        cfg = read_config(p / BRIDGE_CONFIG)
        lm_dir = p / cfg.get("lm", LM_DIR)
        model = load_lm_with_mlm_head(lm_dir)
        proj = EntityProjector.from_pretrained(p / cfg.get("projector", PROJECTOR_DIR))
        kv = KGVectors.from_pretrained(p / cfg.get("kg", KG_DIR))
        tok = tokenizer or AutoTokenizer.from_pretrained(lm_dir)
        return KGBridge(model, proj, kv), tok, None
    if isinstance(source, (tuple, list)) and len(source) == 2:
        source = {"lm": source[0], "kg": source[1]}
    if isinstance(source, Mapping) and "lm" in source and "kg" in source:
        model = load_lm_with_mlm_head(source["lm"])
        tok = tokenizer or AutoTokenizer.from_pretrained(_hf_folder(source["lm"]))
        kv = load_kg_vectors(source["kg"])
        kg = Path(source["kg"])
        guess = source.get("teacher") or (kg if (kg / "model_config.json").is_file() else None)
        return KGBridge(model, _projector_for(kv, tok, model), kv), tok, guess
    raise TypeError(f"bridge_or_paths: expected a KGBridge, a bridge folder or {{'lm': path, 'kg': path}}, "
                    f"got {type(source).__name__}")


def run_pretraining(bridge_or_paths: KGBridge | str | os.PathLike | Mapping[str, Any] | tuple,
                    records: Iterable[Mapping[str, Any]] | str | os.PathLike, config: KEPConfig,
                    output_dir: str | os.PathLike, max_steps: int, *, tokenizer: PreTrainedTokenizerBase | None = None,
                    teacher: "TrainedKGE | str | os.PathLike | None" = None, triples: torch.Tensor | None = None,
                    eval_records: Iterable[Mapping[str, Any]] | str | os.PathLike | None = None,
                    batch_size: int = 16, learning_rate: float = 5e-5, logging_steps: int = 10,
                    save_steps: int = 500, save_total_limit: int | None = 2, eval_steps: int | None = None,
                    seed: int = 0, use_cpu: bool = False, progress: bool = True,
                    resume_from_checkpoint: bool | str | None = None,
                    training_args: Mapping[str, Any] | None = None,
                    descriptions: Mapping[str, str] | Sequence[str | None] | None = None) -> PretrainResult:
    """One KEP run with HF ``Trainer``: tokenise, build the mode's model, train, log, save.

    Args:
        bridge_or_paths: a :class:`KGBridge` (then ``tokenizer`` is required), a folder written by
            ``KGBridge.save_pretrained``, or ``{"lm": HF folder, "kg": KG vectors (a kgengine model
            folder or an export)}`` / ``(lm, kg)``: the LM is loaded with
            :func:`load_lm_with_mlm_head`, the projector ridge-initialised on anchors.
        records: corpus records or a JSONL path (see :func:`tokenize_records`).
        config: the mode and its weights.
        output_dir: checkpoints (``checkpoint-N/``), ``loss_log.jsonl``, ``loss_curve.png`` (if
            matplotlib is importable) and the final model (:meth:`KEPModel.save_pretrained`).
        max_steps: optimiser steps (a resumed run continues up to it).
        teacher: kgengine TrainedKGE or folder (distill logit KD; multitask triples). Default with
            ``{"lm", "kg"}`` paths: the ``kg`` folder when it is a kgengine model folder.
        triples: multitask's known triples as KG rows, instead of a teacher's.
        eval_records: held-out records; evaluated every ``eval_steps`` (default ``save_steps``).
        use_cpu: Trainer's ``use_cpu``; progress: Trainer's progress bars.
        resume_from_checkpoint: True (the latest under ``output_dir``) or a checkpoint folder.
        training_args: extra ``TrainingArguments`` (they win over the ones set here).
        descriptions: for ``kg_entities="descriptions"``: entity name -> text, or one text per KG row.
    """
    from transformers import TrainingArguments

    out = Path(output_dir)
    bridge, tok, guess = _resolve(bridge_or_paths, tokenizer)
    needs_teacher = (config.mode == "distill" and config.kd_kind != "feature") or \
                    (config.mode == "multitask" and triples is None)
    teacher = _as_teacher(teacher if teacher is not None else (guess if needs_teacher else None))
    if config.encoding == "concat":
        add_slot_token(tok, bridge.model, config.slot_token)
    recs = _read_records(records)
    tk = dict(encoding=config.encoding, max_length=config.max_length, slot_token=config.slot_token,
              slot_separator=config.slot_separator)
    features = tokenize_records(recs, tok, bridge, **tk)
    if not features:
        raise ValueError("no record has a mention of a known entity; nothing to pre-train on")
    eval_features = None
    if eval_records is not None:
        eval_features = tokenize_records(_read_records(eval_records), tok, bridge, **tk)
    if config.mlm_head_warmup_steps and getattr(bridge.model, "mlm_head_was_missing", False) \
            and not resume_from_checkpoint:
        # text only: the inserted slot tokens mean nothing without their injected vectors
        text = [{"input_ids": f["input_ids"][f["entity_ids"] < 0]} if config.encoding == "concat" else f
                for f in features]
        warmup_mlm_head(bridge.model, tok, text, config.mlm_head_warmup_steps, seed=seed)
    if isinstance(descriptions, Mapping):
        descriptions = [descriptions.get(n) for n in bridge.kg_names]
    model = build_kep_model(bridge, config, teacher=teacher, triples=triples, descriptions=descriptions,
                            tokenizer=tok)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("KEP %s: %d features, %d trainable parameters (LM %s)", config.mode, len(features), n_train,
                "frozen" if config.freeze_lm else "trained")
    args = dict(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=batch_size,
                per_device_eval_batch_size=batch_size, learning_rate=learning_rate, logging_steps=logging_steps,
                save_strategy="steps", save_steps=save_steps, save_total_limit=save_total_limit, report_to=[],
                remove_unused_columns=False, disable_tqdm=not progress, seed=seed, data_seed=seed,
                prediction_loss_only=True, use_cpu=use_cpu, dataloader_num_workers=0,
                eval_strategy="steps" if eval_features else "no")
    if eval_features:
        args["eval_steps"] = eval_steps or save_steps
    args.update(training_args or {})
    log_path = out / LOSS_LOG
    trainer = _lazy("KEPTrainer")(
        model=model, args=TrainingArguments(**args), train_dataset=features, eval_dataset=eval_features or None,
        data_collator=KEPCollator.for_config(tok, config), processing_class=tok,
        callbacks=[_lazy("LossLogCallback")(log_path)], head_learning_rate=config.head_learning_rate,
        projector_learning_rate=config.projector_learning_rate)
    train_output = trainer.train(resume_from_checkpoint=resume_from_checkpoint or None)
    model.save_pretrained(out, tokenizer=tok)
    log = [dict(r) for r in trainer.state.log_history]
    png = plot_loss_curve(log, out / LOSS_PNG, title=f"KEP {config.mode}")
    return PretrainResult(model=model, tokenizer=tok, output_dir=out, log=log, loss_png=png, train_output=train_output)
