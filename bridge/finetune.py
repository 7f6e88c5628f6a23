"""Fine-tune a (bridged) encoder for relation classification between two marked nominals.

The entity-marker recipe (Baldini Soares et al., 2019): the nominals are wrapped in new special
tokens, ``[E1] cradle [/E1] ... [E2] child [/E2]``, and a linear head reads the encoder's states
at ``[E1]`` and ``[E2]``, concatenated. Variants (:data:`VARIANTS`), same seeds and budget:

* ``text``: the recipe alone.
* ``inject``: each linked nominal gets an entity slot inside its markers (``[E1] cradle [ENT]
  [/E1]``, E-BERT's concat encoding) whose input embedding is the nominal's projected KG vector
  (:class:`~bridge.inject.KGBridge`); an unlinked nominal gets no slot.
* ``late-fusion``: no injection; the head reads ``[E1] ++ [E2] ++ P(kg1) ++ P(kg2)`` (projected
  KG vectors, zero when unlinked).
* ``kg-only``: no text at all: a two-layer head on the two projected KG vectors (what the graph
  alone knows about the pair).

Early stopping on a validation slice carved from train (seeded, the same slice for every seed and
variant), HF :class:`~transformers.Trainer`; test predictions are scored by :mod:`bridge.semeval`
(and by the official perl scorer where perl is installed).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .semeval import LABELS, SCORER, Sentence, official_scores, perl_official_f1, read_semeval, write_answers

__all__ = ["FinetuneConfig", "VARIANTS", "RelationClassifier", "encode", "finetune", "finetune_seeds", "link_rows",
           "predict_logits"]

log = logging.getLogger(__name__)

VARIANTS = ("text", "inject", "late-fusion", "kg-only")
KG_CONTROLS = ("none", "random", "permuted")
MARKERS = ("[E1]", "[/E1]", "[E2]", "[/E2]")
SLOT = "[ENT]"  # the concat encoding's slot token, as in KEP pre-training (bridge.pretrain)
RESULT_FILE = "finetune.json"


@dataclass
class FinetuneConfig:
    """One fine-tuning run. ``lm`` is a local HF checkpoint folder; ``kg`` a KG table that
    :func:`bridge.vectors.load_kg_vectors` reads, keyed by WordNet noun synsets (``n.02084071``)."""

    data: str = field(metadata={"help": "SemEval-2010 Task 8 folder (TRAIN_FILE.TXT, TEST_FILE_FULL.TXT)"})
    lm: str = field(metadata={"help": "HF encoder checkpoint folder"})
    out: str = field(metadata={"help": "output folder (finetune.json, test answers, scorer output)"})
    variant: str = field(default="text", metadata={"help": f"one of {', '.join(VARIANTS)}"})
    kg: str | None = field(default=None, metadata={"help": "KG vectors (needed by every variant but text)"})
    names: str | None = field(default=None, metadata={
        "help": "entities.tsv with readable names of the KG ids (the projector's anchors: dog.n.01 -> dog)"})
    wordnet: str | None = field(default=None, metadata={"help": "WordNet dict/ folder or WNdb-3.0.tar.gz (linking)"})
    link: str = field(default="first", metadata={
        "help": "linking: first (most frequent sense) or mean (of all senses' vectors: late-fusion, kg-only; "
                "inject's slot reads the first sense either way)"})
    kg_control: str = field(default="none", metadata={
        "help": "none; random (vectors replaced by random ones of the same norms); permuted (rows shuffled: "
                "every nominal gets another entity's vector)"})
    seed: int = field(default=0, metadata={"help": "model seed (initialisation, dropout, batch order)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the validation slice carved from train"})
    valid_fraction: float = field(default=0.1, metadata={"help": "share of train held out for early stopping"})
    epochs: float = field(default=3.0, metadata={"help": "maximum epochs"})
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate (encoder and head)"})
    batch_size: int = field(default=32, metadata={"help": "sentences per step"})
    max_length: int = field(default=128, metadata={"help": "wordpieces per sentence; a cut marker is an error"})
    warmup: float = field(default=0.1, metadata={"help": "warm-up share of the steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    dropout: float = field(default=0.1, metadata={"help": "dropout before the head"})
    evals_per_epoch: int = field(default=2, metadata={"help": "validation evaluations per epoch"})
    patience: int = field(default=2, metadata={"help": "evaluations without a better validation F1 before stopping"})
    limit_train: int | None = field(default=None, metadata={"help": "use the first N train sentences (smoke runs)"})
    limit_test: int | None = field(default=None, metadata={"help": "use the first N test sentences (smoke runs)"})
    scorer: str | None = field(default=None, metadata={
        "help": "the official perl scorer (default: DATA/scorer/semeval2010_task8_scorer-v1.2.pl; skipped if absent)"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (default: leave as set)"})

    def check(self) -> None:
        """ValueError naming the field for a bad value."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: {self.variant!r} is not one of {', '.join(VARIANTS)}")
        if self.variant != "text" and not self.kg:
            raise ValueError(f"kg: variant {self.variant!r} needs KG vectors")
        if self.kg and not self.wordnet:
            raise ValueError("wordnet: linking the nominals needs the WordNet database")
        if self.link not in ("first", "mean"):
            raise ValueError(f"link: {self.link!r} is not first or mean")
        if self.kg_control not in KG_CONTROLS:
            raise ValueError(f"kg_control: {self.kg_control!r} is not one of {', '.join(KG_CONTROLS)}")
        if not 0 < self.valid_fraction < 1:
            raise ValueError(f"valid_fraction: {self.valid_fraction} must be in (0, 1)")
        for name in ("epochs", "lr", "batch_size", "max_length", "evals_per_epoch", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be > 0")


class RelationClassifier(nn.Module):
    """Entity-marker relation classifier over an HF encoder, optionally reading KG vectors.

    Args:
        encoder: an HF base model (``AutoModel``) or a :class:`~bridge.inject.KGBridge` around one
            (then ``entity_ids`` inject KG vectors at entity slots); None for ``kg-only``.
        num_labels: classes.
        fuse: append the projected KG vectors of the two nominals to the head's input (needs a
            KGBridge, whose projector and table are used).
        projector, kg_table: for ``kg-only`` (no encoder).

    ``forward(input_ids (B, L), attention_mask, e1_pos (B,), e2_pos (B,), entity_ids (B, L),
    kg_rows (B, 2, k) with -1 padding, labels (B,))`` returns ``{"loss", "logits"}``.
    """

    accepts_loss_kwargs = False

    def __init__(self, encoder: nn.Module | None, num_labels: int, *, fuse: bool = False,
                 projector: nn.Module | None = None, kg_table: torch.Tensor | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        if encoder is not None and hasattr(encoder, "projector"):
            projector, kg_table = encoder.projector, None
        self.projector = projector if encoder is None else None  # kg-only owns it; else the bridge does
        if kg_table is not None:
            self.register_buffer("kg_table", kg_table, persistent=False)
        self.fuse = fuse
        hidden = 0 if encoder is None else int(encoder.config.hidden_size)
        d_kg_out = int(projector.hidden) if projector is not None else 0
        if (fuse or encoder is None) and projector is None:
            raise ValueError("late fusion and kg-only need a projector and a KG table")
        width = 2 * hidden + (2 * d_kg_out if (fuse or encoder is None) else 0)
        self.dropout = nn.Dropout(dropout)
        self.head = (nn.Linear(width, num_labels) if encoder is not None
                     else nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout),
                                        nn.Linear(width, num_labels)))

    def _table_and_projector(self) -> tuple[torch.Tensor, nn.Module]:
        if self.encoder is None:
            return self.kg_table, self.projector
        return self.encoder.kg_table, self.encoder.projector

    def kg_features(self, kg_rows: torch.Tensor) -> torch.Tensor:
        """``(B, 2, k)`` candidate rows (-1 = none) -> ``(B, 2 * hidden)``: the projected mean of
        each nominal's candidate vectors, zero where a nominal is unlinked."""
        table, proj = self._table_and_projector()
        valid = (kg_rows >= 0).unsqueeze(-1).to(table.dtype)  # (B, 2, k, 1)
        vec = (table[kg_rows.clamp(min=0)] * valid).sum(2) / valid.sum(2).clamp(min=1)  # (B, 2, d_kg)
        out = proj(vec) * (valid.sum(2) > 0).to(vec.dtype)  # an unlinked nominal reads zeros, not P(0)
        return out.flatten(1)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                e1_pos: torch.Tensor | None = None, e2_pos: torch.Tensor | None = None,
                entity_ids: torch.Tensor | None = None, kg_rows: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kw: Any) -> dict[str, torch.Tensor]:
        feats = []
        if self.encoder is not None:
            extra = {"entity_ids": entity_ids} if hasattr(self.encoder, "projector") else {}
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            rows = torch.arange(h.shape[0], device=h.device)
            feats += [h[rows, e1_pos], h[rows, e2_pos]]
        if self.fuse or self.encoder is None:
            feats.append(self.kg_features(kg_rows))
        logits = self.head(self.dropout(torch.cat(feats, dim=-1)))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def _marked_text(s: Sentence, slots: tuple[bool, bool]) -> str:
    """The sentence with marker tokens (and slot tokens) around the two nominals."""
    spans = sorted([(s.e1, 0), (s.e2, 1)])
    out, last = [], 0
    for (a, b), which in spans:
        open_, close = MARKERS[2 * which], MARKERS[2 * which + 1]
        slot = f" {SLOT}" if slots[which] else ""
        out += [s.text[last:a], f"{open_} {s.text[a:b]}{slot} {close}"]
        last = b
    out.append(s.text[last:])
    return "".join(out)


