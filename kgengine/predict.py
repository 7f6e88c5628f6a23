"""Link prediction and nearest entities on a trained model, with names in and out."""
from __future__ import annotations

import torch

from .evaluate import FilterIndex
from .errors import ConfigError
from .saved import TrainedKGE

__all__ = ["predict", "similar", "SIMILARITY_METRICS"]

SIMILARITY_METRICS = ("cosine", "l2", "dot")


def _topk(scores: torch.Tensor, names: list[str], k: int) -> list[tuple[str, float]]:
    k = min(k, int(torch.isfinite(scores).sum()))
    vals, idx = torch.topk(scores, k)
    return [(names[i], float(v)) for i, v in zip(idx.tolist(), vals.tolist())]


@torch.no_grad()
def predict(trained: TrainedKGE, head: str | None = None, relation: str | None = None, tail: str | None = None,
            topk: int = 10, exclude_known: bool = False) -> list[tuple[str, float]]:
    """Rank the missing element of ``(h, r, ?)``, ``(?, r, t)`` or ``(h, ?, t)``.

    Exactly two of ``head``, ``relation``, ``tail`` are given (names). Returns
    the ``topk`` best ``(name, score)`` pairs, best first; with
    ``exclude_known`` the answers that already form a stored triple are left out.
    """
    given = [x is not None for x in (head, relation, tail)]
    if sum(given) != 2:
        raise ConfigError("give exactly two of head, relation, tail")
    if topk < 1:
        raise ConfigError(f"topk must be >= 1, got {topk}")
    model = trained.model
    dev = model.entity_embeddings.device
    known = trained.known_triples() if exclude_known else None
    if relation is None:
        h, t = trained.entity_id(head), trained.entity_id(tail)
        rels = torch.arange(model.num_relations, device=dev)
        scores = model.score(torch.full_like(rels, h), rels, torch.full_like(rels, t)).float().cpu()
        if known is not None and len(known):
            scores[known[(known[:, 0] == h) & (known[:, 2] == t), 1]] = float("-inf")
        return _topk(scores, trained.relations, topk)
    r = torch.tensor([trained.relation_id(relation)])
    side = "tail" if tail is None else "head"
    anchor = torch.tensor([trained.entity_id(head if side == "tail" else tail)])
    scores = model.score_candidates(anchor.to(dev), r.to(dev), side=side)[0].float().cpu()
    if known is not None and len(known):
        fi = FilterIndex(known, model.num_entities, model.num_relations)
        scores[fi.answers(anchor, r, side)[1]] = float("-inf")
    return _topk(scores, trained.entities, topk)


@torch.no_grad()
def similar(trained: TrainedKGE, entity: str, topk: int = 10, metric: str = "cosine") -> list[tuple[str, float]]:
    """The ``topk`` entities nearest to ``entity`` by ``metric`` (cosine, l2, dot); itself excluded.

    For ``l2`` the score is the negated distance, so higher is nearer for every metric.
    """
    if metric not in SIMILARITY_METRICS:
        raise ConfigError(f"metric={metric!r}: expected one of {SIMILARITY_METRICS}")
    if topk < 1:
        raise ConfigError(f"topk must be >= 1, got {topk}")
    E = trained.model.entity_embeddings.detach().float()
    i = trained.entity_id(entity)
    q = E[i:i + 1]
    if metric == "cosine":
        scores = torch.nn.functional.normalize(E, dim=1) @ torch.nn.functional.normalize(q, dim=1)[0]
    elif metric == "dot":
        scores = E @ q[0]
    else:
        scores = -torch.cdist(q, E)[0]
    scores = scores.cpu()
    scores[i] = float("-inf")
    return _topk(scores, trained.entities, topk)
