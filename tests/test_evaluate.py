"""Filtered link-prediction ranking against a brute-force ranking written here."""
import pytest
import torch

from kgengine.evaluate import TIE_MODES, FilterIndex, evaluate, metrics_from_ranks, rank_triples
from kgengine.models import create_model

torch.set_num_threads(1)

NE, NR = 12, 3
ALL_MODELS = ["TransE_l1", "TransE_l2", "DistMult", "ComplEx", "RESCAL", "RotatE", "TransR"]


def random_kg(seed=0, n=40):
    """``n`` distinct random triples over NE entities / NR relations, split 28 / 6 / 6."""
    g = torch.Generator().manual_seed(seed)
    seen, out = set(), []
    while len(out) < n:
        tr = tuple(int(x) for x in (torch.randint(NE, (1,), generator=g), torch.randint(NR, (1,), generator=g),
                                    torch.randint(NE, (1,), generator=g)))
        if tr not in seen:
            seen.add(tr)
            out.append(tr)
    t = torch.tensor(out, dtype=torch.int64)
    return t[:28], t[28:34], t[34:]


@pytest.fixture(scope="module")
def kg():
    train, valid, test = random_kg()
    return {"train": train, "valid": valid, "test": test, "all": torch.cat([train, valid, test])}


def make_model(name, seed=0, dtype=torch.float64):
    m = create_model(name, NE, NR, 4, gamma=3.0).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in m.tables.values():
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64))
    return m


# ---- the brute-force reference ------------------------------------------------------
def brute_scores(model, h, r, t, side):
    """Score of every candidate entity for one query, one ``model.score`` call per candidate triple."""
    out = []
    with torch.no_grad():
        for e in range(model.num_entities):
            hh, tt = (h, e) if side == "tail" else (e, t)
            out.append(float(model.score(torch.tensor([hh]), torch.tensor([r]), torch.tensor([tt]))[0]))
    return torch.tensor(out, dtype=torch.float64).float()  # rank_triples compares float32 scores


def brute_ranks(model, triples, side, known=None, ties="realistic"):
    """``known``: set of (h, r, t) to filter (except the target itself); ``None``: raw."""
    ranks = []
    for h, r, t in triples.tolist():
        s = brute_scores(model, h, r, t, side)
        target = t if side == "tail" else h
        true = s[target]
        better = equal = 0
        for e in range(model.num_entities):
            if e == target:
                continue
            if known is not None and ((h, r, e) if side == "tail" else (e, r, t)) in known:
                continue
            better += bool(s[e] > true)
            equal += bool(s[e] == true)
        opt, pes = 1 + better, 1 + better + equal
        ranks.append({"optimistic": opt, "pessimistic": pes, "realistic": (opt + pes) / 2}[ties])
    return torch.tensor(ranks, dtype=torch.float64)


def brute_metrics(ranks):
    r = ranks.tolist()
    n = len(r)
    return {"mrr": sum(1 / x for x in r) / n, "mr": sum(r) / n, "hits@1": sum(x <= 1 for x in r) / n,
            "hits@3": sum(x <= 3 for x in r) / n, "hits@10": sum(x <= 10 for x in r) / n}


def assert_metrics(got, ref):
    assert set(got) >= set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def known_set(triples):
    return {tuple(x) for x in triples.tolist()}


def spy_batch_sizes(model, monkeypatch):
    """A list that collects the number of queries of every ``score_candidates`` call."""
    sizes = []
    real = model.score_candidates

    def spy(anchor, r, side="tail", candidates=None, terms=None):
        sizes.append(len(anchor))
        return real(anchor, r, side, candidates, terms)

    monkeypatch.setattr(model, "score_candidates", spy)
    return sizes


# ---- rank_triples / evaluate against brute force -----------------------------------
def test_random_kg_is_a_meaningful_fixture(kg):
    known = known_set(kg["all"])
    assert len(known) == 40
    # filtering must matter: some test query has another known answer
    has_other = any(
        any((h, r, e) in known for e in range(NE) if e != t) or any((e, r, t) in known for e in range(NE) if e != h)
        for h, r, t in kg["test"].tolist()
    )
    assert has_other


@pytest.mark.parametrize("name", ALL_MODELS)
def test_filtered_ranks_match_brute_force(name, kg):
    m = make_model(name)
    fi = FilterIndex(kg["all"], NE, NR)
    known = known_set(kg["all"])
    triples = torch.cat([kg["valid"], kg["test"]])
    for side in ("tail", "head"):
        for ties in TIE_MODES:
            got = rank_triples(m, triples, side, fi, ties=ties)
            assert got.dtype == torch.float64 and got.shape == (len(triples),)
            torch.testing.assert_close(got, brute_ranks(m, triples, side, known, ties), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["DistMult", "TransE_l2", "RotatE"])
