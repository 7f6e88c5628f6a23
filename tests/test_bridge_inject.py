"""bridge.inject: inputs_embeds injection, entity vocabulary rows, the entity-aware MLM collator.

A tiny random BERT (hidden 32, 2 layers) and a tokenizer from an in-memory vocabulary; no downloads.
"""
import pytest
import torch
from torch import nn

from bridge import EntityMLMCollator, EntityProjector, KGBridge, KGVectors, add_entity_tokens

torch.set_num_threads(1)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[ENT]", "the", "a", "dog", "cat", "paris", "is", "in",
         "city", "of", "france", "big", "barks", "/", "apple", ".", "##s"]
D_KG = 6


def tokenizer():
    from transformers import AddedToken, BertTokenizer

    tok = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})  # uncased, like MiniLM
    # the concat encoding's slot token: special, so the uncased normaliser leaves it whole
    tok.add_tokens([AddedToken("[ENT]", special=True, normalized=False)], special_tokens=True)
    return tok


def lm(cls_name="BertForMaskedLM", seed=0):
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    return getattr(transformers, cls_name)(cfg).eval()


def kg():
    names = ["Paris", "France", "dog.n.01", "Apple", "apple", "Café"]
    return KGVectors(names, torch.randn(len(names), D_KG, generator=torch.Generator().manual_seed(1)))


def bridge(cls_name="BertForMaskedLM"):
    proj = EntityProjector(D_KG, 32)
    nn.init.normal_(proj.linear.weight, std=0.5)
    return KGBridge(lm(cls_name), proj, kg()).eval()


