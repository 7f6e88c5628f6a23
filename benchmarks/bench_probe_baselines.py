"""Graph-only baselines for the WordNet supersense probe (no LM, no vectors).

The probe labels a held-out noun synset with its supersense (lexicographer file). The KG that the
bridge injects is WN18RR, whose edges connect a synset to its hypernym, hyponyms, meronyms...:
neighbours that mostly share its supersense. This script measures how much of the label the graph
alone gives away, on the same split as `kge bridge probe` (``probe_split(seed=0, test_size=0.15)``):

* neighbour majority: the most frequent supersense among the test synset's WN18RR train-graph
  neighbours whose label is known (probe-train synsets), ties to the globally most frequent label;
  no neighbour with a known label -> the majority class;
* hypernym label: the share of test synsets whose train-graph hypernym has the same supersense;
* majority class.

``--drop-test-taxonomy`` first removes every taxonomy edge (``_hypernym``, ``_instance_hypernym``)
that touches a probe-test synset, so the label cannot be read off the graph; ``--write DIR`` saves
that graph (all three splits filtered) as a dataset folder for ``kge train``, to probe a KG trained
without those edges.

    python benchmarks/bench_probe_baselines.py
    python benchmarks/bench_probe_baselines.py --drop-test-taxonomy --write wn18rr-probe-heldout
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
SHARED = HERE.parents[1] / "shared" / "data"
TAXONOMY = {"_hypernym", "_instance_hypernym", "_hyponym", "_instance_hyponym"}


def main(argv: list[str] | None = None) -> int:
    from bridge.corpus import load_kg_entities, probe_split, read_wordnet
    from bridge.probe import accuracy_macro_f1

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wordnet", type=Path, default=SHARED / "wordnet-3.0" / "WNdb-3.0.tar.gz")
    p.add_argument("--kg-data", type=Path, default=SHARED / "wn18rr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop-test-taxonomy", action="store_true",
                   help="drop taxonomy edges touching probe-test synsets before the vote")
    p.add_argument("--write", type=Path, help="write the (filtered) graph as a dataset folder here")
    a = p.parse_args(argv)
    t0 = time.time()
    wn = read_wordnet(a.wordnet)
    train, test = probe_split(wn, load_kg_entities(a.kg_data), seed=a.seed, test_size=0.15)
    known = {x.entity: x.label for x in train}
    labels = sorted({x.label for x in train + test})
    majority = Counter(x.label for x in train).most_common(1)[0][0]
    rank = {lab: i for i, (lab, _) in enumerate(Counter(x.label for x in train).most_common())}
    nbrs: dict[str, list[str]] = {}
    hyper: dict[str, list[str]] = {}
    test_ids = {x.entity for x in test}

    def keep(line: str) -> bool:
        h, r, t = line.split("\t")
        return not (a.drop_test_taxonomy and r in TAXONOMY and (h in test_ids or t in test_ids))

    splits = {s: [ln for ln in (a.kg_data / f"{s}.txt").read_text().splitlines() if ln.strip()]
              for s in ("train", "valid", "test")}
    dropped = {s: sum(not keep(ln) for ln in lines) for s, lines in splits.items()}
    splits = {s: [ln for ln in lines if keep(ln)] for s, lines in splits.items()}
    if a.write:
        import shutil

        a.write.mkdir(parents=True, exist_ok=True)
        for s, lines in splits.items():
            (a.write / f"{s}.txt").write_text("".join(ln + "\n" for ln in lines))
        shutil.copy(a.kg_data / "entities.tsv", a.write / "entities.tsv")
    for line in splits["train"]:
        h, r, t = line.split("\t")
        nbrs.setdefault(h, []).append(t)
        nbrs.setdefault(t, []).append(h)
        if r == "_hypernym":
            hyper.setdefault(h, []).append(t)
        elif r == "_hyponym":
            hyper.setdefault(t, []).append(h)
    pred, covered = [], 0
    for x in test:
        votes = Counter(known[n] for n in nbrs.get(x.entity, ()) if n in known)
        if votes:
            covered += 1
            top = max(votes.values())
            pred.append(min((lab for lab, c in votes.items() if c == top), key=rank.__getitem__))
        else:
            pred.append(majority)
    gold = [x.label for x in test]
    idx = {lab: i for i, lab in enumerate(labels)}
    y, yh = np.array([idx[g] for g in gold]), np.array([idx[q] for q in pred])
    acc, f1 = accuracy_macro_f1(y, yh, len(labels))
    maj_acc, maj_f1 = accuracy_macro_f1(y, np.full_like(y, idx[majority]), len(labels))
    with_h = [x for x in test if any(h in known for h in hyper.get(x.entity, ()))]
    same = sum(any(known.get(h) == x.label for h in hyper.get(x.entity, ())) for x in with_h)
    print(f"{time.strftime('%Y-%m-%d')}; split seed {a.seed}: {len(train)} train / {len(test)} test synsets, "
          f"{len(labels)} labels; {time.time() - t0:.0f} s")
    if a.drop_test_taxonomy:
        print(f"taxonomy edges touching probe-test synsets dropped: {dropped}; train graph keeps "
              f"{len(splits['train'])} triples" + (f"; written to {a.write}" if a.write else ""))
    print()
    print("| graph-only baseline (no LM, no vectors) | accuracy | macro-F1 |")
    print("|---|---:|---:|")
    print(f"| neighbour majority on the WN18RR train graph ({covered}/{len(test)} test synsets have a labelled "
          f"neighbour) | {acc:.4f} | {f1:.3f} |")
    print(f"| majority class | {maj_acc:.4f} | {maj_f1:.3f} |")
    in_graph = {e for lines in splits.values() for ln in lines for e in ln.split("\t")[::2]}
    keep_rows = np.array([x.entity in in_graph for x in test])
    if not keep_rows.all():  # the probe drops synsets without a KG vector: the same subset here
        sub_acc, sub_f1 = accuracy_macro_f1(y[keep_rows], yh[keep_rows], len(labels))
        print(f"| neighbour majority, only the {int(keep_rows.sum())} test synsets still in the graph (the "
              f"probe's subset) | {sub_acc:.4f} | {sub_f1:.3f} |")
    print(f"\n{same}/{len(with_h)} = {same / max(len(with_h), 1):.2%} of the test synsets with a labelled "
          f"train-graph hypernym share its supersense.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
