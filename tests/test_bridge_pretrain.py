"""bridge.pretrain: tokenisation, the three KEP losses, Trainer runs (log, save, resume), the MLM-head loader.

A tiny random BERT (hidden 32, 2 layers), a tokenizer from an in-memory vocabulary and a 7-entity
kgengine teacher; no downloads, single-threaded, a few Trainer steps each.
"""
import json
import logging
import sys
import types

import pytest
import torch

from bridge import (DistillKEP, EntityProjector, InjectKEP, KEPCollator, KEPConfig, KEPModel, KGBridge, KGVectors,
                    MultitaskKEP, add_slot_token, build_kep_model, feature_kd_loss, kge_logsigmoid_loss,
                    load_lm_with_mlm_head, plot_loss_curve, pool_mentions, run_pretraining, tokenize_records,
                    warmup_mlm_head)
from kgengine.models import create_model
from kgengine.saved import TrainedKGE

torch.set_num_threads(1)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "is", "in", "of", "capital", "big", "dog", "cat",
         "animal", "paris", "france", "city", "country", "barks", "/", ".", "##s", "and", "like"]
ENTS = ["paris", "france", "dog", "cat", "animal", "city", "country"]
RELS = ["capital_of", "is_a"]
TRIPLES = [("paris", "capital_of", "france"), ("paris", "is_a", "city"), ("france", "is_a", "country"),
           ("dog", "is_a", "animal"), ("cat", "is_a", "animal")]
P, F_, D = ENTS.index("paris"), ENTS.index("france"), ENTS.index("dog")


def tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})  # uncased, fast


def teacher(name="DistMult", dim=8):
    torch.manual_seed(0)
    model = create_model(name, len(ENTS), len(RELS), dim)
    tr = torch.tensor([[ENTS.index(h), RELS.index(r), ENTS.index(t)] for h, r, t in TRIPLES])
    return TrainedKGE(model, ENTS, RELS, {"train": tr})


def tiny_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


def bridge(te, seed=0):
    """A BertForMaskedLM bridge whose KG vectors are the teacher's entity table (as from its folder)."""
    from transformers import BertForMaskedLM

    torch.manual_seed(seed)
    lm = BertForMaskedLM(tiny_config())
    kv = KGVectors(ENTS, te.model.entity_embeddings.detach().clone())
    tok = tokenizer()
    return KGBridge(lm, EntityProjector.fit_from_anchors(kv, tok, lm.get_input_embeddings()), kv), tok


def rec(text, *pairs):
    """A corpus record; each (surface, entity) mention at the surface's first occurrence."""
    ms = []
    for surface, ent in pairs:
        s = text.index(surface)
        ms.append({"start": s, "end": s + len(surface), "entity": ent})
    return {"text": text, "mentions": ms}


RECS = [rec("paris is the capital of france .", ("paris", "paris"), ("france", "france")),
        rec("paris is a city .", ("paris", "paris"), ("city", "city")),
        rec("france is a country .", ("france", "france"), ("country", "country")),
        rec("the dogs and a cat like the animal .", ("dogs", "dog"), ("cat", "cat"), ("animal", "animal")),
        rec("the big dog barks .", ("big dog", "dog")),
        rec("the cat is a animal .", ("cat", "cat"), ("animal", "animal")),
        rec("a dog is a animal .", ("dog", "dog"), ("animal", "animal")),
        rec("the city of paris .", ("city", "city"), ("paris", "paris"))]


def batch_for(model, tok, recs=RECS, seed=0):
    cfg = model.kep_config
    feats = tokenize_records(recs, tok, model, encoding=cfg.encoding)
    return KEPCollator.for_config(tok, cfg, seed=seed)(feats)