def test_raw_ranks_match_brute_force(name, kg):
    m = make_model(name, seed=1)
    triples = kg["test"]
    fi = FilterIndex(kg["all"], NE, NR)
    differs = False
    for side in ("tail", "head"):
        for ties in TIE_MODES:
            raw = rank_triples(m, triples, side, None, ties=ties)
            torch.testing.assert_close(raw, brute_ranks(m, triples, side, None, ties), rtol=0, atol=0)
            filt = rank_triples(m, triples, side, fi, ties=ties)
            assert (filt <= raw).all()  # filtering only removes competitors
            differs |= bool((filt < raw).any())
    assert differs  # and on this data it does remove some


@pytest.mark.parametrize("ties", TIE_MODES)
@pytest.mark.parametrize("name", ["ComplEx", "TransE_l1", "TransR"])
def test_evaluate_metrics_match_brute_force(name, ties, kg):
    m = make_model(name, seed=2)
    known = known_set(kg["all"])
    out = evaluate(m, kg["test"], kg["all"], ties=ties)
    tail = brute_ranks(m, kg["test"], "tail", known, ties)
    head = brute_ranks(m, kg["test"], "head", known, ties)
    assert_metrics(out, brute_metrics(torch.cat([tail, head])))
    assert_metrics(out["tail"], brute_metrics(tail))
    assert_metrics(out["head"], brute_metrics(head))
    assert set(out) == {"mrr", "mr", "hits@1", "hits@3", "hits@10", "tail", "head"}

    raw = evaluate(m, kg["test"], None, ties=ties)
    tail = brute_ranks(m, kg["test"], "tail", None, ties)
    head = brute_ranks(m, kg["test"], "head", None, ties)
    assert_metrics(raw, brute_metrics(torch.cat([tail, head])))
    assert raw["mr"] >= out["mr"]


def test_default_ties_is_realistic(kg):
    m = make_model("DistMult")
    fi = FilterIndex(kg["all"], NE, NR)
    assert torch.equal(rank_triples(m, kg["test"], "tail", fi), rank_triples(m, kg["test"], "tail", fi, "realistic"))
    assert evaluate(m, kg["test"], kg["all"]) == evaluate(m, kg["test"], kg["all"], ties="realistic")


def test_float32_model_matches_brute_force(kg):
    """The production dtype: same ranks as brute force on the same float32 model (no near-ties here)."""
    m = make_model("TransE_l2", seed=3, dtype=torch.float32)
    known = known_set(kg["all"])
    fi = FilterIndex(kg["all"], NE, NR)
    for side in ("tail", "head"):
        torch.testing.assert_close(rank_triples(m, kg["test"], side, fi, "optimistic"),
                                   brute_ranks(m, kg["test"], side, known, "optimistic"), rtol=0, atol=0)


# ---- exact ties ------------------------------------------------------------------------
def tie_model():
    """DistMult, dim 2, exact small-integer vectors: the tail score of (11, 0, e) is ``v[e]``.

    entity:  0  1  2  3  4  5  6  7  8  9  10  11
    v:       5  5  5  5  3  3  2  9  0  0  -1   1
    """
    m = create_model("DistMult", NE, NR, 2)
    v = torch.tensor([5, 5, 5, 5, 3, 3, 2, 9, 0, 0, -1, 1], dtype=torch.float32)
    with torch.no_grad():
        m.tables["entity"].copy_(torch.stack([v, torch.full_like(v, 7.0)], 1))
        m.tables["entity"][11] = torch.tensor([1.0, 0.0])  # the anchor
        m.tables["relation"].copy_(torch.ones(NR, 2))
    return m


TIE_TARGETS = torch.tensor([[11, 0, 1], [11, 0, 4], [11, 0, 8]])


