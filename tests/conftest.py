"""Shared fixtures for the kgengine tests (kept small: other test files reuse it)."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# A tiny name-triple dataset: 6 entities (a..f), 3 relations (r1..r3).
# valid/test only use names that occur in train.
TINY_TRAIN = [
    ("a", "r1", "b"),
    ("b", "r1", "c"),
    ("c", "r2", "d"),
    ("d", "r2", "e"),
    ("e", "r3", "f"),
    ("f", "r3", "a"),
    ("a", "r2", "c"),
    ("b", "r3", "e"),
]
TINY_VALID = [("a", "r1", "c"), ("d", "r3", "f")]
TINY_TEST = [("b", "r2", "d"), ("e", "r1", "a")]


def write_triples(path, triples, order="hrt"):
    """Write ``(h, r, t)`` name triples to ``path``, tab separated, columns in ``order``."""
    with open(path, "w", encoding="utf-8") as f:
        for h, r, t in triples:
            by = {"h": h, "r": r, "t": t}
            f.write("\t".join(by[c] for c in order) + "\n")


@pytest.fixture
def tiny_kg_dir(tmp_path):
    """A folder with train/valid/test.txt in the ``raw_udd_hrt`` layout."""
    d = tmp_path / "tiny"
    d.mkdir()
    write_triples(d / "train.txt", TINY_TRAIN)
    write_triples(d / "valid.txt", TINY_VALID)
    write_triples(d / "test.txt", TINY_TEST)
    return d


@pytest.fixture
def tiny_kg(tiny_kg_dir):
    """The tiny dataset loaded with :func:`kgengine.data.load_dataset`."""
    from kgengine.data import load_dataset

    return load_dataset(data_path=tiny_kg_dir)
