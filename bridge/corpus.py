"""Offline pre-training corpus and supersense probe data from Princeton WordNet 3.0.

Everything here is read from the WordNet 3.0 database files (``dict/data.noun``, ``data.verb``,
``data.adj``, ``data.adv``), straight out of ``WNdb-3.0.tar.gz`` (no extraction), and from a KG's
entity list (WN18RR: 8-digit synset offsets; ``wordnet-full``/``wn18rr-like``: ``n.02084071``).

Pieces
------
* :func:`read_wordnet` -> :class:`WordNet` of :class:`Synset` records: offset, pos, lexicographer
  file (number and name; nouns use 03..28, the 26 noun supersenses), lemmas, the gloss split into
  a definition and its example sentences (the double-quoted parts, as NLTK splits them), pointers.
* :func:`probe_split` -> the supersense-typing probe: ``(entity id, lemma text, label)`` for noun
  synsets in the KG, split into a classifier-train and a held-out test list.
* :func:`build_corpus` -> pre-training records ``{"text", "mentions": [{"start", "end",
  "entity"}], "synset", "source", "kind"}`` with character spans (``text[start:end]`` is the
  mention) and ``entity`` a KG entity id; :func:`write_jsonl` writes them.
* :func:`assert_no_leak` checks a corpus against the held-out probe set.

Texts and mentions (per synset ``s``; ``word`` = its first lemma with ``_`` -> space)
-------------------------------------------------------------------------------------
* ``kind="definition"``: ``"{word}: {definition}"``, e.g. ``"dog: a member of the genus Canis
  ..."``; the span on ``word`` is a mention of ``s`` (the synset being defined).
* ``kind="example"``: each example sentence as is; every occurrence of one of ``s``'s own lemmas
  (case-insensitive unless the lemma has capitals, whole words, optionally with a regular
  inflection -- nouns ``s/es``, verbs ``s/es/d/ed/ing`` -- the span then covering the inflected
  word) is a mention of ``s``. Own lemmas of another part of speech are not told apart (verb
  chase has the lemma ``dog``: "the dog chased the rabbit" links both words to chase).
* ``link_pointers=True`` (default): in both kinds, lemmas of the synsets ``s`` points to (its
  hypernyms, holonyms, derivations, ...) that occur in the text are mentions of those synsets,
  e.g. ``"Canis"`` in dog's definition -> genus Canis (02083863). Own lemmas win overlaps, then
  longer spans; single-character lemmas are never matched.
* Only synsets with a KG entity id get mentions; texts left with no mention are dropped.
  ``source`` is the KG id of the synset whose gloss the text comes from (``None`` if that
  synset is not in the KG), ``synset`` its WordNet key ``"n.02084071"``.

Synsets -> KG entity ids
------------------------
``kg_entities`` is a list of ids, a mapping id -> synset keys, or a path (an ``entities.tsv``
or a folder holding one; a ``synset_ids`` column, as in ``wn18rr/entities.tsv``, gives the exact
synsets behind each id). From a bare id list, an 8-digit id stands for every synset with that
offset (WN18 merged synsets of different parts of speech that share an offset, e.g.
``00001740`` = entity.n.01, able.a.01, breathe.v.01), and ``n.02084071`` for that synset alone.

The probe split (documented rule, deterministic per seed)
---------------------------------------------------------
1. Candidates: noun synsets whose KG id names that synset and nothing else. An 8-digit id
   whose offset is also a synset of another part of speech is skipped (WN18 merged those, so
   the KG vector and name mix meanings; 148 of WN18RR's noun ids), whether the KG came as a
   bare id list or with ``synset_ids``: the split is the same either way. Still, compute it
   once (``kge bridge corpus`` writes ``probe_{train,test}.jsonl``) and pass the test
   list to :func:`build_corpus` and to the probe.
2. Label = the synset's lexicographer file (one of :func:`supersense_labels`).
3. Stratified by label: ``test_size`` (a fraction, or a count) is apportioned to the labels by
   largest remainder; within a label, candidates sorted by id are permuted with
   ``numpy.random.default_rng(seed)`` and the first ones go to test, the rest to train.

The leak rule (what :func:`build_corpus` leaves out, what :func:`assert_no_leak` checks)
----------------------------------------------------------------------------------------
The label is the lexicographer file, and a gloss often states it ("a member of the genus Canis"
-> noun.animal). So for every held-out (probe test) entity ``e`` the corpus contains

* no text taken from the gloss of ``e``'s synset(s) (its definition or examples: ``source == e``),
* no text with a mention of ``e`` (e.g. ``"puppy: a young dog"`` when ``dog`` is linked).

``held_out="unlink"`` keeps a text of another synset and drops only the held-out mention
(the word stays as plain text, which the text-only baseline sees too); ``"drop_text"`` (default)
drops the whole text. Probe *train* synsets stay in the corpus: their labels are given to the
probe classifier anyway.

Numbers (WNdb-3.0, ``wn18rr/entities.tsv`` = 40,943 ids, seed 0, defaults)
-------------------------------------------------------------------------
117,659 synsets (82,115 n, 13,767 v, 18,156 a, 3,621 r); 32,007 probe candidates -> 27,206
train / 4,801 test. Corpus: 82,657 texts (66,591 definitions, 16,066 examples; 36,061 from
glosses of synsets outside the KG, linked through pointers), 115,699 mentions of 34,322
entities; without exclusions it would be 98,483 texts, with ``held_out="unlink"`` 87,397.
``drop_text`` leaves 1,729 probe-train synsets unmentioned (their texts link a held-out one).
The split depends on the id set: ids from ``train.txt`` only (40,559) give another split.

``kge bridge corpus --wordnet WNdb-3.0.tar.gz --kg wn18rr/ --out DIR`` builds all of it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tarfile
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "LEXNAMES",
    "Synset",
    "WordNet",
    "ProbeItem",
    "read_wordnet",
    "parse_data_file",
    "split_gloss",
    "load_kg_entities",
    "supersense_labels",
    "probe_split",
    "build_corpus",
    "find_leaks",
    "assert_no_leak",
    "write_jsonl",
    "read_jsonl",
]

# WordNet 3.0 ``lexnames``, indexed by the lex_filenum field of the data files.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
POS_FILES: dict[str, str] = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")  # syntactic markers on adjective lemmas: big(a)
_QUOTED = re.compile(r'"([^"]*)"')
# regular inflections per part of speech; irregular forms (WordNet's *.exc lists) are not matched
_INFLECTIONS = {"n": ("s", "es"), "v": ("s", "es", "d", "ed", "ing"), "a": (), "r": ()}
_ID_OFFSET = re.compile(r"^\d{8}$")
_ID_KEY = re.compile(r"^[nvar]\.\d{8}$")


def supersense_labels() -> list[str]:
    """The 26 noun lexicographer files (supersenses) in WordNet's order, noun.Tops ... noun.time."""
    return [n for n in LEXNAMES if n.startswith("noun.")]


