"""SemEval-2010 Task 8 (relation classification between two marked nominals): reader and scorer.

The official score is the macro-averaged F1 over the nine relations, "(9+1)-way with
directionality taken into account": a prediction counts for relation ``c`` when its undirected
label is ``c``; it is correct only when the direction matches too; ``Other`` is left out of the
average. :func:`official_scores` reimplements the official perl scorer
(``scorer/semeval2010_task8_scorer-v1.2.pl``, shipped with the data) in numpy;
:func:`perl_official_f1` runs that scorer, and a test checks the two agree.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["RELATIONS", "LABELS", "Sentence", "read_semeval", "official_scores", "write_answers",
           "perl_official_f1", "SCORER"]

RELATIONS = ("Cause-Effect", "Component-Whole", "Content-Container", "Entity-Destination", "Entity-Origin",
             "Instrument-Agency", "Member-Collection", "Message-Topic", "Product-Producer")
# 19 labels: Other first, then every relation in both directions.
LABELS: tuple[str, ...] = ("Other",) + tuple(f"{r}({d})" for r in RELATIONS for d in ("e1,e2", "e2,e1"))
SCORER = Path("scorer") / "semeval2010_task8_scorer-v1.2.pl"

_LINE = re.compile(r'^(\d+)\t"(.*)"\s*$')
_MARKED = re.compile(r"<e1>(.*?)</e1>|<e2>(.*?)</e2>")


@dataclass(frozen=True)
class Sentence:
    """One example. ``text`` has the markers removed; ``e1``/``e2`` are ``(start, end)`` character
    spans into it; ``label`` is one of :data:`LABELS` (``None`` for an unlabelled file)."""

    id: str
    text: str
    e1: tuple[int, int]
    e2: tuple[int, int]
    label: str | None

    @property
    def nominals(self) -> tuple[str, str]:
        return self.text[self.e1[0]:self.e1[1]], self.text[self.e2[0]:self.e2[1]]


def _strip_markers(marked: str, where: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    out, spans, last = [], {}, 0
    for m in _MARKED.finditer(marked):
        out.append(marked[last:m.start()])
        start = sum(map(len, out))
        which = "e1" if m.group(1) is not None else "e2"
        if which in spans:
            raise ValueError(f"{where}: <{which}> appears twice")
        word = m.group(1) if m.group(1) is not None else m.group(2)
        out.append(word)
        spans[which] = (start, start + len(word))
        last = m.end()
    out.append(marked[last:])
    if set(spans) != {"e1", "e2"}:
        raise ValueError(f"{where}: needs one <e1>...</e1> and one <e2>...</e2>")
    text = "".join(out)
    if "<e" in text or "</e" in text:
        raise ValueError(f"{where}: unbalanced entity marker")
    return text, spans["e1"], spans["e2"]


def read_semeval(path: str | os.PathLike) -> list[Sentence]:
    """Read ``TRAIN_FILE.TXT`` / ``TEST_FILE_FULL.TXT`` (``id<TAB>"sentence"``, label line, comment
    line, blank line; CRLF as released). ValueError naming ``file:line`` on a malformed record."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Sentence] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}:{i + 1}"
        m = _LINE.match(lines[i])
        if m is None:
            raise ValueError(f'{where}: expected id<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"')
        text, e1, e2 = _strip_markers(m.group(2), where)
        label = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip() else None
        if label is not None and label.startswith("Comment"):
            label = None
        if label is not None and label not in LABELS:
            raise ValueError(f"{path}:{i + 2}: unknown label {label!r}")
        out.append(Sentence(m.group(1), text, e1, e2, label))
        i += 2 if label is not None else 1
        if i < len(lines) and lines[i].startswith("Comment"):
            i += 1
    if not out:
        raise ValueError(f"{path}: no sentences")
    return out


def _undirected(labels: np.ndarray) -> np.ndarray:
    """Label index -> relation index (0 = Other, 1..9 = the relations)."""
    return (labels + 1) // 2


def official_scores(pred: Sequence[int] | np.ndarray, gold: Sequence[int] | np.ndarray) -> dict:
    """The official scorer's numbers from label indices into :data:`LABELS`.

    Returns ``macro_f1`` (the official score, in %), ``macro_p``, ``macro_r``, ``accuracy`` (19-way,
    %), and ``per_relation`` ``{relation: {p, r, f1, support}}`` (in %). As in the perl scorer, a
    prediction of the right relation in the wrong direction counts against that relation's
    precision, and the average is over the relations present in ``gold``.
    """
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {gold.shape[0]} gold labels")
    rp, rg = _undirected(pred), _undirected(gold)
    exact = pred == gold
    per, ps, rs, fs = {}, [], [], []
    for c, name in enumerate(RELATIONS, start=1):
        support = int((rg == c).sum())
        if support == 0:
            continue
        correct = int((exact & (rg == c)).sum())
        proposed = int((rp == c).sum())  # right relation, either direction, plus wrong relations
        p = 100.0 * correct / proposed if proposed else 0.0
        r = 100.0 * correct / support
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[name] = {"p": p, "r": r, "f1": f, "support": support}
        ps.append(p)
        rs.append(r)
        fs.append(f)
    n = max(len(fs), 1)
    return {"macro_f1": sum(fs) / n, "macro_p": sum(ps) / n, "macro_r": sum(rs) / n,
            "accuracy": 100.0 * float(exact.mean()) if len(gold) else 0.0, "per_relation": per}


def write_answers(path: str | os.PathLike, ids: Sequence[str], labels: Sequence[int]) -> None:
    """``id<TAB>label`` lines, the format the official scorer reads."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, y in zip(ids, labels):
            f.write(f"{i}\t{LABELS[int(y)]}\n")


def perl_official_f1(answers: str | os.PathLike, key: str | os.PathLike, scorer: str | os.PathLike) -> float:
    """Run the official perl scorer; returns its official macro-F1 (in %). Needs ``perl``."""
    perl = shutil.which("perl")
    if perl is None:
        raise FileNotFoundError("perl is not installed; the official scorer is a perl script")
    out = subprocess.run([perl, str(scorer), str(answers), str(key)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"macro-averaged F1 = ([0-9.]+)%", out)
    if m is None:
        raise RuntimeError(f"the scorer printed no official score:\n{out[-2000:]}")
    return float(m.group(1))
