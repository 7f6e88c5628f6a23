"""Link a noun phrase in text to WordNet noun synsets, by lemma.

A mention is lower-cased, spaces become ``_``, and WordNet's own lemmatiser (morphy: the
``noun.exc`` exceptions where the database has them, then the suffix rules ``-s``, ``-ses``,
``-xes``, ``-zes``, ``-ches``, ``-shes``, ``-men``, ``-ies``) finds the lemmas of ``index.noun``.
The shared ``WNdb-3.0.tar.gz`` has no ``noun.exc``; then a few rules for the commonest irregular
plurals (:data:`IRREGULAR_NOUN_RULES`: ``-ves``, ``-ren``, ``-i``, ``geese``...) stand in, and
what they miss stays unlinked and is counted in the coverage report. A multi-word mention that is
no lemma falls back to its last word (the head noun of an English compound: ``antenna elements``
-> ``element``). A lemma's synsets come in ``index.noun``'s order, which is WordNet's sense order:
by frequency in the sense-tagged SemCor corpus, so the first is the most frequent sense.

Choices (``WordNetLinker.link(..., choice=)``): ``"first"`` keeps that most frequent sense (the
standard baseline of word-sense disambiguation, hard to beat without context); ``"all"`` returns
every candidate, for a caller that averages or attends over them (KnowBERT-style).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["WordNetLinker", "MORPHY_NOUN_RULES", "IRREGULAR_NOUN_RULES"]

MORPHY_NOUN_RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                     ("men", "man"), ("ies", "y"))
# Stand-ins for the commonest irregular plurals of noun.exc, used only when the database has no
# noun.exc; a form is kept only if it is a lemma, as with the rules above.
IRREGULAR_NOUN_RULES = (("ves", "f"), ("ves", "fe"), ("ren", ""), ("oes", "o"), ("eese", "oose"), ("eet", "oot"),
                        ("ice", "ouse"), ("i", "us"), ("a", "um"), ("a", "on"), ("ae", "a"))


class WordNetLinker:
    """Noun lemma -> synset keys (``"n.02084071"``, the ids of ``wordnet-full``), most frequent first.

    Args:
        senses: ``{lemma: [synset key, ...]}`` in sense order.
        exceptions: ``{inflected form: [lemma, ...]}`` (``noun.exc``).
    """

    def __init__(self, senses: dict[str, list[str]], exceptions: dict[str, list[str]] | None = None) -> None:
        self.senses = senses
        self.exceptions = exceptions or {}
        self.rules = MORPHY_NOUN_RULES + (() if self.exceptions else IRREGULAR_NOUN_RULES)

    @classmethod
    def from_wordnet(cls, path: str | os.PathLike) -> "WordNetLinker":
        """Read ``index.noun`` and ``noun.exc`` from ``WNdb-3.0.tar.gz`` or a ``dict/`` folder."""
        from .corpus import read_wordnet_files

        path = Path(path)
        texts = read_wordnet_files(path, ["index.noun"], optional=["noun.exc"])
        senses: dict[str, list[str]] = {}
        for lineno, line in enumerate(texts["index.noun"].splitlines(), start=1):
            if not line or line.startswith(" "):  # the licence header lines start with two spaces
                continue
            f = line.split()
            try:
                n = int(f[2])
                offsets = f[len(f) - n:]
                senses[f[0]] = [f"n.{int(o):08d}" for o in offsets]
            except (IndexError, ValueError):
                raise ValueError(f"{path}: index.noun line {lineno}: not 'lemma n synset_cnt ... offsets'") from None
        exceptions: dict[str, list[str]] = {}
        for line in texts.get("noun.exc", "").splitlines():
            f = line.split()
            if len(f) >= 2:
                exceptions.setdefault(f[0], []).extend(f[1:])
        return cls(senses, exceptions)

    def lemmas(self, word: str) -> list[str]:
        """morphy for nouns: the form itself if it is a lemma, exception-list bases, then suffix rules."""
        out: list[str] = []

        def add(forms: Iterable[str]) -> None:
            for f in forms:
                if f in self.senses and f not in out:
                    out.append(f)

        add([word])
        add(self.exceptions.get(word, ()))
        add(word[: len(word) - len(suf)] + rep for suf, rep in self.rules if word.endswith(suf))
        return out

    def candidates(self, mention: str) -> tuple[list[str], str]:
        """All synset keys for ``mention`` (sense order, first lemma first) and how they were found:
        ``"lemma"``, ``"head"`` (last word of a multi-word mention) or ``"none"``."""
        words = mention.strip().lower().split()
        if not words:
            return [], "none"
        how = "lemma"
        lemmas = self.lemmas("_".join(words))
        if not lemmas and len(words) > 1:
            lemmas, how = self.lemmas(words[-1]), "head"
        keys: list[str] = []
        for lemma in lemmas:
            keys += [k for k in self.senses[lemma] if k not in keys]
        return keys, (how if keys else "none")

    def link(self, mentions: Sequence[str], known: Iterable[str] | None = None,
             choice: str = "first") -> tuple[list[list[str]], dict]:
        """Link every mention; returns ``(keys per mention, coverage report)``.

        ``known`` restricts candidates to these keys (the KG's entities); ``choice`` is ``"first"``
        (one key: the most frequent sense) or ``"all"``. The report counts mentions linked by
        lemma, by head word, and not at all.
        """
        if choice not in ("first", "all"):
            raise ValueError(f"choice must be 'first' or 'all', got {choice!r}")
        known_set = set(known) if known is not None else None
        out: list[list[str]] = []
        counts = {"lemma": 0, "head": 0, "none": 0}
        cache: dict[str, tuple[list[str], str]] = {}
        for m in mentions:  # string work once per distinct mention, at set-up
            if m not in cache:
                keys, how = self.candidates(m)
                if known_set is not None:
                    keys = [k for k in keys if k in known_set]
                    how = how if keys else "none"
                cache[m] = (keys[:1] if choice == "first" else keys, how)
            keys, how = cache[m]
            out.append(keys)
            counts[how] += 1
        n = max(len(mentions), 1)
        report = dict(counts, mentions=len(mentions), coverage=(counts["lemma"] + counts["head"]) / n,
                      choice=choice)
        return out, report