def ids(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


# ---- (a) inputs_embeds injection ------------------------------------------------------------
def test_embed_changes_exactly_the_entity_slots():
    tok, br = tokenizer(), bridge()
    x = ids(tok, "paris / [ENT] is a city")  # E-BERT concat: the slot right after the mention
    ent = torch.full_like(x, -1)
    slot = x[0].tolist().index(WORDS.index("[ENT]"))
    ent[0, slot] = 0
    plain = br.model.get_input_embeddings()(x)
    emb = br.embed(x, ent)
    changed = (emb != plain).any(-1)
    assert changed[0].nonzero().flatten().tolist() == [slot]
    torch.testing.assert_close(emb[0, slot], br.projector(br.kg_table[0]))

    two = torch.cat([x, x])  # a batch, the second row with a replace-encoding slot on "paris" too
    ent2 = torch.cat([ent, ent])
    ent2[1, 1] = 1
    emb2 = br.embed(two, ent2)
    assert ((emb2 != br.model.get_input_embeddings()(two)).any(-1)).nonzero().tolist() == [[0, slot], [1, 1], [1, slot]]
    torch.testing.assert_close(emb2[1, 1], br.projector(br.kg_table[1]))


@pytest.mark.parametrize("cls_name", ["BertForMaskedLM", "BertModel"])
def test_forward_minus_one_equals_plain_model_and_slots_change_output(cls_name):
    tok, br = tokenizer(), bridge(cls_name)
    x = torch.cat([ids(tok, "the dog barks in paris"), ids(tok, "the cat is in paris")])
    att = torch.ones_like(x)
    none = torch.full_like(x, -1)
    key = "logits" if cls_name == "BertForMaskedLM" else "last_hidden_state"
    with torch.no_grad():
        plain = br.model(input_ids=x, attention_mask=att)[key]
        assert torch.equal(br(x, att, entity_ids=none)[key], plain)
        assert torch.equal(br(x, att)[key], plain)
        # the inputs_embeds route itself is the same model: word embeddings in, same output
        via_embeds = br.model(inputs_embeds=br.embed(x), attention_mask=att)[key]
        torch.testing.assert_close(via_embeds, plain)
        ent = none.clone()
        ent[0, 5] = 0  # "paris" -> KG row 0 (replace encoding)
        out = br(x, att, entity_ids=ent)[key]
    assert not torch.allclose(out[0], plain[0], atol=1e-4)  # the injected sentence changes
    torch.testing.assert_close(out[1], plain[1])  # the other row does not


def test_loss_gradients_reach_projector_not_kg_table():
    tok, br = tokenizer(), bridge()
    br.train()
    x = ids(tok, "the dog barks in paris")
    ent = torch.full_like(x, -1)
    ent[0, 5] = 0
    labels = torch.full_like(x, -100)
    labels[0, 2] = x[0, 2]
    out = br(x, torch.ones_like(x), entity_ids=ent, labels=labels, num_items_in_batch=1)
    assert out.loss.isfinite()
    out.loss.backward()
    assert br.projector.linear.weight.grad.abs().sum() > 0
    assert not br.kg_table.requires_grad
    assert all(p is not br.kg_table for p in br.parameters())
    assert not any("kg_table" in k for k in br.state_dict())  # not in Trainer checkpoints either
    assert br.config is br.model.config


def test_injection_errors():
    tok, br = tokenizer(), bridge()
    x = ids(tok, "the dog")
    with pytest.raises(IndexError, match="entity id 99 out of range: the KG table has 6 rows"):
        br(x, entity_ids=torch.tensor([[-1, 99, -1, -1]]))
    with pytest.raises(ValueError, match="must have input_ids' shape"):
        br(x, entity_ids=torch.tensor([[-1, 0]]))
    with pytest.raises(ValueError, match="projector outputs 16 dims"):
        KGBridge(lm(), EntityProjector(D_KG, 16), kg())
    with pytest.raises(ValueError, match="expects 5-dim KG vectors"):
        KGBridge(lm(), EntityProjector(5, 32), kg())
    with pytest.raises(ValueError, match="3 names for 2 KG rows"):
        KGBridge(lm(), EntityProjector(D_KG, 32), torch.zeros(2, D_KG), names=["a", "b", "c"])
    assert br.entity_index(["France", "Paris"]).tolist() == [1, 0]
    with pytest.raises(KeyError, match="'Berlin'"):
        br.entity_index(["Berlin"])


def test_bridge_save_load_round_trip(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok, br = tokenizer(), bridge()
    br.save_pretrained(tmp_path / "b", tokenizer=tok)
    with safe_open(str(tmp_path / "b" / "lm" / "model.safetensors"), framework="pt") as f:
        shapes = {tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert (6, D_KG) not in shapes  # the KG table is not inside the HF weights
    back = KGBridge.from_pretrained(tmp_path / "b").eval()
    assert type(back.model) is type(br.model)
    assert back.kg_names == br.kg_names and torch.equal(back.kg_table, br.kg_table)
    x = ids(tok, "the dog barks in paris")
    ent = torch.full_like(x, -1)
    ent[0, 5] = 0
    with torch.no_grad():
        torch.testing.assert_close(back(x, entity_ids=ent).logits, br(x, entity_ids=ent).logits)
    AutoModelForMaskedLM.from_pretrained(tmp_path / "b" / "lm")  # plain HF folder
    assert AutoTokenizer.from_pretrained(tmp_path / "b" / "lm")("paris")["input_ids"] == tok("paris")["input_ids"]
    with pytest.raises(FileNotFoundError, match="not a KGBridge folder"):
        KGBridge.from_pretrained(tmp_path)


# ---- (b) vocabulary rows -------------------------------------------------------------------
def test_add_entity_tokens_rows_tokenization_and_round_trip(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok, model, kv = tokenizer(), lm(), kg()
    proj = EntityProjector(D_KG, 32)
    nn.init.normal_(proj.linear.weight)
    n0 = len(tok)
    new = add_entity_tokens(model, tok, kv, proj)
    assert new.tolist() == list(range(n0, n0 + len(kv)))
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.config.vocab_size
    expected = proj(kv.vectors).detach()
    torch.testing.assert_close(model.get_input_embeddings().weight[new], expected)
    torch.testing.assert_close(model.get_output_embeddings().weight[new], expected)  # tied MLM decoder

    # uncased tokenizer, normalized=False: case- and accent-distinct entity tokens stay themselves
    text = "[E:Apple] [E:apple] in [E:Paris] [E:Café] ."
    enc = tok(text)["input_ids"][1:-1]
    assert enc == [new[3].item(), new[4].item(), WORDS.index("in"), new[0].item(), new[5].item(), WORDS.index(".")]
    assert tok.unk_token_id not in enc

    # a plain add_tokens (normalized) on the same uncased tokenizer cannot tell them apart
    naive = tokenizer()
    naive.add_tokens(["[E:Apple]", "[E:apple]"])
    own = naive.convert_tokens_to_ids(["[E:Apple]", "[E:apple]"])
    assert naive("[E:Apple] [E:apple]")["input_ids"][1:-1] != own

    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    tok2, model2 = AutoTokenizer.from_pretrained(tmp_path / "m"), AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    torch.testing.assert_close(model2.get_input_embeddings().weight[new], expected)
    torch.testing.assert_close(model2.get_output_embeddings().weight[new], expected)


def test_add_entity_tokens_idempotent_subset_and_errors():
    tok, model, kv = tokenizer(), lm(), kg()
    proj = EntityProjector(D_KG, 32)
    first = add_entity_tokens(model, tok, kv, proj, names=["France", "Paris"], token_format="<{name}>")
    n = len(tok)
    nn.init.normal_(proj.linear.weight)
    again = add_entity_tokens(model, tok, kv, proj, names=["Paris"], token_format="<{name}>")
    assert len(tok) == n and again.tolist() == first[1:].tolist()
    torch.testing.assert_close(model.get_input_embeddings().weight[again[0]], proj(kv.vectors[0]).detach())
    assert tok.tokenize("the <France> is") == ["the", "<France>", "is"]
    with pytest.raises(ValueError, match="already a vocabulary token"):
        add_entity_tokens(model, tok, KGVectors(["dog"], torch.zeros(1, D_KG)), proj, token_format="{name}")
    with pytest.raises(ValueError, match="must contain"):
        add_entity_tokens(model, tok, kv, proj, token_format="[E]")
    with pytest.raises(KeyError, match="'Berlin'"):
        add_entity_tokens(model, tok, kv, proj, names=["Berlin"])
    with pytest.raises(ValueError, match="projector maps"):
        add_entity_tokens(model, tok, kv, EntityProjector(D_KG, 8))


# ---- the collator -----------------------------------------------------------------------------
def features(tok):
    """Two sentences with entity slots (one concat, one replace) and mention masks."""
    a = tok("the big dog barks / [ENT] in paris")["input_ids"]  # mention "big dog", slot [ENT]
    ea, ma = [-1] * len(a), [0] * len(a)
    ea[a.index(WORDS.index("[ENT]"))] = 2
    ma[2] = ma[3] = 1
    b = tok("paris is a city of france")["input_ids"]  # replace: "paris" is slot and mention
    eb, mb = [-1] * len(b), [0] * len(b)
    eb[1], mb[1] = 0, 1
    eb[6], mb[6] = 1, 1
    c = tok("the dog / [ENT]")["input_ids"]  # a slot token with no entity: still never masked
    return [{"input_ids": a, "entity_ids": ea, "mention_mask": ma},
            {"input_ids": b, "entity_ids": eb, "mention_mask": mb}, {"input_ids": c}]


def test_collator_never_masks_entity_slots_over_many_seeds():
    tok = tokenizer()
    feats = features(tok)
    orig = EntityMLMCollator(tok, mlm_probability=0.0)(feats)["input_ids"]
    fixed = torch.isin(orig, torch.tensor(tok.all_special_ids + [WORDS.index("[ENT]")]))
    for mask_mentions in (False, True):
        collate = EntityMLMCollator(tok, mlm_probability=0.9, mask_mentions=mask_mentions)
        for seed in range(200):
            collate.generator = torch.Generator().manual_seed(seed)
            batch = collate(feats)
            keep = fixed | (batch["entity_ids"] >= 0)
            assert torch.equal(batch["input_ids"][keep], orig[keep])
            assert (batch["labels"][keep] == -100).all()
            assert (batch["labels"] != -100).any()  # p = 0.9: masking did happen around them


def test_collator_padding_and_mention_masking():
    tok = tokenizer()
    feats = features(tok)
    batch = EntityMLMCollator(tok, mlm_probability=0.0, mask_mentions=True, seed=0, return_mention_mask=True)(feats)
    assert set(batch) == {"input_ids", "attention_mask", "entity_ids", "labels", "mention_mask"}
    lens = [len(f["input_ids"]) for f in feats]
    assert batch["input_ids"].shape == (3, max(lens)) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == lens
    pad = batch["attention_mask"] == 0
    assert (batch["input_ids"][pad] == tok.pad_token_id).all() and (batch["entity_ids"][pad] == -1).all()
    assert (batch["labels"][pad] == -100).all()
    # every mention wordpiece that is not an entity slot is [MASK] with its label; nothing else is
    predicted = batch["labels"] != -100
    expect = (batch["mention_mask"] == 1) & (batch["entity_ids"] < 0)
    assert torch.equal(predicted, expect) and expect.sum() == 2
    assert (batch["input_ids"][expect] == tok.mask_token_id).all()
    assert batch["labels"][expect].tolist() == [WORDS.index("big"), WORDS.index("dog")]
    # mask_mentions=False at p=0: nothing is predicted
    plain = EntityMLMCollator(tok, mlm_probability=0.0, pad_to_multiple_of=8)(feats)
    assert (plain["labels"] == -100).all() and plain["input_ids"].shape[1] % 8 == 0
    assert "mention_mask" not in plain


def test_collator_80_10_10_and_protected_tokens():
    tok = tokenizer()
    n_ent = len(add_entity_tokens(lm(), tok, kg(), EntityProjector(D_KG, 32)))
    words = list(range(6, len(WORDS)))
    feats = [{"input_ids": [2] + words * 10 + [len(WORDS)] + [3]} for _ in range(40)]  # no entity_ids key
    batch = EntityMLMCollator(tok, mlm_probability=1.0, seed=0)(feats)
    x = torch.tensor([f["input_ids"] for f in feats])
    chosen = batch["labels"] != -100
    assert (batch["entity_ids"] == -1).all()
    assert torch.equal(chosen, ~torch.isin(x, torch.tensor([2, 3, len(WORDS)])))  # [E:Paris] is protected
    out = batch["input_ids"][chosen]
    masked = (out == tok.mask_token_id).float().mean().item()
    kept = (out == x[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1 + 0.1 / 16, abs=0.03)
    assert (out < tok.vocab_size).all() and not torch.isin(out, torch.tensor([0, 1, 2, 3])).any()
    assert n_ent == 6
    again = EntityMLMCollator(tok, mlm_probability=1.0, seed=0)(feats)
    assert torch.equal(again["input_ids"], batch["input_ids"])  # seeded: reproducible


def test_collator_errors_and_bridge_integration():
    tok = tokenizer()
    with pytest.raises(ValueError, match="entity_ids has 2 entries, input_ids has 3"):
        EntityMLMCollator(tok)([{"input_ids": [2, 8, 3], "entity_ids": [-1, 0]}])
    with pytest.raises(ValueError, match="empty batch"):
        EntityMLMCollator(tok)([])
    with pytest.raises(ValueError, match="mlm_probability"):
        EntityMLMCollator(tok, mlm_probability=1.5)
    br = bridge()
    batch = EntityMLMCollator(tok, mask_mentions=True, seed=0, return_mention_mask=True)(features(tok))
    out = br(**batch)
    assert out.loss.isfinite() and out.logits.shape == (*batch["input_ids"].shape, len(WORDS))


def test_state_dict_tied_once_and_trainer_checkpoint_resume(tmp_path):
    """Trainer saves a non-PreTrainedModel with safetensors' save_file(state_dict()): tied weights must
    appear once; resuming reloads them (strict load works too, and the tie survives)."""
    from safetensors.torch import load_file, save_file
    from transformers import Trainer, TrainingArguments

    br = bridge()
    sd = br.state_dict()
    assert "model.bert.embeddings.word_embeddings.weight" in sd and "model.cls.predictions.decoder.weight" not in sd
    save_file(sd, str(tmp_path / "sd.safetensors"))
    other = bridge()
    nn.init.zeros_(other.projector.linear.weight)
    other.load_state_dict(load_file(str(tmp_path / "sd.safetensors")))  # strict
    assert torch.equal(other.projector.linear.weight, br.projector.linear.weight)
    assert other.model.get_output_embeddings().weight is other.model.get_input_embeddings().weight

    tok = tokenizer()
    feats = features(tok) * 4
    args = dict(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, use_cpu=True, report_to=[],
                remove_unused_columns=False, disable_tqdm=True, save_steps=2)
    br.train()
    Trainer(model=br, args=TrainingArguments(max_steps=2, **args), train_dataset=feats,
            data_collator=EntityMLMCollator(tok, mask_mentions=True), processing_class=tok).train()
    resumed = bridge().train()
    Trainer(model=resumed, args=TrainingArguments(max_steps=3, **args), train_dataset=feats,
            data_collator=EntityMLMCollator(tok, mask_mentions=True), processing_class=tok
            ).train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    assert resumed.model.get_output_embeddings().weight is resumed.model.get_input_embeddings().weight
