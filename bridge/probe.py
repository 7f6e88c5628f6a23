"""Probes that measure what injected KG vectors give a language model.

Supersense typing (:func:`typing_probe`)
----------------------------------------
WordNet noun supersense typing: each item is ``(entity id, lemma text, label)`` (the 26 noun
lexicographer files, from :func:`bridge.corpus.probe_split`). Features are the LM's state of the
mention, read from one fixed short template that never contains the gloss (default
``"{mention}"``: ``[CLS] dog [SEP]``); last layer, mean over the mention's wordpieces. Variants:

* ``text``: the template as is; feature = the mention mean (``hidden`` values).
* ``injected``: E-BERT's concat encoding, the same input plus an entity slot right after the
  mention (``[CLS] dog / [ENT] [SEP]``; the separator is ``slot_separator``, default ``"/"``) whose
  input embedding is the projected KG vector ``projector(kg[entity])``; feature (``pool``):
  ``"concat"`` (default) = ``[mention mean ; slot state]`` (``2 * hidden`` values), or ``"mean"`` =
  the mean over the mention's wordpieces and the slot (``hidden`` values).
* ``random``: exactly as ``injected`` but every entity's KG vector is replaced by a random Gaussian
  vector with the same norm (one fixed vector per entity and seed), then projected the same way:
  the control for "any extra input helps".
* ``permuted``: as ``injected`` but every entity reads another probe entity's KG vector (a seeded
  shuffle): the wrong-entity control, with real KG vectors' distribution.
* ``kg_only``: a reference, no LM: the raw KG vectors themselves as features.
* ``late_fusion``: the ``text`` feature concatenated with the raw KG vector, no injection: what
  the classifier gets from both sources without passing the vector through the LM.

Classifier: multinomial logistic regression in torch (features standardised with the train
statistics, full-batch L-BFGS, L2 penalty ``l2 * ||W||^2`` on the weights, not the bias). ``l2`` is
picked from ``l2_grid`` (default 1e-3, 1e-2, 1e-1) on a seeded 15% validation slice of train (a
warm-started regularisation path, strongest penalty first), then refit on all of train.
Reported on test: accuracy and macro-F1 (mean F1 over the classes present in test).

Seeds (``seeds=3`` -> 0, 1, 2): each seed changes the classifier's initialisation, its validation
slice (so the chosen ``l2``), the train subsample when ``max_train`` caps train, and the random
control's vectors. The train/test split itself is fixed (it must be the one the pre-training
corpus held out; see :mod:`bridge.corpus`), and so is the test subsample under ``max_test``
(``numpy.random.default_rng(0)``). With no train cap the logistic regression is convex, so the text
and injected variants vary only through the chosen ``l2``; their spread can be ~0.

Link prediction (:func:`linkpred_probe`)
----------------------------------------
KG-BERT style, small and honest: a triple ``(h, r, t)`` is read as ``[CLS] h [SEP] relation words
[SEP] t [SEP]`` (segments 0, 1, 0), with (``injected``/``random``) an entity slot after each of the
two mentions. The LM stays frozen; a scorer (an MLP, or linear with ``scorer_hidden=0``) on the
``[CLS]`` state is trained with softmax cross-entropy of each true triple against
``train_negatives`` corrupted tails (Adam; early stopping on a held-out 10% of the training
triples), then ranks each test triple's true tail among
``num_candidates`` candidates (the true tail + sampled entities that are not a known tail of
``(h, r)``). Reported: MRR, Hits@1, Hits@10 (ties count half). The sampled triples and candidates
are fixed (data seed 0); seeds change the scorer's initialisation and batch order and the random
control.

Results (:func:`typing_probe`, :func:`linkpred_probe`) are JSON-ready dicts; ``probe.json`` is one
of them::

    {"task": "wordnet-typing", "metric": "accuracy",
     "variants": {"text":     {"mean": 0.49, "std": 0.002, "per_seed": [...],
                               "macro_f1": {"mean", "std", "per_seed"}, "l2": [...], "feature_dim": 384},
                  "injected": {...}, "random": {...}, "kg_only": {...}},
     "sizes": {"train": ..., "test": ..., "classes": ..., "dropped_no_kg_vector": ...},
     "settings": {"seeds": [0, 1, 2], "template": ..., "pool": ..., ...},
     "seconds": {...}}

(linkpred: ``"metric": "mrr"``, each variant also has ``hits@1``, ``hits@10`` and the scorer's
first/last epoch train loss.)
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kgengine.data import read_triples  # noqa: F401  (re-exported: the link-prediction probe's reader)

from .corpus import ProbeItem
from .inject import KGBridge
from .project import EntityProjector
from .vectors import KGVectors

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_L2_GRID", "TYPING_VARIANTS", "LINKPRED_VARIANTS", "LogisticRegression",
           "fit_logistic_regression", "accuracy_macro_f1", "random_like", "mention_features", "typing_probe",
           "linkpred_probe", "read_triples", "read_entity_texts", "relation_text", "format_probe_table"]

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{mention}"
DEFAULT_L2_GRID = (1e-3, 1e-2, 1e-1)
# late_fusion: the text feature ++ the raw KG vector (no injection); permuted: injected, but every
# entity reads another entity's vector (a wrong-entity control beside the random one)
TYPING_VARIANTS = ("text", "injected", "random", "permuted", "kg_only", "late_fusion")
LINKPRED_VARIANTS = ("text", "injected", "random")
POOLS = ("concat", "mean")
_VAL_FRACTION = 0.15
_TEST_SUBSAMPLE_SEED = 0


# =============================================================================================
# Packing token sequences with roles, and one batched forward pass


class _Packed:
    """Padded sequences: ``ids``, ``types`` (segment ids), ``role`` (int8: 0 text, ``1 + 2k`` the
    k-th mention's wordpieces, ``2 + 2k`` the k-th entity slot) and ``lengths``; all numpy."""

    def __init__(self, rows: list[list[tuple[list[int], int, int]]], pad_id: int) -> None:
        self.lengths = np.array([sum(len(p[0]) for p in r) for r in rows], dtype=np.int64)
        n, width = len(rows), int(self.lengths.max()) if rows else 0
        self.ids = np.full((n, width), pad_id, dtype=np.int64)
        self.types = np.zeros((n, width), dtype=np.int64)
        self.role = np.zeros((n, width), dtype=np.int8)
        for i, parts in enumerate(rows):  # set-up only: the forward pass below is batched
            at = 0
            for ids, role, seg in parts:
                k = len(ids)
                self.ids[i, at:at + k] = ids
                self.role[i, at:at + k] = role
                self.types[i, at:at + k] = seg
                at += k

    def __len__(self) -> int:
        return len(self.lengths)


def _encoder(model: nn.Module) -> nn.Module:
    """The HF encoder (``BertModel``) inside a KGBridge / an MLM model / a base model."""
    m = model.model if isinstance(model, KGBridge) else model
    base = getattr(m, "base_model", None)
    return base if isinstance(base, nn.Module) else m


def _uses_token_types(tokenizer) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ("token_type_ids",))


