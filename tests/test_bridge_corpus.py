"""bridge.corpus: WordNet parsing (a hand-made tarball and the real one), corpus mentions, probe split, leak rule."""
from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import pytest

from bridge.corpus import (
    LEXNAMES,
    ProbeItem,
    Synset,
    WordNet,
    assert_no_leak,
    build_corpus,
    find_leaks,
    load_kg_entities,
    main,
    probe_split,
    read_jsonl,
    read_wordnet,
    split_gloss,
    supersense_labels,
    write_jsonl,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout
WNDB = SHARED / "wordnet-3.0" / "WNdb-3.0.tar.gz"
WN18RR = SHARED / "wn18rr"

# A tiny database in the real format: license lines start with two spaces, every synset's offset
# is its line's byte position. {name} placeholders are filled with 8-digit offsets. data.adv has
# the same header as data.noun, so its one synset shares dog's offset (as entity.n / able.a do).
HEADER = {
    "noun": ["  1 This software and database is being provided to you  ", "  2 by Princeton University.  "],
    "verb": ["  1 a verb file header line  ", "  2 two  ", "  3 three  "],
    "adj": ["  1 adj header  "],
    "adv": ["  1 This software and database is being provided to you  ", "  2 by Princeton University.  "],
}
LINES = {
    "noun": [
        ("dog", '{dog} 05 n 02 dog 0 domestic_dog 0 003 @ {canine} n 0000 #m {canis} n 0000 + {chase} v 0102 '
                '| a member of the genus Canis; "the dog barked all night"; "two dogs and a Dog"  '),
        ("canine", "{canine} 05 n 01 canine 0 001 ~ {dog} n 0000 "
                   "| a dog or other fissiped mammal with nonretractile claws  "),
        ("canis", "{canis} 14 n 02 Canis 0 genus_Canis 0 001 %m {dog} n 0000 | type genus of the Canidae  "),
    ],
    "verb": [
        ("chase", '{chase} 38 v 02 chase 0 dog 1 001 + {dog} n 0201 01 + 02 00 '
                  '| go after with the intent to catch; "the dog chased the rabbit"  '),
    ],
    "adj": [
        ("big", '{big} 00 a 01 big(a) 0 001 & {large} s 0000 | above average in size; "a big house"  '),
        ("large", "{large} 00 s 01 large 0 001 & {big} a 0000 | of considerable size  "),
    ],
    "adv": [("fast", '{fast} 02 r 01 fast 0 000 | quickly or rapidly; "run fast!"  ')],
}


def _offsets() -> dict[str, int]:
    zeros = {name: "00000000" for lines in LINES.values() for name, _ in lines}
    out = {}
    for f, lines in LINES.items():
        at = sum(len(h) + 1 for h in HEADER[f])
        for name, t in lines:
            out[name] = at
            at += len(t.format(**zeros)) + 1
    return out


OFFSETS = _offsets()
E = {k: f"{v:08d}" for k, v in OFFSETS.items()}  # WN18RR-style entity ids


def _files() -> dict[str, bytes]:
    return {f"dict/data.{f}": "".join(x + "\n" for x in HEADER[f] + [t.format(**E) for _, t in LINES[f]]).encode()
            for f in LINES}


@pytest.fixture
def fake_tar(tmp_path) -> Path:
    path = tmp_path / "WNdb-3.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in _files().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# the KG of the exact-corpus test: the three nouns and the verb, with explicit synsets per id
FAKE_KG = {E["dog"]: ("n." + E["dog"],), E["canine"]: ("n." + E["canine"],),
           E["canis"]: ("n." + E["canis"],), E["chase"]: ("v." + E["chase"],)}


def test_labels():
    labels = supersense_labels()
    assert len(LEXNAMES) == 45 and len(labels) == 26
    assert labels[0] == "noun.Tops" and labels[-1] == "noun.time" and LEXNAMES.index("noun.animal") == 5
    assert labels == list(LEXNAMES[3:29])


def test_split_gloss():
    assert split_gloss('a member of Canis; occurs in breeds; "the dog barked"; "dogs bark"') == (
        "a member of Canis; occurs in breeds", ("the dog barked", "dogs bark"))
    assert split_gloss('the act of substituting: "he sent Smith in for Jones"') == (
        "the act of substituting", ("he sent Smith in for Jones",))
    assert split_gloss("no examples here") == ("no examples here", ())


def test_parse_fake_tarball_exact(fake_tar, tmp_path):
    wn = read_wordnet(fake_tar)
    assert [s.key for s in wn] == [f"{p}.{E[n]}" for p, n in
                                   [("n", "dog"), ("n", "canine"), ("n", "canis"), ("v", "chase"),
                                    ("a", "big"), ("a", "large"), ("r", "fast")]]
    dog = wn["n." + E["dog"]]
    assert dog == Synset(OFFSETS["dog"], "n", "n", 5, ("dog", "domestic_dog"), "a member of the genus Canis",
                         ("the dog barked all night", "two dogs and a Dog"),
                         (("@", OFFSETS["canine"], "n", 0, 0), ("#m", OFFSETS["canis"], "n", 0, 0),
                          ("+", OFFSETS["chase"], "v", 1, 2)))
    assert dog.lexname == "noun.animal" and dog.words == ("dog", "domestic dog")
    assert wn["n." + E["canis"]].lexname == "noun.group"
    assert wn["v." + E["chase"]] == Synset(OFFSETS["chase"], "v", "v", 38, ("chase", "dog"),
                                           "go after with the intent to catch", ("the dog chased the rabbit",),
                                           (("+", OFFSETS["dog"], "n", 2, 1),))  # verb frames skipped
    big, large = wn.get("a", OFFSETS["big"]), wn.get("s", OFFSETS["large"])
    assert big.lemmas == ("big",) and big.pointers == (("&", OFFSETS["large"], "a", 0, 0),)  # (a) marker, s -> a
    assert large.ss_type == "s" and large.pos == "a" and large.lexname == "adj.all"
    assert {s.key for s in wn.by_offset(OFFSETS["dog"])} == {"n." + E["dog"], "r." + E["fast"]}
    arr = wn.pointer_arrays()
    assert arr["src"].tolist() == [0, 0, 0, 1, 2, 3, 4, 5] and arr["dst"].tolist() == [1, 2, 3, 0, 0, 0, 5, 4]
    assert arr["src_word"].tolist()[2] == 1 and arr["dst_word"].tolist()[2] == 2
    # the same files in a folder parse the same; only the asked parts of speech are read
    (tmp_path / "dict").mkdir()
    for name, data in _files().items():
        (tmp_path / name).write_bytes(data)
    assert read_wordnet(tmp_path).synsets == wn.synsets
    assert [s.pos for s in read_wordnet(tmp_path / "dict", pos=("n",))] == ["n"] * 3


def test_offsets_are_checked(tmp_path):
    d = tmp_path / "dict"
    d.mkdir()
    for name, data in _files().items():
        if name.endswith("noun"):
            data = data.replace(b"  2 by", b"  2 moved by", 1)  # shifts every noun line by 6 bytes
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match="data.noun: synset .* sits at byte"):
        read_wordnet(tmp_path)
    assert len(read_wordnet(tmp_path, check_offsets=False)) == 7


