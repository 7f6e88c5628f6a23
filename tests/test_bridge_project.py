"""bridge.project: ridge-initialised projector, norm rescaling, anchors, save/load."""
import pytest
import torch
from torch import nn

from bridge.project import EntityProjector, anchor_pairs, normalize_entity_name
from bridge.vectors import KGVectors

torch.set_num_threads(1)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dog", "cat", "paris", "city", "hot", "##s", "cafe", "bank"]


def tokenizer(lower=True):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, do_lower_case=lower)


def linear_data(n, d, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    W = torch.randn(d, h, generator=g)
    b = torch.randn(h, generator=g)
    return X, W, b, X @ W + b


# ---- ridge ----------------------------------------------------------------------------------
def test_ridge_recovers_known_linear_map():
    X, W, b, Y = linear_data(200, 12, 8)
    proj = EntityProjector(12, 8).fit_ridge(X, Y, alpha=1e-6)
    torch.testing.assert_close(proj.linear.weight.data, W.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(proj.linear.bias.data, b, atol=1e-4, rtol=1e-4)
    Xt = torch.randn(10, 12)
    torch.testing.assert_close(proj(Xt), Xt @ W + b, atol=1e-3, rtol=1e-4)


def test_ridge_alpha_zero_exact_and_noisy_fit():
    X, W, b, Y = linear_data(50, 6, 4, seed=1)
    proj = EntityProjector(6, 4).fit_ridge(X, Y, alpha=0.0)
    torch.testing.assert_close(proj.linear.weight.data, W.T, atol=1e-5, rtol=1e-5)
    noisy = Y + 0.01 * torch.randn(Y.shape, generator=torch.Generator().manual_seed(2))
    proj.fit_ridge(X, noisy, alpha=1e-3)
    assert (proj.linear.weight.data - W.T).abs().max() < 0.02


def test_ridge_shrinks_and_bias_unpenalised():
    X, _, b, Y = linear_data(40, 6, 3, seed=3)
    norms = [EntityProjector(6, 3).fit_ridge(X, Y, a).linear.weight.norm().item() for a in (0.1, 10.0, 1e6)]
    assert norms[0] > norms[1] > norms[2] and norms[2] < 1e-2
    huge = EntityProjector(6, 3).fit_ridge(X, Y, 1e9)  # W -> 0, b -> the target mean, not 0
    torch.testing.assert_close(huge.linear.bias.data, Y.mean(0), atol=1e-4, rtol=1e-4)


def test_ridge_dual_path_matches_primal_formula():
    X, _, _, Y = linear_data(5, 20, 3, seed=4)  # n < d: the (n, n) system
    proj = EntityProjector(20, 3).fit_ridge(X, Y, alpha=0.5)
    Xc, Yc = (X - X.mean(0)).double(), (Y - Y.mean(0)).double()
    W = torch.linalg.solve(Xc.T @ Xc + 0.5 * torch.eye(20, dtype=torch.float64), Xc.T @ Yc)
    torch.testing.assert_close(proj.linear.weight.data, W.T.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kg, target, alpha, msg", [
    (torch.zeros(5, 3), torch.zeros(5, 4), 1.0, r"kg must be \(n, 6\)"),
    (torch.zeros(5, 6), torch.zeros(5, 3), 1.0, r"target must be \(n, 4\)"),
    (torch.zeros(5, 6), torch.zeros(4, 4), 1.0, "5 rows but target has 4"),
    (torch.zeros(1, 6), torch.zeros(1, 4), 1.0, "at least 2 anchor pairs"),
    (torch.zeros(5, 6), torch.zeros(5, 4), -1.0, "alpha"),
    (torch.zeros(5, 6), torch.zeros(5, 4), float("nan"), "alpha"),
    (torch.full((5, 6), float("nan")), torch.zeros(5, 4), 1.0, "NaN"),
])
def test_ridge_errors(kg, target, alpha, msg):
    with pytest.raises(ValueError, match=msg):
        EntityProjector(6, 4).fit_ridge(kg, target, alpha)


def test_constructor_errors():
    with pytest.raises(ValueError, match="kind"):
        EntityProjector(3, 4, kind="conv")
    with pytest.raises(ValueError, match=">= 1"):
        EntityProjector(0, 4)


def test_mlp_starts_as_ridge_linear_map_and_trains():
    X, W, b, Y = linear_data(100, 6, 4, seed=5)
    lin = EntityProjector(6, 4).fit_ridge(X, Y, 1e-3)
    mlp = EntityProjector(6, 4, kind="mlp", mlp_hidden=16).fit_ridge(X, Y, 1e-3)
    torch.testing.assert_close(mlp(X), lin(X))
    loss = (mlp(X) - Y.sin()).pow(2).mean()
    loss.backward()
    assert mlp.mlp[2].weight.grad.abs().sum() > 0  # the residual branch learns from step one


# ---- rescaling -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_rescale_hits_word_embedding_mean_norm(kind):
    X, _, _, Y = linear_data(30, 6, 4, seed=6)
    emb = nn.Embedding(50, 4, padding_idx=0)  # the zero padding row must not pull the mean down
    nn.init.normal_(emb.weight, std=3.0)
    with torch.no_grad():
        emb.weight[0] = 0
    target = emb.weight[1:].norm(dim=1).mean().item()
    proj = EntityProjector(6, 4, kind=kind)
    if kind == "mlp":
        nn.init.normal_(proj.mlp[2].weight)  # a trained-looking branch must scale too
    factor = proj.rescale_to(emb, X)
    assert factor > 0
    assert proj(X).norm(dim=1).mean().item() == pytest.approx(target, rel=1e-5)

    fitted = EntityProjector(6, 4).fit_ridge(X, Y, 1.0)  # no kg: uses the fit's inputs
    fitted.rescale_to(emb.weight)
    assert fitted(X).norm(dim=1).mean().item() == pytest.approx(target, rel=1e-5)
    fitted.rescale_to(emb.weight)  # idempotent: factor 1 the second time
    assert fitted(X).norm(dim=1).mean().item() == pytest.approx(target, rel=1e-5)


def test_rescale_errors():
    proj = EntityProjector(3, 4)
    with pytest.raises(ValueError, match="needs kg"):
        proj.rescale_to(torch.ones(5, 4))
    with pytest.raises(ValueError, match="5 columns"):
        proj.rescale_to(torch.ones(5, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="all zero"):
        proj.rescale_to(torch.zeros(5, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="2-D"):
        proj.rescale_to(torch.ones(4), torch.ones(2, 3))


# ---- persistence -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_save_load_round_trip(tmp_path, kind):
    X, _, _, Y = linear_data(20, 6, 4, seed=7)
    proj = EntityProjector(6, 4, kind=kind).fit_ridge(X, Y, 0.1)
    if kind == "mlp":
        nn.init.normal_(proj.mlp[2].weight)
    proj.save_pretrained(tmp_path / "p")
    assert {f.name for f in (tmp_path / "p").iterdir()} == {"config.json", "model.safetensors"}
    back = EntityProjector.from_pretrained(tmp_path / "p")
    assert back.config() == proj.config()
    torch.testing.assert_close(back(X), proj(X), atol=0, rtol=0)
    back.rescale_to(torch.ones(3, 4))  # the fit's norm survives the round trip
    with pytest.raises(FileNotFoundError, match="not an EntityProjector folder"):
        EntityProjector.from_pretrained(tmp_path)


def test_load_mismatched_weights(tmp_path):
    EntityProjector(6, 4).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text('{"d_kg": 5, "hidden": 4}')
    with pytest.raises(ValueError, match="do not fit"):
        EntityProjector.from_pretrained(tmp_path / "p")


# ---- anchors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, word", [
    ("dog.n.01", "dog"), ("hot_dog.n.01", "hot dog"), ("st._louis.n.01", "st. louis"),
    ("Paris", "Paris"), ("new_york", "new york"), ("U.S.", "U.S."), ("able.a.01", "able"),
])
def test_normalize_entity_name(name, word):
    assert normalize_entity_name(name) == word


def test_anchor_pairs_single_wordpieces_only():
    names = ["dog.n.01", "Cat.n.01", "hot_dog.n.01", "Paris", "##s", "[MASK]", "zebra.n.01", "dog.n.02",
             "Café", "s"]
    kv = KGVectors(names, torch.randn(len(names), 5, generator=torch.Generator().manual_seed(0)))
    emb = torch.randn(len(WORDS), 7)
    tok = tokenizer(lower=True)
    kg, target, got = anchor_pairs(kv, tok, emb)
    # multiword, continuation pieces, special tokens and out-of-vocabulary names are not anchors;
    # "Café" goes through the uncased normaliser (lowercase, accents stripped) to the piece "cafe"
    assert got == ["dog.n.01", "Cat.n.01", "Paris", "dog.n.02", "Café"]
    ids = [WORDS.index(w) for w in ("dog", "cat", "paris", "dog", "cafe")]
    assert torch.equal(target, emb[ids])
    assert torch.equal(kg, kv.vectors[[0, 1, 3, 7, 8]])
    assert kg.shape == (5, 5) and target.shape == (5, 7)

    cased = anchor_pairs(kv, tokenizer(lower=False), nn.Embedding.from_pretrained(emb))[2]
    assert cased == ["dog.n.01", "dog.n.02"]  # "Cat", "Paris" are not in a cased lowercase vocab

    readable = ["x"] * len(names)
    readable[6] = "bank.n.01"  # names= gives readable names for rows keyed by ids
    assert anchor_pairs(kv, tok, emb, names=readable)[2] == ["zebra.n.01"]
    with pytest.raises(ValueError, match="names has 2 entries"):
        anchor_pairs(kv, tok, emb, names=["a", "b"])
    none = anchor_pairs(KGVectors(["zebra"], torch.ones(1, 5)), tok, emb)
    assert none[0].shape == (0, 5) and none[1].shape == (0, 7) and none[2] == []


def test_anchor_pairs_mean_pools_multi_wordpiece_names():
    names = ["hot_dog.n.01", "Paris city", "dogs", "zebra crossing", "dog", "", "[MASK] city"]
    kv = KGVectors([f"e{i}" for i in range(len(names))], torch.randn(len(names), 5))
    emb = torch.randn(len(WORDS), 7)
    tok = tokenizer(lower=True)
    kg, target, got = anchor_pairs(kv, tok, emb, names=names, pool="mean")
    # "zebra" is unknown ([UNK]), an empty name is no anchor, a special token spoils the name
    assert got == ["e0", "e1", "e2", "e4"]
    w = {x: emb[WORDS.index(x)] for x in WORDS}
    expect = torch.stack([(w["hot"] + w["dog"]) / 2, (w["paris"] + w["city"]) / 2, (w["dog"] + w["##s"]) / 2, w["dog"]])
    assert torch.allclose(target, expect, atol=1e-6)
    assert torch.equal(kg, kv.vectors[[0, 1, 2, 4]])
    # single-wordpiece anchors are the subset with one piece
    assert anchor_pairs(kv, tok, emb, names=names)[2] == ["e4"]
    with pytest.raises(ValueError, match="pool 'max'"):
        anchor_pairs(kv, tok, emb, pool="max")


def test_fit_from_anchors_end_to_end():
    """Word embeddings that are a linear image of the KG vectors: the anchors recover the map."""
    g = torch.Generator().manual_seed(1)
    words = WORDS[5:]
    names = [f"{w}.n.01" for w in words if not w.startswith("##")] + ["unrelated"]
    kv = KGVectors(names, torch.randn(len(names), 4, generator=g))
    A, b = torch.randn(4, 6, generator=g), torch.randn(6, generator=g)
    emb = torch.randn(len(WORDS), 6, generator=g)
    tok = tokenizer()
    kg, _, got = anchor_pairs(kv, tok, emb)
    ids = [WORDS.index(n.split(".")[0]) for n in got]
    emb[ids] = kg @ A + b
    proj = EntityProjector.fit_from_anchors(kv, tok, emb, alpha=1e-8, rescale=False)
    torch.testing.assert_close(proj(kv.vectors[-1:]), kv.vectors[-1:] @ A + b, atol=1e-3, rtol=1e-3)
    scaled = EntityProjector.fit_from_anchors(kv, tok, emb, alpha=1e-8, kind="mlp")
    assert scaled(kg).norm(dim=1).mean().item() == pytest.approx(emb.norm(dim=1).mean().item(), rel=1e-4)
    with pytest.raises(ValueError, match="single wordpieces"):
        EntityProjector.fit_from_anchors(KGVectors(["zebra"], torch.ones(1, 4)), tok, emb)


def test_saved_configs_carry_a_format_version_and_newer_ones_are_refused(tmp_path):
    import json

    proj = EntityProjector(4, 6)
    proj.save_pretrained(tmp_path / "p")
    cfg_file = tmp_path / "p" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg["format_version"] == 1 and not list((tmp_path / "p").glob("*.tmp*"))
    EntityProjector.from_pretrained(tmp_path / "p")
    cfg_file.write_text(json.dumps(dict(cfg, format_version=99)))
    with pytest.raises(ValueError, match=r"config\.json: format_version 99 is newer"):
        EntityProjector.from_pretrained(tmp_path / "p")
    cfg_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        EntityProjector.from_pretrained(tmp_path / "p")
    del cfg["format_version"]  # written before versions existed: read as version 1
    cfg_file.write_text(json.dumps(cfg))
    EntityProjector.from_pretrained(tmp_path / "p")
