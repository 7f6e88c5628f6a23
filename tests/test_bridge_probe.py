"""bridge.probe: supersense-typing and KG-BERT link-prediction probes on a tiny synthetic setup.

A tiny random BERT (hidden 32, 2 layers) and an in-memory vocabulary; the KG vectors carry the label
(one-hot of the label + noise), the text does not (each entity's word is drawn independently of its
label), so the injected variant must beat text-only and the random-vector control.
"""
import json

import numpy as np
import pytest
import torch

from bridge import EntityProjector, KGBridge, KGVectors
from bridge.corpus import ProbeItem
from bridge.probe import (
    accuracy_macro_f1,
    fit_logistic_regression,
    format_probe_table,
    linkpred_probe,
    mention_features,
    random_like,
    read_entity_texts,
    read_triples,
    relation_text,
    typing_probe,
)

torch.set_num_threads(1)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENT]", "/", "is", "a", "kind", "of"] + \
        [f"w{i}" for i in range(40)] + ["hot", "dog", "##s"]
N_LABELS, D_KG, HIDDEN = 4, 8, 32


def tokenizer():
    from transformers import AddedToken, BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    tok.add_tokens([AddedToken("[ENT]", special=True, normalized=False)], special_tokens=True)
    return tok


def lm(seed=0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


def synthetic(n_train=240, n_test=120, seed=0):
    """Items whose label is in the KG vector only; a KGBridge over them."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = rng.integers(0, N_LABELS, size=n)
    words = rng.integers(0, 40, size=n)
    names = [f"e{i}" for i in range(n)]
    vec = np.eye(D_KG)[labels] * 3.0 + rng.normal(0, 0.5, size=(n, D_KG))
    kg = KGVectors(names, torch.tensor(vec, dtype=torch.float32))
    items = [ProbeItem(names[i], f"w{words[i]}", f"noun.l{labels[i]}") for i in range(n)]
    torch.manual_seed(1)
    proj = EntityProjector(D_KG, HIDDEN)
    model = lm()
    proj.rescale_to(model.get_input_embeddings(), kg.vectors)
    return KGBridge(model, proj, kg).eval(), items[:n_train], items[n_train:]


@pytest.fixture(scope="module")
def typing_result():
    br, train, test = synthetic()
    return typing_probe(br, tokenizer(), train, test, seeds=2, l2_grid=(1e-3, 1e-2))


def test_injected_beats_text_and_random(typing_result):
    v = typing_result["variants"]
    assert set(v) == {"text", "injected", "random", "permuted", "kg_only", "late_fusion"}
    chance = 1 / N_LABELS
    assert v["injected"]["mean"] > 0.8
    assert v["injected"]["mean"] > v["text"]["mean"] + 0.3
    assert v["injected"]["mean"] > v["random"]["mean"] + 0.3
    assert v["text"]["mean"] < chance + 0.2 and v["random"]["mean"] < chance + 0.2
    assert v["kg_only"]["mean"] > 0.9
    # the wrong entity's vector carries another label: no better than chance; late fusion reads the
    # vector directly, as kg_only does
    assert v["permuted"]["mean"] < chance + 0.2
    assert v["late_fusion"]["mean"] > 0.9


def test_probe_json_structure(typing_result, tmp_path):
    r = json.loads(json.dumps(typing_result))  # JSON-serialisable as is
    assert r["task"] == "wordnet-typing" and r["metric"] == "accuracy"
    for name, e in r["variants"].items():
        assert set(e) >= {"mean", "std", "per_seed", "macro_f1", "l2", "feature_dim"}
        assert len(e["per_seed"]) == 2 and e["mean"] == pytest.approx(np.mean(e["per_seed"]))
        assert e["std"] == pytest.approx(np.std(e["per_seed"], ddof=1))
        assert set(e["macro_f1"]) == {"mean", "std", "per_seed"}
        assert all(0 <= x <= 1 for x in e["per_seed"] + e["macro_f1"]["per_seed"])
    assert r["variants"]["text"]["feature_dim"] == HIDDEN
    assert r["variants"]["injected"]["feature_dim"] == 2 * HIDDEN  # concat: mention mean ; slot state
    assert r["variants"]["kg_only"]["feature_dim"] == D_KG
    assert r["variants"]["late_fusion"]["feature_dim"] == HIDDEN + D_KG
    assert r["variants"]["permuted"]["feature_dim"] == 2 * HIDDEN
    assert r["sizes"]["train"] == 240 and r["sizes"]["test"] == 120 and r["sizes"]["classes"] == N_LABELS
    assert r["settings"]["seeds"] == [0, 1] and r["settings"]["template"] == "{mention}"
    table = format_probe_table(r)
    assert "injected" in table and "random" in table


def test_subsamples_drop_missing_and_mean_pool():
    br, train, test = synthetic(120, 60)
    extra = [ProbeItem("not-in-kg", "w1", "noun.l0")]
    r = typing_probe(br, tokenizer(), train + extra, test, variants=("text", "injected"), seeds=[3, 4],
                     max_train=50, max_test=30, pool="mean", l2_grid=(1e-2,))
    assert r["sizes"]["dropped_no_kg_vector"] == 1
    assert r["sizes"]["train"] == 50 and r["sizes"]["test"] == 30
    assert r["variants"]["injected"]["feature_dim"] == HIDDEN
    assert r["settings"]["seeds"] == [3, 4]


def test_text_only_lm_and_errors():
    br, train, test = synthetic(60, 30)
    tok = tokenizer()
    r = typing_probe(br.model, tok, train, test, variants=("text",), seeds=1, l2_grid=(1e-2,))
    assert list(r["variants"]) == ["text"] and r["settings"]["kg_dim"] is None
    with pytest.raises(ValueError, match="need KG vectors"):
        typing_probe(br.model, tok, train, test, variants=("text", "injected"), seeds=1)
    with pytest.raises(ValueError, match="unknown variant"):
        typing_probe(br, tok, train, test, variants=("bogus",), seeds=1)
    with pytest.raises(ValueError, match="exactly once"):
        typing_probe(br, tok, train, test, template="no slot here", seeds=1)
    with pytest.raises(ValueError, match="nothing to probe"):
        typing_probe(br, tok, [ProbeItem("zz", "w1", "x")], test, seeds=1)


def test_mention_features_batched_equals_single_and_slot_changes_state():
    br, train, _ = synthetic(20, 5)
    tok = tokenizer()
    texts = ["hot dogs", "w3", "w5 w6 w7"]
    slots = br.projector(br.kg_table[:3]).detach()
    all_at_once = mention_features(br, tok, texts, slots, batch_size=2)
    one_by_one = torch.cat([mention_features(br, tok, [t], slots[i:i + 1]) for i, t in enumerate(texts)])
    torch.testing.assert_close(all_at_once, one_by_one, atol=1e-5, rtol=1e-5)
    # the slot part is the LM's state at the injected position, equal to a KGBridge forward
    ids = tok("hot dogs / [ENT]", return_tensors="pt")["input_ids"]
    ent = torch.full_like(ids, -1)
    ent[0, ids[0].tolist().index(tok.convert_tokens_to_ids("[ENT]"))] = 0
    with torch.no_grad():
        h = br(input_ids=ids, attention_mask=torch.ones_like(ids), entity_ids=ent).last_hidden_state[0]
    torch.testing.assert_close(all_at_once[0, HIDDEN:], h[ent[0] >= 0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(all_at_once[0, :HIDDEN], h[1:4].mean(0), atol=1e-5, rtol=1e-5)  # hot ##dog ##s
    text = mention_features(br, tok, texts)
    assert text.shape == (3, HIDDEN) and not torch.allclose(text, all_at_once[:, :HIDDEN])
    # a template around the mention: the mean covers the mention's wordpieces only
    f = mention_features(br, tok, ["hot dogs"], template="a kind of {mention} is")
    ids = tok("a kind of hot dogs is", return_tensors="pt")["input_ids"]  # [CLS] a kind of hot dog ##s is [SEP]
    with torch.no_grad():
        h = br.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    torch.testing.assert_close(f[0], h[4:7].mean(0), atol=1e-5, rtol=1e-5)


def test_logreg_and_metrics():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 5, generator=g)
    y = (X[:, 0] > 0).long() + 2 * (X[:, 1] > 0).long()
    clf = fit_logistic_regression(X * 100 + 7, y, 4, l2=1e-4)  # standardisation copes with scale
    acc, f1 = accuracy_macro_f1(y, clf.predict(X * 100 + 7), 4)
    assert acc > 0.95 and f1 > 0.95
    acc, f1 = accuracy_macro_f1(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 1]), 3)
    assert acc == pytest.approx(0.5)
    # F1: class 0 (p=1, r=.5) 2/3; class 1 (p=1/3, r=1) .5; class 2: 0
    assert f1 == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    v = torch.randn(10, 4, generator=g)
    r = random_like(v, seed=5)
    torch.testing.assert_close(r.norm(dim=1), v.norm(dim=1))
    assert torch.equal(r, random_like(v, seed=5)) and not torch.equal(r, random_like(v, seed=6))


# ---- link prediction ---------------------------------------------------------------------
def linkpred_setup():
    """Entities in 4 groups; relation 'same' links entities of one group. KG vectors = group
    one-hot + noise, so the injected vectors tell which tails fit."""
    rng = np.random.default_rng(0)
    n = 80
    group = np.arange(n) % 4
    names = [f"e{i}" for i in range(n)]
    vec = np.eye(D_KG)[group] * 3.0 + rng.normal(0, 0.3, size=(n, D_KG))
    kg = KGVectors(names, torch.tensor(vec, dtype=torch.float32))
    triples = [(names[i], "_same_group", names[j]) for i in range(n) for j in range(n)
               if i != j and group[i] == group[j] and rng.random() < 0.3]
    rng.shuffle(triples)
    texts = {nm: f"w{rng.integers(0, 40)}" for nm in names}
    torch.manual_seed(1)
    proj = EntityProjector(D_KG, HIDDEN)
    model = lm()
    proj.rescale_to(model.get_input_embeddings(), kg.vectors)
    return KGBridge(model, proj, kg).eval(), triples[:-60], triples[-60:], texts


def test_linkpred_trains_and_evaluates():
    br, train, test, texts = linkpred_setup()
    r = linkpred_probe(br, tokenizer(), train, test, entity_text=texts, seeds=2, num_train=200, train_negatives=3,
                       num_test=40, num_candidates=20, epochs=30, scorer_hidden=32)
    r = json.loads(json.dumps(r))
    assert r["metric"] == "mrr" and set(r["variants"]) == {"text", "injected", "random"}
    assert r["sizes"]["test_triples"] == 40 and r["sizes"]["candidates"] == 20
    for v, e in r["variants"].items():
        assert 0 < e["mean"] <= 1 and len(e["per_seed"]) == 2
        assert set(e["hits@10"]) == {"mean", "std", "per_seed"}
        assert all(last < first for first, last in zip(e["train_loss_first_epoch"], e["train_loss_last_epoch"]))
    # a random ranking gives ~0.18 for 20 candidates; the KG vectors carry the answer
    assert r["variants"]["injected"]["mean"] > r["variants"]["text"]["mean"] + 0.15
    assert r["variants"]["injected"]["mean"] > r["variants"]["random"]["mean"] + 0.15
    assert "hits@10" in format_probe_table(r)


def test_linkpred_readers(tmp_path):
    (tmp_path / "test.txt").write_text("a\t_hypernym\tb\n\nb\t_also_see\tc\n")
    assert read_triples(tmp_path / "test.txt") == [("a", "_hypernym", "b"), ("b", "_also_see", "c")]
    (tmp_path / "bad.txt").write_text("a\tb\n")
    with pytest.raises(ValueError, match=r"bad.txt:1"):
        read_triples(tmp_path / "bad.txt")
    (tmp_path / "entities.tsv").write_text("id\tname\tgloss\n001\thot_dog\tfood\n002\tcat\tanimal\n")
    assert read_entity_texts(tmp_path) == {"001": "hot dog", "002": "cat"}
    assert relation_text("_member_of_domain_usage") == "member of domain usage"


def test_kg_model_reference_ranks_the_candidates_with_the_kge_scores():
    from types import SimpleNamespace

    from bridge.probe import _kg_model_ranks

    class Score:  # the true tail of (h, r, ?) is h + 1; others score by closeness to it
        def score(self, h, r, t):
            return -(t - h - 1).abs().float()

    trained = SimpleNamespace(entities=[f"e{i}" for i in range(10)], relations=["r"], model=Score())
    good = [[("e1", "r", "e2"), ("e1", "r", "e5"), ("e1", "r", "e9")],
            [("e3", "r", "e4"), ("e3", "r", "e0"), ("e3", "r", "e8")]]
    assert _kg_model_ranks(trained, good)["mean"] == 1.0
    bad = [[("e1", "r", "e9"), ("e1", "r", "e2"), ("e1", "r", "e5")]]  # truth ranked last of 3
    r = _kg_model_ranks(trained, bad)
    assert r["mean"] == pytest.approx(1 / 3) and r["hits@1"]["mean"] == 0.0
