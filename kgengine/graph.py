"""The DGL graph view of a KG: structure, degrees, METIS partitions.

The KG's training triples become one ``dgl.graph`` (head -> tail edges) with
the relation id in ``g.edata["etype"]``; METIS partitions of it decide which
worker owns which entity. DGL is imported here, lazily, and nowhere else on
the training path: training, evaluation and the GPU path run on machines
without DGL (degrees for ``--neg_deg_sample`` are a ``torch.bincount``,
:func:`kgengine.sampling.triple_degrees`).
"""
from __future__ import annotations

import os
from typing import Any

import torch

from .data import KG

__all__ = ["build_graph", "entity_degrees", "partition_entities", "partition_graph_to_disk"]

DGLGraph = Any  # a dgl.DGLGraph; DGL itself is imported only when a graph is built


def _dgl():
    from .dglcompat import dgl  # the import costs seconds and needs DGL installed: only when a graph is built

    return dgl


def build_graph(kg: KG, split: str = "train") -> DGLGraph:
    """A ``dgl.graph`` with one node per entity and one edge per triple of ``split``.

    ``g.edata["etype"]``: ``int64 (num_edges,)`` relation ids.
    """
    triples = kg.split(split)
    g = _dgl().graph((triples[:, 0], triples[:, 2]), num_nodes=kg.num_entities, idtype=torch.int64)
    g.edata["etype"] = triples[:, 1].clone()
    return g


def entity_degrees(g: DGLGraph) -> torch.Tensor:
    """``int64 (num_nodes,)``: in-degree + out-degree of every entity."""
    return g.in_degrees() + g.out_degrees()


def partition_entities(g: DGLGraph, num_parts: int) -> torch.Tensor:
    """``int64 (num_nodes,)``: the METIS part (0..num_parts-1) that owns each entity.

    METIS runs on the undirected, relation-agnostic view of the graph, so the
    parts minimise the triples that cross ranks.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if num_parts == 1:
        return torch.zeros(g.num_nodes(), dtype=torch.int64)
    dgl = _dgl()
    simple = dgl.to_simple(dgl.to_bidirected(dgl.graph(g.edges(), num_nodes=g.num_nodes())))
    simple = dgl.remove_self_loop(simple)
    return dgl.metis_partition_assignment(simple, num_parts).to(torch.int64)


def partition_graph_to_disk(g: DGLGraph, name: str, num_parts: int, out_dir: str | os.PathLike) -> str:
    """Write DGL's partition files (``dgl.distributed.partition_graph``, METIS); returns the JSON config path."""
    _dgl().distributed.partition_graph(g, name, num_parts, str(out_dir), part_method="metis", balance_edges=True)
    return os.path.join(str(out_dir), f"{name}.json")