# ---- tokenisation ---------------------------------------------------------------------------------
def test_tokenize_replace_puts_entity_on_exactly_the_mention_wordpieces():
    tok = tokenizer()
    recs = [rec("the big dog barks in paris .", ("big dog", "dog"), ("paris", "paris")),
            rec("the dogs like a cat .", ("dogs", "dog"), ("cat", "cat")),
            {"text": "a cat .", "mentions": [{"start": 2, "end": 5, "entity": "unicorn"}]},  # unknown: dropped
            {"text": "a  cat", "mentions": [{"start": 1, "end": 2, "entity": "cat"}]}]  # a space: no wordpiece
    stats = {}
    feats = tokenize_records(recs, tok, ENTS, encoding="replace", stats=stats)
    assert len(feats) == 2 and stats["unknown"] == 1 and stats["empty"] == 1 and stats["mentions"] == 4
    f = feats[0]
    assert tok.convert_ids_to_tokens(f["input_ids"].tolist()) == \
        ["[CLS]", "the", "big", "dog", "barks", "in", "paris", ".", "[SEP]"]
    assert f["entity_ids"].tolist() == [-1, -1, D, D, -1, -1, P, -1, -1]
    assert f["mention_mask"].tolist() == [0, 0, 1, 1, 0, 0, 1, 0, 0]
    assert f["mention_entity_ids"].tolist() == f["entity_ids"].tolist()
    g = feats[1]  # "dogs" -> dog ##s: both wordpieces
    assert tok.convert_ids_to_tokens(g["input_ids"].tolist())[2:4] == ["dog", "##s"]
    assert g["entity_ids"].tolist() == [-1, -1, D, D, -1, -1, ENTS.index("cat"), -1, -1]
    assert all(v.dtype.kind == "i" for v in f.values())
    none = tokenize_records(recs[:1], tok, ENTS, encoding="none")[0]  # text only: marks, no slots
    assert (none["entity_ids"] == -1).all() and none["mention_mask"].tolist() == f["mention_mask"].tolist()
    with pytest.raises(KeyError, match="unicorn"):
        tokenize_records(recs, tok, ENTS, on_unknown="error")


def test_tokenize_concat_inserts_a_slot_after_each_mention_and_truncates_whole_mentions():
    tok = tokenizer()
    slot = add_slot_token(tok)
    assert slot == len(WORDS) and add_slot_token(tok) == slot  # idempotent
    r = rec("the big dog barks in paris .", ("big dog", "dog"), ("paris", "paris"))
    f = tokenize_records([r], tok, ENTS, encoding="concat")[0]
    assert tok.convert_ids_to_tokens(f["input_ids"].tolist()) == \
        ["[CLS]", "the", "big", "dog", "[ENT]", "barks", "in", "paris", "[ENT]", ".", "[SEP]"]
    assert f["entity_ids"].tolist() == [-1, -1, -1, -1, D, -1, -1, -1, P, -1, -1]
    assert f["mention_mask"].tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    assert f["mention_entity_ids"].tolist() == [-1, -1, D, D, -1, -1, -1, P, -1, -1, -1]
    sep = tokenize_records([r], tok, ENTS, encoding="concat", slot_separator="/")[0]  # E-BERT: dog / [ENT]
    assert tok.convert_ids_to_tokens(sep["input_ids"].tolist())[3:6] == ["dog", "/", "[ENT]"]
    assert sep["entity_ids"].tolist()[4:6] == [-1, D]
    # max_length 7: "paris [ENT]" is cut, so paris loses its marks; [SEP] stays
    stats = {}
    cut = tokenize_records([r], tok, ENTS, encoding="concat", max_length=7, stats=stats)[0]
    assert tok.convert_ids_to_tokens(cut["input_ids"].tolist()) == \
        ["[CLS]", "the", "big", "dog", "[ENT]", "barks", "[SEP]"]
    assert cut["entity_ids"].tolist() == [-1, -1, -1, -1, D, -1, -1] and stats["truncated"] == 1
    # max_length 4 cuts "big dog" in half: no mention left, the record is dropped (or kept as plain text)
    assert tokenize_records([r], tok, ENTS, encoding="replace", max_length=4) == []
    plain = tokenize_records([r], tok, ENTS, encoding="replace", max_length=4, drop_unlinked=False)[0]
    assert len(plain["input_ids"]) == 4 and (plain["entity_ids"] == -1).all() and plain["mention_mask"].sum() == 0
    with pytest.raises(ValueError, match="add_slot_token"):
        tokenize_records([r], tokenizer(), ENTS, encoding="concat")


