"""Score functions of every registered model against independent references.

Each model is checked, in float64 with random normal tables, for:

* consistency of the aligned score with the candidate scorers (both sides);
* the chunked training form ``score_tails_emb`` / ``score_heads_emb`` against
  the aligned score computed triple by triple, with re-indexed relation rows;
* a textbook formula written here, independent of the model code;
* gradients of the candidate form against the brute-force (aligned) form,
  including the blocked, checkpointed path of RotatE and TransR;
* persistence and argument validation.
"""
import json
import math

import pytest
import torch

import kgengine.models as models
from kgengine.models import KGEModel, create_model, model_names

torch.set_num_threads(1)

ALL_MODELS = ["TransE_l1", "TransE_l2", "DistMult", "ComplEx", "RESCAL", "RotatE", "TransR"]
BLOCKED_MODELS = ["TransR"]  # the ones scoring candidates through models._blocked

NE, NR, DIM, GAMMA = 9, 4, 4, 5.0
TOL = dict(rtol=1e-10, atol=1e-10)


def make_model(name, seed=0, ne=NE, nr=NR, dim=DIM, gamma=GAMMA):
    """A float64 model whose tables are all random normal (so nothing is accidentally symmetric)."""
    m = create_model(name, ne, nr, dim, gamma=gamma).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in m.tables.values():
            t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float64))
    return m


def random_triples(n, ne=NE, nr=NR, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(ne, (n,), generator=g), torch.randint(nr, (n,), generator=g),
            torch.randint(ne, (n,), generator=g))


# ---- textbook formulas, one triple at a time --------------------------------
def _cplx(v):
    d = v.shape[-1] // 2
    return torch.complex(v[:d], v[d:])


def textbook_score(model, h, r, t):
    """``h``, ``t`` entity ids, ``r`` relation id; reads the tables, not the model's scoring code."""
    name, gamma, dim = model.name, model.gamma, model.dim
    E = model.tables["entity"]
    hv, tv = E[h], E[t]
    rv = model.tables["relation"][r]
    if name == "TransE_l1":
        return gamma - (hv + rv - tv).abs().sum()
    if name == "TransE_l2":
        return gamma - torch.sqrt(((hv + rv - tv) ** 2).sum())
    if name == "DistMult":
        return (hv * rv * tv).sum()
    if name == "ComplEx":
        return (_cplx(hv) * _cplx(rv) * torch.conj(_cplx(tv))).sum().real
    if name == "RESCAL":
        M = rv.reshape(dim, dim)
        return hv @ M @ tv
    if name == "RotatE":
        init_range = (gamma + 2.0) / dim  # DGL-KE's emb_init
        theta = rv * math.pi / init_range
        rot = torch.polar(torch.ones_like(theta), theta)
        return gamma - (_cplx(hv) * rot - _cplx(tv)).abs().sum()
    if name == "TransR":
        M = model.tables["projection"][r].reshape(dim, dim)
        return gamma - torch.linalg.vector_norm(M @ hv + rv - M @ tv, ord=2)
    raise AssertionError(f"no textbook formula for {name}")


# ---- registry ----------------------------------------------------------------
def test_registry_lists_every_model():
    assert sorted(model_names()) == sorted(ALL_MODELS)
    for name in ALL_MODELS:
        assert type(create_model(name, 3, 2, 2)).name == name
        assert type(create_model(name.lower(), 3, 2, 2)).name == name  # case-insensitive
        assert type(create_model(name.upper(), 3, 2, 2)).name == name


def test_unknown_model_raises():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("TransH", 3, 2, 2)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("kw", [dict(num_entities=0), dict(num_relations=0), dict(dim=0), dict(dim=-3),
                                dict(gamma=float("nan")), dict(gamma=float("inf"))])
def test_bad_arguments_raise(name, kw):
    args = dict(num_entities=3, num_relations=2, dim=2, gamma=1.0)
    args.update(kw)
    with pytest.raises(ValueError):
        create_model(name, **args)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_table_shapes(name):
    m = create_model(name, 5, 3, 4)
    cplx = name in ("ComplEx", "RotatE")
    assert m.entity_dim == (8 if cplx else 4)
    assert tuple(m.tables["entity"].shape) == (5, m.entity_dim)
    rel_dim = {"ComplEx": 8, "RESCAL": 16}.get(name, 4)
    assert tuple(m.tables["relation"].shape) == (3, rel_dim)
    if name == "TransR":
        assert tuple(m.tables["projection"].shape) == (3, 16)
        assert set(m.relation_tables()) == {"relation", "projection"}
    else:
        assert set(m.tables) == {"entity", "relation"}
        assert set(m.relation_tables()) == {"relation"}
    for t in m.tables.values():
        assert not t.requires_grad


