"""The DGL graph view of a KG: structure, degrees, METIS partitions.

The KG's training triples become one ``dgl.graph`` (head -> tail edges) with
the relation id in ``g.edata["etype"]``. The engine reads degrees from it for
degree-proportional negative sampling, and METIS partitions for deciding which
rank owns which entity in multi-process training.
"""
from __future__ import annotations

import os

import torch

from .data import KG
from .dglcompat import dgl

__all__ = ["build_graph", "entity_degrees", "partition_entities", "partition_graph_to_disk"]


def build_graph(kg: KG, split: str = "train") -> "dgl.DGLGraph":
    """A ``dgl.graph`` with one node per entity and one edge per triple of ``split``.

    ``g.edata["etype"]``: ``int64 (num_edges,)`` relation ids.
    """
    triples = kg.split(split)
    g = dgl.graph((triples[:, 0], triples[:, 2]), num_nodes=kg.num_entities, idtype=torch.int64)
    g.edata["etype"] = triples[:, 1].clone()
    return g


def entity_degrees(g: "dgl.DGLGraph") -> torch.Tensor:
    """``int64 (num_nodes,)``: in-degree + out-degree of every entity."""
    return g.in_degrees() + g.out_degrees()


def partition_entities(g: "dgl.DGLGraph", num_parts: int) -> torch.Tensor:
    """``int64 (num_nodes,)``: the METIS part (0..num_parts-1) that owns each entity.

    METIS runs on the undirected, relation-agnostic view of the graph, so the
    parts minimise the triples that cross ranks.
    """
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if num_parts == 1:
        return torch.zeros(g.num_nodes(), dtype=torch.int64)
    simple = dgl.to_simple(dgl.to_bidirected(dgl.graph(g.edges(), num_nodes=g.num_nodes())))
    simple = dgl.remove_self_loop(simple)
    return dgl.metis_partition_assignment(simple, num_parts).to(torch.int64)


def partition_graph_to_disk(g: "dgl.DGLGraph", name: str, num_parts: int, out_dir: str | os.PathLike) -> str:
    """Write DGL's partition files (``dgl.distributed.partition_graph``, METIS); returns the JSON config path."""
    dgl.distributed.partition_graph(g, name, num_parts, str(out_dir), part_method="metis", balance_edges=True)
    return os.path.join(str(out_dir), f"{name}.json")