def test_collator_masks_mentions_for_inject_and_pads_mention_entities():
    te = teacher()
    br, tok = bridge(te)
    add_slot_token(tok, br.model)
    concat = build_kep_model(br, KEPConfig(mode="inject"))
    b = batch_for(concat, tok, RECS[:3])
    assert set(b) == {"input_ids", "attention_mask", "entity_ids", "labels", "mention_mask", "mention_entity_ids"}
    target = (b["mention_mask"] > 0) & (b["entity_ids"] < 0)
    assert torch.equal(b["labels"] != -100, target)  # inject: the mention only, nothing random
    assert (b["input_ids"][target] == tok.mask_token_id).all()
    assert (b["mention_entity_ids"][b["attention_mask"] == 0] == -1).all()
    replace = build_kep_model(bridge(te)[0], KEPConfig(mode="inject", encoding="replace"))
    b = batch_for(replace, tok, RECS[:3])
    slots = b["entity_ids"] >= 0
    assert torch.equal(b["labels"] != -100, slots) and torch.equal(b["labels"][slots], b["input_ids"][slots])


# ---- inject -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("freeze", [True, False])
def test_inject_loss_is_mention_mlm_and_grads_spare_a_frozen_lm(freeze):
    te = teacher()
    br, tok = bridge(te)
    add_slot_token(tok, br.model)
    model = build_kep_model(br, KEPConfig(mode="inject", freeze_lm=freeze))
    assert isinstance(model, InjectKEP) and model.model is br.model and model.projector is br.projector
    b = batch_for(model, tok)
    model.eval()
    with torch.no_grad():  # the head on labelled positions only == HF's full-logit MLM loss
        ref = br.model(inputs_embeds=model.embed(b["input_ids"], b["entity_ids"]),
                       attention_mask=b["attention_mask"], labels=b["labels"]).loss
        torch.testing.assert_close(model(**b).loss, ref)
    model.train()
    assert br.model.training is not freeze  # a frozen LM stays in eval mode (no dropout)
    out = model(**b)
    assert out.loss.isfinite() and torch.equal(out.mlm_loss, out.loss.detach())
    out.loss.backward()
    assert br.projector.linear.weight.grad.abs().sum() > 0
    lm_grads = [p.grad for p in br.model.parameters()]
    if freeze:
        assert all(g is None for g in lm_grads)
    else:
        assert br.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert not br.kg_table.requires_grad


# ---- distill ------------------------------------------------------------------------------------------
def test_feature_kd_is_zero_when_aligned():
    t = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert feature_kd_loss(3.0 * t, t).abs() < 1e-6
    torch.testing.assert_close(feature_kd_loss(-t, t), torch.tensor(2.0))
    e = torch.eye(2)
    torch.testing.assert_close(feature_kd_loss(e, e.flip(0)), torch.tensor(1.0))


@pytest.mark.parametrize("name", ["DistMult", "TransE_l2"])
def test_logit_kd_equals_hand_computed_kl(name):
    te = teacher(name)
    model = build_kep_model(bridge(te)[0], KEPConfig(mode="distill", temperature=2.0), teacher=te)
    E, R, tau = te.model.entity_embeddings, te.model.relation_embeddings, 2.0
    hs = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    head, r, cand = torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([[1, 3, 4], [4, 0, 6]])

    def score(h, c):  # written out, not kgengine's code
        if name == "DistMult":
            return (h[:, None] * R[r][:, None] * E[c]).sum(-1)
        return 12.0 - (h[:, None] + R[r][:, None] - E[c]).norm(dim=-1)

    p = torch.softmax(score(E[head], cand) / tau, -1)
    q = torch.softmax(score(hs, cand) / tau, -1)
    want = (p * (p.log() - q.log())).sum(-1).mean() * tau ** 2
    torch.testing.assert_close(model.logit_kd_from_candidates(hs, E[head], r, cand), want)
    every = torch.arange(len(ENTS))  # one shared candidate set
    every2 = every.expand(2, -1)
    p, q = torch.softmax(score(E[head], every2) / tau, -1), torch.softmax(score(hs, every2) / tau, -1)
    torch.testing.assert_close(model.logit_kd_from_candidates(hs, E[head], r, every),
                               (p * (p.log() - q.log())).sum(-1).mean() * tau ** 2)
    assert model.logit_kd_from_candidates(E[head], E[head], r, cand).abs() < 1e-6


