"""Filtered link-prediction ranking against all entities.

Each test triple ``(h, r, t)`` gives two queries: ``(h, r, ?)`` ranks ``t``
among all entities, ``(?, r, t)`` ranks ``h``. Filtered: every other entity
that makes a known triple (train + valid + test by default) is removed from the
ranking. Ties: ``realistic`` (default) is the mean of the ``optimistic``
(``1 + #better``) and ``pessimistic`` (``1 + #better + #equal``) ranks, the
expected rank under random tie breaking (PyKEEN's default); the other two on
request. Queries are processed in batches sized so a batch's ``(b, N)`` score
matrix (and the model's per-pair temporaries) fit a memory budget; on graphs so
large that a batch would hold only a few queries, many queries meet one block of
candidates at a time instead and the ranks are counted block by block (with the
true answers scored in every block's kernel call). The budget is larger on
a GPU (:data:`GPU_BUDGET_BYTES`), where scoring runs on whatever device holds
the model's tables (:func:`on_device` moves offloaded tables there).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from .models import KGEModel

__all__ = ["FilterIndex", "rank_triples", "evaluate", "metrics_from_ranks", "on_device", "TIE_MODES"]

TIE_MODES = ("realistic", "optimistic", "pessimistic")
DEFAULT_BUDGET_BYTES = 256 * 2**20
# Below this many queries per batch against all entities, evaluation switches to candidate blocks
# of MIN_BLOCK_QUERIES queries each (graphs of millions of entities).
MIN_QUERIES = 64
MIN_BLOCK_QUERIES = 1024
# Candidates per kernel call at most: rank counts are float32 sums of +-1 (see _compare), exact below 2**24.
MAX_BLOCK = 1 << 24
# On a GPU the batches are larger: fewer launches and host round trips for the filter.
GPU_BUDGET_BYTES = 2 * 2**30


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        cur = torch.cuda.current_device()
        return (a.index if a.index is not None else cur) == (b.index if b.index is not None else cur)
    return True


def on_device(model: KGEModel, device: str | torch.device) -> KGEModel:
    """``model`` with its tables on ``device``: itself if they are there, else a copy.

    An offloaded model (tables in CPU memory, ``--mix_cpu_gpu``) is copied to the GPU to be
    evaluated there when the GPU has room for it; otherwise it stays where it is (with a warning).
    """
    device = torch.device(device)
    if _same_device(model.tables["entity"].device, device):
        return model
    if device.type == "cuda":
        need = sum(t.numel() * t.element_size() for t in model.tables.values())
        free, _ = torch.cuda.mem_get_info(device)
        if need + GPU_BUDGET_BYTES > free:
            warnings.warn(f"evaluating on {model.tables['entity'].device}: the tables ({need / 2**30:.1f} GiB) "
                          f"do not fit on {device} beside the scores ({free / 2**30:.1f} GiB free)")
            return model
    return model.copy_to(device)


class FilterIndex:
    """Known answers of every ``(anchor, relation)`` query, in sorted CSR form.

    Args:
        triples: ``int64 (n, 3)`` all known triples, or a sequence of such tensors (no concatenated copy).
        num_entities, num_relations: id ranges.
        queries: ``int64 (q, 3)`` the triples that will be ranked: only the known triples that
            answer one of their queries are indexed (ranking 1,000 test triples of a 100M-triple
            graph then sorts thousands of keys, not hundreds of millions).
    """

    def __init__(self, triples: torch.Tensor | Sequence[torch.Tensor], num_entities: int, num_relations: int,
                 queries: torch.Tensor | None = None) -> None:
        self.R = num_relations
        parts = [triples] if isinstance(triples, torch.Tensor) else list(triples)
        tails, heads = [], []
        for side, out in (("tail", tails), ("head", heads)):
            a, b = (0, 2) if side == "tail" else (2, 0)
            wanted = None if queries is None else torch.unique(queries[:, a] * num_relations + queries[:, 1])
            for t in parts:
                keys = t[:, a] * num_relations + t[:, 1]
                keep = None if wanted is None else torch.isin(keys, wanted)
                out.append((keys, t[:, b]) if keep is None else (keys[keep], t[keep, b]))
        self.tail_keys, self.tail_vals = self._sorted(*(torch.cat(x) for x in zip(*tails)))
        self.head_keys, self.head_vals = self._sorted(*(torch.cat(x) for x in zip(*heads)))

    @staticmethod
    def _sorted(keys: torch.Tensor, vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort(keys, stable=True)
        return keys[order].contiguous(), vals[order].contiguous()

    def answers(self, anchor: torch.Tensor, r: torch.Tensor, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, cols)``: for query ``i`` (anchor ``anchor[i]``, relation ``r[i]``) each known answer."""
        keys, vals = (self.tail_keys, self.tail_vals) if side == "tail" else (self.head_keys, self.head_vals)
        q = anchor * self.R + r
        start = torch.searchsorted(keys, q, right=False)
        count = torch.searchsorted(keys, q, right=True) - start
        rows = torch.repeat_interleave(torch.arange(len(q)), count)
        first = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
        cols = vals[first + torch.arange(len(rows))]
        return rows, cols