@pytest.mark.parametrize("name", ALL_MODELS)
def test_reset_parameters_range_and_determinism(name):
    m = create_model(name, 6, 3, 4, gamma=6.0)
    assert m.init_range == pytest.approx((6.0 + 2.0) / 4)
    m.reset_parameters(torch.Generator().manual_seed(3))
    a = {k: v.clone() for k, v in m.tables.items()}
    m.reset_parameters(torch.Generator().manual_seed(3))
    for k, v in m.tables.items():
        assert torch.equal(a[k], v)
    for k, v in m.tables.items():
        if name == "TransR" and k == "projection":
            P = v.view(-1, 4, 4) - torch.eye(4)  # 0.1 * uniform around the identity
            assert P.abs().max() <= 0.1 * m.init_range + 1e-6
        else:
            assert v.abs().max() <= m.init_range
            assert v.std() > 0.1 * m.init_range  # actually randomised


# ---- (a) aligned vs candidate scores, (c) textbook formula ----------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_aligned_score_equals_candidate_scores(name):
    m = make_model(name)
    h, r, t = random_triples(15)
    with torch.no_grad():
        s = m.score(h, r, t)
        tails = m.score_candidates(h, r, "tail")
        heads = m.score_candidates(t, r, "head")
    i = torch.arange(len(h))
    assert s.shape == (15,) and s.dtype == torch.float64
    assert tails.shape == (15, NE) and heads.shape == (15, NE)
    torch.testing.assert_close(tails[i, t], s, **TOL)
    torch.testing.assert_close(heads[i, h], s, **TOL)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_scores_match_textbook_formula(name):
    m = make_model(name)
    h, r, t = random_triples(12)
    with torch.no_grad():
        s = m.score(h, r, t)
        ref = torch.stack([textbook_score(m, int(a), int(b), int(c)) for a, b, c in zip(h, r, t)])
        torch.testing.assert_close(s, ref, **TOL)
        # every candidate of a few queries, both sides
        tails = m.score_candidates(h[:4], r[:4], "tail")
        heads = m.score_candidates(t[:4], r[:4], "head")
        for q in range(4):
            ref_t = torch.stack([textbook_score(m, int(h[q]), int(r[q]), e) for e in range(NE)])
            ref_h = torch.stack([textbook_score(m, e, int(r[q]), int(t[q])) for e in range(NE)])
            torch.testing.assert_close(tails[q], ref_t, **TOL)
            torch.testing.assert_close(heads[q], ref_h, **TOL)
    assert s.std() > 1e-3  # the test is not vacuous


@pytest.mark.parametrize("name", ALL_MODELS)
def test_score_candidates_subset_and_bad_side(name):
    m = make_model(name)
    h, r, t = random_triples(5)
    cand = torch.tensor([7, 0, 3, 3])
    with torch.no_grad():
        full_t = m.score_candidates(h, r, "tail")
        full_h = m.score_candidates(t, r, "head")
        torch.testing.assert_close(m.score_candidates(h, r, "tail", cand), full_t[:, cand], **TOL)
        torch.testing.assert_close(m.score_candidates(t, r, "head", cand), full_h[:, cand], **TOL)
    with pytest.raises(ValueError, match="side"):
        m.score_candidates(h, r, "middle")


# ---- (b) chunked training form vs triple-by-triple ------------------------------
C, c, N = 2, 3, 5


def chunk_inputs(m, seed=5, requires_grad=False):
    """Entity vectors of chunks, relation ids re-indexed into a permuted subset of relation rows."""
    g = torch.Generator().manual_seed(seed)
    d = m.entity_dim
    h = torch.randn(C, c, d, generator=g, dtype=torch.float64)
    t = torch.randn(C, c, d, generator=g, dtype=torch.float64)
    cand = torch.randn(C, N, d, generator=g, dtype=torch.float64)
    rows = torch.tensor([3, 0, 2])  # the relation rows the "batch" uses, in this order
    r = torch.randint(len(rows), (C, c), generator=g)  # ids into ``rows``
    rel = {k: v.detach()[rows].clone() for k, v in m.relation_tables().items()}
    if requires_grad:
        for x in (h, t, cand, *rel.values()):
            x.requires_grad_()
    return h, t, cand, r, rel


