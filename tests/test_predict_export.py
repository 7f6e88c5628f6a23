"""predict / similar / export against brute-force references."""
import json

import numpy as np
import pytest
import torch

from kgengine import TrainConfig, load_dataset, train
from kgengine.export import EXPORT_FORMATS, export, unescape_w2v_name
from kgengine.predict import predict, similar
from kgengine.saved import TrainedKGE


@pytest.fixture(scope="module")
def trained():
    kg = load_dataset("nations")
    return train(kg, TrainConfig(model_name="DistMult", hidden_dim=8, max_step=30, batch_size=64,
                                 neg_sample_size=8, progress=False), evaluate_test=False)


def test_predict_tail_matches_scores(trained):
    h, r = trained.entity_id("usa"), trained.relation_id(trained.relations[0])
    rows = predict(trained, head="usa", relation=trained.relations[0], topk=3)
    scores = trained.model.score_candidates(torch.tensor([h]), torch.tensor([r]))[0]
    best = torch.argsort(scores, descending=True)[:3].tolist()
    assert [n for n, _ in rows] == [trained.entities[i] for i in best]
    assert rows[0][1] == pytest.approx(float(scores[best[0]]), rel=1e-5)


def test_predict_head_and_relation(trained):
    rel, tail = trained.relations[1], "china"
    rows = predict(trained, relation=rel, tail=tail, topk=14)
    ids = torch.tensor([trained.entity_id(n) for n, _ in rows])
    ref = trained.model.score(ids, torch.full_like(ids, trained.relation_id(rel)),
                              torch.full_like(ids, trained.entity_id(tail)))
    assert torch.allclose(ref, torch.tensor([s for _, s in rows]), atol=1e-5)
    rel_rows = predict(trained, head="usa", tail="china", topk=5)
    assert len(rel_rows) == 5 and all(n in trained.relations for n, _ in rel_rows)


def test_exclude_known_removes_stored_answers(trained):
    known = trained.known_triples()
    h = trained.entity_id("usa")
    r = int(known[known[:, 0] == h][0, 1])
    answers = {trained.entities[int(t)] for t in known[(known[:, 0] == h) & (known[:, 1] == r), 2]}
    all_rows = predict(trained, head="usa", relation=trained.relations[r], topk=14)
    kept = predict(trained, head="usa", relation=trained.relations[r], topk=14, exclude_known=True)
    assert answers & {n for n, _ in all_rows}
    assert not answers & {n for n, _ in kept}
    assert len(kept) == 14 - len(answers)


def test_predict_errors(trained):
    with pytest.raises(ValueError, match="exactly two"):
        predict(trained, head="usa")
    with pytest.raises(KeyError, match="unknown relation"):
        predict(trained, head="usa", relation="no_such_rel")


@pytest.mark.parametrize("metric", ["cosine", "l2", "dot"])
def test_similar_matches_brute_force(trained, metric):
    E = trained.model.entity_embeddings.detach()
    i = trained.entity_id("usa")
    ref = {
        "cosine": torch.nn.functional.cosine_similarity(E, E[i:i + 1]),
        "l2": -(E - E[i]).norm(dim=1),
        "dot": E @ E[i],
    }[metric]
    ref[i] = float("-inf")
    rows = similar(trained, "usa", topk=5, metric=metric)
    assert [n for n, _ in rows] == [trained.entities[j] for j in torch.argsort(ref, descending=True)[:5].tolist()]
    with pytest.raises(ValueError):
        similar(trained, "usa", metric="manhattan")


def test_export_every_format(trained, tmp_path):
    files = {fmt: export(trained, tmp_path / fmt, fmt) for fmt in EXPORT_FORMATS}
    E = trained.model.entity_embeddings.detach().numpy()
    assert np.array_equal(np.load(tmp_path / "npy" / "nations_DistMult_entity.npy"), E)
    ids = (tmp_path / "npy" / "entities.tsv").read_text().splitlines()
    assert ids[0] == f"0\t{trained.entities[0]}" and len(ids) == 14
    from safetensors.numpy import load_file

    st = load_file(str(tmp_path / "safetensors" / "nations_DistMult.safetensors"))
    assert np.array_equal(st["entity"], E) and st["relation"].shape == (55, 8)
    tsv = (tmp_path / "tsv" / "nations_DistMult_entity.tsv").read_text().splitlines()
    name, *vals = tsv[3].split("\t")
    assert name == trained.entities[3] and np.array_equal(np.array(vals, dtype=np.float32), E[3])  # exact
    w2v = (tmp_path / "w2v" / "nations_DistMult_entity.w2v.txt").read_text().splitlines()
    assert w2v[0] == "14 8" and len(w2v) == 15
    assert all(files.values())
    with pytest.raises(ValueError, match="format"):
        export(trained, tmp_path, "hdf5")


def test_w2v_percent_encodes_whitespace_in_names(trained, tmp_path):
    names = ["new york", "new_york", "new%20york"] + trained.entities[3:]
    t = TrainedKGE(trained.model, names, trained.relations, {}, {"dataset": "x"})
    (path,) = export(t, tmp_path, "w2v")
    tokens = [line.split(" ")[0] for line in path.read_text().splitlines()[1:]]
    assert tokens[:3] == ["new%20york", "new_york", "new%2520york"]
    assert [unescape_w2v_name(tok) for tok in tokens] == names


def test_saved_folder_round_trip(trained, tmp_path):
    trained.save_pretrained(tmp_path / "m")
    back = TrainedKGE.from_pretrained(tmp_path / "m")
    assert back.entities == trained.entities and back.relations == trained.relations
    assert torch.equal(back.model.entity_embeddings, trained.model.entity_embeddings)
    assert torch.equal(back.known_triples(), trained.known_triples())
    assert json.loads((tmp_path / "m" / "config.json").read_text())["dataset"] == "nations"
    with pytest.raises(ValueError):
        TrainedKGE(trained.model, trained.entities[:-1], trained.relations)


def test_reciprocal_export_names_the_inverse_rows(tmp_path):
    kg = load_dataset("nations")
    tr = train(kg, TrainConfig(model_name="DistMult", hidden_dim=4, max_step=3, batch_size=32, neg_sample_size=4,
                               reciprocal=True, progress=False), evaluate_test=False)
    export(tr, tmp_path / "tsv", "tsv")
    rows = (tmp_path / "tsv").glob("*_relation.tsv").__next__().read_text().splitlines()
    R = len(kg.relations)
    assert len(rows) == 2 * R
    assert rows[R].split("\t")[0] == kg.relations[0] + "_inverse"
    tr.save_pretrained(tmp_path / "m")
    back = TrainedKGE.from_pretrained(tmp_path / "m")
    assert back.model.reciprocal and back.relations == tr.relations
