"""kgengine.graph: the DGL view of a KG, degrees and METIS partitions."""
from __future__ import annotations

import importlib.util
import json

import numpy as np

import pytest
import torch

from kgengine.data import KG, load_dataset
from kgengine.graph import build_graph, entity_degrees, partition_entities, partition_graph_to_disk

# DGL is optional on the training path (a lent GPU machine has none); these test the DGL layer itself
pytestmark = pytest.mark.skipif(importlib.util.find_spec("dgl") is None, reason="needs DGL")


@pytest.fixture(scope="module")
def kinships():
    return load_dataset("kinships")


@pytest.fixture(scope="module")
def kin_graph(kinships):
    return build_graph(kinships)


def _numpy_degrees(triples: torch.Tensor, n: int) -> np.ndarray:
    a = triples.numpy()
    return np.bincount(a[:, 0], minlength=n) + np.bincount(a[:, 2], minlength=n)


def test_build_graph_structure(kinships, kin_graph):
    g = kin_graph
    assert g.num_nodes() == kinships.num_entities == 104
    assert g.num_edges() == len(kinships.train) == 8544
    assert g.idtype == torch.int64
    src, dst = g.edges(order="eid")
    assert torch.equal(src, kinships.train[:, 0])
    assert torch.equal(dst, kinships.train[:, 2])
    assert g.edata["etype"].dtype == torch.int64
    assert torch.equal(g.edata["etype"], kinships.train[:, 1])


def test_build_graph_etype_is_a_copy(tiny_kg):
    g = build_graph(tiny_kg)
    g.edata["etype"][0] = 99
    assert int(tiny_kg.train[0, 1]) != 99


@pytest.mark.parametrize("split", ["valid", "test"])
def test_build_graph_other_splits(kinships, split):
    g = build_graph(kinships, split)
    t = kinships.split(split)
    assert g.num_nodes() == kinships.num_entities and g.num_edges() == len(t)
    assert torch.equal(g.edata["etype"], t[:, 1])


def test_build_graph_isolated_entities_are_nodes():
    # entity 3 and 4 never occur: the graph still has a node for them
    tr = torch.tensor([[0, 0, 1], [1, 1, 2], [2, 0, 0]])
    kg = KG(["a", "b", "c", "d", "e"], ["r", "s"], tr, tr[:1], tr[:1])
    g = build_graph(kg)
    assert g.num_nodes() == 5 and g.num_edges() == 3
    assert entity_degrees(g).tolist() == [2, 2, 2, 0, 0]


def test_trainer_degrees_equal_dgl_degrees(kinships, kin_graph):
    """The trainer's torch.bincount degrees (no DGL needed) are DGL's in + out degrees."""
    from kgengine.sampling import triple_degrees

    assert torch.equal(triple_degrees(kinships.train, kinships.num_entities), entity_degrees(kin_graph))


def test_entity_degrees_match_bincount(kinships, kin_graph):
    deg = entity_degrees(kin_graph)
    assert deg.shape == (kinships.num_entities,)
    assert deg.dtype == torch.int64
    np.testing.assert_array_equal(deg.numpy(), _numpy_degrees(kinships.train, kinships.num_entities))
    assert int(deg.sum()) == 2 * len(kinships.train)


def test_entity_degrees_self_loops_and_multi_edges():
    tr = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [2, 0, 1]])
    kg = KG(["a", "b", "c"], ["r", "s"], tr, tr[:1], tr[:1])
    deg = entity_degrees(build_graph(kg))
    np.testing.assert_array_equal(deg.numpy(), _numpy_degrees(tr, 3))
    assert deg.tolist() == [4, 3, 1]


def test_entity_degrees_tiny(tiny_kg):
    deg = entity_degrees(build_graph(tiny_kg))
    np.testing.assert_array_equal(deg.numpy(), _numpy_degrees(tiny_kg.train, tiny_kg.num_entities))


def test_partition_entities_two_parts(kinships, kin_graph):
    parts = partition_entities(kin_graph, 2)
    assert parts.dtype == torch.int64
    assert parts.shape == (kinships.num_entities,)
    assert set(parts.tolist()) == {0, 1}
    counts = torch.bincount(parts, minlength=2)
    assert int(counts.sum()) == kinships.num_entities
    assert (counts > 0).all()


def test_partition_entities_is_balanced(kinships, kin_graph):
    # (no determinism check: DGL 2.1.0's metis_partition_assignment occasionally returns a different,
    # equally good assignment for the same graph within one process; see the report)
    counts = torch.bincount(partition_entities(kin_graph, 2), minlength=2)
    assert 0.35 * kinships.num_entities <= counts.min() <= counts.max() <= 0.65 * kinships.num_entities


def test_partition_entities_separates_two_communities():
    """Two dense groups of 12 entities joined by one triple: METIS must cut only that triple."""
    n = 12
    rows = []
    for base in (0, n):
        for i in range(n):
            for j in range(n):
                if i != j and (i + j) % 3 == 0 or j == (i + 1) % n:
                    rows.append((base + i, (i + j) % 2, base + j))
    rows.append((0, 0, n))  # the bridge
    tr = torch.tensor(rows, dtype=torch.int64)
    kg = KG([f"e{i}" for i in range(2 * n)], ["r0", "r1"], tr, tr[:1], tr[:1])
    parts = partition_entities(build_graph(kg), 2)
    assert parts.shape == (2 * n,)
    assert len(set(parts[:n].tolist())) == 1 and len(set(parts[n:].tolist())) == 1
    assert parts[0] != parts[n]
    assert int((parts[tr[:, 0]] != parts[tr[:, 2]]).sum()) == 1


def test_partition_entities_one_part(kinships, kin_graph):
    parts = partition_entities(kin_graph, 1)
    assert parts.dtype == torch.int64
    assert torch.equal(parts, torch.zeros(kinships.num_entities, dtype=torch.int64))


@pytest.mark.parametrize("bad", [0, -1])
def test_partition_entities_bad_num_parts(kin_graph, bad):
    with pytest.raises(ValueError, match="num_parts must be >= 1"):
        partition_entities(kin_graph, bad)


def test_partition_graph_to_disk(tmp_path, kinships):
    kin_graph = build_graph(kinships)  # own graph: DGL's partitioner may annotate it
    out = tmp_path / "parts"
    path = partition_graph_to_disk(kin_graph, "kin", 2, out)
    assert path == str(out / "kin.json")
    with open(path) as f:
        cfg = json.load(f)
    assert cfg["graph_name"] == "kin"
    assert cfg["num_parts"] == 2
    assert cfg["num_nodes"] == kin_graph.num_nodes()
    assert cfg["num_edges"] == kin_graph.num_edges()
    assert cfg["part_method"] == "metis"
    assert (out / "part0").is_dir() and (out / "part1").is_dir()