def encode(sentences: Sequence[Sentence], tokenizer, kg_rows: np.ndarray | None = None, *,
           inject: bool = False, max_length: int = 128) -> list[dict[str, Any]]:
    """Tokenise with entity markers: per sentence ``input_ids``, ``e1_pos``, ``e2_pos``,
    ``entity_ids`` (KG row at slot positions, -1 elsewhere; slots only with ``inject``),
    ``kg_rows (2, k)`` and ``labels``. ``kg_rows (n, 2, k)``: candidate KG rows, -1 padding.

    Raises ValueError naming the sentence if truncation cut a marker."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in MARKERS + ((SLOT,) if inject else ())}
    linked = (kg_rows >= 0).any(-1) if kg_rows is not None else np.zeros((len(sentences), 2), dtype=bool)
    texts = [_marked_text(s, tuple(linked[i]) if inject else (False, False)) for i, s in enumerate(sentences)]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    out = []
    for i, s in enumerate(sentences):  # set-up work once per sentence, not a training hot path
        tok = np.asarray(enc["input_ids"][i])
        pos = {}
        for t in MARKERS:
            hit = np.flatnonzero(tok == ids[t])
            if len(hit) != 1:
                raise ValueError(f"sentence {s.id}: marker {t} {'cut by truncation' if not len(hit) else 'repeated'} "
                                 f"(max_length={max_length})")
            pos[t] = int(hit[0])
        ent = np.full(len(tok), -1, dtype=np.int64)
        if inject:
            for which, (a, b) in enumerate(((pos["[E1]"], pos["[/E1]"]), (pos["[E2]"], pos["[/E2]"]))):
                slot = np.flatnonzero(tok[a:b] == ids[SLOT])
                if len(slot):  # the slot reads the first candidate (choice "first"); "mean" uses kg_rows
                    ent[a + slot[0]] = kg_rows[i, which, 0]
        item = {"input_ids": tok.tolist(), "e1_pos": pos["[E1]"], "e2_pos": pos["[E2]"], "entity_ids": ent.tolist(),
                "labels": LABELS.index(s.label) if s.label is not None else -100}
        if kg_rows is not None:
            item["kg_rows"] = kg_rows[i]
        out.append(item)
    return out


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), n), self.pad_id, dtype=torch.long)
        ent = torch.full((len(items), n), -1, dtype=torch.long)
        for i, x in enumerate(items):  # one batch of Python lists to tensors: the usual collator work
            ids[i, :len(x["input_ids"])] = torch.tensor(x["input_ids"])
            ent[i, :len(x["entity_ids"])] = torch.tensor(x["entity_ids"])
        batch = {"input_ids": ids, "attention_mask": (torch.arange(n) < torch.tensor(
                     [len(x["input_ids"]) for x in items]).unsqueeze(1)).long(),
                 "e1_pos": torch.tensor([x["e1_pos"] for x in items]),
                 "e2_pos": torch.tensor([x["e2_pos"] for x in items]),
                 "labels": torch.tensor([x["labels"] for x in items])}
        if (ent >= 0).any():
            batch["entity_ids"] = ent
        if "kg_rows" in items[0]:
            batch["kg_rows"] = torch.as_tensor(np.stack([x["kg_rows"] for x in items]))
        return batch


@torch.no_grad()
def predict_logits(model: nn.Module, features: Sequence[dict[str, Any]], collate, batch_size: int = 64) -> np.ndarray:
    """``(n, labels)`` logits in the order of ``features``. Not ``Trainer.predict``: with
    ``train_sampling_strategy="group_by_length"`` it also reorders evaluation batches, so its rows
    would not line up with the sentence ids."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for s in range(0, len(features), batch_size):
        batch = {k: v.to(dev) for k, v in collate(features[s:s + batch_size]).items() if k != "labels"}
        out.append(model(**batch)["logits"].float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def link_rows(sentences: Sequence[Sentence], linker, kg_names: Sequence[str], choice: str = "first"
              ) -> tuple[np.ndarray, dict]:
    """Link both nominals of every sentence to KG rows: ``(n, 2, k)`` int64, -1 padding, and the
    linker's coverage report. ``choice``: ``first`` (k = 1) or ``mean`` (all senses)."""
    index = {name: i for i, name in enumerate(kg_names)}
    mentions = [m for s in sentences for m in s.nominals]
    keys, report = linker.link(mentions, known=index, choice="first" if choice == "first" else "all")
    k = max(1, max((len(x) for x in keys), default=1))
    rows = np.full((len(mentions), k), -1, dtype=np.int64)
    for j, ks in enumerate(keys):
        rows[j, :len(ks)] = [index[x] for x in ks]
    return rows.reshape(len(sentences), 2, k), report


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = max(1, int(round(n * fraction)))
    return np.sort(perm[cut:]), np.sort(perm[:cut])


def _control(table: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """The KG table replaced for a control: ``random`` keeps each row's norm, ``permuted`` shuffles rows."""
    from .probe import random_like

    if kind == "random":
        return random_like(table, 10_000 + seed)
    if kind == "permuted":
        return table[torch.randperm(table.shape[0], generator=torch.Generator().manual_seed(10_000 + seed))]
    return table


def finetune(cfg: FinetuneConfig) -> dict:
    """Run one fine-tuning; writes ``finetune.json``, ``test_answers.txt`` (official format) and
    ``test_key.txt`` into ``cfg.out`` and returns the result dict."""
    cfg.check()
    from transformers import AutoModel, AutoTokenizer, EarlyStoppingCallback, Trainer, TrainingArguments

    from .inject import KGBridge
    from .pretrain import add_slot_token
    from .project import EntityProjector

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    train_all = read_semeval(data / "TRAIN_FILE.TXT")[: cfg.limit_train]
    test = read_semeval(data / "TEST_FILE_FULL.TXT")[: cfg.limit_test]
    tr_idx, va_idx = _split(len(train_all), cfg.valid_fraction, cfg.split_seed)

    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(cfg.lm)
    encoder = AutoModel.from_pretrained(cfg.lm) if cfg.variant != "kg-only" else None
    for t in MARKERS + ((SLOT,) if cfg.variant == "inject" else ()):
        add_slot_token(tok, encoder, t)

    kg_rows = {"train": None, "test": None}
    link_report, bridge_info = None, None
    model_kw: dict[str, Any] = {}
    if cfg.kg:
        from .linking import WordNetLinker
        from .vectors import load_kg_vectors

        kg = load_kg_vectors(cfg.kg)
        linker = WordNetLinker.from_wordnet(cfg.wordnet)
        kg_rows["train"], link_report = link_rows(train_all, linker, kg.names, cfg.link)
        kg_rows["test"], test_report = link_rows(test, linker, kg.names, cfg.link)
        link_report = {"train": link_report, "test": test_report}
        table = _control(kg.vectors.float(), cfg.kg_control, cfg.seed)
        emb = (encoder or AutoModel.from_pretrained(cfg.lm)).get_input_embeddings()
        from .project import anchor_pairs

        names = None
        if cfg.names:
            from .probe import read_entity_texts

            texts = read_entity_texts(cfg.names)
            names = [texts.get(n, n) for n in kg.names]
        kg_a, target, _ = anchor_pairs(type(kg)(kg.names, table), tok, emb, names=names)
        projector = EntityProjector(kg.dim, int(target.shape[1])).fit_ridge(kg_a, target)
        projector.rescale_to(emb, table)
        bridge_info = {"anchors": int(kg_a.shape[0]), "d_kg": kg.dim, "entities": len(kg)}
        if encoder is not None:
            encoder = KGBridge(encoder, projector, table, names=kg.names)
        else:
            model_kw = {"projector": projector, "kg_table": table}
        if cfg.link == "first":  # one candidate per nominal: keep the (n, 2, 1) layout
            kg_rows = {k: v[:, :, :1] for k, v in kg_rows.items()}

    inject = cfg.variant == "inject"
    feats_all = encode(train_all, tok, kg_rows["train"], inject=inject, max_length=cfg.max_length)
    feats_test = encode(test, tok, kg_rows["test"], inject=inject, max_length=cfg.max_length)
    train_ds = [feats_all[i] for i in tr_idx]
    valid_ds = [feats_all[i] for i in va_idx]
    for x in train_ds:  # LengthGroupedSampler reads it; the collator ignores it
        x["length"] = len(x["input_ids"])
    model = RelationClassifier(encoder, len(LABELS), fuse=cfg.variant == "late-fusion", dropout=cfg.dropout,
                               **model_kw)

    def metrics(p) -> dict:
        return {"macro_f1": official_scores(np.argmax(p.predictions, -1), p.label_ids)["macro_f1"]}

    steps_per_epoch = max(1, -(-len(train_ds) // cfg.batch_size))
    every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    ckpt = out / "checkpoints"
    args = TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=64,
        learning_rate=cfg.lr, num_train_epochs=cfg.epochs, warmup_steps=cfg.warmup, weight_decay=cfg.weight_decay,
        eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every, save_total_limit=1,
        save_only_model=True, load_best_model_at_end=True, metric_for_best_model="macro_f1",
        greater_is_better=True, logging_steps=every, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False, disable_tqdm=True,
        train_sampling_strategy="group_by_length", remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=valid_ds,
                      data_collator=_Collator(tok.pad_token_id), compute_metrics=metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)])
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    valid_f1 = trainer.state.best_metric
    collate = _Collator(tok.pad_token_id)
    pred = np.argmax(predict_logits(model, feats_test, collate), -1)
    gold = np.array([x["labels"] for x in feats_test])
    scores = official_scores(pred, gold)
    write_answers(out / "test_answers.txt", [s.id for s in test], pred)
    write_answers(out / "test_key.txt", [s.id for s in test], gold)
    perl_f1, scorer = None, Path(cfg.scorer) if cfg.scorer else data / SCORER
    if shutil.which("perl") and scorer.is_file():
        perl_f1 = perl_official_f1(out / "test_answers.txt", out / "test_key.txt", scorer)
    shutil.rmtree(ckpt, ignore_errors=True)  # checkpoints only served early stopping
    result = {"config": asdict(cfg), "test": scores, "official_f1_perl": perl_f1, "valid_macro_f1": valid_f1,
              "best_step": _best_step(trainer), "steps": trainer.state.global_step, "train_seconds": train_seconds,
              "seconds": time.perf_counter() - t0, "train_sentences": len(train_ds), "valid_sentences": len(valid_ds),
              "test_sentences": len(test), "linking": link_report, "projector": bridge_info,
              "threads": torch.get_num_threads(),
              "log": [r for r in trainer.state.log_history if "eval_macro_f1" in r or "loss" in r]}
    from kgengine.persist import write_config

    write_config(out / RESULT_FILE, result)
    return result


def _best_step(trainer) -> int | None:
    ck = trainer.state.best_model_checkpoint
    return int(ck.rsplit("-", 1)[-1]) if ck else None


def _mean_std(xs: Sequence[float]) -> dict:
    from .probe import _stats

    s = _stats(xs)
    return {"mean": s["mean"], "std": s["std"], "values": s["per_seed"]}


def finetune_seeds(cfg: FinetuneConfig, seeds: Sequence[int] = (0, 1, 2)) -> dict:
    """:func:`finetune` once per seed (into ``out/seed<N>/``), then ``summary.json`` in ``out``:
    mean and sample std over seeds of the official macro-F1 (the perl scorer's where it ran, else
    the Python one, which agrees), accuracy and each relation's F1, and the total wall time."""
    from dataclasses import replace

    if not seeds:
        raise ValueError("seeds: give at least one seed")
    t0 = time.perf_counter()
    runs = [finetune(replace(cfg, seed=int(s), out=str(Path(cfg.out) / f"seed{int(s)}"))) for s in seeds]
    official = [r["official_f1_perl"] if r["official_f1_perl"] is not None else r["test"]["macro_f1"] for r in runs]
    per_rel = {rel: _mean_std([r["test"]["per_relation"][rel]["f1"] for r in runs])
               for rel in runs[0]["test"]["per_relation"]}
    summary = {"variant": cfg.variant, "lm": cfg.lm, "kg": cfg.kg, "kg_control": cfg.kg_control, "seeds": list(seeds),
               "official_f1": _mean_std(official), "python_f1": _mean_std([r["test"]["macro_f1"] for r in runs]),
               "accuracy": _mean_std([r["test"]["accuracy"] for r in runs]),
               "valid_f1": _mean_std([r["valid_macro_f1"] or 0.0 for r in runs]),
               "train_seconds": _mean_std([r["train_seconds"] for r in runs]), "per_relation_f1": per_rel,
               "linking": runs[0]["linking"], "seconds": time.perf_counter() - t0}
    from kgengine.persist import write_config

    write_config(Path(cfg.out) / "summary.json", summary)
    return summary