def test_distill_queries_candidates_grads_and_teacher_scoring(monkeypatch):
    te = teacher()
    br, tok = bridge(te)
    model = build_kep_model(br, KEPConfig(mode="distill", num_negatives=3, kd_queries_per_mention=4), teacher=te)
    assert isinstance(model, DistillKEP) and model.teacher_entity is model.kg_table  # no second copy
    group, head, r, t = model.sample_kd_queries(torch.tensor([P, D, ENTS.index("city")]))
    got = sorted(zip(group.tolist(), head.tolist(), r.tolist(), t.tolist()))
    assert got == [(0, P, 0, F_), (0, P, 1, ENTS.index("city")), (1, D, 1, ENTS.index("animal"))]  # city: no triple
    cand = model.sample_candidates(t)
    assert cand.shape == (3, 4) and torch.equal(cand[:, 0], t)
    model.kep_config.num_negatives = 32  # >= the entity count: every entity is a candidate
    assert torch.equal(model.sample_candidates(t), torch.arange(len(ENTS)))

    calls = []
    real = type(te.model).score_tails_emb
    monkeypatch.setattr(type(te.model), "score_tails_emb", lambda self, *a: calls.append(1) or real(self, *a))
    b = batch_for(model, tok)
    assert (b["entity_ids"] == -1).all()  # distill: text only by default
    model.train()
    out = model(**b)
    assert len(calls) == 2  # teacher and student, both through kgengine
    for k in ("loss", "mlm_loss", "kd_loss", "feature_kd_loss", "logit_kd_loss"):
        assert torch.isfinite(out[k]), k
    torch.testing.assert_close(out.kd_loss, out.feature_kd_loss + out.logit_kd_loss)
    torch.testing.assert_close(out.loss.detach(), out.mlm_loss + model.kep_config.lambda_kd * out.kd_loss)
    out.loss.backward()
    assert model.mention_proj.weight.grad.abs().sum() > 0
    assert br.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in br.projector.parameters())  # not injected: not trained
    assert not any(k.startswith(("_teacher", "teacher", "kd_")) for k in model.state_dict())

    model.eval()  # the feature part is feature_kd_loss of the projected mean mention state
    with torch.no_grad():
        hidden, _ = model.encode(b["input_ids"], b["attention_mask"])
        states, ent = pool_mentions(hidden, b["mention_mask"], b["mention_entity_ids"])
        expect = feature_kd_loss(model.mention_proj(states), model.kg_table[ent])
        torch.testing.assert_close(model(**b).feature_kd_loss, expect)
    assert int((b["mention_mask"][:, 1:] > b["mention_mask"][:, :-1]).sum()) == len(ent)  # one per mention


def test_pool_mentions_groups_runs():
    h = torch.arange(12.0).view(1, 6, 2)
    mm = torch.tensor([[0, 1, 1, 0, 1, 1]])
    me = torch.tensor([[-1, 3, 3, -1, 3, 5]])  # two mentions of 3, then one of 5 right after
    states, ent = pool_mentions(h, mm, me)
    assert ent.tolist() == [3, 3, 5]
    torch.testing.assert_close(states, torch.tensor([[3.0, 4.0], [8.0, 9.0], [10.0, 11.0]]))


# ---- multitask -------------------------------------------------------------------------------------------
def test_multitask_kg_loss_uses_kgengine_scores_and_trains_relations(monkeypatch):
    te = teacher()
    br, tok = bridge(te)
    model = build_kep_model(br, KEPConfig(mode="multitask", kg_model_name="DistMult", num_negatives=3), teacher=te)
    assert isinstance(model, MultitaskKEP) and model.kep_config.kg_dim == 8
    torch.testing.assert_close(model.kge.relation_embeddings.detach(), te.model.relation_embeddings)  # warm start
    uniq = torch.tensor(sorted([P, F_, ENTS.index("city"), D]))
    h, r, t = model.batch_triples(uniq)
    found = {(int(uniq[a]), int(b_), int(uniq[c])) for a, b_, c in zip(h, r, t)}
    assert found == {(P, 0, F_), (P, 1, ENTS.index("city"))}  # facts with both ends in the batch only

    seen = {}
    cls = type(model.kge)
    real_emb, real_tails = cls.score_emb, cls.score_tails_emb

    def score_emb(self, *a):
        seen["pos"] = real_emb(self, *a)
        return seen["pos"]

    def score_tails_emb(self, *a):
        seen["neg"] = real_tails(self, *a)
        return seen["neg"]

    monkeypatch.setattr(cls, "score_emb", score_emb)
    monkeypatch.setattr(cls, "score_tails_emb", score_tails_emb)
    b = batch_for(model, tok)
    model.train()
    out = model(**b)
    assert set(seen) == {"pos", "neg"} and seen["neg"].shape == (len(seen["pos"]), 1, 3)
    torch.testing.assert_close(out.kg_loss, kge_logsigmoid_loss(seen["pos"], seen["neg"].squeeze(1)).detach())
    assert out.kg_loss > 0 and int(out.num_triples) == len(seen["pos"]) > 0
    out.loss.backward()
    assert model.kge.relation_embeddings.grad.abs().sum() > 0
    assert model.kge.entity_embeddings.grad is None  # the LM supplies the entities
    assert model.mention_proj.weight.grad.abs().sum() > 0
    assert br.model.bert.encoder.layer[1].output.dense.weight.grad.abs().sum() > 0