def brute_tails(m, h, r, rel, cand):
    out = [[[m.score_emb(h[a, i][None], r[a, i][None], rel, cand[a, n][None])[0] for n in range(cand.shape[1])]
            for i in range(h.shape[1])] for a in range(h.shape[0])]
    return torch.stack([torch.stack([torch.stack(row) for row in ch]) for ch in out])


def brute_heads(m, cand, r, rel, t):
    out = [[[m.score_emb(cand[a, n][None], r[a, i][None], rel, t[a, i][None])[0] for n in range(cand.shape[1])]
            for i in range(t.shape[1])] for a in range(t.shape[0])]
    return torch.stack([torch.stack([torch.stack(row) for row in ch]) for ch in out])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_chunked_form_equals_aligned_triple_by_triple(name):
    m = make_model(name)
    h, t, cand, r, rel = chunk_inputs(m)
    with torch.no_grad():
        tails = m.score_tails_emb(h, r, rel, cand)
        heads = m.score_heads_emb(cand, r, rel, t)
        assert tails.shape == (C, c, N) and heads.shape == (C, c, N)
        torch.testing.assert_close(tails, brute_tails(m, h, r, rel, cand), **TOL)
        torch.testing.assert_close(heads, brute_heads(m, cand, r, rel, t), **TOL)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_aligned_emb_with_reindexed_relation_rows(name):
    """score_emb on gathered rows + re-indexed ids equals score on the full tables (the trainer's path)."""
    m = make_model(name)
    h, r, t = random_triples(10)
    uniq, inv = torch.unique(r, return_inverse=True)
    E = m.tables["entity"]
    rel = {k: v[uniq] for k, v in m.relation_tables().items()}
    with torch.no_grad():
        torch.testing.assert_close(m.score_emb(E[h], inv, rel, E[t]), m.score(h, r, t), **TOL)