def _m(a: int, b: int, e: str) -> dict:
    return {"start": a, "end": b, "entity": e}


def test_corpus_fake_exact(fake_tar):
    wn = read_wordnet(fake_tar)
    d, c, g, h = E["dog"], E["canine"], E["canis"], E["chase"]
    recs = build_corpus(wn, FAKE_KG, probe_test=())
    got = [(r["kind"], r["text"], r["mentions"], r["source"]) for r in recs]
    assert got == [
        ("definition", "dog: a member of the genus Canis", [_m(0, 3, d), _m(21, 32, g)], d),
        ("example", "the dog barked all night", [_m(4, 7, d)], d),
        ("example", "two dogs and a Dog", [_m(4, 8, d), _m(15, 18, d)], d),  # inflected, any case
        ("definition", "canine: a dog or other fissiped mammal with nonretractile claws",
         [_m(0, 6, c), _m(10, 13, d)], c),  # "dog" linked through canine's hypernym pointer
        ("definition", "Canis: type genus of the Canidae", [_m(0, 5, g)], g),
        ("definition", "chase: go after with the intent to catch", [_m(0, 5, h)], h),
        # own lemmas win: chase has the lemma "dog" (a documented confusion), "chased" is inflected
        ("example", "the dog chased the rabbit", [_m(4, 7, h), _m(8, 14, h)], h),
    ]
    for r in recs:  # spans point at a lemma (or its inflection) of the entity's synset
        for m in r["mentions"]:
            words = wn[FAKE_KG[m["entity"]][0]].words
            assert any(r["text"][m["start"]:m["end"]].lower().startswith(w.lower()) for w in words)
    # no inflections, no pointer links
    plain = build_corpus(wn, FAKE_KG, probe_test=(), inflections=False, link_pointers=False)
    assert plain[0]["mentions"] == [_m(0, 3, d)] and plain[2]["mentions"] == [_m(15, 18, d)]
    assert plain[-1]["mentions"] == [_m(4, 7, h)]


