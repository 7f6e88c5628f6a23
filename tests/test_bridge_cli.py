"""bridge.cli: `kge bridge fit / pretrain / probe` on tiny local folders (no downloads).

The LM is a tiny random BertModel + a tokenizer from an in-memory vocabulary, saved to a folder;
the KG is a kgengine model trained for a few steps on a tiny KG whose entity names are vocabulary
words (so they are anchors), or a TSV table keyed by WordNet-style offsets with an entities.tsv of
names. The probe runs end to end on a generated WordNet noun file whose KG vectors carry the label.
"""
import argparse
import json

import numpy as np
import pytest
import torch

from bridge.cli import add_bridge_commands, build_parser, main
from bridge.inject import KGBridge

torch.set_num_threads(1)

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "/", "dog", "cat", "paris", "france", "city", "apple",
         "animal", "fruit", "is", "a", "##s"] + [f"w{i}" for i in range(80)]
HIDDEN = 32
KG_TRIPLES = [("dog", "is_a", "animal"), ("cat", "is_a", "animal"), ("apple", "is_a", "fruit"),
              ("paris", "capital_of", "france"), ("paris", "is_a", "city"), ("dog", "likes", "cat"),
              ("cat", "likes", "apple"), ("zz_unknown", "is_a", "city"), ("france", "has", "paris"),
              ("animal", "likes", "fruit")]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    import transformers
    from transformers import BertTokenizer

    d = tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=HIDDEN, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(d)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def kge_dir(tmp_path_factory):
    """A kgengine saved-model folder (TransE, dim 8) whose entity names are vocabulary words."""
    from kgengine.data import load_dataset
    from kgengine.train import train

    d = tmp_path_factory.mktemp("kgdata")
    for split, rows in (("train", KG_TRIPLES), ("valid", KG_TRIPLES[:2]), ("test", KG_TRIPLES[2:4])):
        (d / f"{split}.txt").write_text("".join("\t".join(t) + "\n" for t in rows))
    kg = load_dataset(data_path=d)
    out = tmp_path_factory.mktemp("kge") / "run"
    train(kg, save_path=out, evaluate_test=False, model_name="TransE_l2", hidden_dim=8, batch_size=4,
          neg_sample_size=4, max_step=5, progress=False, log_interval=5)
    return out


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_fit_writes_a_loadable_bridge(lm_dir, kge_dir, tmp_path, capsys):
    out = tmp_path / "bridged"
    rc, stdout, err = run(["fit", "--kg", kge_dir, "--lm", lm_dir, "--out", out], capsys)
    assert rc == 0, err
    assert "anchors 8 of 9" in stdout  # every name but zz_unknown is one wordpiece
    info = json.loads((out / "fit.json").read_text())
    assert info["anchors"] == 8 and info["d_kg"] == 8 and info["hidden"] == HIDDEN and info["projector"] == "linear"
    br = KGBridge.from_pretrained(out)
    assert br.kg_table.shape == (9, 8) and "dog" in br.kg_names
    emb = br.get_input_embeddings().weight
    # on the anchors, scaled to the word embeddings' mean norm (all-zero rows such as [PAD] left out)
    anchors = br.kg_table[br.entity_index([n for n in br.kg_names if n != "zz_unknown"])]
    norms = emb.norm(dim=1)
    with torch.no_grad():
        got = br.projector(anchors).norm(dim=1).mean().item()
        assert got == pytest.approx(norms[norms > 0].mean().item(), rel=1e-3)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "lm")
    ids = tok("the dog / [MASK]", return_tensors="pt")["input_ids"]
    ent = torch.full_like(ids, -1)
    ent[0, -2] = br.entity_index(["dog"])[0]
    with torch.no_grad():
        h = br(input_ids=ids, attention_mask=torch.ones_like(ids), entity_ids=ent).last_hidden_state
    assert h.shape == (1, ids.shape[1], HIDDEN) and torch.isfinite(h).all()


