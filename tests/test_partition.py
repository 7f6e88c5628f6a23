"""Entity partitions for worker processes: saved once, checked against the graph, used for local positives and
negatives (DGL-KE's locality), and the row-overlap they buy."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from kgengine import TrainConfig, Trainer, load_dataset
from kgengine.cli import main
from kgengine.data import DataError
from kgengine.errors import ConfigError
from kgengine.partition import (compute_partition, edge_cut, load_partition, positives_by_part, row_overlap,
                                save_partition)
from kgengine.sampling import StepSampler

SMALL = dict(hidden_dim=16, batch_size=64, neg_sample_size=16, lr=0.1, progress=False, log_interval=50)
HAS_DGL = importlib.util.find_spec("dgl") is not None


@pytest.fixture(scope="module")
def kinships():
    return load_dataset("kinships")


def test_save_and_load_round_trip_and_checks(kinships, tmp_path):
    parts = compute_partition(kinships, 3, "random", seed=1)
    meta = save_partition(tmp_path / "p", parts, kinships, "random")
    assert meta["num_parts"] == 3 and sum(meta["entities_per_part"]) == kinships.num_entities
    assert meta["edge_cut"] == pytest.approx(edge_cut(kinships.train, parts))
    for given in ("p", "p.npy", "p.json"):
        assert torch.equal(load_partition(tmp_path / given, kinships), parts)
    with pytest.raises(ConfigError, match="one worker per part"):
        load_partition(tmp_path / "p", kinships, num_parts=2)
    with pytest.raises(DataError, match="another graph|entities"):
        load_partition(tmp_path / "p", load_dataset("umls"))
    with pytest.raises(DataError, match="kge partition"):
        load_partition(tmp_path / "missing", kinships)


def test_edge_cut_counts_crossing_triples():
    parts = torch.tensor([0, 0, 1, 1])
    triples = torch.tensor([[0, 0, 1], [1, 0, 2], [2, 0, 3], [3, 0, 0]])
    assert edge_cut(triples, parts) == 0.5


def test_positives_by_part_are_the_triples_whose_head_is_in_the_part(kinships):
    parts = compute_partition(kinships, 2, "random")
    shares = positives_by_part(kinships.train, parts, 2)
    assert sum(len(s) for s in shares) == len(kinships.train)
    for i, s in enumerate(shares):
        assert (parts[kinships.train[s, 0]] == i).all()


def test_local_negatives_come_from_the_workers_part(kinships):
    parts = compute_partition(kinships, 2, "random")
    cand = torch.nonzero(parts == 1).flatten()
    s = StepSampler(kinships.train, kinships.num_entities, 64, 16, 16, torch.Generator().manual_seed(0),
                    candidates=cand)
    neg = s.negatives.sample(50)
    assert set(neg.flatten().tolist()) <= set(cand.tolist())
    assert len(set(neg.flatten().tolist())) > len(cand) // 2  # and they spread over the part


def test_row_overlap_is_lower_with_disjoint_parts(kinships):
    parts = torch.arange(kinships.num_entities) % 2
    local = [StepSampler(kinships.train[s], kinships.num_entities, 8, 4, 4, torch.Generator().manual_seed(i),
                         candidates=torch.nonzero(parts == i).flatten())
             for i, s in enumerate(positives_by_part(kinships.train, parts, 2))]
    shared = [StepSampler(kinships.train, kinships.num_entities, 8, 4, 4, torch.Generator().manual_seed(i))
              for i in range(2)]
    assert row_overlap(local, 20) < row_overlap(shared, 20)


def test_training_with_a_partition(kinships, tmp_path):
    parts = compute_partition(kinships, 2, "random")
    save_partition(tmp_path / "p", parts, kinships, "random")
    with pytest.raises(ConfigError, match="--num_proc"):
        TrainConfig(partition=str(tmp_path / "p.npy"), **SMALL)
    cfg = TrainConfig(model_name="ComplEx", max_step=300, num_proc=2, num_thread=1,
                      partition=str(tmp_path / "p.npy"), **dict(SMALL, hidden_dim=32))
    trainer = Trainer(kinships, cfg)
    before = trainer.tables["entity"].clone()
    trained = trainer.train()
    assert not torch.equal(before, trained.model.tables["entity"])
    from kgengine.evaluate import evaluate

    assert evaluate(trained.model, kinships.test, kinships.all_triples())["mrr"] > 0.2


def _communities(n: int = 30):
    """Two dense groups of n entities joined by one triple: a graph METIS must cut far better than chance."""
    from kgengine.data import KG

    rows = [(base + i, (i + j) % 2, base + j) for base in (0, n) for i in range(n) for j in range(n)
            if i != j and ((i + j) % 3 == 0 or j == (i + 1) % n)]
    rows.append((0, 0, n))
    tr = torch.tensor(rows, dtype=torch.int64)
    return KG([f"e{i}" for i in range(2 * n)], ["r0", "r1"], tr, tr[:1], tr[:1], name="communities")


@pytest.mark.skipif(not HAS_DGL, reason="METIS runs through DGL")
def test_kge_partition_metis_cuts_fewer_triples_than_random(tiny_kg_dir, tmp_path, capsys):
    kg = _communities()
    assert edge_cut(kg.train, compute_partition(kg, 2, "metis")) < 0.01  # only the bridge
    assert edge_cut(kg.train, compute_partition(kg, 2, "random")) > 0.3
    assert main(["partition", "--data-path", str(tiny_kg_dir), "--num-parts", "2"]) == 0
    meta = json.loads((tiny_kg_dir / "partitions" / "metis-2.json").read_text())
    assert meta["method"] == "metis" and meta["num_parts"] == 2 and "edge cut" in capsys.readouterr().out


def test_rel_part_gives_each_relation_to_one_worker(kinships):
    from kgengine.partition import positives_by_relation

    shares = positives_by_relation(kinships.train, kinships.num_relations, 3)
    assert sorted(torch.cat(shares).tolist()) == list(range(len(kinships.train)))
    owners = [set(kinships.train[s, 1].tolist()) for s in shares]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])
    sizes = [len(s) for s in shares]
    assert max(sizes) < 1.2 * min(sizes)  # dealt largest first: balanced
    # an inverse relation travels with its relation
    R = kinships.num_relations
    inv = torch.cat([kinships.train, kinships.train[:, [2, 1, 0]] + torch.tensor([0, R, 0])])
    a, b = (set((inv[s, 1] % R).tolist()) for s in positives_by_relation(inv, R, 2))
    assert a and b and not (a & b)


def test_training_with_rel_part(kinships):
    with pytest.raises(ConfigError, match="--num_proc"):
        TrainConfig(rel_part=True, **SMALL)
    cfg = TrainConfig(model_name="DistMult", max_step=100, num_proc=2, num_thread=1, rel_part=True, **SMALL)
    trained = Trainer(kinships, cfg).train()
    assert torch.isfinite(trained.model.tables["relation"]).all()