GLOSS = {"paris": "the capital of france", "france": "a country", "dog": "a animal that barks",
         "cat": "a animal", "animal": "a animal", "city": "a big city", "country": "a big country"}


def test_multitask_kepler_descriptions_sample_the_whole_kg_and_train_the_lm():
    te = teacher()
    br, tok = bridge(te)
    desc = [GLOSS[e] if e != "country" else None for e in ENTS]  # country has no description
    cfg = KEPConfig(mode="multitask", kg_model_name="DistMult", kg_entities="descriptions", num_negatives=4,
                    kg_triples_per_step=6, description_length=8)
    model = build_kep_model(br, cfg, teacher=te, descriptions=desc, tokenizer=tok)
    C = ENTS.index("country")
    assert C not in model.desc_rows.tolist() and len(model.desc_rows) == len(ENTS) - 1
    known = {(ENTS.index(h), RELS.index(r), ENTS.index(t)) for h, r, t in TRIPLES if "country" not in (h, t)}
    torch.manual_seed(0)
    for _ in range(20):
        h, r, t, neg = model.sample_kepler()
        assert {(int(a), int(b_), int(c)) for a, b_, c in zip(h, r, t)} <= known  # facts of the whole KG
        assert neg.shape == (6, 4) and C not in neg.flatten().tolist()  # negatives have descriptions
    # the description encoding is the masked mean of the LM's states over the description alone
    rows = torch.tensor([P, D])
    ids = tok([GLOSS["paris"], GLOSS["dog"]], truncation=True, max_length=8, padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        hidden = model.model.base_model(**ids).last_hidden_state
        m = ids["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(model.encode_descriptions(rows), (hidden * m).sum(1) / m.sum(1))
    model.train()
    out = model(**batch_for(model, tok))  # the MLM batch's mentions play no part in the KG loss
    assert int(out.num_triples) == 6 and torch.isfinite(out.kg_loss) and out.kg_loss > 0
    out.loss.backward()
    assert model.kge.relation_embeddings.grad.abs().sum() > 0
    assert br.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs descriptions"):
        build_kep_model(bridge(te)[0], cfg, teacher=te)
    with pytest.raises(ValueError, match="multitask's"):
        KEPConfig(mode="inject", kg_entities="descriptions")


# ---- config and construction errors --------------------------------------------------------------------------
def test_config_defaults_and_errors():
    assert KEPConfig().encoding == "concat" and KEPConfig().mask_mentions
    assert KEPConfig(mode="distill").encoding == "none" and not KEPConfig(mode="multitask").mask_mentions
    for bad, match in [(dict(mode="kepler"), "mode"), (dict(kd_kind="x"), "kd_kind"),
                       (dict(encoding="none"), "inject needs"), (dict(temperature=0.0), "temperature"),
                       (dict(mlm_probability=2.0), "mlm_probability"), (dict(lambda_kd=-1.0), "lambda_kd")]:
        with pytest.raises(ValueError, match=match):
            KEPConfig(**bad)
    te = teacher()
    with pytest.raises(ValueError, match="needs the teacher"):
        build_kep_model(bridge(te)[0], KEPConfig(mode="distill"))
    assert isinstance(build_kep_model(bridge(te)[0], KEPConfig(mode="distill", kd_kind="feature")), DistillKEP)
    with pytest.raises(ValueError, match="known triples"):
        build_kep_model(bridge(te)[0], KEPConfig(mode="multitask"))
    from transformers import BertModel

    base = KGBridge(BertModel(tiny_config()), EntityProjector(8, 32), te.model.entity_embeddings.detach())
    with pytest.raises(ValueError, match="load_lm_with_mlm_head"):
        build_kep_model(base, KEPConfig())


@pytest.mark.parametrize("proj_lr", [None, 7e-4])
def test_projector_learns_at_the_lm_rate_unless_told(tmp_path, proj_lr):
    from transformers import TrainingArguments

    from bridge import KEPTrainer

    model = build_kep_model(bridge(teacher())[0], KEPConfig(mode="distill", kd_kind="feature", encoding="concat"))
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=3e-5, use_cpu=True, report_to=[])
    tr = KEPTrainer(model=model, args=args, head_learning_rate=1e-3, projector_learning_rate=proj_lr)
    opt = tr.create_optimizer()
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["projector.linear.weight"])] == (proj_lr or 3e-5)
    assert lr_of[id(named["mention_proj.weight"])] == 1e-3
    assert lr_of[id(next(p for n, p in named.items() if n.startswith("model.")))] == 3e-5
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())  # every trainable parameter, once


