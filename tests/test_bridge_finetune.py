"""bridge.semeval, bridge.linking, bridge.finetune and `kge bridge finetune`, on tiny local data.

The scorer is checked against hand-counted cases and against the official perl scorer (where perl
and the shared data are present); fine-tuning runs end to end on a generated SemEval-format folder
(a few dozen sentences), a tiny random BERT and a tiny WordNet-keyed KG table.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bridge.cli import main
from bridge.finetune import MARKERS, SLOT, FinetuneConfig, _control, encode, finetune, finetune_seeds, link_rows
from bridge.linking import WordNetLinker
from bridge.semeval import LABELS, official_scores, perl_official_f1, read_semeval, write_answers

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SEMEVAL = SHARED / "semeval2010-task8"
HAVE_PERL = shutil.which("perl") is not None
PERL_SCORER = SEMEVAL / "scorer" / "semeval2010_task8_scorer-v1.2.pl"
SCORES_WITH_PERL = HAVE_PERL and PERL_SCORER.is_file()
NOUNS = [f"w{i}" for i in range(12)]
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "of", "in", "a", "was", "by", "from", "##s", "."] + NOUNS


def semeval_file(path: Path, rows) -> Path:
    """Write ``(id, marked sentence, label)`` rows in the released layout (CRLF)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, text, label in rows:
            f.write(f'{i}\t"{text}"\r\n{label}\r\nComment:\r\n\r\n')
    return path