def offsets_kg(tmp_path, n=80, n_labels=4, seed=0):
    """A generated WordNet noun file (offsets = byte positions), its KG table (TSV keyed by offset,
    vectors = one-hot of the lexicographer file + noise) and entities.tsv with the lemma names."""
    rng = np.random.default_rng(seed)
    lexfiles = [5, 13, 6, 18][:n_labels]  # noun.animal, noun.food, noun.artifact, noun.person
    labels = rng.integers(0, n_labels, size=n)
    wn = tmp_path / "dict"
    wn.mkdir()
    lines, at, offs = [], 0, []
    for i in range(n):
        line = f"{at:08d} {lexfiles[labels[i]]:02d} n 01 w{i} 0 000 | a made-up gloss number {i}  "
        offs.append(f"{at:08d}")
        lines.append(line)
        at += len(line) + 1
    (wn / "data.noun").write_text("".join(x + "\n" for x in lines))
    for f in ("verb", "adj", "adv"):
        (wn / f"data.{f}").write_text("")
    data = tmp_path / "kgdata"
    data.mkdir()
    (data / "entities.tsv").write_text("id\tname\n" + "".join(f"{o}\tw{i}\n" for i, o in enumerate(offs)))
    vec = np.eye(8)[labels] * 3.0 + rng.normal(0, 0.3, size=(n, 8))
    (tmp_path / "kg.tsv").write_text("".join(o + "\t" + "\t".join(f"{x:.5f}" for x in v) + "\n"
                                             for o, v in zip(offs, vec)))
    return wn, data, tmp_path / "kg.tsv"


def test_fit_needs_names_for_offset_ids(lm_dir, tmp_path, capsys):
    wn, data, kg = offsets_kg(tmp_path)
    rc, _, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "o1"], capsys)
    assert rc == 2 and "--kg" in err and "--names" in err and "anchor" in err
    rc, stdout, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "o2", "--names", data], capsys)
    assert rc == 0, err
    assert "anchors 80 of 80" in stdout
    assert KGBridge.from_pretrained(tmp_path / "o2").kg_names[0] == "00000000"


def test_probe_end_to_end_typing(lm_dir, tmp_path, capsys):
    wn, data, kg = offsets_kg(tmp_path)
    rc, _, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "br", "--names", data], capsys)
    assert rc == 0, err
    rc, stdout, err = run(["probe", "--model", tmp_path / "br", "--task", "wordnet-typing", "--wordnet", wn,
                           "--kg-data", data, "--seeds", "2", "--test-fraction", "0.25", "--l2", "1e-2",
                           "--out", tmp_path / "res"], capsys)
    assert rc == 0, err
    r = json.loads((tmp_path / "res" / "probe.json").read_text())
    assert set(r["variants"]) == {"text", "injected", "random", "permuted", "kg_only", "late_fusion"}
    assert r["sizes"]["test"] == 20 and r["sizes"]["train"] == 60
    v = r["variants"]
    assert v["injected"]["mean"] >= v["text"]["mean"] + 0.3 and v["injected"]["mean"] >= v["random"]["mean"] + 0.3
    assert len(v["text"]["per_seed"]) == 2
    assert "injected" in stdout and "probe.json" in stdout
    # --lm + --kg fits on the fly (names from --kg-data); a .json --out is the file itself
    rc, _, err = run(["probe", "--lm", lm_dir, "--kg", kg, "--wordnet", wn, "--kg-data", data, "--seeds", "1",
                      "--variants", "text", "injected", "--test-fraction", "0.25", "--out", tmp_path / "x.json"],
                     capsys)
    assert rc == 0, err
    assert set(json.loads((tmp_path / "x.json").read_text())["variants"]) == {"text", "injected"}