@pytest.mark.parametrize("ties,expected", [
    # target 1 (v=5): better {7}, equal {0,2,3}; target 4 (v=3): better {7,0,1,2,3}, equal {5};
    # target 8 (v=0): better {7,0,1,2,3,4,5,6,11}, equal {9}
    ("optimistic", [2.0, 6.0, 10.0]),
    ("pessimistic", [5.0, 7.0, 11.0]),
    ("realistic", [3.5, 6.5, 10.5]),
])
def test_ties_raw(ties, expected):
    m = tie_model()
    assert torch.equal(rank_triples(m, TIE_TARGETS, "tail", None, ties), torch.tensor(expected, dtype=torch.float64))
    # the head side of the mirrored triples is the same ranking (DistMult is symmetric)
    mirrored = TIE_TARGETS[:, [2, 1, 0]]
    assert torch.equal(rank_triples(m, mirrored, "head", None, ties), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(rank_triples(m, TIE_TARGETS, "tail", None, ties),
                               brute_ranks(m, TIE_TARGETS, "tail", None, ties), rtol=0, atol=0)


@pytest.mark.parametrize("ties,expected", [
    # known tails of (11, 0): {1, 2, 4, 5, 8}; each query filters the other four.
    # target 1: better {7}, equal {0,3}; target 4: better {7,0,3}, equal {};
    # target 8: better {7,0,3,6,11}, equal {9}
    ("optimistic", [2.0, 4.0, 6.0]),
    ("pessimistic", [4.0, 4.0, 7.0]),
    ("realistic", [3.0, 4.0, 6.5]),
])
def test_ties_filtered(ties, expected):
    m = tie_model()
    known = torch.cat([TIE_TARGETS, torch.tensor([[11, 0, 2], [11, 0, 5], [2, 0, 11], [11, 1, 7], [0, 0, 7]])])
    fi = FilterIndex(known, NE, NR)
    assert torch.equal(rank_triples(m, TIE_TARGETS, "tail", fi, ties), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(rank_triples(m, TIE_TARGETS, "tail", fi, ties),
                               brute_ranks(m, TIE_TARGETS, "tail", known_set(known), ties), rtol=0, atol=0)


def test_all_entities_identical():
    m = create_model("DistMult", NE, NR, 3)
    with torch.no_grad():
        m.tables["entity"].fill_(0.5)
        m.tables["relation"].fill_(2.0)
    triples = torch.tensor([[0, 0, 1], [4, 2, 4]])
    for side in ("tail", "head"):
        assert rank_triples(m, triples, side, None, "optimistic").tolist() == [1.0, 1.0]
        assert rank_triples(m, triples, side, None, "pessimistic").tolist() == [12.0, 12.0]
        assert rank_triples(m, triples, side, None, "realistic").tolist() == [6.5, 6.5]
    out = evaluate(m, triples, None, ties="pessimistic")
    assert out["mr"] == 12.0 and out["hits@10"] == 0.0 and out["mrr"] == pytest.approx(1 / 12)


# ---- FilterIndex -------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["tail", "head"])
def test_filter_index_answers_are_exactly_the_known_answers(side, kg):
    known = kg["all"]
    fi = FilterIndex(known, NE, NR)
    # every (anchor, relation) pair, including many without answers, in a scrambled order
    g = torch.Generator().manual_seed(7)
    pairs = torch.cartesian_prod(torch.arange(NE), torch.arange(NR))[torch.randperm(NE * NR, generator=g)]
    anchor, r = pairs[:, 0], pairs[:, 1]
    rows, cols = fi.answers(anchor, r, side)
    assert rows.shape == cols.shape
    assert (rows[1:] >= rows[:-1]).all()  # grouped by query
    got = sorted(zip(rows.tolist(), cols.tolist()))
    expected = []
    for i, (a, rr) in enumerate(pairs.tolist()):
        for h, rel, t in known.tolist():
            if rel == rr and (h if side == "tail" else t) == a:
                expected.append((i, t if side == "tail" else h))
    assert got == sorted(expected)
    assert len(got) == len(known)  # each known triple answers exactly one (anchor, relation) query


def test_filter_index_subset_queries_and_repeats():
    known = torch.tensor([[0, 0, 1], [0, 0, 2], [0, 1, 3], [2, 0, 1], [0, 0, 5]])
    fi = FilterIndex(known, 6, 2)
    rows, cols = fi.answers(torch.tensor([0, 5, 0, 2, 0]), torch.tensor([0, 0, 1, 0, 0]), "tail")
    got = sorted(zip(rows.tolist(), cols.tolist()))
    assert got == [(0, 1), (0, 2), (0, 5), (2, 3), (3, 1), (4, 1), (4, 2), (4, 5)]
    rows, cols = fi.answers(torch.tensor([1, 3, 4]), torch.tensor([0, 1, 0]), "head")
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 2), (1, 0)]
    rows, cols = fi.answers(torch.tensor([4]), torch.tensor([1]), "head")
    assert len(rows) == 0 and len(cols) == 0


# ---- errors, budgets -----------------------------------------------------------------------
def test_nan_scores_raise(kg):
    m = make_model("DistMult")
    with torch.no_grad():
        m.tables["entity"][5] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(m, kg["test"], kg["all"])
    with pytest.raises(FloatingPointError):
        rank_triples(m, kg["test"], "head", None)