@torch.no_grad()
def _forward_pooled(model: nn.Module, packed: _Packed, pool_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    slot_vectors: torch.Tensor | None = None, batch_size: int = 128,
                    token_types: bool = True) -> torch.Tensor:
    """Run the encoder over ``packed`` in length-sorted batches; ``pool_fn(last_hidden (B, L, h),
    role (B, L)) -> (B, f)``. ``slot_vectors (n, S, hidden)``: input embedding of slot ``k`` of row
    ``i`` (rows without that slot ignore it). Returns ``(n, f)`` float32 on CPU, in row order."""
    enc = _encoder(model)
    emb_layer = enc.get_input_embeddings()
    dev, dt = emb_layer.weight.device, emb_layer.weight.dtype
    was_training = enc.training
    enc.eval()
    order = np.argsort(packed.lengths, kind="stable")
    out: torch.Tensor | None = None
    try:
        for s in range(0, len(packed), batch_size):
            idx = order[s:s + batch_size]
            width = int(packed.lengths[idx].max())
            ids = torch.from_numpy(packed.ids[idx, :width]).to(dev)
            role = torch.from_numpy(packed.role[idx, :width]).to(dev)
            att = (torch.arange(width, device=dev)[None, :] < torch.from_numpy(packed.lengths[idx]).to(dev)[:, None])
            emb = emb_layer(ids)
            if slot_vectors is not None:
                sv = slot_vectors[torch.from_numpy(idx)].to(dev, dt)
                for k in range(sv.shape[1]):
                    at = role == 2 + 2 * k
                    has = at.any(1)
                    if bool(has.any()):  # one slot k per row that has it: row-major order matches
                        emb = emb.index_put((at,), sv[has, k])
            kw = {"token_type_ids": torch.from_numpy(packed.types[idx, :width]).to(dev)} if token_types else {}
            hidden = enc(inputs_embeds=emb, attention_mask=att.long(), **kw).last_hidden_state
            feats = pool_fn(hidden.float(), role).cpu()
            if out is None:
                out = torch.empty(len(packed), feats.shape[1])
            out[torch.from_numpy(idx)] = feats
    finally:
        enc.train(was_training)
    return out if out is not None else torch.empty(0, 0)


def _slot_ids(tokenizer, slot_token: str | None, slot_separator: str | None) -> tuple[list[int], int]:
    """(separator wordpieces, slot token id). The slot id only fills the position (its embedding
    is replaced): ``slot_token`` when the tokenizer knows it, else [MASK] (else [UNK])."""
    sep = tokenizer(slot_separator, add_special_tokens=False)["input_ids"] if slot_separator else []
    tid = None
    if slot_token:
        tid = tokenizer.get_vocab().get(slot_token)
    if tid is None:
        tid = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    if tid is None:
        raise ValueError("the tokenizer has neither the slot token, [MASK] nor [UNK] to hold an entity slot")
    return list(sep), int(tid)