def test_probe_data_jsonl_and_linkpred(lm_dir, kge_dir, tmp_path, capsys):
    rc, _, err = run(["fit", "--kg", kge_dir, "--lm", lm_dir, "--out", tmp_path / "br"], capsys)
    assert rc == 0, err
    pd = tmp_path / "pd"
    pd.mkdir()
    items = [{"entity": e, "text": e, "label": lab} for e, lab in
             [("dog", "noun.animal"), ("cat", "noun.animal"), ("apple", "noun.food"), ("fruit", "noun.food"),
              ("paris", "noun.location"), ("france", "noun.location"), ("city", "noun.location"),
              ("animal", "noun.animal")]]
    (pd / "probe_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items[:6]))
    (pd / "probe_test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items[6:]))
    rc, _, err = run(["probe", "--model", tmp_path / "br", "--probe-data", pd, "--seeds", "1", "--l2", "0.1",
                      "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    assert json.loads((tmp_path / "r" / "probe.json").read_text())["sizes"]["test"] == 2
    data = tmp_path / "lp"
    data.mkdir()
    names = ["dog", "cat", "paris", "france", "city", "apple", "animal", "fruit"]
    rng = np.random.default_rng(0)
    tri = [(names[i], "likes", names[j]) for i in range(8) for j in range(8) if i != j and rng.random() < 0.5]
    (data / "train.txt").write_text("".join("\t".join(t) + "\n" for t in tri[:-6]))
    (data / "test.txt").write_text("".join("\t".join(t) + "\n" for t in tri[-6:]))
    rc, stdout, err = run(["probe", "--model", tmp_path / "br", "--task", "wn18rr-linkpred", "--kg-data", data,
                           "--seeds", "1", "--num-train", "20", "--num-test", "4", "--candidates", "5", "--epochs", "3",
                           "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    r = json.loads((tmp_path / "r" / "probe-wn18rr-linkpred.json").read_text())
    assert r["task"] == "wn18rr-linkpred" and r["metric"] == "mrr"
    assert set(r["variants"]) == {"text", "injected", "random"}
    assert all(0 < v["mean"] <= 1 for v in r["variants"].values())
    assert "hits@10" in stdout
    rc, _, err = run(["probe", "--model", tmp_path / "br", "--task", "wn18rr-linkpred", "--kg-data", data,
                      "--seeds", "1", "--num-train", "20", "--num-test", "4", "--candidates", "5", "--epochs", "3",
                      "--variants", "text", "--kg-model", kge_dir, "--out", tmp_path / "r2"], capsys)
    assert rc == 0, err
    ref = json.loads((tmp_path / "r2" / "probe-wn18rr-linkpred.json").read_text())["variants"]["kg_model"]
    assert 0 < ref["mean"] <= 1 and ref["per_seed"] == [ref["mean"]]
    rc, _, err = run(["probe", "--model", tmp_path / "br", "--task", "wn18rr-linkpred", "--kg-data", data,
                      "--kg-model", tmp_path / "nowhere", "--out", tmp_path / "r3"], capsys)
    assert rc == 2 and "--kg-model" in err


def test_errors_exit_2_naming_the_argument(lm_dir, kge_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    cases = [
        (["fit", "--kg", tmp_path / "nope", "--lm", lm_dir, "--out", tmp_path / "o"], "--kg"),
        (["fit", "--kg", kge_dir, "--lm", tmp_path / "nolm", "--out", tmp_path / "o"], "--lm"),
        (["fit", "--kg", kge_dir, "--lm", tmp_path, "--out", tmp_path / "o"], "config.json"),
        (["fit", "--kg", kge_dir, "--lm", lm_dir, "--out", f], "--out"),
        (["fit", "--kg", kge_dir, "--lm", lm_dir, "--out", tmp_path / "o", "--names", tmp_path / "none.tsv"],
         "--names"),
        (["probe", "--out", tmp_path / "p"], "--model"),
        (["probe", "--model", tmp_path, "--out", tmp_path / "p"], "bridge_config.json"),
        (["probe", "--lm", lm_dir, "--kg", kge_dir, "--out", tmp_path / "p"], "--wordnet"),
        (["probe", "--lm", lm_dir, "--kg", kge_dir, "--wordnet", tmp_path / "wn", "--out", tmp_path / "p"],
         "--wordnet"),
        (["probe", "--lm", lm_dir, "--kg", kge_dir, "--task", "wn18rr-linkpred", "--out", tmp_path / "p"],
         "--kg-data"),
        (["probe", "--lm", lm_dir, "--seeds", "0", "--out", tmp_path / "p"], "--seeds"),
        (["pretrain", "--kg", kge_dir, "--lm", lm_dir, "--corpus", tmp_path / "c.jsonl", "--out", tmp_path / "k",
          "--max-steps", "1"], "--corpus"),
        (["pretrain", "--kg", kge_dir, "--corpus", f, "--out", tmp_path / "k", "--max-steps", "1"], "--lm"),
    ]
    for argv, needle in cases:
        rc, _, err = run(argv, capsys)
        assert rc == 2, (argv, err)
        last = err.strip().splitlines()[-1]
        assert last.startswith("kge bridge ") and needle in last, (argv, err)
    with pytest.raises(SystemExit) as e:  # argparse: a missing required argument
        main(["fit", "--kg", str(kge_dir)])
    assert e.value.code == 2
    assert "--lm" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["fit", "pretrain", "probe"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and ("--kg" in out or "--model" in out)


def test_add_bridge_commands_into_a_parent_parser(lm_dir, kge_dir, tmp_path):
    parent = argparse.ArgumentParser(prog="kge")
    sub = parent.add_subparsers(dest="command", required=True)
    add_bridge_commands(sub)
    args = parent.parse_args(["bridge", "fit", "--kg", str(kge_dir), "--lm", str(lm_dir), "--out", str(tmp_path / "b")])
    assert args.command == "bridge" and args.bridge_command == "fit"
    assert args.func(args) == 0 and (tmp_path / "b" / "bridge_config.json").is_file()
    assert build_parser().parse_args(["probe", "--lm", "x", "--out", "y"]).task == "wordnet-typing"


def test_pretrain_inject_runs_and_probe_reads_the_kep_folder(lm_dir, tmp_path, capsys):
    wn, data, kg = offsets_kg(tmp_path)
    ids = [ln.split("\t")[0] for ln in (data / "entities.tsv").read_text().splitlines()[1:]]
    recs = [{"text": f"w{i} is a w{i + 1}", "mentions": [{"start": 0, "end": len(f"w{i}"), "entity": e}]}
            for i, e in enumerate(ids[:24])]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rc, stdout, err = run(["pretrain", "--kg", kg, "--names", data, "--lm", lm_dir, "--corpus", tmp_path / "c.jsonl",
                           "--mode", "inject", "--out", tmp_path / "kep", "--max-steps", "2", "--batch-size", "4",
                           "--save-steps", "2", "--no-progress", "--use-cpu"], capsys)
    assert rc == 0, err
    assert "KEP inject: 2 steps" in stdout and (tmp_path / "kep" / "bridge_config.json").is_file()
    rc, _, err = run(["probe", "--model", tmp_path / "kep", "--wordnet", wn, "--kg-data", data, "--seeds", "1",
                      "--variants", "text", "injected", "--test-fraction", "0.25", "--out", tmp_path / "r"], capsys)
    assert rc == 0, err
    r = json.loads((tmp_path / "r" / "probe.json").read_text())
    assert r["settings"]["slot_separator"] is None  # the KEP run's slot encoding (no separator by default)


def phrase_kg(tmp_path, n=12):
    """A TSV KG table whose names are two-word phrases: no name is a single wordpiece."""
    rng = np.random.default_rng(0)
    names = [f"{a} {b}" for a, b in zip(["dog", "cat", "paris", "apple", "city", "fruit"] * 2,
                                        ["animal", "fruit", "city", "france", "w1", "w2"] + ["w3"] * 6)][:n]
    names = [f"{nm} {i}" if i >= 6 else nm for i, nm in enumerate(names)]  # unique; "w3 7": 7 is unknown
    p = tmp_path / "phrases.tsv"
    p.write_text("".join(nm + "\t" + "\t".join(f"{x:.4f}" for x in rng.normal(size=6)) + "\n" for nm in names))
    return p, names


def test_fit_generic_kgs_mean_anchors_anchor_file_and_random_init(lm_dir, tmp_path, capsys):
    kg, names = phrase_kg(tmp_path)
    rc, _, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "single"], capsys)
    assert rc == 2 and "need >= 2 anchor pairs" in err and "--anchor-pool mean" in err
    rc, out, _ = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "mean", "--anchor-pool", "mean"], capsys)
    info = json.loads((tmp_path / "mean" / "fit.json").read_text())
    assert rc == 0 and info["anchors"] == 6 and info["anchor_pool"] == "mean"  # the six phrases of known words
    anchors = tmp_path / "anchors.tsv"
    anchors.write_text(f"{names[0]}\tdog\n{names[1]}\tcat\n{names[2]}\tparis city\nnot_in_kg\tapple\n")
    rc, _, _ = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "file", "--anchors", anchors], capsys)
    assert rc == 0 and json.loads((tmp_path / "file" / "fit.json").read_text())["anchors"] == 2  # single pieces
    rc, _, _ = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "file2", "--anchors", anchors,
                    "--anchor-pool", "mean"], capsys)
    assert rc == 0 and json.loads((tmp_path / "file2" / "fit.json").read_text())["anchors"] == 3
    rc, _, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "rand", "--projector-init", "random"],
                     capsys)
    assert rc == 0 and "WARNING" in err and "random" in err
    br = KGBridge.from_pretrained(tmp_path / "rand")
    with torch.no_grad():
        norms = br.get_input_embeddings().weight.norm(dim=1)
        out_norm = float(br.projector(br.kg_table).norm(dim=1).mean())
    assert out_norm == pytest.approx(float(norms[norms > 0].mean()), rel=1e-3)  # scaled to the word embeddings
    bad = tmp_path / "bad.tsv"
    bad.write_text("only-one-column\n")
    rc, _, err = run(["fit", "--kg", kg, "--lm", lm_dir, "--out", tmp_path / "x", "--anchors", bad], capsys)
    assert rc == 2 and f"--anchors {bad}:1: expected entity<TAB>anchor text" in err