# ---- (d) gradients, blocked path --------------------------------------------------
def _grads(m, fwd, seed=11):
    h, t, cand, r, rel = chunk_inputs(m, requires_grad=True)
    w = torch.randn(C, c, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = fwd(m, h, t, cand, r, rel)
    (out * w).sum().backward()
    grads = {"h": h.grad, "t": t.grad, "cand": cand.grad, **{k: v.grad for k, v in rel.items()}}
    return out.detach(), grads


def _fwd_tails(m, h, t, cand, r, rel):
    return m.score_tails_emb(h, r, rel, cand)


def _fwd_heads(m, h, t, cand, r, rel):
    return m.score_heads_emb(cand, r, rel, t)


def _brute_tails(m, h, t, cand, r, rel):
    return brute_tails(m, h, r, rel, cand)


def _brute_heads(m, h, t, cand, r, rel):
    return brute_heads(m, cand, r, rel, t)


def _assert_grads_close(got, ref):
    assert got.keys() == ref.keys()
    for k in ref:
        if ref[k] is None:
            assert got[k] is None or torch.count_nonzero(got[k]) == 0, k
            continue
        assert got[k] is not None, f"no gradient for {k}"
        torch.testing.assert_close(got[k], ref[k], rtol=1e-8, atol=1e-10, msg=lambda s, k=k: f"{k}: {s}")


@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_candidate_gradients_match_brute_force(name, side):
    m = make_model(name)
    fwd, brute = (_fwd_tails, _brute_tails) if side == "tail" else (_fwd_heads, _brute_heads)
    out, g = _grads(m, fwd)
    ref_out, ref_g = _grads(m, brute)
    torch.testing.assert_close(out, ref_out, **TOL)
    _assert_grads_close(g, ref_g)
    # the gradients reach every input that the score depends on
    unused = "h" if side == "head" else "t"
    assert ref_g[unused] is None
    for k, v in ref_g.items():
        if k != unused:
            assert v is not None and v.abs().sum() > 0, k


class _CountingCheckpoint:
    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.real(*a, **kw)


@pytest.mark.parametrize("block", [1, 2, 4])
@pytest.mark.parametrize("side", ["tail", "head"])
@pytest.mark.parametrize("name", BLOCKED_MODELS)
def test_blocked_path_same_scores_and_gradients(name, side, block, monkeypatch):
    m = make_model(name)
    fwd = _fwd_tails if side == "tail" else _fwd_heads
    ref_out, ref_g = _grads(m, fwd)  # default budget: one block
    ref_nograd = None
    with torch.no_grad():
        h, t, cand, r, rel = chunk_inputs(m)
        ref_nograd = fwd(m, h, t, cand, r, rel)

    # force `block` candidates per block: budget = block * C * c * per-pair bytes (= pair_cost for these models)
    monkeypatch.setattr(models, "BLOCK_BUDGET_BYTES", block * C * c * m.pair_cost())
    counter = _CountingCheckpoint(models.checkpoint)
    monkeypatch.setattr(models, "checkpoint", counter)
    out, g = _grads(m, fwd)
    assert counter.calls == math.ceil(N / block)  # the blocked, checkpointed path really ran
    torch.testing.assert_close(out, ref_out, **TOL)
    _assert_grads_close(g, ref_g)
    with torch.no_grad():
        h, t, cand, r, rel = chunk_inputs(m)
        calls = counter.calls
        torch.testing.assert_close(fwd(m, h, t, cand, r, rel), ref_nograd, **TOL)
        assert counter.calls == calls  # no checkpointing without autograd
    # and against the brute-force reference
    brute = _brute_tails if side == "tail" else _brute_heads
    b_out, b_g = _grads(m, brute)
    torch.testing.assert_close(out, b_out, **TOL)
    _assert_grads_close(g, b_g)


@pytest.mark.parametrize("budget", [1, 2 * 2 * 8 * 3, 10**9])
@pytest.mark.parametrize("side", ["tail", "head"])
def test_rotate_cache_blocked_kernel_matches_brute_force(side, budget, monkeypatch):
    """RotatE's distance kernel: any block size gives the brute-force scores and gradients."""
    m = make_model("RotatE")
    monkeypatch.setattr(models, "CACHE_BLOCK_BYTES", budget)
    fwd = _fwd_tails if side == "tail" else _fwd_heads
    brute = _brute_tails if side == "tail" else _brute_heads
    out, g = _grads(m, fwd)
    b_out, b_g = _grads(m, brute)
    torch.testing.assert_close(out, b_out, **TOL)
    _assert_grads_close(g, b_g)


@pytest.mark.parametrize("name", BLOCKED_MODELS + ["RotatE"])
def test_blocked_evaluation_scores_unchanged(name, monkeypatch):
    m = make_model(name)
    h, r, t = random_triples(6)
    with torch.no_grad():
        ref_t = m.score_candidates(h, r, "tail")
        ref_h = m.score_candidates(t, r, "head")
        monkeypatch.setattr(models, "BLOCK_BUDGET_BYTES", 1)
        monkeypatch.setattr(models, "CACHE_BLOCK_BYTES", 1)
        torch.testing.assert_close(m.score_candidates(h, r, "tail"), ref_t, **TOL)
        torch.testing.assert_close(m.score_candidates(t, r, "head"), ref_h, **TOL)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_float32_candidates_close_to_aligned(name):
    """The production dtype: the expanded-square / bmm forms agree with the aligned form to float32 precision."""
    m = make_model(name).float()
    h, r, t = random_triples(20)
    with torch.no_grad():
        s = m.score(h, r, t)
        i = torch.arange(20)
        assert s.dtype == torch.float32
        torch.testing.assert_close(m.score_candidates(h, r, "tail")[i, t], s, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(m.score_candidates(t, r, "head")[i, h], s, rtol=1e-4, atol=1e-3)


# ---- (e) persistence -----------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_save_and_load_round_trip(name, tmp_path):
    m = create_model(name, 7, 3, 4, gamma=7.5)
    with torch.no_grad():
        for k, v in m.tables.items():
            v.normal_(generator=torch.Generator().manual_seed(len(k)))
    m.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "manifest.json", "model.safetensors", "model_config.json"]
    cfg = json.loads((tmp_path / "m" / "model_config.json").read_text())
    assert cfg == {"model_name": name, "num_entities": 7, "num_relations": 3, "hidden_dim": 4, "gamma": 7.5,
                   "format_version": 1}

    loaded = KGEModel.from_pretrained(tmp_path / "m")
    assert type(loaded) is type(m)
    assert loaded.config() == m.config()
    assert loaded.init_range == m.init_range
    assert set(loaded.tables) == set(m.tables)
    for k in m.tables:
        assert torch.equal(loaded.tables[k], m.tables[k]), k
    h, r, t = random_triples(8, ne=7, nr=3)
    with torch.no_grad():
        assert torch.equal(loaded.score(h, r, t), m.score(h, r, t))
    # the class comes from the config, whichever class is asked
    other = "DistMult" if name != "DistMult" else "TransE_l2"
    assert type(models.MODEL_REGISTRY[other.lower()].from_pretrained(tmp_path / "m")) is type(m)


def test_from_pretrained_errors(tmp_path):
    from kgengine.errors import ModelFolderError

    with pytest.raises(ModelFolderError, match="not a saved kgengine model folder"):
        KGEModel.from_pretrained(tmp_path)
    m = create_model("DistMult", 7, 3, 4)
    m.save_pretrained(tmp_path / "m")
    cfg_file = tmp_path / "m" / "model_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["hidden_dim"] = 5
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="changed after the save"):  # the manifest notices first
        KGEModel.from_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="does not fit"):
        KGEModel.from_pretrained(tmp_path / "m", verify=False)
    cfg["hidden_dim"], cfg["model_name"] = 4, "NoSuchModel"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown model"):
        KGEModel.from_pretrained(tmp_path / "m", verify=False)
    bad_configs = (([1, 2], "expected a JSON object"), (dict(cfg, model_name="DistMult", colour="red"), "unknown key"),
                   (dict(cfg, num_entities="7"), "num_entities"))
    for bad, msg in bad_configs:
        cfg_file.write_text(json.dumps(bad))
        with pytest.raises(ModelFolderError, match=msg):
            KGEModel.from_pretrained(tmp_path / "m", verify=False)