def tiny_rows(n: int, seed: int, start: int = 1):
    """Sentences whose label follows the first nominal (learnable from text and from the KG)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        a, b = rng.choice(len(NOUNS), 2, replace=False)
        label = LABELS[1 + 2 * (a % 3)] if a % 4 else "Other"
        rows.append((str(start + k), f"the <e1>{NOUNS[a]}</e1> was in a <e2>{NOUNS[b]}s</e2> .", label))
    return rows


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import transformers
    from transformers import BertTokenizer

    d = tmp_path_factory.mktemp("ft")
    data = d / "semeval"
    data.mkdir()
    semeval_file(data / "TRAIN_FILE.TXT", tiny_rows(48, 0))
    semeval_file(data / "TEST_FILE_FULL.TXT", tiny_rows(20, 1, start=8001))
    lm = d / "lm"
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(lm)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(lm)
    wn = d / "dict"
    wn.mkdir()  # index.noun: w0..w10 have one or two senses; w11 is not a lemma
    lines = ["  1 this is the licence header"]
    for i in range(11):
        senses = [f"{100 + i:08d}"] + ([f"{200 + i:08d}"] if i % 2 else [])
        lines.append(f"w{i} n {len(senses)} 0 {len(senses)} 0 {' '.join(senses)}")
    (wn / "index.noun").write_text("\n".join(lines) + "\n")
    keys = [f"n.{100 + i:08d}" for i in range(11)] + [f"n.{200 + i:08d}" for i in range(1, 11, 2)]
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(len(keys), 6))
    (d / "kg.tsv").write_text("".join(k + "\t" + "\t".join(f"{x:.5f}" for x in v) + "\n" for k, v in zip(keys, vec)))
    (d / "entities.tsv").write_text("id\tname\n" + "".join(f"{k}\tw{int(k[2:]) % 100}\n" for k in keys))
    return {"data": data, "lm": lm, "wordnet": wn, "kg": d / "kg.tsv", "names": d / "entities.tsv", "keys": keys}


# ---- reader and scorer -----------------------------------------------------------------------
def test_read_semeval_strips_markers_and_names_bad_lines(tmp_path):
    f = semeval_file(tmp_path / "t.txt",
                     [("7", "An <e1>apple</e1> in the <e2>big box</e2>.", "Content-Container(e1,e2)")])
    (s,) = read_semeval(f)
    assert s.id == "7" and s.text == "An apple in the big box." and s.nominals == ("apple", "big box")
    assert s.label == "Content-Container(e1,e2)"
    bad = semeval_file(tmp_path / "b.txt", [("1", "no markers here", "Other")])
    with pytest.raises(ValueError, match=r"b\.txt:1: needs one <e1>"):
        read_semeval(bad)
    lab = semeval_file(tmp_path / "l.txt", [("1", "<e1>a</e1> <e2>b</e2>", "Likes(e1,e2)")])
    with pytest.raises(ValueError, match=r"l\.txt:2: unknown label 'Likes\(e1,e2\)'"):
        read_semeval(lab)


def test_official_score_counts_a_wrong_direction_against_precision():
    ce12, ce21, cw12 = (LABELS.index(x)
                        for x in ("Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Component-Whole(e1,e2)"))
    gold = [ce12, ce12, ce12, cw12, 0]
    pred = [ce12, ce21, cw12, cw12, ce12]
    s = official_scores(pred, gold)
    # Cause-Effect: 1 exact of 3 gold; proposed as Cause-Effect: pred 0, 1 (wrong dir), 4 -> P = 1/3
    ce = s["per_relation"]["Cause-Effect"]
    assert ce["p"] == pytest.approx(100 / 3) and ce["r"] == pytest.approx(100 / 3)
    cw = s["per_relation"]["Component-Whole"]  # 1 exact; proposed 2 (one was a Cause-Effect)
    assert cw["p"] == pytest.approx(50.0) and cw["r"] == pytest.approx(100.0)
    assert set(s["per_relation"]) == {"Cause-Effect", "Component-Whole"}  # averaged over relations in gold
    assert s["macro_f1"] == pytest.approx((100 / 3 + 2 * 50 * 100 / 150) / 2)
    assert s["accuracy"] == pytest.approx(40.0)


@pytest.mark.skipif(not HAVE_PERL or not (SEMEVAL / "TEST_FILE_KEY.TXT").is_file(),
                    reason="needs perl and ../shared/data/semeval2010-task8")
def test_python_scorer_agrees_with_the_official_perl_scorer(tmp_path):
    test = read_semeval(SEMEVAL / "TEST_FILE_FULL.TXT")
    gold = np.array([LABELS.index(s.label) for s in test])
    rng = np.random.default_rng(0)
    for noise in (0.0, 0.2, 0.6, 1.0):
        pred = gold.copy()
        flip = rng.random(len(gold)) < noise
        pred[flip] = rng.integers(0, len(LABELS), int(flip.sum()))
        write_answers(tmp_path / "a.txt", [s.id for s in test], pred)
        perl = perl_official_f1(tmp_path / "a.txt", SEMEVAL / "TEST_FILE_KEY.TXT",
                                PERL_SCORER)
        assert official_scores(pred, gold)["macro_f1"] == pytest.approx(perl, abs=0.005)


# ---- linking ---------------------------------------------------------------------------------
def test_linker_morphy_head_noun_and_known_filter(tiny):
    L = WordNetLinker({"box": ["n.1", "n.2"], "church": ["n.3"], "child": ["n.4"], "big_box": ["n.5"],
                       "man": ["n.6"]})
    assert L.candidates("boxes") == (["n.1", "n.2"], "lemma")  # -xes
    assert L.candidates("Churches") == (["n.3"], "lemma")      # -ches, lower-cased
    assert L.candidates("children") == (["n.4"], "lemma")      # irregular stand-in (-ren), no noun.exc
    assert L.candidates("big boxes") == (["n.5"], "lemma")     # collocation first
    assert L.candidates("red boxes") == (["n.1", "n.2"], "head")
    assert L.candidates("xyzzy") == ([], "none")
    keys, rep = L.link(["boxes", "red box", "xyzzy", "boxes"], known={"n.2"})
    assert keys == [["n.2"], ["n.2"], [], ["n.2"]]
    assert rep["lemma"] == 2 and rep["head"] == 1 and rep["none"] == 1 and rep["coverage"] == 0.75
    wn = WordNetLinker.from_wordnet(tiny["wordnet"])
    assert wn.candidates("w3s")[0] == ["n.00000103", "n.00000203"]  # index.noun sense order kept


# ---- encoding --------------------------------------------------------------------------------
def test_encode_marks_nominals_and_puts_slots_only_when_linked(tiny):
    from transformers import AutoTokenizer

    from bridge.pretrain import add_slot_token

    tok = AutoTokenizer.from_pretrained(str(tiny["lm"]))
    for t in MARKERS + (SLOT,):
        add_slot_token(tok, None, t)
    sents = read_semeval(tiny["data"] / "TRAIN_FILE.TXT")[:3]
    rows = np.array([[[4], [-1]], [[0], [1]], [[-1], [-1]]])
    feats = encode(sents, tok, rows, inject=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in MARKERS + (SLOT,)}
    for f, r in zip(feats, rows):
        x = np.array(f["input_ids"])
        assert x[f["e1_pos"]] == ids["[E1]"] and x[f["e2_pos"]] == ids["[E2]"]
        slots = np.flatnonzero(x == ids[SLOT])
        assert len(slots) == int((r[:, 0] >= 0).sum())  # one slot per linked nominal
        ent = np.array(f["entity_ids"])
        assert sorted(ent[ent >= 0].tolist()) == sorted(r[r >= 0].tolist())
        assert (ent[slots] >= 0).all()
    plain = encode(sents, tok, rows, inject=False)
    assert all(SLOT not in tok.convert_ids_to_tokens(f["input_ids"]) for f in plain)
    with pytest.raises(ValueError, match=r"sentence 1: marker \[E2\] cut by truncation"):
        encode(sents[:1], tok, None, max_length=6)


def test_controls_keep_norms_or_permute_rows():
    t = torch.randn(50, 8)
    r = _control(t, "random", 0)
    assert torch.allclose(r.norm(dim=1), t.norm(dim=1), atol=1e-5) and not torch.allclose(r, t)
    p = _control(t, "permuted", 0)
    assert not torch.equal(p, t) and torch.equal(p.sort(0).values, t.sort(0).values)


def test_link_rows_first_and_mean(tiny):
    sents = read_semeval(tiny["data"] / "TRAIN_FILE.TXT")
    wn = WordNetLinker.from_wordnet(tiny["wordnet"])
    first, rep = link_rows(sents, wn, tiny["keys"], "first")
    allr, _ = link_rows(sents, wn, tiny["keys"], "mean")
    assert first.shape == (len(sents), 2, 1) and allr.shape == (len(sents), 2, 2)
    assert np.array_equal(first[:, :, 0], allr[:, :, 0])  # the first candidate is the first sense
    w11 = [i for i, s in enumerate(sents) if "w11" in s.nominals[0]]
    assert all((first[i, 0] == -1).all() for i in w11) and rep["none"] >= len(w11)


# ---- end to end ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["text", "inject", "late-fusion", "kg-only"])
def test_finetune_variants_end_to_end(tiny, tmp_path, variant):
    kg = {} if variant == "text" else dict(kg=str(tiny["kg"]), names=str(tiny["names"]), wordnet=str(tiny["wordnet"]))
    cfg = FinetuneConfig(data=str(tiny["data"]), lm=str(tiny["lm"]), out=str(tmp_path / variant), variant=variant,
                         epochs=2, batch_size=8, lr=1e-3, scorer=str(PERL_SCORER), **kg)
    r = finetune(cfg)
    out = tmp_path / variant
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["test_sentences"] == 20 and saved["train_sentences"] + saved["valid_sentences"] == 48
    assert saved["steps"] >= 1 and not (out / "checkpoints").exists()
    answers = [ln.split("\t") for ln in (out / "test_answers.txt").read_text().splitlines()]
    assert len(answers) == 20 and all(a[1] in LABELS for a in answers)
    gold = [LABELS.index(ln.split("\t")[1]) for ln in (out / "test_key.txt").read_text().splitlines()]
    pred = [LABELS.index(a[1]) for a in answers]
    assert official_scores(pred, gold)["macro_f1"] == pytest.approx(r["test"]["macro_f1"])
    if SCORES_WITH_PERL:  # the official scorer reads what we wrote and agrees
        assert r["official_f1_perl"] == pytest.approx(r["test"]["macro_f1"], abs=0.005)
    if variant != "text":
        assert r["linking"]["train"]["coverage"] > 0.5 and r["projector"]["anchors"] >= 2


def test_finetune_seeds_summary_and_seed_changes_the_run(tiny, tmp_path):
    cfg = FinetuneConfig(data=str(tiny["data"]), lm=str(tiny["lm"]), out=str(tmp_path), epochs=1, batch_size=8)
    s = finetune_seeds(cfg, [0, 1])
    assert json.loads((tmp_path / "summary.json").read_text())["official_f1"]["values"] == s["official_f1"]["values"]
    assert len(s["official_f1"]["values"]) == 2
    logs = [json.loads((tmp_path / f"seed{k}" / "finetune.json").read_text())["log"] for k in (0, 1)]
    assert [x.get("loss") for x in logs[0]] != [x.get("loss") for x in logs[1]]


def test_cli_finetune_runs_and_bad_flags_exit_2(tiny, tmp_path, capsys):
    base = ["finetune", "--data", str(tiny["data"]), "--lm", str(tiny["lm"]), "--epochs", "1", "--batch-size", "8"]
    assert main(base + ["--out", str(tmp_path / "ok"), "--seeds", "3"]) == 0
    assert "official macro-F1" in capsys.readouterr().out
    assert (tmp_path / "ok" / "seed3" / "finetune.json").is_file()
    for extra, msg in ((["--variant", "inject"], "--kg: variant 'inject' needs KG vectors"),
                       (["--variant", "nope"], "--variant: 'nope' is not one of"),
                       (["--epochs", "0"], "--epochs: 0.0 must be > 0"),
                       (["--kg", str(tmp_path / "missing")], "--kg"),
                       (["--data", str(tmp_path)], "no TRAIN_FILE.TXT")):
        rc = main(base + ["--out", str(tmp_path / "bad")] + extra)
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err, (extra, err)


def test_classifier_reads_the_kg_where_it_should(tiny):
    from transformers import AutoModel

    from bridge.finetune import RelationClassifier
    from bridge.inject import KGBridge
    from bridge.project import EntityProjector

    torch.manual_seed(0)
    enc = AutoModel.from_pretrained(str(tiny["lm"]))
    table = torch.randn(5, 6)
    bridge = KGBridge(enc, EntityProjector(6, 32), table)
    ids = torch.tensor([[2, 5, 6, 7, 8, 3]])
    pos = dict(e1_pos=torch.tensor([1]), e2_pos=torch.tensor([3]), attention_mask=torch.ones_like(ids))
    inj = RelationClassifier(bridge, len(LABELS), dropout=0.0).eval()
    slot = torch.full_like(ids, -1)
    slot[0, 2] = 4
    with torch.no_grad():
        assert not torch.allclose(inj(ids, entity_ids=slot, **pos)["logits"], inj(ids, **pos)["logits"])
    fuse = RelationClassifier(bridge, len(LABELS), fuse=True, dropout=0.0).eval()
    assert fuse.head.in_features == 4 * 32
    with torch.no_grad():
        f = fuse.kg_features(torch.tensor([[[1, 3], [-1, -1]]]))  # mean of two rows; an unlinked nominal
        expect = bridge.projector(table[[1, 3]].mean(0))
        assert torch.allclose(f[0, :32], expect, atol=1e-6) and torch.equal(f[0, 32:], torch.zeros(32))
        a = fuse(ids, kg_rows=torch.tensor([[[0], [1]]]), **pos)["logits"]
        b = fuse(ids, kg_rows=torch.tensor([[[2], [1]]]), **pos)["logits"]
        assert not torch.allclose(a, b)


def test_predict_logits_keeps_the_order_of_the_features():
    """Rows must line up with the sentence ids written to the answers file (Trainer.predict with
    length-grouped sampling reorders them)."""
    from bridge.finetune import _Collator, predict_logits

    class ByLength(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, **kw):
            return {"logits": torch.nn.functional.one_hot(attention_mask.sum(1), 40).float() + self.w}

    lengths = np.random.default_rng(0).integers(3, 30, size=150)
    feats = [{"input_ids": [5] * n, "entity_ids": [-1] * n, "e1_pos": 0, "e2_pos": 1, "labels": 0} for n in lengths]
    logits = predict_logits(ByLength(), feats, _Collator(0), batch_size=16)
    assert logits.shape == (150, 40) and np.array_equal(logits.argmax(1), lengths)