def test_pretrain_multitask_with_descriptions(lm_dir, kge_dir, tmp_path, capsys):
    ents = sorted({e for h, _, t in KG_TRIPLES for e in (h, t)})
    gloss = tmp_path / "entities.tsv"
    gloss.write_text("id\tname\tgloss\n" + "".join(f"{e}\t{e}\ta {e} is a w{i} w{i + 1}\n" for i, e in enumerate(ents)))
    recs = [{"text": f"{h} w1 {t}", "mentions": [{"start": 0, "end": len(h), "entity": h}]} for h, _, t in KG_TRIPLES]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    base = ["pretrain", "--kg", kge_dir, "--lm", lm_dir, "--corpus", tmp_path / "c.jsonl", "--mode", "multitask",
            "--kg-entities", "descriptions", "--max-steps", "2", "--batch-size", "4", "--save-steps", "2",
            "--no-progress", "--use-cpu", "--kg-triples-per-step", "4", "--logging-steps", "1"]
    rc, _, err = run(base + ["--out", tmp_path / "x"], capsys)
    assert rc == 2 and "needs --descriptions" in err
    rc, out, err = run(base + ["--out", tmp_path / "kep", "--descriptions", gloss], capsys)
    assert rc == 0, err
    log = [json.loads(x) for x in (tmp_path / "kep" / "loss_log.jsonl").read_text().splitlines()]
    assert [r["num_triples"] for r in log if "kg_loss" in r] == [4.0, 4.0]
    rc, _, err = run(base + ["--out", tmp_path / "y", "--descriptions", gloss, "--description-column", "nope"], capsys)
    assert rc == 2 and "no column 'nope'" in err