def rank_triples(model: KGEModel, triples: torch.Tensor, side: str, filter_index: FilterIndex | None = None,
                 ties: str = "realistic", budget_bytes: int = DEFAULT_BUDGET_BYTES, batch_size: int = 0,
                 num_candidates: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``float64 (n,)``: the filtered rank of the true ``side`` entity of each triple.

    Args:
        model: the scorer; its tables' device is used.
        triples: ``int64 (n, 3)``.
        side: ``"tail"`` ranks t for ``(h, r, ?)``, ``"head"`` ranks h for ``(?, r, t)``.
        filter_index: known triples to filter out; ``None`` for raw ranking.
        ties: one of :data:`TIE_MODES`.
        batch_size: queries per batch (DGL-KE's ``--batch_size_eval``); ``0``: sized by ``budget_bytes``.
        num_candidates: ``k > 0`` ranks against ``k`` uniformly drawn entities shared by a batch
            (DGL-KE's ``--neg_sample_size_eval``; cheaper, optimistic, not comparable with full
            ranking); ``0`` (or ``>= num_entities``): against all entities.
        generator: the stream the sampled candidates come from.
    """
    if ties not in TIE_MODES:
        raise ValueError(f"ties={ties!r}: expected one of {TIE_MODES}")
    if batch_size < 0 or num_candidates < 0:
        raise ValueError(f"batch_size and num_candidates must be >= 0, got {batch_size}, {num_candidates}")
    device = model.tables["entity"].device
    if device.type == "cuda" and budget_bytes == DEFAULT_BUDGET_BYTES:
        budget_bytes = GPU_BUDGET_BYTES
    N = model.num_entities
    sampled = 0 < num_candidates < N
    per_pair = model.pair_cost() + 8
    b = batch_size or max(1, min(4096, budget_bytes // (N * per_pair)))
    block = N  # candidates scored per kernel call
    if not sampled and ((batch_size or MIN_QUERIES) * N * per_pair > budget_bytes or N > MAX_BLOCK):
        # a huge graph: a few queries against all N entities would read the whole table per handful of
        # queries; instead many queries meet one block of candidates at a time (GEMM-sized work)
        b = batch_size or min(MIN_BLOCK_QUERIES, max(1, len(triples)))
        block = min(MAX_BLOCK, max(1, budget_bytes // (b * per_pair) - b))
    ranks = []
    with torch.no_grad():
        terms = None if sampled or block < N else model.candidate_terms(model.tables["entity"][None])  # once
        for s in range(0, len(triples), b):
            batch = triples[s:s + b]
            h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
            anchor, target = (h, t) if side == "tail" else (t, h)
            rows = torch.arange(len(batch), device=device)
            tgt, anchor_d, r_d = target.to(device), anchor.to(device), r.to(device)
            fr = fc = torch.empty(0, dtype=torch.int64, device=device)
            if filter_index is not None:
                fr, fc = (x.to(device) for x in filter_index.answers(anchor, r, side))
            if sampled:
                k = num_candidates
                cand = torch.randint(0, N, (k,), generator=generator).to(device)
                # the true answers ride along as extra columns so they are scored by the same kernel
                both = model.score_candidates(anchor_d, r_d, side=side, candidates=torch.cat([cand, tgt])).float()
                true, scores = both[rows, k + rows], both[:, :k]
                drop = torch.zeros(len(batch), N, dtype=torch.bool, device=device)
                drop[fr, fc] = True
                drop[rows, tgt] = True
                scores[drop[:, cand]] = float("-inf")
                better, equal = _compare(scores, true)
            elif block >= N:
                scores = model.score_candidates(anchor_d, r_d, side=side, terms=terms).float()
                true = scores[rows, tgt].clone()
                scores[fr, fc] = float("-inf")
                scores[rows, tgt] = float("-inf")  # compare against the others only
                better, equal = _compare(scores, true)
            else:
                better = torch.zeros(len(batch), dtype=torch.float64, device=device)
                equal = torch.zeros_like(better)
                for lo in range(0, N, block):
                    n = min(N, lo + block) - lo
                    ids = torch.arange(lo, lo + n, device=device)
                    both = model.score_candidates(anchor_d, r_d, side=side, candidates=torch.cat([ids, tgt])).float()
                    true, scores = both[rows, n + rows], both[:, :n]
                    known = (fc >= lo) & (fc < lo + n)
                    scores[fr[known], fc[known] - lo] = float("-inf")
                    own = (tgt >= lo) & (tgt < lo + n)
                    scores[rows[own], tgt[own] - lo] = float("-inf")
                    more, same = _compare(scores, true)
                    better += more
                    equal += same
            if ties == "optimistic":
                rank = better + 1
            else:
                rank = better + 1 + (equal if ties == "pessimistic" else equal / 2)
            ranks.append(rank.cpu())
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.float64)


def _compare(scores: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: how many scores beat ``true``, and how many tie with it (``scores`` is overwritten).

    ``sign(score - true)`` in place, then its row sums (better - worse) and absolute row sums
    (better + worse): a few streaming passes, where counting two boolean masks costs ~7x more on
    a CPU. The sums are exact (integers below 2**24 in float32: a block never holds that many
    candidates). A NaN score among the ranked candidates raises.
    """
    d = scores.sub_(true[:, None])
    if torch.isnan(d.sum()):  # NaN propagates through the sum (torch.sign would map it to 0)
        raise FloatingPointError("the model produced NaN scores; the embeddings have diverged")
    d.sign_()
    net = d.sum(1).double()  # float32 sums of +-1 are exact here; dtype=float64 would copy the matrix
    moved = torch.linalg.vector_norm(d, ord=1, dim=1).double()
    return (net + moved) / 2, scores.shape[1] - moved


def metrics_from_ranks(ranks: torch.Tensor) -> dict[str, float]:
    """``{"mrr", "mr", "hits@1", "hits@3", "hits@10"}`` from ``(n,)`` ranks."""
    if len(ranks) == 0:
        raise ValueError("no ranks to summarise (empty split)")
    r = ranks.double()
    return {
        "mrr": float((1.0 / r).mean()),
        "mr": float(r.mean()),
        "hits@1": float((r <= 1).double().mean()),
        "hits@3": float((r <= 3).double().mean()),
        "hits@10": float((r <= 10).double().mean()),
    }


def evaluate(model: KGEModel, triples: torch.Tensor,
             filter_triples: torch.Tensor | Sequence[torch.Tensor] | None = None,
             ties: str = "realistic", budget_bytes: int = DEFAULT_BUDGET_BYTES, batch_size: int = 0,
             num_candidates: int = 0, fraction: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Filtered MRR, MR, Hits@1/3/10 over head and tail queries of ``triples``.

    Args:
        triples: ``int64 (n, 3)`` the triples to rank.
        filter_triples: ``int64 (m, 3)`` known triples (usually train + valid + test), or a sequence of
            such tensors; ``None`` = raw.
        batch_size, num_candidates: see :func:`rank_triples`.
        fraction: rank a seeded random ``fraction`` of ``triples`` (DGL-KE's ``--eval_percent / 100``).
        seed: seeds the subsample and the sampled candidates.
    Returns:
        the metrics of both sides together, plus ``"tail"`` and ``"head"`` sub-dicts.
    """
    if len(triples) == 0:
        raise ValueError("cannot evaluate an empty split")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    if fraction < 1.0:
        keep = max(1, round(fraction * len(triples)))
        triples = triples[torch.randperm(len(triples), generator=gen)[:keep]]
    fi = None
    if filter_triples is not None:
        fi = FilterIndex(filter_triples, model.num_entities, model.num_relations, queries=triples)
    kw = dict(batch_size=batch_size, num_candidates=num_candidates, generator=gen)
    tail = rank_triples(model, triples, "tail", fi, ties, budget_bytes, **kw)
    head = rank_triples(model, triples, "head", fi, ties, budget_bytes, **kw)
    out = metrics_from_ranks(torch.cat([tail, head]))
    out["tail"] = metrics_from_ranks(tail)
    out["head"] = metrics_from_ranks(head)
    return out
