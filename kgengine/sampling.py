"""Positive batches and shared ("chunked") negative sampling.

A batch of ``B`` positives is cut into ``C = B / chunk_size`` chunks; every
positive of a chunk is scored against the same ``k`` negative entities, so the
negative scores of a chunk are one ``(chunk_size, k)`` matrix product instead
of ``chunk_size * k`` separate triples (DGL-KE's ``--neg_chunk_size``).

Both samplers draw from an explicit ``torch.Generator`` and expose
``state_dict``/``load_state_dict``, so a resumed run draws exactly the batches
an uninterrupted run would have drawn.
"""
from __future__ import annotations

import torch

__all__ = ["EdgeBatcher", "ChunkNegativeSampler"]


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
    """

    def __init__(self, num_entities: int, neg_sample_size: int, generator: torch.Generator,
                 degrees: torch.Tensor | None = None) -> None:
        if neg_sample_size < 1:
            raise ValueError(f"neg_sample_size must be >= 1, got {neg_sample_size}")
        self.num_entities, self.k, self.generator = num_entities, neg_sample_size, generator
        self.cdf = None
        if degrees is not None:
            w = degrees.to(torch.float64)
            if w.shape != (num_entities,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError("degrees must be a finite, non-negative (num_entities,) tensor with a positive sum")
            cdf = torch.cumsum(w, 0)
            self.cdf = cdf / cdf[-1]

    def sample(self, num_chunks: int) -> torch.Tensor:
        """``int64 (num_chunks, k)`` negative entity ids."""
        if self.cdf is None:
            return torch.randint(0, self.num_entities, (num_chunks, self.k), generator=self.generator)
        u = torch.rand(num_chunks * self.k, generator=self.generator, dtype=torch.float64)
        # inverse-CDF draw: O(k log n), no per-step multinomial table
        return torch.searchsorted(self.cdf, u, right=True).clamp_max(self.num_entities - 1).view(num_chunks, self.k)