def _specials(tokenizer) -> tuple[int, int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer needs [CLS]/[SEP] (or BOS/EOS) tokens")
    return int(cls_id), int(sep_id), int(pad_id)


def _tokenize_many(tokenizer, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Wordpieces of each text (no special tokens), at most ``max_tokens``; empty -> [UNK]."""
    if not texts:
        return []
    out = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    return [list(ids[:max_tokens]) or [unk] for ids in out]


# =============================================================================================
# Mention features


def _check_template(template: str) -> tuple[str, str]:
    if template.count("{mention}") != 1:
        raise ValueError(f"template {template!r} must contain '{{mention}}' exactly once")
    prefix, suffix = template.split("{mention}")
    return prefix.strip(), suffix.strip()


def mention_features(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                     slot_vectors: torch.Tensor | None = None, *, template: str = DEFAULT_TEMPLATE,
                     slot_token: str | None = "[ENT]", slot_separator: str | None = "/", pool: str = "concat",
                     batch_size: int = 128, max_mention_tokens: int = 16) -> torch.Tensor:
    """The LM's state of each mention in ``template``; batched, last layer.

    Args:
        model: an HF BERT-family model or a :class:`KGBridge` (its encoder is used).
        texts: the mentions (e.g. lemmas ``"hot dog"``).
        slot_vectors: ``(n, hidden)`` input embeddings for an entity slot right after each mention
            (E-BERT concat), or None for text only.
        pool: with slots, ``"concat"`` -> ``[mention mean ; slot state]`` (``2 * hidden``), ``"mean"``
            -> mean over mention wordpieces and slot (``hidden``).
    Returns:
        ``float32 (n, hidden)`` (text) or ``(n, 2 * hidden | hidden)`` (with slots), CPU.
    """
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")
    prefix, suffix = _check_template(template)
    cls_id, sep_id, pad_id = _specials(tokenizer)
    pre = list(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    suf = list(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else []
    mentions = _tokenize_many(tokenizer, texts, max_mention_tokens)
    if slot_vectors is not None:
        if slot_vectors.dim() != 2 or slot_vectors.shape[0] != len(texts):
            raise ValueError(f"slot_vectors must be ({len(texts)}, hidden), got {tuple(slot_vectors.shape)}")
        sep_pieces, slot_id = _slot_ids(tokenizer, slot_token, slot_separator)
        slot_part = [(sep_pieces, 0, 0), ([slot_id], 2, 0)]
    else:
        slot_part = []
    rows = [[([cls_id] + pre, 0, 0), (m, 1, 0), *slot_part, (suf + [sep_id], 0, 0)] for m in mentions]
    packed = _Packed(rows, pad_id)

    def pool_fn(h: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
        m = (role == 1).unsqueeze(-1).to(h.dtype)
        ment = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        if slot_vectors is None:
            return ment
        slot = h[role == 2]  # (B, h): exactly one slot per row
        if pool == "concat":
            return torch.cat([ment, slot], dim=1)
        both = (role == 1) | (role == 2)
        w = both.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1)

    sv = None if slot_vectors is None else slot_vectors.unsqueeze(1)
    return _forward_pooled(model, packed, pool_fn, sv, batch_size, _uses_token_types(tokenizer))


# =============================================================================================
# The classifier


class LogisticRegression(nn.Module):
    """Multinomial logistic regression on standardised features (``mean``/``std`` buffers)."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(-1)


def fit_logistic_regression(X: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-2,
                            max_iter: int = 100, seed: int = 0,
                            init: LogisticRegression | None = None) -> LogisticRegression:
    """Full-batch L-BFGS on ``mean CE + l2 * ||W||^2``; ``X (n, d)`` float, ``y (n,)`` int64 in
    ``[0, n_classes)``. Standardises ``X`` with its own mean/std (constant columns left at 0).
    ``init``: warm start from another fit's weights (same ``d`` and classes); else small random
    weights from ``seed``. ``max_iter`` L-BFGS iterations (100 reach the test accuracy of 300 to
    within 0.1 point on MiniLM features)."""
    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.long)
    if X.dim() != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,), got {tuple(X.shape)} and {tuple(y.shape)}")
    if X.shape[0] == 0:
        raise ValueError("no training examples")
    if not (l2 >= 0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be finite and >= 0, got {l2}")
    clf = LogisticRegression(X.shape[1], n_classes)
    mean, std = X.mean(0), X.std(0, unbiased=False)
    clf.mean.copy_(mean)
    clf.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        if init is not None:
            clf.linear.load_state_dict(init.linear.state_dict())
        else:
            clf.linear.weight.copy_(torch.randn(clf.linear.weight.shape, generator=g) * 0.01)
            clf.linear.bias.zero_()
    Z = (X - clf.mean) / clf.std
    W, b = clf.linear.weight, clf.linear.bias
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(Z @ W.T + b, y) + l2 * (W * W).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return clf


def accuracy_macro_f1(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (mean over the classes that occur in ``y_true``; F1 = 0 where
    precision + recall = 0)."""
    y_true, y_pred = torch.as_tensor(y_true).long(), torch.as_tensor(y_pred).long()
    if y_true.numel() == 0:
        return float("nan"), float("nan")
    cm = torch.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).view(n_classes, n_classes)
    cm = cm.double()
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    prec = torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.zeros_like(tp))
    rec = torch.where(support > 0, tp / support.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), torch.zeros_like(tp))
    present = support > 0
    return float(tp.sum() / cm.sum()), float(f1[present].mean())


def _select_and_fit(X: torch.Tensor, y: torch.Tensor, n_classes: int, l2_grid: Sequence[float],
                    seed: int) -> tuple[LogisticRegression, float]:
    """Pick ``l2`` on a seeded validation slice of train (ties: the larger l2), refit on all.

    The grid is walked from the strongest penalty down, each fit warm-started from the previous
    one (a regularisation path: weak penalties converge slowly from scratch); the final fit starts
    from the chosen penalty's validation-stage weights."""
    grid = sorted({float(a) for a in l2_grid}, reverse=True)
    if not grid:
        raise ValueError("l2_grid is empty")
    best, start = grid[0], None
    n = X.shape[0]
    n_val = int(round(_VAL_FRACTION * n))
    if len(grid) > 1 and n_val >= 1 and n - n_val >= 2:
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
        va, tr = perm[:n_val], perm[n_val:]
        scores, fits, prev = [], [], None
        for a in grid:
            prev = fit_logistic_regression(X[tr], y[tr], n_classes, a, seed=seed, init=prev)
            fits.append(prev)
            scores.append(float((prev.predict(X[va]) == y[va]).double().mean()))
        top = max(scores)
        k = next(i for i, s in enumerate(scores) if s >= top - 1e-12)  # first = the largest l2
        best, start = grid[k], fits[k]
    return fit_logistic_regression(X, y, n_classes, best, seed=seed, init=start), best


# =============================================================================================
# Helpers shared by both probes


def random_like(vectors: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian random vectors with the same per-row norm as ``vectors`` (fixed by ``seed``)."""
    v = torch.as_tensor(vectors, dtype=torch.float32)
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(v.shape, generator=g)
    return r / r.norm(dim=1, keepdim=True).clamp_min(1e-12) * v.norm(dim=1, keepdim=True)


@torch.no_grad()
def _project(projector: EntityProjector, vectors: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    p = next(projector.parameters())
    was = projector.training
    projector.eval()
    try:
        out = [projector(vectors[s:s + chunk].to(p.device, p.dtype)).float().cpu()
               for s in range(0, len(vectors), chunk)]
    finally:
        projector.train(was)
    return torch.cat(out) if out else torch.empty(0, projector.hidden)


def _stats(values: Sequence[float]) -> dict:
    """``{"mean", "std", "per_seed"}``; std is the sample standard deviation (0 for one seed)."""
    a = np.asarray(values, dtype=np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "std": std, "per_seed": [float(v) for v in a]}


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds is empty")
    return out


def _resolve_kg(model: nn.Module, projector: EntityProjector | None,
                kg: KGVectors | None) -> tuple[EntityProjector | None, KGVectors | None]:
    if isinstance(model, KGBridge):
        projector = projector if projector is not None else model.projector
        kg = kg if kg is not None else model.kg_vectors()
    if (projector is None) != (kg is None):
        raise ValueError("pass both projector and kg (or a KGBridge), or neither")
    if projector is not None:
        hidden = int(_encoder(model).get_input_embeddings().weight.shape[1])
        if projector.hidden != hidden or projector.d_kg != kg.dim:
            raise ValueError(f"projector maps {projector.d_kg} -> {projector.hidden}, but the KG vectors have "
                             f"{kg.dim} dims and the LM's embeddings {hidden}")
    return projector, kg


def _check_variants(variants: Sequence[str], allowed: Sequence[str], have_kg: bool) -> list[str]:
    out = list(dict.fromkeys(variants))
    bad = [v for v in out if v not in allowed]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}: expected some of {', '.join(allowed)}")
    if not out:
        raise ValueError("no variants to run")
    if not have_kg and any(v != "text" for v in out):
        raise ValueError(f"variants {[v for v in out if v != 'text']} need KG vectors and a projector")
    return out


def _as_items(items: Iterable[ProbeItem | tuple | Mapping]) -> list[ProbeItem]:
    out = []
    for it in items:
        if isinstance(it, Mapping):
            out.append(ProbeItem(str(it["entity"]), str(it["text"]), str(it["label"])))
        else:
            e, t, lab = it
            out.append(ProbeItem(str(e), str(t), str(lab)))
    return out


# =============================================================================================
# Supersense typing


def typing_probe(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                 train: Iterable[ProbeItem | tuple | Mapping], test: Iterable[ProbeItem | tuple | Mapping], *,
                 projector: EntityProjector | None = None, kg: KGVectors | None = None,
                 variants: Sequence[str] = TYPING_VARIANTS, seeds: int | Sequence[int] = 3,
                 template: str = DEFAULT_TEMPLATE, pool: str = "concat", slot_token: str | None = "[ENT]",
                 slot_separator: str | None = "/", max_train: int | None = None, max_test: int | None = None,
                 l2_grid: Sequence[float] = DEFAULT_L2_GRID, batch_size: int = 128,
                 log: Callable[[str], None] | None = None) -> dict:
    """Supersense typing with text-only / injected / random-control features (module docstring).

    Args:
        model: an HF BERT-family model, or a :class:`KGBridge` (then ``projector`` and ``kg``
            default to its own).
        train, test: ``(entity id, text, label)`` items (:class:`~bridge.corpus.ProbeItem`, tuples,
            or dicts with those keys, e.g. ``probe_train.jsonl`` rows).
        variants: some of :data:`TYPING_VARIANTS`; all but ``text`` need KG
            vectors. With KG vectors, items whose entity has none are dropped from every variant.
        seeds: a count (``3`` -> 0, 1, 2) or explicit seeds.
        max_train: a per-seed random subsample of train; max_test: one fixed test subsample.
    Returns:
        the ``probe.json`` dict.
    """
    say = log or (lambda s: logger.info("%s", s))
    t_start = time.perf_counter()
    projector, kg = _resolve_kg(model, projector, kg)
    variants = _check_variants(variants, TYPING_VARIANTS, kg is not None)
    seeds = _seed_list(seeds)
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: expected one of {', '.join(POOLS)}")
    _check_template(template)
    train, test = _as_items(train), _as_items(test)
    dropped = 0
    if kg is not None:
        n0 = len(train) + len(test)
        train = [it for it in train if it.entity in kg]
        test = [it for it in test if it.entity in kg]
        dropped = n0 - len(train) - len(test)
    if not train or not test:
        raise ValueError(f"nothing to probe: {len(train)} train and {len(test)} test items"
                         f"{' with a KG vector' if kg is not None else ''}")
    if max_test is not None and max_test < len(test):
        keep = np.sort(np.random.default_rng(_TEST_SUBSAMPLE_SEED).permutation(len(test))[:max_test])
        test = [test[i] for i in keep]
    labels = sorted({it.label for it in train} | {it.label for it in test})
    lab_index = {lab: i for i, lab in enumerate(labels)}
    n_classes = len(labels)

    # per seed: which train items (indices into `train`)
    subsets = {}
    for s in seeds:
        if max_train is not None and max_train < len(train):
            subsets[s] = np.sort(np.random.default_rng(s).permutation(len(train))[:max_train])
        else:
            subsets[s] = np.arange(len(train))
    used_train = np.unique(np.concatenate(list(subsets.values())))
    # the rows that get LM features: the union of the seeds' train subsets, then test
    pos_of_train = {int(j): k for k, j in enumerate(used_train)}
    items = [train[j] for j in used_train] + test
    n_tr_used = len(used_train)
    texts = [it.text for it in items]
    y_all = torch.tensor([lab_index[it.label] for it in items], dtype=torch.long)
    test_rows = torch.arange(n_tr_used, len(items))
    rows_kg = kg.indices([it.entity for it in items]) if kg is not None else None
    fkw = dict(template=template, slot_token=slot_token, slot_separator=slot_separator, pool=pool,
               batch_size=batch_size)

    seconds: dict[str, float] = {}
    fixed_feats: dict[str, torch.Tensor] = {}
    if "text" in variants or "late_fusion" in variants:
        t0 = time.perf_counter()
        fixed_feats["text"] = mention_features(model, tokenizer, texts, None, **fkw)
        seconds["features_text"] = time.perf_counter() - t0
    if "injected" in variants:
        t0 = time.perf_counter()
        fixed_feats["injected"] = mention_features(model, tokenizer, texts, _project(projector, kg.vectors[rows_kg]),
                                                   **fkw)
        seconds["features_injected"] = time.perf_counter() - t0
    if "kg_only" in variants:
        fixed_feats["kg_only"] = kg.vectors[rows_kg].clone()
    if "late_fusion" in variants:
        fixed_feats["late_fusion"] = torch.cat([fixed_feats["text"], kg.vectors[rows_kg].float()], dim=1)

    results: dict[str, dict] = {v: {"acc": [], "f1": [], "l2": [], "dim": None} for v in variants}
    t_random = 0.0
    for s in seeds:
        tr_rows = torch.tensor([pos_of_train[int(j)] for j in subsets[s]], dtype=torch.long)
        for v in variants:
            if v in ("random", "permuted"):
                t0 = time.perf_counter()
                sub = torch.cat([tr_rows, test_rows])
                # one control vector per entity (entities are unique rows): random with the KG vector's
                # norm, or another probe entity's vector (a seeded shuffle)
                uniq, inv = torch.unique(rows_kg[sub], return_inverse=True)
                if v == "random":
                    rnd = random_like(kg.vectors[uniq], seed=s)[inv]
                else:
                    shuffle = torch.randperm(len(uniq), generator=torch.Generator().manual_seed(int(s)))
                    rnd = kg.vectors[uniq[shuffle]][inv]
                f = mention_features(model, tokenizer, [texts[i] for i in sub.tolist()], _project(projector, rnd),
                                     **fkw)
                t_random += time.perf_counter() - t0
                Xtr, Xte = f[: len(tr_rows)], f[len(tr_rows):]
            else:
                f = fixed_feats[v]
                Xtr, Xte = f[tr_rows], f[test_rows]
            clf, l2 = _select_and_fit(Xtr, y_all[tr_rows], n_classes, l2_grid, seed=s)
            acc, f1 = accuracy_macro_f1(y_all[test_rows], clf.predict(Xte), n_classes)
            r = results[v]
            r["acc"].append(acc)
            r["f1"].append(f1)
            r["l2"].append(l2)
            r["dim"] = int(Xtr.shape[1])
            say(f"seed {s} {v:<9} accuracy {acc:.4f}  macro-F1 {f1:.4f}  (l2 {l2:g})")
    if "random" in variants or "permuted" in variants:
        seconds["features_controls_all_seeds"] = t_random
    seconds["total"] = time.perf_counter() - t_start
    out_variants = {}
    for v in variants:
        r = results[v]
        out_variants[v] = {**_stats(r["acc"]), "macro_f1": _stats(r["f1"]), "l2": r["l2"], "feature_dim": r["dim"]}
    counts = np.bincount(y_all[test_rows].numpy(), minlength=n_classes)
    return {
        "task": "wordnet-typing",
        "metric": "accuracy",
        "variants": out_variants,
        "sizes": {"train": int(len(subsets[seeds[0]])), "train_pool": len(train), "test": len(test),
                  "classes": n_classes, "dropped_no_kg_vector": dropped,
                  "majority_baseline": float(counts.max() / counts.sum())},
        "settings": {"seeds": seeds, "template": template, "pool": pool, "slot_token": slot_token,
                     "slot_separator": slot_separator, "max_train": max_train, "max_test": max_test,
                     "l2_grid": [float(a) for a in l2_grid], "validation_fraction": _VAL_FRACTION,
                     "classifier": "multinomial logistic regression, standardised features, L-BFGS, L2 on weights",
                     "layer": "last", "mention_pool": "mean over wordpieces",
                     "kg_dim": kg.dim if kg is not None else None,
                     "projector": projector.config() if projector is not None else None,
                     "lm": type(_encoder(model)).__name__, "labels": labels},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


# =============================================================================================
# Link prediction, KG-BERT style


def read_entity_texts(path: str | Path, column: str | None = None) -> dict[str, str]:
    """Entity id -> readable text from an ``entities.tsv`` (a header row with ``id`` and ``name``
    columns, as in ``wn18rr/``; or plain ``id<TAB>name`` rows). Underscores become spaces.
    ``column`` picks another header column (``gloss``: WordNet definitions)."""
    path = Path(path)
    if path.is_dir():
        path = path / "entities.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no entities.tsv with entity names")
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\r\n") for ln in f if ln.strip()]
    if not lines:
        raise ValueError(f"{path}: empty")
    head = lines[0].split("\t")
    id_col, name_col, start = 0, 1, 0
    if head[0] == "id":
        start = 1
        if column is not None:
            if column not in head:
                raise ValueError(f"{path}: no column {column!r} in the header ({', '.join(head)})")
            name_col = head.index(column)
        elif "name" in head:
            name_col = head.index("name")
        elif "sense_name" in head:
            name_col = head.index("sense_name")
    out = {}
    for lineno, line in enumerate(lines[start:], start + 1):
        cols = line.split("\t")
        if len(cols) <= max(id_col, name_col):
            raise ValueError(f"{path}:{lineno}: expected at least {max(id_col, name_col) + 1} tab-separated columns")
        text = cols[name_col]
        out[cols[id_col]] = (text if column == "gloss" else text.replace("_", " ")).strip()
    return out


def relation_text(name: str) -> str:
    """``"_member_of_domain_usage"`` -> ``"member of domain usage"``."""
    return " ".join(name.replace("_", " ").replace("/", " ").split())


def linkpred_probe(model: nn.Module, tokenizer: PreTrainedTokenizerBase,
                   train_triples: Sequence[tuple[str, str, str]], test_triples: Sequence[tuple[str, str, str]], *,
                   entity_text: Mapping[str, str] | None = None,
                   relation_texts: Mapping[str, str] | Callable[[str], str] = relation_text,
                   known_triples: Iterable[tuple[str, str, str]] | None = None,
                   projector: EntityProjector | None = None, kg: KGVectors | None = None,
                   variants: Sequence[str] = LINKPRED_VARIANTS, seeds: int | Sequence[int] = 3,
                   num_train: int = 1000, train_negatives: int = 3, num_test: int = 200, num_candidates: int = 50,
                   slot_token: str | None = "[ENT]", slot_separator: str | None = "/", scorer_hidden: int = 256,
                   epochs: int = 40, lr: float = 1e-3, weight_decay: float = 1e-4, scorer_batch: int = 128,
                   batch_size: int = 128, max_mention_tokens: int = 16, kg_model: Any = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """KG-BERT-style tail ranking with a frozen LM (module docstring).

    Args:
        train_triples / test_triples: ``(head, relation, tail)`` names.
        entity_text: entity -> text (default: the name with ``_`` -> space).
        relation_texts: relation -> words (mapping or function; default :func:`relation_text`).
        known_triples: every true triple (train+valid+test) for filtering candidates (default: the
            two lists given).
        num_train, train_negatives: sampled training triples, corrupted tails per triple.
        num_test, num_candidates: sampled test triples, candidates per triple (the true tail + the rest).
        kg_model: a kgengine ``TrainedKGE``: adds the reference row ``kg_model``, the KGE model's own
            scores on the same candidates (no LM, nothing trained here).
    Returns:
        the ``probe.json`` dict (metric ``mrr``).
    """
    say = log or (lambda s: logger.info("%s", s))
    t_start = time.perf_counter()
    projector, kg = _resolve_kg(model, projector, kg)
    variants = _check_variants(variants, LINKPRED_VARIANTS, kg is not None)
    seeds = _seed_list(seeds)
    if num_candidates < 2 or train_negatives < 1 or num_train < 1 or num_test < 1:
        raise ValueError("need num_candidates >= 2, train_negatives >= 1, num_train >= 1, num_test >= 1")
    ent_txt = (lambda e: entity_text.get(e, e.replace("_", " "))) if entity_text is not None else \
        (lambda e: e.replace("_", " "))
    rel_txt = relation_texts if callable(relation_texts) else (lambda r: relation_texts.get(r, relation_text(r)))

    def ok(e: str) -> bool:
        return kg is None or e in kg

    train_triples = [t for t in train_triples if ok(t[0]) and ok(t[2])]
    test_triples = [t for t in test_triples if ok(t[0]) and ok(t[2])]
    entities = sorted({e for h, _, t in list(train_triples) + list(test_triples) for e in (h, t)})
    if len(entities) < num_candidates:
        raise ValueError(f"only {len(entities)} usable entities for {num_candidates} candidates per test triple")
    if not train_triples or not test_triples:
        raise ValueError(f"nothing to probe: {len(train_triples)} train and {len(test_triples)} test triples "
                         "with usable entities")
    known: dict[tuple[str, str], set[str]] = {}
    for h, r, t in (known_triples if known_triples is not None else list(train_triples) + list(test_triples)):
        known.setdefault((h, r), set()).add(t)
    rng = np.random.default_rng(0)  # the data: fixed across seeds
    tr = [train_triples[i] for i in np.sort(rng.permutation(len(train_triples))[:num_train])]
    te = [test_triples[i] for i in np.sort(rng.permutation(len(test_triples))[:num_test])]
    ent_arr = np.array(entities, dtype=object)
    ent_set = set(entities)

    def negatives(h: str, r: str, t: str, k: int) -> list[str]:
        bad = (known.get((h, r), set()) | {t}) & ent_set
        if len(ent_arr) - len(bad) < k:
            raise ValueError(f"({h}, {r}, ?): only {len(ent_arr) - len(bad)} non-answer entities for {k} negatives")
        out: list[str] = []
        seen: set[str] = set()
        while len(out) < k:  # rejection sampling; the filter removes few of the entities
            for e in ent_arr[rng.integers(0, len(ent_arr), size=2 * (k - len(out)) + 4)]:
                if e not in bad and e not in seen:
                    seen.add(e)
                    out.append(e)
                    if len(out) == k:
                        break
        return out

    groups_tr = [[(h, r, t)] + [(h, r, n) for n in negatives(h, r, t, train_negatives)] for h, r, t in tr]
    groups_te = [[(h, r, t)] + [(h, r, n) for n in negatives(h, r, t, num_candidates - 1)] for h, r, t in te]
    flat = [x for g in groups_tr for x in g] + [x for g in groups_te for x in g]
    n_tr_rows = len(groups_tr) * (1 + train_negatives)

    cls_id, sep_id, pad_id = _specials(tokenizer)
    names_used = sorted({e for h, _, t in flat for e in (h, t)})
    pieces = dict(zip(names_used, _tokenize_many(tokenizer, [ent_txt(e) for e in names_used], max_mention_tokens)))
    rels = sorted({r for _, r, _ in flat})
    rpieces = dict(zip(rels, _tokenize_many(tokenizer, [rel_txt(r) for r in rels], 32)))
    sep_pieces, slot_id = _slot_ids(tokenizer, slot_token, slot_separator)

    def pack(with_slots: bool) -> _Packed:
        slot = (lambda k: [(sep_pieces, 0, 0), ([slot_id], 2 + 2 * k, 0)]) if with_slots else (lambda k: [])
        rows = [[([cls_id], 0, 0), (pieces[h], 1, 0), *slot(0), ([sep_id], 0, 0), (rpieces[r] + [sep_id], 0, 1),
                 (pieces[t], 3, 0), *slot(1), ([sep_id], 0, 0)] for h, r, t in flat]
        return _Packed(rows, pad_id)

    def cls_pool(h: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
        return h[:, 0]

    tt = _uses_token_types(tokenizer)
    packed_text = pack(False) if "text" in variants else None
    packed_slots = pack(True) if ("injected" in variants or "random" in variants) else None
    if kg is not None:
        head_rows = kg.indices([h for h, _, _ in flat])
        tail_rows = kg.indices([t for _, _, t in flat])

    def features(v: str, seed: int) -> torch.Tensor:
        if v == "text":
            return _forward_pooled(model, packed_text, cls_pool, None, batch_size, tt)
        rows = torch.unique(torch.cat([head_rows, tail_rows]))
        table = kg.vectors[rows] if v == "injected" else random_like(kg.vectors[rows], seed)
        proj = _project(projector, table)
        where = torch.full((len(kg),), -1, dtype=torch.long)
        where[rows] = torch.arange(len(rows))
        sv = torch.stack([proj[where[head_rows]], proj[where[tail_rows]]], dim=1)
        return _forward_pooled(model, packed_slots, cls_pool, sv, batch_size, tt)

    seconds: dict[str, float] = {}
    cache: dict[str, torch.Tensor] = {}
    results: dict[str, dict] = {v: {"mrr": [], "hits@1": [], "hits@10": [], "loss_first": [], "loss_last": [],
                                    "epoch": []}
                                for v in variants}
    C, G = num_candidates, 1 + train_negatives
    for s in seeds:
        for v in variants:
            t0 = time.perf_counter()
            if v == "random" or v not in cache:
                f = features(v, s)
                if v != "random":
                    cache[v] = f
            else:
                f = cache[v]
            seconds[f"features_{v}"] = seconds.get(f"features_{v}", 0.0) + time.perf_counter() - t0
            Xtr = f[:n_tr_rows].view(len(groups_tr), G, -1)
            Xte = f[n_tr_rows:].view(len(groups_te), C, -1)
            scorer, losses, best_epoch = _train_scorer(Xtr, s, scorer_hidden, epochs, lr, weight_decay, scorer_batch)
            with torch.no_grad():
                sc = scorer(Xte).squeeze(-1)  # (n_test, C); column 0 is the true tail
            r = results[v]
            for k, x in _rank_metrics(sc).items():
                r[k].append(x)
            r["loss_first"].append(losses[0])
            r["loss_last"].append(losses[-1])
            r["epoch"].append(best_epoch)
            say(f"seed {s} {v:<9} MRR {r['mrr'][-1]:.4f}  Hits@1 {r['hits@1'][-1]:.4f}  Hits@10 {r['hits@10'][-1]:.4f}"
                f"  (scorer loss {losses[0]:.3f} -> {losses[-1]:.3f}, kept epoch {best_epoch})")
    seconds["total"] = time.perf_counter() - t_start
    out_variants = {}
    for v in variants:
        r = results[v]
        out_variants[v] = {**_stats(r["mrr"]), "hits@1": _stats(r["hits@1"]), "hits@10": _stats(r["hits@10"]),
                           "train_loss_first_epoch": r["loss_first"], "train_loss_last_epoch": r["loss_last"],
                           "kept_epoch": r["epoch"]}
    if kg_model is not None:
        out_variants["kg_model"] = _kg_model_ranks(kg_model, groups_te)
        say(f"kg_model  MRR {out_variants['kg_model']['mean']:.4f} (the KGE model's own scores, same candidates)")
    return {
        "task": "linkpred",
        "metric": "mrr",
        "variants": out_variants,
        "sizes": {"train_triples": len(groups_tr), "train_negatives": train_negatives, "test_triples": len(groups_te),
                  "candidates": C, "entities": len(entities), "random_mrr": float(np.mean(1 / np.arange(1, C + 1)))},
        "settings": {"seeds": seeds, "input": "[CLS] head [SEP] relation [SEP] tail [SEP] (segments 0,1,0)",
                     "feature": "[CLS] state, last layer, frozen LM", "slot_token": slot_token,
                     "slot_separator": slot_separator, "scorer_hidden": scorer_hidden, "epochs": epochs, "lr": lr,
                     "weight_decay": weight_decay, "loss": "softmax CE: true tail vs corrupted tails",
                     "candidates": "true tail + uniformly sampled entities that are no known tail of (h, r)",
                     "ties": "count half", "kg_dim": kg.dim if kg is not None else None,
                     "lm": type(_encoder(model)).__name__},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def _rank_metrics(sc: torch.Tensor) -> dict[str, float]:
    """MRR, Hits@1, Hits@10 of ``sc (n, C)`` candidate scores whose column 0 is the truth (ties count half)."""
    pos = sc[:, :1]
    rank = 1 + (sc[:, 1:] > pos).sum(1).double() + 0.5 * (sc[:, 1:] == pos).sum(1).double()
    return {"mrr": float((1 / rank).mean()), "hits@1": float((rank <= 1).double().mean()),
            "hits@10": float((rank <= 10).double().mean())}


@torch.no_grad()
def _kg_model_ranks(trained: Any, groups: Sequence[Sequence[tuple[str, str, str]]]) -> dict:
    """MRR / Hits of a kgengine TrainedKGE ranking each group's candidates (column 0 is the truth)."""
    ent = {n: i for i, n in enumerate(trained.entities)}
    rel = {n: i for i, n in enumerate(trained.relations)}
    flat = [x for g in groups for x in g]
    h = torch.tensor([ent[a] for a, _, _ in flat])
    r = torch.tensor([rel[b] for _, b, _ in flat])
    t = torch.tensor([ent[c] for _, _, c in flat])
    one = {k: [v] for k, v in _rank_metrics(trained.model.score(h, r, t).view(len(groups), -1).float()).items()}
    return {**_stats(one["mrr"]), "hits@1": _stats(one["hits@1"]), "hits@10": _stats(one["hits@10"]),
            "note": "the KGE model's own scores on the same candidates (deterministic: one value)"}


def _train_scorer(X: torch.Tensor, seed: int, hidden: int, epochs: int, lr: float, weight_decay: float,
                  batch: int) -> tuple[nn.Module, list[float], int]:
    """A scorer on standardised features, trained with softmax CE (column 0 = the true triple).

    ``X (groups, 1 + negatives, d)``. A seeded 10% of the groups is held out: the kept weights are
    those of the epoch with the best held-out loss (early stopping; the scorer overfits a few
    thousand groups fast), then training stops after 5 epochs without improvement. Returns the
    scorer (standardisation included), the mean train loss of each epoch run, and the kept epoch
    (1-based).
    """
    d = X.shape[-1]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(X), generator=g)
    n_val = max(1, len(X) // 10) if len(X) >= 10 else 0
    va, tr = perm[:n_val], perm[n_val:]
    flat = X[tr].reshape(-1, d)
    mean, std = flat.mean(0), flat.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1)) if hidden > 0 else nn.Linear(d, 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    Z = (X - mean) / std
    Ztr, Zva = Z[tr], Z[va]
    target = torch.zeros(len(Z), dtype=torch.long)
    losses: list[float] = []
    best, best_state, best_epoch, patience = float("inf"), None, 0, 5
    with torch.enable_grad():
        for epoch in range(1, max(1, epochs) + 1):
            net.train()
            order = torch.randperm(len(Ztr), generator=g)
            tot = 0.0
            for s in range(0, len(Ztr), batch):
                b = order[s:s + batch]
                loss = F.cross_entropy(net(Ztr[b]).squeeze(-1), target[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(b)
            losses.append(tot / max(1, len(Ztr)))
            if n_val == 0:
                best_epoch = epoch
                continue
            net.eval()
            with torch.no_grad():
                val = float(F.cross_entropy(net(Zva).squeeze(-1), target[:n_val]))
            if val < best - 1e-6:
                best, best_epoch = val, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()

    class _Scorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return _Scorer(), losses, best_epoch


# =============================================================================================
# Output


def format_probe_table(result: Mapping[str, Any]) -> str:
    """A plain-text table of a probe result: one row per variant, mean ± std and per-seed values."""
    metric = result.get("metric", "accuracy")
    extra = "macro_f1" if "macro_f1" in next(iter(result["variants"].values()), {}) else "hits@10"
    lines = [f"{result.get('task', 'probe')}: {metric} (mean ± std over {len(result['settings']['seeds'])} seed(s))",
             f"{'variant':<12} {metric:>16} {extra:>16}  per seed"]
    for v, r in result["variants"].items():
        e = r[extra]
        lines.append(f"{v:<12} {r['mean']:>8.4f} ± {r['std']:.4f} {e['mean']:>8.4f} ± {e['std']:.4f}  "
                     + " ".join(f"{x:.4f}" for x in r["per_seed"]))
    sizes = result.get("sizes", {})
    lines.append("sizes: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in sizes.items()))
    return "\n".join(lines)