def test_corpus_holds_out_probe_synsets(fake_tar, tmp_path):
    wn = read_wordnet(fake_tar)
    d, c = E["dog"], E["canine"]
    held = [ProbeItem(d, "dog", "noun.animal")]
    recs = build_corpus(wn, FAKE_KG, probe_test=held)
    assert [r["text"].split(":")[0] for r in recs] == ["Canis", "chase", "the dog chased the rabbit"]
    assert_no_leak(recs, held)
    unlinked = build_corpus(wn, FAKE_KG, probe_test=held, held_out="unlink")
    assert unlinked[0]["text"].startswith("canine:") and unlinked[0]["mentions"] == [_m(0, 6, c)]
    assert_no_leak(unlinked, held)
    leaky = build_corpus(wn, FAKE_KG, probe_test=())
    assert len(find_leaks(leaky, held)) == 4
    with pytest.raises(AssertionError, match="4 corpus texts leak"):
        assert_no_leak(leaky, [d])
    write_jsonl(recs, tmp_path / "c.jsonl")
    assert read_jsonl(tmp_path / "c.jsonl") == recs


def test_probe_split_fake(fake_tar, tmp_path):
    wn = read_wordnet(fake_tar)
    # dog's offset is also the adverb's: an 8-digit id cannot name it alone, so it is no candidate
    for kg in (FAKE_KG, list(FAKE_KG)):  # the same split from a bare id list
        assert probe_split(wn, kg, seed=0, test_size=1) == (
            [ProbeItem(E["canis"], "Canis", "noun.group")], [ProbeItem(E["canine"], "canine", "noun.animal")])
    # with 'n.01234567' ids dog is unambiguous; test: animal 2/3 + group 1/3 of 1 -> animal
    kg_keys = [f"{s.pos}.{s.offset:08d}" for s in wn]
    train, test = probe_split(wn, kg_keys, seed=0, test_size=1)
    assert len(test) == 1 and test[0].label == "noun.animal"
    assert sorted(train + test) == sorted([ProbeItem("n." + E["dog"], "dog", "noun.animal"),
                                           ProbeItem("n." + E["canine"], "canine", "noun.animal"),
                                           ProbeItem("n." + E["canis"], "Canis", "noun.group")])
    capped, test2 = probe_split(wn, kg_keys, seed=0, test_size=1, train_size=1)
    assert test2 == test and len(capped) == 1 and capped[0].label == "noun.animal"  # tie -> lower lexfile
    assert probe_split(wn, kg_keys, seed=0, test_size=1) == (train, test)
    with pytest.raises(ValueError, match="test items"):
        probe_split(wn, FAKE_KG, test_size=0.1)
    # the command line, from an entities.tsv with a synset_ids column
    tsv = tmp_path / "entities.tsv"
    tsv.write_text("id\tname\tsynset_ids\n" + "".join(f"{k}\tx\t{'|'.join(v)}\n" for k, v in FAKE_KG.items()))
    assert load_kg_entities(tmp_path) == FAKE_KG
    assert main(["--wordnet", str(fake_tar), "--kg", str(tsv), "--out", str(tmp_path / "o"),
                 "--probe-fraction", "0.34"]) == 0
    expect = [{"entity": E["canine"], "text": "canine", "label": "noun.animal"}]
    assert read_jsonl(tmp_path / "o" / "probe_test.jsonl") == expect
    assert len(read_jsonl(tmp_path / "o" / "corpus.jsonl")) == 6  # all but canine's definition


