"""Positive batches and shared ("chunked") negative sampling.

A batch of ``B`` positives is cut into ``C = B / chunk_size`` chunks; every
positive of a chunk is scored against the same ``k`` negative entities, so the
negative scores of a chunk are one ``(chunk_size, k)`` matrix product instead
of ``chunk_size * k`` separate triples (DGL-KE's ``--neg_chunk_size``).

Both samplers draw from an explicit ``torch.Generator`` and expose
``state_dict``/``load_state_dict``, so a resumed run draws exactly the batches
an uninterrupted run would have drawn.

:class:`StepSampler` turns their draws into the ids one training step needs
(:class:`StepBatch`), all on the CPU whatever device trains: the random stream
stays reproducible, and the data-dependent ``unique`` (which would force a host
sync on a GPU) runs while the GPU is still busy with the previous step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EdgeBatcher", "ChunkNegativeSampler", "StepBatch", "StepSampler", "triple_degrees"]


def triple_degrees(triples: torch.Tensor, num_entities: int) -> torch.Tensor:
    """``int64 (num_entities,)``: how often each entity is a head or a tail of ``triples (n, 3)``."""
    heads = torch.bincount(triples[:, 0], minlength=num_entities)
    return heads + torch.bincount(triples[:, 2], minlength=num_entities)


class EdgeBatcher:
    """Endless stream of positive batches over ``num_edges`` triples, reshuffled every epoch.

    A batch that runs past the end of an epoch continues into the next
    permutation, so every batch has exactly ``batch_size`` rows.
    """

    def __init__(self, num_edges: int, batch_size: int, generator: torch.Generator) -> None:
        if num_edges < 1:
            raise ValueError("no training triples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_edges, self.batch_size, self.generator = num_edges, batch_size, generator
        self.perm = torch.randperm(num_edges, generator=generator)
        self.pos = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        """``int64 (batch_size,)`` edge indices."""
        parts, need = [], self.batch_size
        while need:
            if self.pos == self.num_edges:
                self.perm = torch.randperm(self.num_edges, generator=self.generator)
                self.pos, self.epoch = 0, self.epoch + 1
            take = min(need, self.num_edges - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        return {"perm": self.perm.clone(), "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos, self.epoch = state["perm"].clone(), int(state["pos"]), int(state["epoch"])


class ChunkNegativeSampler:
    """``k`` negative entities per chunk, uniform or proportional to degree.

    Args:
        num_entities: entity ids are drawn from ``[0, num_entities)``.
        neg_sample_size: ``k``, negatives per chunk.
        degrees: ``(num_entities,)`` weights for degree-proportional sampling
            (DGL-KE's ``--neg_deg_sample``); ``None`` for uniform.
        generator: the random stream.
        candidates: draw only these entity ids (a worker's own partition: DGL-KE's local
            negatives); ``None`` for all entities.
    """

    def __init__(self, num_entities: int, neg_sample_size: int, generator: torch.Generator,
                 degrees: torch.Tensor | None = None, candidates: torch.Tensor | None = None) -> None:
        if neg_sample_size < 1:
            raise ValueError(f"neg_sample_size must be >= 1, got {neg_sample_size}")
        if candidates is not None and len(candidates) == 0:
            raise ValueError("no candidate entities to draw negatives from")
        self.candidates = candidates
        self.num_entities = num_entities if candidates is None else len(candidates)
        self.k, self.generator = neg_sample_size, generator
        self.cdf = None
        if degrees is not None:
            if degrees.shape != (num_entities,):
                raise ValueError("degrees must be a (num_entities,) tensor")
            w = degrees.to(torch.float64) if candidates is None else degrees[candidates].to(torch.float64)
            if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError("degrees must be finite, non-negative, with a positive sum")
            cdf = torch.cumsum(w, 0)
            self.cdf = cdf / cdf[-1]

    def sample(self, num_chunks: int) -> torch.Tensor:
        """``int64 (num_chunks, k)`` negative entity ids."""
        if self.cdf is None:
            ids = torch.randint(0, self.num_entities, (num_chunks, self.k), generator=self.generator)
        else:
            u = torch.rand(num_chunks * self.k, generator=self.generator, dtype=torch.float64)
            # inverse-CDF draw: O(k log n), no per-step multinomial table
            ids = torch.searchsorted(self.cdf, u, right=True).clamp_max(self.num_entities - 1).view(num_chunks, self.k)
        return ids if self.candidates is None else self.candidates[ids]


@dataclass
class StepBatch:
    """The ids of one step of ``B`` positives and ``C`` chunks of ``k`` negatives.

    Attributes:
        uniq_e: ``(m,)`` the distinct entity ids the step touches (the rows that get gradients).
        inv_e: ``(2B + C*k,)`` the position in ``uniq_e`` of every head, then every tail, then
            every negative (chunk-major).
        uniq_r: ``(u,)`` the distinct relation ids.
        inv_r: ``(B,)`` the position in ``uniq_r`` of every positive's relation.
    """

    uniq_e: torch.Tensor
    inv_e: torch.Tensor
    uniq_r: torch.Tensor
    inv_r: torch.Tensor

    def to(self, device: torch.device) -> "StepBatch":
        """The same ids on ``device``: one pinned buffer, one asynchronous copy (no host sync)."""
        if device.type == "cpu":
            return self
        parts = (self.uniq_e, self.inv_e, self.uniq_r, self.inv_r)
        flat = torch.cat(parts).pin_memory().to(device, non_blocking=True)
        return StepBatch(*flat.split([len(p) for p in parts]))


class StepSampler:
    """Draws the positives and shared negatives of each step and indexes their distinct rows.

    Args:
        triples: ``int64 (n, 3)`` training triples on the CPU.
        num_entities: negatives come from ``[0, num_entities)``.
        batch_size, neg_sample_size, chunk_size: ``B``, ``k`` and the positives per chunk.
        generator: the one random stream (positives first, then negatives, every step).
        degrees: degree weights for ``--neg_deg_sample`` (``None``: uniform).
        candidates: the entity ids negatives come from (``None``: all).
    """

    def __init__(self, triples: torch.Tensor, num_entities: int, batch_size: int, neg_sample_size: int,
                 chunk_size: int, generator: torch.Generator, degrees: torch.Tensor | None = None,
                 candidates: torch.Tensor | None = None) -> None:
        if batch_size % chunk_size:
            raise ValueError(f"chunk_size {chunk_size} must divide batch_size {batch_size}")
        self.triples, self.num_chunks = triples, batch_size // chunk_size
        self.batcher = EdgeBatcher(len(triples), batch_size, generator)
        self.negatives = ChunkNegativeSampler(num_entities, neg_sample_size, generator, degrees, candidates)

    def next(self) -> StepBatch:
        pos = self.triples[self.batcher.next()]
        neg = self.negatives.sample(self.num_chunks)
        uniq_e, inv_e = torch.unique(torch.cat([pos[:, 0], pos[:, 2], neg.flatten()]), return_inverse=True)
        uniq_r, inv_r = torch.unique(pos[:, 1], return_inverse=True)
        return StepBatch(uniq_e, inv_e, uniq_r, inv_r)

    def state_dict(self) -> dict:
        return self.batcher.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batcher.load_state_dict(state)