class Synset(NamedTuple):
    """One line of a WordNet ``data.<pos>`` file.

    ``pos`` is the data file (n, v, a, r; satellites live in ``a``), ``ss_type`` the line's own
    field (``s`` for an adjective satellite). ``lemmas`` are as written (``domestic_dog``,
    ``Canis_familiaris``), adjective markers removed. ``pointers`` are ``(symbol, target offset,
    target pos (data file), source word, target word)``, words 0 for a semantic (synset->synset)
    pointer. Verb frames are not kept. A named tuple: immutable, hashable, and cheap to build
    (117,659 of them per database).
    """

    offset: int
    pos: str
    ss_type: str
    lexfile: int
    lemmas: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]
    pointers: tuple[tuple[str, int, str, int, int], ...]

    @property
    def lexname(self) -> str:
        return LEXNAMES[self.lexfile]

    @property
    def key(self) -> str:
        """``"n.02084071"``: the id used by ``wordnet-full``/``wn18rr-like``."""
        return f"{self.pos}.{self.offset:08d}"

    @property
    def words(self) -> tuple[str, ...]:
        """Lemmas as text: underscores become spaces."""
        return tuple(lemma.replace("_", " ") for lemma in self.lemmas)


class WordNet:
    """The synsets of one database, in file order (noun, verb, adj, adv; by offset within a file)."""

    def __init__(self, synsets: Iterable[Synset]):
        self.synsets: list[Synset] = list(synsets)
        self._index = {(s.pos, s.offset): i for i, s in enumerate(self.synsets)}
        self._by_offset: dict[int, list[Synset]] | None = None

    def __len__(self) -> int:
        return len(self.synsets)

    def __iter__(self) -> Iterator[Synset]:
        return iter(self.synsets)

    def __getitem__(self, key: str) -> Synset:
        """``wn["n.02084071"]``."""
        pos, off = key.split(".")
        return self.synsets[self._index[("a" if pos == "s" else pos, int(off))]]

    def get(self, pos: str, offset: int) -> Synset | None:
        i = self._index.get(("a" if pos == "s" else pos, int(offset)))
        return None if i is None else self.synsets[i]

    def of_pos(self, pos: str) -> list[Synset]:
        return [s for s in self.synsets if s.pos == pos]

    def by_offset(self, offset: int) -> list[Synset]:
        """All synsets with this byte offset (one per data file at most)."""
        if self._by_offset is None:
            self._by_offset = {}
            for s in self.synsets:
                self._by_offset.setdefault(s.offset, []).append(s)
        return list(self._by_offset.get(int(offset), ()))

    def pointer_arrays(self) -> dict[str, np.ndarray]:
        """All pointers as flat arrays: ``src``/``dst`` synset indices (into ``self.synsets``;
        -1 if the target is missing), ``symbol`` (str), ``src_word``/``dst_word`` (0 = synset).
        """
        counts = np.fromiter((len(s.pointers) for s in self.synsets), dtype=np.int64, count=len(self))
        flat = [p for s in self.synsets for p in s.pointers]
        index = self._index
        dst = np.fromiter((index.get((p[2], p[1]), -1) for p in flat), dtype=np.int64, count=len(flat))
        return {
            "src": np.repeat(np.arange(len(self), dtype=np.int64), counts),
            "dst": dst,
            "symbol": np.array([p[0] for p in flat], dtype=object),
            "src_word": np.fromiter((p[3] for p in flat), dtype=np.int16, count=len(flat)),
            "dst_word": np.fromiter((p[4] for p in flat), dtype=np.int16, count=len(flat)),
        }