# ------------------------------------------------------------------ the real WordNet 3.0 and WN18RR

needs_real = pytest.mark.skipif(not (WNDB.is_file() and (WN18RR / "entities.tsv").is_file()),
                                reason="shared WordNet data not present")


@pytest.fixture(scope="module")
def real():
    wn = read_wordnet(WNDB)
    kg = load_kg_entities(WN18RR)
    train, test = probe_split(wn, kg, seed=0)
    return wn, kg, train, test


@needs_real
def test_real_wordnet(real):
    wn = real[0]
    assert Counter(s.pos for s in wn) == {"n": 82115, "v": 13767, "a": 18156, "r": 3621}
    dog = wn["n.02084071"]
    assert dog.lemmas == ("dog", "domestic_dog", "Canis_familiaris") and dog.lexname == "noun.animal"
    assert dog.examples == ("the dog barked all night",) and dog.definition.startswith("a member of the genus Canis")
    assert ("@", 2083346, "n", 0, 0) in dog.pointers  # canine.n.02
    assert {s.lexname for s in wn.of_pos("n")} == set(supersense_labels())


@needs_real
def test_real_probe_split(real):
    wn, kg, train, test = real
    assert (len(train), len(test)) == (27206, 4801)  # 32,007 WN18RR nouns, 15% held out
    assert (train, test) == probe_split(wn, kg, seed=0)  # deterministic
    assert probe_split(wn, kg, seed=1)[1] != test
    ids = [p.entity for p in train + test]
    assert len(set(ids)) == len(ids) and set(ids) <= set(kg)  # disjoint, all in the KG
    assert {p.label for p in train + test} == set(supersense_labels())
    assert ProbeItem("02084071", "dog", "noun.animal") in train + test
    tr, te = Counter(p.label for p in train), Counter(p.label for p in test)
    assert all(abs(te[k] / len(test) - tr[k] / len(train)) < 0.002 for k in tr)  # stratified


@needs_real
def test_real_corpus_no_leak(real):
    wn, kg, train, test = real
    recs = build_corpus(wn, kg, probe_test=test)
    assert len(recs) > 60000
    assert_no_leak(recs, test)
    for r in recs:
        for m in r["mentions"]:
            assert m["entity"] in kg
    dog = [r for r in recs if r["synset"] == "n.02084071"]
    held = {p.entity for p in test}
    if "02084071" not in held:
        assert dog[0]["text"].startswith("dog: a member") and dog[0]["mentions"][0] == _m(0, 3, "02084071")
    # spans point at a lemma of one of the entity's synsets
    for r in recs[::50]:
        for m in r["mentions"]:
            words = [w.lower() for key in kg[m["entity"]] for w in wn[key].words]
            assert any(r["text"][m["start"]:m["end"]].lower().startswith(w) for w in words)
    # a corpus built without exclusions over the held-out synsets' neighbourhood leaks
    sub = WordNet(s for s in wn if f"{s.offset:08d}" in held)
    with pytest.raises(AssertionError, match="leak held-out probe synsets"):
        assert_no_leak(build_corpus(sub, kg, probe_test=()), test)