# ---- Trainer runs ---------------------------------------------------------------------------------------------
def run(out, mode, steps, resume=None, **kw):
    te = teacher()
    br, tok = bridge(te)
    args = dict(tokenizer=tok, teacher=te, batch_size=8, learning_rate=3e-3, logging_steps=1, save_steps=10,
                use_cpu=True, progress=False, seed=0, resume_from_checkpoint=resume)
    args.update(kw)
    return run_pretraining(br, RECS, KEPConfig(mode=mode, head_learning_rate=1e-2), out, steps, **args), te


@pytest.mark.parametrize("mode,part", [("inject", "mlm_loss"), ("distill", "kd_loss"), ("multitask", "kg_loss")])
def test_each_mode_loss_is_finite_and_decreases(tmp_path, mode, part):
    res, _ = run(tmp_path / mode, mode, 20)
    lines = [json.loads(x) for x in (tmp_path / mode / "loss_log.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    for key in ("loss", part):
        v = torch.tensor([r[key] for r in steps])
        assert torch.isfinite(v).all()
        assert v[-3:].mean() < v[:3].mean(), (key, v.tolist())
    assert res.log[-1]["step"] == 20 and (tmp_path / mode / "kep" / "kep_config.json").is_file()
    # distill and multitask log how much KG signal each batch carried
    if mode != "inject":
        assert all(r["num_mentions"] > 0 for r in steps)
    if mode == "multitask":
        assert all("num_triples" in r for r in steps) and max(r["num_triples"] for r in steps) > 0


def test_trainer_checkpoint_resume_matches_an_uninterrupted_run_and_save_round_trips(tmp_path):
    straight, te = run(tmp_path / "a", "multitask", 6, batch_size=4, save_steps=2, save_total_limit=None)
    assert {p.name for p in (tmp_path / "a").glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-4", "checkpoint-6"}
    resumed, _ = run(tmp_path / "b", "multitask", 6, resume=str(tmp_path / "a" / "checkpoint-4"), batch_size=4,
                     save_steps=2)
    sa, sb = straight.model.state_dict(), resumed.model.state_dict()
    assert sa.keys() == sb.keys() and "kge.tables.relation" in sa
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], msg=k)
    log = [json.loads(x) for x in (tmp_path / "b" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 7))  # the checkpoint's history, then 5, 6

    back = KEPModel.from_pretrained(tmp_path / "b", teacher=te)
    assert type(back) is MultitaskKEP and back.kep_config == resumed.model.kep_config
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, sb[k], msg=k)
    b = batch_for(back, resumed.tokenizer)
    back.eval(), resumed.model.eval()
    torch.manual_seed(0)
    x = back(**b)
    torch.manual_seed(0)
    y = resumed.model(**b)
    torch.testing.assert_close(x.loss, y.loss)
    assert type(KGBridge.from_pretrained(tmp_path / "b").model).__name__ == "BertForMaskedLM"  # plain bridge too