# ---------------------------------------------------------------------------------------------
# Parsing


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Gloss -> (definition, examples). Examples are the double-quoted parts (NLTK's rule);
    the definition is what remains, with empty ``;`` parts and a trailing ``:`` removed."""
    if '"' in gloss:
        examples = tuple(e.strip() for e in _QUOTED.findall(gloss) if e.strip())
        rest = _QUOTED.sub("", gloss)
    else:
        examples, rest = (), gloss
    parts = [p.strip() for p in rest.split(";")]
    definition = "; ".join(p for p in parts if p).rstrip(" :")
    return definition, examples


class _HexCache(dict):
    """``"0102"`` -> source (``half=0``: 1) or target (``half=1``: 2) word number, memoised so
    the pointer fields convert in C-level ``map`` calls (few distinct values occur)."""

    def __init__(self, half: int):
        super().__init__()
        self.half = half

    def __missing__(self, st: str) -> int:
        v = self[st] = int(st[2 * self.half:2 * self.half + 2], 16)
        return v


_SRC_WORD, _DST_WORD = _HexCache(0), _HexCache(1)
_FILE_POS = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}  # satellites live in data.adj


def parse_data_file(text: str, pos: str, *, check_offsets: bool = True, name: str = "") -> list[Synset]:
    """Parse one ``data.<pos>`` file (as text). Lines starting with two spaces are the license.

    With ``check_offsets`` each synset's offset must equal its line's byte position (true of the
    Princeton files; Debian's rebuilt database differs for verbs and adjectives). The files are
    ASCII, so characters and bytes coincide; decode with latin-1 to keep it so regardless.
    """
    out: list[Synset] = []
    at = 0
    tpos = "a" if pos == "s" else pos
    for line in text.split("\n"):
        start, at = at, at + len(line) + 1
        if not line or line[0] == " ":
            continue
        head, _, gloss = line.partition(" | ")
        tok = head.split()
        off = int(tok[0])
        if check_offsets and off != start:
            raise ValueError(f"{name or 'data.' + POS_FILES[tpos]}: synset {tok[0]} sits at byte {start}; "
                             "not an original WordNet 3.0 file (offsets are the synset ids)")
        w = int(tok[3], 16)
        lemmas = tuple(_ADJ_MARKER.sub("", x) for x in tok[4:4 + 2 * w:2]) if tpos == "a" else tuple(tok[4:4 + 2 * w:2])
        k = 4 + 2 * w
        p = int(tok[k])
        k += 1
        e = k + 4 * p
        sts = tok[k + 3:e:4]
        ptrs = tuple(zip(tok[k:e:4], map(int, tok[k + 1:e:4]), map(_FILE_POS.__getitem__, tok[k + 2:e:4]),
                         map(_SRC_WORD.__getitem__, sts), map(_DST_WORD.__getitem__, sts)))
        definition, examples = split_gloss(gloss.strip())
        out.append(Synset(off, tpos, tok[2], int(tok[1]), lemmas, definition, examples, ptrs))
    return out


def read_wordnet_files(tar_or_dir: str | os.PathLike, names: Iterable[str],
                       optional: Iterable[str] = ()) -> dict[str, str]:
    """``{file name: text}`` of WordNet database files (``data.noun``, ``index.noun``, ...) from
    ``WNdb-3.0.tar.gz`` (any member ending ``/NAME``) or a folder (``dict/`` or its parent).
    FileNotFoundError if one of ``names`` is missing; ``optional`` files are read when present."""
    path = Path(tar_or_dir)
    names, optional = set(names), set(optional)
    texts: dict[str, str] = {}
    if path.is_dir():
        base = path / "dict" if (path / "dict").is_dir() else path
        for fname in names | optional:
            if (base / fname).is_file():
                texts[fname] = (base / fname).read_bytes().decode("latin-1")
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # one pass: a gzip stream cannot seek back cheaply
                fname = member.name.rsplit("/", 1)[-1]
                if fname in names | optional and member.isfile():
                    texts[fname] = tar.extractfile(member).read().decode("latin-1")
    missing = sorted(names - set(texts))
    if missing:
        raise FileNotFoundError(f"{path}: no {', '.join(missing)}")
    return texts


def read_wordnet(tar_or_dir: str | os.PathLike, pos: Sequence[str] = ("n", "v", "a", "r"),
                 *, check_offsets: bool = True) -> WordNet:
    """Read ``data.<pos>`` files from ``WNdb-3.0.tar.gz`` (any member ending ``/data.noun`` etc.)
    or from a folder (``dict/`` or its parent). ``pos`` picks the files (n, v, a, r)."""
    wanted = {f"data.{POS_FILES[p]}": p for p in pos}
    texts = read_wordnet_files(tar_or_dir, wanted)
    synsets: list[Synset] = []
    for fname, p in wanted.items():
        synsets += parse_data_file(texts[fname], p, check_offsets=check_offsets, name=fname)
    return WordNet(synsets)


# ---------------------------------------------------------------------------------------------
# KG entity ids


def load_kg_entities(path: str | os.PathLike) -> dict[str, tuple[str, ...]] | list[str]:
    """Entity ids from an ``entities.tsv`` (or a folder with one, or a file of one id per line).

    With a ``synset_ids`` column (``wn18rr/entities.tsv``) returns ``{id: (synset keys)}``,
    else the list of ids (first tab-separated field; a header row starting ``id`` is skipped).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "entities.tsv"
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = lines[0].split("\t") if lines else []
    if header and header[0] == "id":
        lines = lines[1:]
        if "synset_ids" in header:
            c = header.index("synset_ids")
            out: dict[str, tuple[str, ...]] = {}
            for line in lines:
                cols = line.split("\t")
                out[cols[0]] = tuple(cols[c].split("|"))
            return out
    return [line.split("\t", 1)[0] for line in lines if line.strip()]


def _entity_map(wordnet: WordNet, kg_entities) -> dict[int, str]:
    """synset index -> KG entity id, for the synsets behind the KG's ids."""
    if isinstance(kg_entities, (str, os.PathLike)):
        kg_entities = load_kg_entities(kg_entities)
    out: dict[int, str] = {}
    idx = wordnet._index
    if isinstance(kg_entities, Mapping):
        for eid, keys in kg_entities.items():
            for key in keys:
                p, o = key.split(".")
                i = idx.get(("a" if p == "s" else p, int(o)))
                if i is not None:
                    out[i] = eid
        return out
    for eid in kg_entities:
        if _ID_KEY.match(eid):
            i = idx.get((eid[0], int(eid[2:])))
            if i is not None:
                out[i] = eid
        elif _ID_OFFSET.match(eid):
            for p in POS_FILES:  # WN18 style: one offset can be several synsets
                i = idx.get((p, int(eid)))
                if i is not None:
                    out[i] = eid
        else:
            raise ValueError(f"KG entity id {eid!r} is neither an 8-digit offset nor 'n.01234567'")
    return out


# ---------------------------------------------------------------------------------------------
# The probe


class ProbeItem(NamedTuple):
    """A supersense-typing example: KG entity id, the synset's first lemma as text, its lexname."""

    entity: str
    text: str
    label: str


def probe_split(wordnet: WordNet, kg_entities, seed: int = 0, test_size: float | int = 0.15,
                train_size: int | None = None) -> tuple[list[ProbeItem], list[ProbeItem]]:
    """(train, test) probe items over the KG's noun synsets; see the module docstring for the rule.

    ``test_size``: a fraction in (0, 1) or a count; ``train_size`` caps the train list (taken
    in the same seeded order, stratified the same way), ``None`` = all the rest. Lists are sorted
    by entity id.
    """
    emap = _entity_map(wordnet, kg_entities)
    owners = Counter(emap.values())
    syns = wordnet.synsets
    cands = sorted(
        (eid, i) for i, eid in emap.items()
        if syns[i].pos == "n" and owners[eid] == 1
        and not (_ID_OFFSET.match(eid) and len(wordnet.by_offset(syns[i].offset)) > 1)
    )
    n = len(cands)
    n_test = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size!r} gives {n_test} test items out of {n} candidates")
    labels = np.array([wordnet.synsets[i].lexfile for _, i in cands])
    test_q = _apportion(labels, n_test)
    train_q = None if train_size is None else _apportion(labels, int(train_size), exclude=test_q)
    rng = np.random.default_rng(seed)
    train: list[ProbeItem] = []
    test: list[ProbeItem] = []
    for lab in np.unique(labels):  # ascending lexfile: a fixed order of rng draws
        members = np.flatnonzero(labels == lab)[rng.permutation(int((labels == lab).sum()))]
        t = test_q[lab]
        rest = members[t:] if train_q is None else members[t:t + train_q[lab]]
        for dest, sel in ((test, members[:t]), (train, rest)):
            for j in sel:
                eid, i = cands[j]
                s = wordnet.synsets[i]
                dest.append(ProbeItem(eid, s.words[0], s.lexname))
    return sorted(train), sorted(test)


def _apportion(labels: np.ndarray, total: int, exclude: dict[int, int] | None = None) -> dict[int, int]:
    """Split ``total`` over labels proportionally to their counts (largest remainder, ties by label)."""
    labs, counts = np.unique(labels, return_counts=True)
    if exclude is not None:
        counts = counts - np.array([exclude[int(lab)] for lab in labs])
    if total > counts.sum():
        raise ValueError(f"asked for {total} items, only {int(counts.sum())} available")
    share = counts * (total / counts.sum())
    q = np.floor(share).astype(np.int64)
    order = np.lexsort((labs, -(share - q)))  # biggest remainder first, then lower label
    q[order[: total - int(q.sum())]] += 1
    return {int(lab): int(c) for lab, c in zip(labs, q)}


# ---------------------------------------------------------------------------------------------
# The corpus


def _spans(text: str, low: str, phrase: str, suffixes: Sequence[str]) -> Iterator[tuple[int, int]]:
    """Whole-word occurrences of ``phrase``: case-sensitive if it has capitals, else in ``low``."""
    hay = text if phrase != phrase.lower() else low
    n = len(hay)
    i = hay.find(phrase)
    while i >= 0:
        j = i + len(phrase)
        if i == 0 or not hay[i - 1].isalnum():
            if j == n or not hay[j].isalnum():
                yield i, j
            else:
                for suf in suffixes:
                    k = j + len(suf)
                    if hay.startswith(suf, j) and (k == n or not hay[k].isalnum()):
                        yield i, k
                        break
        i = hay.find(phrase, i + 1)


def _mentions(text: str, groups: list[tuple[str, Sequence[tuple[str, bool]], Sequence[str]]]) -> list[dict]:
    """Non-overlapping mentions of ``(entity, [(phrase, phrase is lowercase)], suffixes)``
    groups; earlier groups win, then longer spans, then earlier ones."""
    low = text.lower()
    if len(low) != len(text):  # a case mapping that changes length would shift spans
        return []
    taken: list[tuple[int, int, str]] = []
    for eid, phrases, suffixes in groups:
        # cheap substring test first: nearly all candidate lemmas are absent
        hits = [ph for ph, lower in phrases if ph in (low if lower else text)]
        if not hits:
            continue
        found = sorted({sp for ph in hits for sp in _spans(text, low, ph, suffixes)},
                       key=lambda sp: (sp[0] - sp[1], sp[0]))
        for a, b in found:
            if all(b <= x or a >= y for x, y, _ in taken):
                taken.append((a, b, eid))
    taken.sort()
    return [{"start": a, "end": b, "entity": e} for a, b, e in taken]


def build_corpus(wordnet: WordNet, kg_entities, seed: int = 0, probe_fraction: float | int = 0.15, *,
                 probe_test: Iterable[ProbeItem | tuple | str] | None = None,
                 link_pointers: bool = True, inflections: bool = True,
                 held_out: str = "drop_text",
                 kinds: Sequence[str] = ("definition", "example")) -> list[dict]:
    """Pre-training records from glosses and example sentences (rules: module docstring).

    The held-out set is ``probe_test`` (probe items or bare entity ids) if given, else the test
    half of ``probe_split(wordnet, kg_entities, seed, probe_fraction)``; pass ``probe_test=()``
    for a corpus without exclusions (which leaks). Records are in WordNet file order.
    """
    if held_out not in ("drop_text", "unlink"):
        raise ValueError(f"held_out must be 'drop_text' or 'unlink', not {held_out!r}")
    if isinstance(kg_entities, (str, os.PathLike)):
        kg_entities = load_kg_entities(kg_entities)
    if probe_test is None:
        probe_test = probe_split(wordnet, kg_entities, seed, probe_fraction)[1]
    test = {p if isinstance(p, str) else p[0] for p in probe_test}
    emap = _entity_map(wordnet, kg_entities)
    syns = wordnet.synsets
    # (entity, matchable lemmas) of every KG synset by (pos, offset), computed once
    # (single characters never match)
    kg_at = {}
    for j, eid in emap.items():
        syn = syns[j]
        kg_at[(syn.pos, syn.offset)] = (eid, [(w, w == w.lower()) for w in syn.words if len(w) > 1],
                                        _INFLECTIONS[syn.pos] if inflections else ())
    records: list[dict] = []
    for i, s in enumerate(syns):
        src = emap.get(i)
        if src is not None and src in test:
            continue  # the held-out synset's own gloss and examples
        linked: list[tuple] = []
        if link_pointers:
            seen = {src}
            for _, off, tp, _, _ in s.pointers:
                hit = kg_at.get((tp, off))
                if hit is not None and hit[0] not in seen:
                    seen.add(hit[0])
                    linked.append(hit)
        if src is None and not linked:
            continue  # nothing in this gloss can be linked to the KG
        own = [kg_at[(s.pos, s.offset)]] if src is not None else []
        texts: list[tuple[str, str, list[dict]]] = []
        if "definition" in kinds and s.definition:
            word = s.lemmas[0].replace("_", " ")
            prefix = f"{word}: "
            body = _mentions(s.definition, linked) if linked else []
            subject = [{"start": 0, "end": len(word), "entity": src}] if src is not None else []
            shifted = [{**m, "start": m["start"] + len(prefix), "end": m["end"] + len(prefix)} for m in body]
            texts.append(("definition", prefix + s.definition, subject + shifted))
        if "example" in kinds:
            for ex in s.examples:
                texts.append(("example", ex, _mentions(ex, own + linked)))
        for kind, text, ms in texts:
            if any(m["entity"] in test for m in ms):
                if held_out == "drop_text":
                    continue
                ms = [m for m in ms if m["entity"] not in test]
            if ms:
                records.append({"text": text, "mentions": ms, "synset": s.key, "source": src, "kind": kind})
    return records


def find_leaks(corpus_records: Iterable[dict], probe_test: Iterable[ProbeItem | tuple | str]) -> list[dict]:
    """Records that break the leak rule: a mention of a held-out entity, or a held-out ``source``."""
    test = {p if isinstance(p, str) else p[0] for p in probe_test}
    return [r for r in corpus_records
            if r.get("source") in test or any(m["entity"] in test for m in r["mentions"])]


def assert_no_leak(corpus_records: Iterable[dict], probe_test: Iterable[ProbeItem | tuple | str]) -> None:
    """Raise ``AssertionError`` (count and first offenders) if the corpus leaks a held-out synset."""
    bad = find_leaks(corpus_records, probe_test)
    if bad:
        show = "; ".join(f"{r.get('synset')} {r['text'][:60]!r}" for r in bad[:3])
        raise AssertionError(f"{len(bad)} corpus texts leak held-out probe synsets, e.g. {show}")


# ---------------------------------------------------------------------------------------------
# Files and command line


def write_jsonl(records: Iterable[Mapping], path: str | os.PathLike) -> int:
    """Write one JSON object per line (UTF-8); returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None, prog: str = "python -m bridge.corpus") -> int:
    """``kge bridge corpus --wordnet WNdb-3.0.tar.gz --kg wn18rr/ --out DIR``: writes
    ``corpus.jsonl``, ``probe_train.jsonl`` and ``probe_test.jsonl`` and prints counts."""
    ap = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    ap.add_argument("--wordnet", required=True, help="WNdb-3.0.tar.gz or a dict/ folder")
    ap.add_argument("--kg", required=True, help="entities.tsv or a dataset folder holding one")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-fraction", type=float, default=0.15)
    ap.add_argument("--held-out", choices=("drop_text", "unlink"), default="drop_text")
    ap.add_argument("--no-link-pointers", action="store_true")
    a = ap.parse_args(argv)
    wn = read_wordnet(a.wordnet)
    kg = load_kg_entities(a.kg)
    train, test = probe_split(wn, kg, a.seed, a.probe_fraction)
    recs = build_corpus(wn, kg, probe_test=test, held_out=a.held_out, link_pointers=not a.no_link_pointers)
    assert_no_leak(recs, test)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(recs, out / "corpus.jsonl")
    for name, items in (("probe_train", train), ("probe_test", test)):
        write_jsonl((p._asdict() for p in items), out / f"{name}.jsonl")
    n_m = sum(len(r["mentions"]) for r in recs)
    print(f"synsets {len(wn)}; corpus {len(recs)} texts, {n_m} mentions; "
          f"probe train {len(train)}, test {len(test)} -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