def test_empty_split_raises(kg):
    m = make_model("DistMult")
    with pytest.raises(ValueError, match="empty"):
        evaluate(m, torch.empty((0, 3), dtype=torch.int64), kg["all"])
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.empty(0, dtype=torch.float64))
    r = rank_triples(m, torch.empty((0, 3), dtype=torch.int64), "tail", None)
    assert r.shape == (0,) and r.dtype == torch.float64


def test_bad_ties_raise(kg):
    m = make_model("DistMult")
    with pytest.raises(ValueError, match="ties"):
        rank_triples(m, kg["test"], "tail", None, ties="average")
    with pytest.raises(ValueError, match="ties"):
        evaluate(m, kg["test"], kg["all"], ties="mean")


@pytest.mark.parametrize("name", ["DistMult", "RotatE", "TransR"])
def test_tiny_budget_gives_the_same_result(name, kg, monkeypatch):
    m = make_model(name, seed=4)
    triples = torch.cat([kg["valid"], kg["test"]])  # 12 triples
    ref = evaluate(m, triples, kg["all"])
    ref_ranks = {ties: rank_triples(m, triples, "tail", FilterIndex(kg["all"], NE, NR), ties) for ties in TIE_MODES}

    sizes = spy_batch_sizes(m, monkeypatch)
    # a budget below MIN_QUERIES queries against all entities: all 12 queries meet one candidate at a time
    assert evaluate(m, triples, kg["all"], budget_bytes=1) == ref
    assert sizes == [len(triples)] * (2 * NE)
    for ties in TIE_MODES:
        got = rank_triples(m, triples, "tail", FilterIndex(kg["all"], NE, NR), ties, budget_bytes=1)
        assert torch.equal(got, ref_ranks[ties])
    # a budget of 5 queries per batch against all entities: batches 5, 5, 2
    import importlib

    monkeypatch.setattr(importlib.import_module("kgengine.evaluate"), "MIN_QUERIES", 1)  # (not the function)
    sizes.clear()
    budget = 5 * NE * (m.pair_cost() + 8)
    for ties in TIE_MODES:
        got = rank_triples(m, triples, "tail", FilterIndex(kg["all"], NE, NR), ties, budget_bytes=budget)
        assert torch.equal(got, ref_ranks[ties])
    assert sizes == [5, 5, 2] * 3