def test_run_from_paths_loads_a_headless_lm_and_the_teacher_folder(tmp_path, caplog):
    from transformers import BertModel

    te = teacher()
    te.save_pretrained(tmp_path / "kg")
    torch.manual_seed(0)
    BertModel(tiny_config()).save_pretrained(tmp_path / "lm")
    tokenizer().save_pretrained(tmp_path / "lm")
    cfg = KEPConfig(mode="distill", mlm_head_warmup_steps=2)
    with caplog.at_level(logging.INFO, logger="bridge.pretrain"):
        res = run_pretraining({"lm": tmp_path / "lm", "kg": tmp_path / "kg"}, RECS, cfg, tmp_path / "out", 2,
                              batch_size=4, logging_steps=1, use_cpu=True, progress=False, eval_records=RECS[:2],
                              eval_steps=1)
    assert "has no MLM head" in caplog.text and "MLM head warm-up: 2 steps" in caplog.text
    assert all("logit_kd_loss" in r for r in res.log if "loss" in r)  # the teacher came from the kg folder
    assert res.model.teacher_entity is res.model.kg_table
    assert [r["step"] for r in res.log if "eval_loss" in r] == [1, 2]  # eval_strategy="steps"
    # the saved folder is a bridge folder: pre-train it again (another mode, with a slot token this time)
    again = run_pretraining(tmp_path / "out", RECS, KEPConfig(mode="inject", freeze_lm=True), tmp_path / "out2", 1,
                            batch_size=4, use_cpu=True, progress=False)
    assert again.tokenizer.convert_tokens_to_ids("[ENT]") == len(WORDS)
    assert not any(p.requires_grad for p in again.model.model.parameters())


# ---- the MLM head loader ----------------------------------------------------------------------------------------
def test_load_lm_with_mlm_head_logs_ties_and_warms_up(tmp_path, caplog):
    from transformers import BertModel

    torch.manual_seed(0)
    base = BertModel(tiny_config())
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING, logger="bridge.pretrain"):
        lm = load_lm_with_mlm_head(tmp_path / "base")
    assert "has no MLM head" in caplog.text and "tied to the word embeddings" in caplog.text
    assert type(lm).__name__ == "BertForMaskedLM" and lm.mlm_head_was_missing
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    torch.testing.assert_close(lm.bert.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight)

    enc = {k: v.clone() for k, v in lm.bert.state_dict().items()}
    head = lm.cls.predictions.transform.dense.weight.clone()
    feats = tokenize_records(RECS, tokenizer(), ENTS)
    losses = warmup_mlm_head(lm, tokenizer(), feats, steps=3, batch_size=4, mlm_probability=0.5)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(lm.cls.predictions.transform.dense.weight, head)
    assert all(torch.equal(v, enc[k]) for k, v in lm.bert.state_dict().items())  # encoder and tied rows unchanged
    assert all(p.requires_grad for p in lm.parameters())  # restored

    # a sentence-transformers layout (modules.json -> 0_Transformer/) and a checkpoint with its head
    st = tmp_path / "st"
    base.save_pretrained(st / "0_Transformer")
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer",
                                                  "type": "sentence_transformers.models.Transformer"}]))
    assert load_lm_with_mlm_head(st).mlm_head_was_missing
    lm.save_pretrained(tmp_path / "full")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bridge.pretrain"):
        again = load_lm_with_mlm_head(tmp_path / "full")
    assert not again.mlm_head_was_missing and "no MLM head" not in caplog.text


def test_plot_loss_curve_with_and_without_matplotlib(tmp_path, monkeypatch):
    records = [{"step": 1, "loss": 2.0, "mlm_loss": 1.5}, {"step": 2, "loss": 1.0, "mlm_loss": 0.8}, {"step": 2}]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not importable
    assert plot_loss_curve(records, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()

    plotted = {}

    class Ax:
        def plot(self, x, y, label=None, **kw):
            plotted[label] = (list(x), list(y))

        def __getattr__(self, name):
            return lambda *a, **kw: None

    class Fig:
        def tight_layout(self):
            pass

        def savefig(self, path, **kw):
            open(path, "wb").write(b"\x89PNG")

    pyplot = types.SimpleNamespace(subplots=lambda **kw: (Fig(), Ax()), close=lambda fig: None)
    mpl = types.SimpleNamespace(use=lambda backend: None, pyplot=pyplot)
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", pyplot)
    assert plot_loss_curve(records, tmp_path / "c.png") == tmp_path / "c.png" and (tmp_path / "c.png").is_file()
    assert plotted == {"loss": ([1, 2], [2.0, 1.0]), "mlm_loss": ([1, 2], [1.5, 0.8])}