def test_save_overwrites_existing_folder(tmp_path):
    a = create_model("ComplEx", 5, 2, 3)
    b = create_model("ComplEx", 5, 2, 3)
    b.reset_parameters(torch.Generator().manual_seed(9))
    a.save_pretrained(tmp_path)
    b.save_pretrained(tmp_path)
    loaded = KGEModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.tables["entity"], b.tables["entity"])
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob("*.kge-new"))


def test_from_pretrained_rejects_a_missing_table(tmp_path):
    from safetensors.torch import load_file, save_file

    m = create_model("TransR", 5, 2, 3)
    m.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["projection"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="changed after the save"):
        KGEModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="projection"):
        KGEModel.from_pretrained(tmp_path, verify=False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_from_pretrained_refuses_non_finite_tables(tmp_path, bad):
    from safetensors.torch import load_file, save_file

    m = create_model("DistMult", 5, 2, 3)
    m.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["entity"][[1, 3], 0] = bad
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="table entity has 2 of 5 rows with NaN or inf"):
        KGEModel.from_pretrained(tmp_path, verify=False)


# ---- reciprocal relations ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_reciprocal_head_queries_are_inverse_tail_queries(name, tmp_path):
    m = create_model(name, NE, NR, DIM, gamma=GAMMA, reciprocal=True).double()
    with torch.no_grad():
        for t in m.tables.values():
            t.normal_(generator=torch.Generator().manual_seed(3))
    assert m.tables["relation"].shape[0] == 2 * NR and m.num_relations == NR
    anchor, r = torch.tensor([0, 3, 8, 5]), torch.tensor([0, 1, 3, 2])
    heads = m.score_candidates(anchor, r, side="head")
    torch.testing.assert_close(heads, m.score_candidates(anchor, r + NR, side="tail"), **TOL)
    # ... and not the forward relation's head scores
    plain = create_model(name, NE, NR, DIM, gamma=GAMMA).double()
    with torch.no_grad():
        for k, t in plain.tables.items():
            t.copy_(m.tables[k][:NR] if plain.table_index[k] == "relation" else m.tables[k])
    assert not torch.allclose(heads, plain.score_candidates(anchor, r, side="head"))
    torch.testing.assert_close(m.score_candidates(anchor, r), plain.score_candidates(anchor, r), **TOL)
    m.save_pretrained(tmp_path / "m")
    back = KGEModel.from_pretrained(tmp_path / "m")
    assert back.reciprocal and back.tables["relation"].shape == m.tables["relation"].shape
    assert "reciprocal" not in plain.config()  # plain folders are unchanged