def test_candidate_blocks_are_capped_so_counts_stay_exact(kg, monkeypatch):
    """Rank counts are float32 sums; a graph with more entities than MAX_BLOCK is ranked in blocks."""
    import importlib

    m = make_model("TransE_l2", seed=2)
    triples = torch.cat([kg["valid"], kg["test"]])
    ref = {ties: rank_triples(m, triples, "head", FilterIndex(kg["all"], NE, NR), ties) for ties in TIE_MODES}
    monkeypatch.setattr(importlib.import_module("kgengine.evaluate"), "MAX_BLOCK", 7)
    sizes = spy_batch_sizes(m, monkeypatch)
    for ties in TIE_MODES:
        assert torch.equal(rank_triples(m, triples, "head", FilterIndex(kg["all"], NE, NR), ties), ref[ties])
    assert len(sizes) == 3 * -(-NE // 7)  # one kernel call per block of 7 candidates, per tie mode


def test_metrics_from_ranks():
    out = metrics_from_ranks(torch.tensor([1.0, 2.0, 4.0, 10.0, 11.0, 2.5]))
    assert out["mr"] == pytest.approx(30.5 / 6)
    assert out["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.1 + 1 / 11 + 0.4) / 6)
    assert out["hits@1"] == pytest.approx(1 / 6)
    assert out["hits@3"] == pytest.approx(3 / 6)
    assert out["hits@10"] == pytest.approx(5 / 6)


# ---- DGL-KE's evaluation options ------------------------------------------------------
def brute_sampled_ranks(model, triples, side, known, ties, k, batch, seed):
    """Rank against k entities drawn per batch of queries, replaying rank_triples' generator."""
    g = torch.Generator().manual_seed(seed)
    ranks = []
    for s in range(0, len(triples), batch):
        cand = torch.randint(0, NE, (k,), generator=g).tolist()
        for h, r, t in triples[s:s + batch].tolist():
            sc = brute_scores(model, h, r, t, side)
            target = t if side == "tail" else h
            better = equal = 0
            for e in cand:  # a drawn entity counts each time it is drawn
                if e == target or (known is not None and ((h, r, e) if side == "tail" else (e, r, t)) in known):
                    continue
                better += bool(sc[e] > sc[target])
                equal += bool(sc[e] == sc[target])
            opt, pes = 1 + better, 1 + better + equal
            ranks.append({"optimistic": opt, "pessimistic": pes, "realistic": (opt + pes) / 2}[ties])
    return torch.tensor(ranks, dtype=torch.float64)


@pytest.mark.parametrize("name", ["DistMult", "TransE_l2", "TransR"])
def test_sampled_candidates_match_brute_force(name, kg):
    m = make_model(name, seed=5)
    triples = torch.cat([kg["valid"], kg["test"]])
    fi, known = FilterIndex(kg["all"], NE, NR), known_set(kg["all"])
    for side in ("tail", "head"):
        for ties in TIE_MODES:
            for filt in (True, False):
                got = rank_triples(m, triples, side, fi if filt else None, ties, batch_size=5, num_candidates=6,
                                   generator=torch.Generator().manual_seed(9))
                ref = brute_sampled_ranks(m, triples, side, known if filt else None, ties, 6, 5, 9)
                torch.testing.assert_close(got, ref, rtol=0, atol=0)
                assert (got <= 7).all()


def test_batch_size_and_all_candidates_give_the_full_ranking(kg, monkeypatch):
    m = make_model("ComplEx", seed=6)
    triples = torch.cat([kg["valid"], kg["test"]])
    ref = evaluate(m, triples, kg["all"])
    sizes = spy_batch_sizes(m, monkeypatch)
    assert evaluate(m, triples, kg["all"], batch_size=5) == ref
    assert sizes == [5, 5, 2] * 2
    assert evaluate(m, triples, kg["all"], num_candidates=NE) == ref  # k >= #entities: full ranking


def test_fraction_ranks_a_seeded_subset(kg):
    m = make_model("DistMult", seed=7)
    triples = torch.cat([kg["valid"], kg["test"]])
    got = evaluate(m, triples, kg["all"], fraction=0.5, seed=3)
    subset = triples[torch.randperm(len(triples), generator=torch.Generator().manual_seed(3))[:6]]
    assert got == evaluate(m, subset, kg["all"])
    assert got != evaluate(m, triples, kg["all"], fraction=0.5, seed=4)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            evaluate(m, triples, kg["all"], fraction=bad)


def test_reciprocal_model_ranks_heads_as_inverse_tails(kg):
    m = create_model("ComplEx", NE, NR, 4, gamma=3.0, reciprocal=True).double()
    with torch.no_grad():
        for t in m.tables.values():
            t.copy_(torch.randn(t.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64))
    triples = torch.cat([kg["valid"], kg["test"]])
    inv = lambda x: torch.stack([x[:, 2], x[:, 1] + NR, x[:, 0]], 1)  # noqa: E731
    for ties in TIE_MODES:
        heads = rank_triples(m, triples, "head", FilterIndex(kg["all"], NE, NR), ties)
        # the same ranking as tails of the inverse triples, filtered by the inverse known triples
        both = torch.cat([kg["all"], inv(kg["all"])])
        tails_of_inverse = rank_triples(m, inv(triples), "tail", FilterIndex(both, NE, 2 * NR), ties)
        torch.testing.assert_close(heads, tails_of_inverse, rtol=0, atol=0)


def test_filter_index_restricted_to_the_ranked_queries_gives_the_same_ranks():
    """Indexing only the known triples that answer a ranked query (and taking the splits without a
    concatenated copy) changes no rank."""
    from kgengine.evaluate import FilterIndex, rank_triples
    from kgengine.models import create_model

    g = torch.Generator().manual_seed(0)
    known = [torch.stack([torch.randint(0, 50, (n,), generator=g), torch.randint(0, 4, (n,), generator=g),
                          torch.randint(0, 50, (n,), generator=g)], 1) for n in (400, 40, 40)]
    test = known[2]
    m = create_model("TransE_l2", 50, 4, 8)
    full = FilterIndex(torch.cat(known), 50, 4)
    small = FilterIndex(known, 50, 4, queries=test)
    assert len(small.tail_keys) < len(full.tail_keys)
    for side in ("tail", "head"):
        assert torch.equal(rank_triples(m, test, side, full), rank_triples(m, test, side, small))


def test_transe_l2_candidate_terms_once_per_evaluation_give_the_same_scores():
    from kgengine.models import create_model

    m = create_model("TransE_l2", 30, 3, 8)
    E = m.tables["entity"]
    a, r = torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2])
    terms = m.candidate_terms(E[None])
    for side in ("tail", "head"):
        assert torch.equal(m.score_candidates(a, r, side), m.score_candidates(a, r, side, terms=terms))
