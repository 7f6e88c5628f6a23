"""kgengine.data: built-in datasets, folder layouts, formats, error messages, unseen policy, KG helpers."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import kgengine.textread as T
from kgengine.data import BUILTIN_DATASETS, KG, DataError, load_dataset, load_raw_triples, load_udd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the checkout
# the text readers under test: pyarrow's when it is installed (and KGENGINE_NO_PYARROW unset), pandas' always
READERS = ["pyarrow", "pandas"] if T.arrow_enabled() else ["pandas"]
needs_pyarrow = pytest.mark.skipif("pyarrow" not in READERS, reason="pyarrow not installed (or KGENGINE_NO_PYARROW)")


@pytest.fixture(autouse=True, params=READERS)
def reader(request, monkeypatch) -> str:
    """Every test runs with each reader; ``pytest -k pandas`` or ``-k pyarrow`` picks one."""
    monkeypatch.setattr(T, "_ARROW", request.param == "pyarrow")
    return request.param


def _chunks(monkeypatch, rows: int) -> None:
    """Chunks of ``rows`` rows in both vectorised readers."""
    monkeypatch.setattr(T, "_CHUNK_ROWS", rows)
    monkeypatch.setattr(T, "_ARROW_CHUNK_ROWS", rows)


TRAIN = [("a", "r1", "b"), ("b", "r1", "c"), ("c", "r2", "d"), ("d", "r2", "e"), ("e", "r3", "a")]
VALID = [("a", "r2", "c"), ("b", "r3", "d")]
TEST = [("c", "r1", "e"), ("d", "r1", "a")]


def _write(path, triples, order="hrt", sep="\t"):
    with open(path, "w", encoding="utf-8") as f:
        for h, r, t in triples:
            by = {"h": h, "r": r, "t": t}
            f.write(sep.join(by[c] for c in order) + "\n")


def _write_lines(path, lines):
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _raw_dir(root: Path, train=TRAIN, valid=VALID, test=TEST, order="hrt", name="kg") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    _write(d / "train.txt", train, order)
    _write(d / "valid.txt", valid, order)
    _write(d / "test.txt", test, order)
    return d


def _named(kg: KG, split: str) -> list[tuple[str, str, str]]:
    return [(kg.entities[h], kg.relations[r], kg.entities[t]) for h, r, t in kg.split(split).tolist()]


def _udd_dir(root: Path, order="hrt") -> tuple[Path, list[str], list[str]]:
    """A udd_{order} folder for TRAIN/VALID/TEST with a deliberately non-alphabetical vocabulary."""
    entities = ["e", "c", "a", "d", "b"]
    relations = ["r3", "r1", "r2"]
    e, r = {n: i for i, n in enumerate(entities)}, {n: i for i, n in enumerate(relations)}
    d = root / "udd"
    d.mkdir()
    _write_lines(d / "entities.dict", [f"{i}\t{n}" for i, n in enumerate(entities)])
    _write_lines(d / "relations.dict", [f"{i}\t{n}" for i, n in enumerate(relations)])
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        ids = [(str(e[h]), str(r[rel]), str(e[t])) for h, rel, t in triples]
        _write(d / f"{split}.txt", ids, order)
    return d, entities, relations


# ---------------------------------------------------------------- built-in datasets

BUILTIN_COUNTS = {
    "kinships": (104, 25, 8544, 1068, 1074),
    "umls": (135, 46, 5216, 652, 661),
    "nations": (14, 55, 1592, 199, 201),
}


@pytest.mark.parametrize("name", sorted(BUILTIN_COUNTS))
def test_builtin_dataset_counts(name):
    kg = load_dataset(name)
    ne, nr, ntr, nva, nte = BUILTIN_COUNTS[name]
    assert (kg.num_entities, kg.num_relations) == (ne, nr)
    assert (len(kg.train), len(kg.valid), len(kg.test)) == (ntr, nva, nte)
    assert kg.name == name
    for split in ("train", "valid", "test"):
        t = kg.split(split)
        assert t.dtype == torch.int64 and t.shape[1] == 3
        assert 0 <= int(t[:, [0, 2]].min()) and int(t[:, [0, 2]].max()) < ne
        assert 0 <= int(t[:, 1].min()) and int(t[:, 1].max()) < nr
    assert len(set(kg.entities)) == ne and len(set(kg.relations)) == nr
    assert kg.all_triples().shape == (ntr + nva + nte, 3)


def test_builtin_names_and_case_insensitive():
    assert set(BUILTIN_DATASETS) == set(BUILTIN_COUNTS)
    kg = load_dataset("NATIONS")
    assert kg.name == "nations" and kg.num_entities == 14


def test_builtin_first_train_line_matches_file():
    kg = load_dataset("kinships")
    first = (Path(__import__("kgengine").__file__).parent / "datasets/kinships/train.txt").read_text().splitlines()[0]
    assert _named(kg, "train")[0] == tuple(first.split("\t"))


@pytest.mark.skipif(not (SHARED / "kinships" / "train.txt").is_file(), reason="shared data not present")
def test_shared_folder_matches_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("KGENGINE_CACHE_DIR", str(tmp_path))  # the shared folder is read-only
    builtin = load_dataset("kinships")
    shared = load_dataset(data_path=SHARED / "kinships")
    assert not (SHARED / "kinships" / ".kgengine_cache").exists() and any(tmp_path.iterdir())
    assert shared.name == "kinships"
    for split in ("train", "valid", "test"):
        assert sorted(_named(shared, split)) == sorted(_named(builtin, split))


# ---------------------------------------------------------------- folders and layouts

def test_load_from_folder_path(tmp_path):
    d = _raw_dir(tmp_path, name="mykg")
    kg = load_dataset(data_path=d)
    assert kg.name == "mykg"
    assert kg.num_entities == 5 and kg.num_relations == 3
    assert _named(kg, "train") == TRAIN
    assert _named(kg, "valid") == VALID
    assert _named(kg, "test") == TEST
    # ids are assigned in order of first appearance in train
    assert kg.entities == ["a", "b", "c", "d", "e"]
    assert kg.relations == ["r1", "r2", "r3"]
    assert kg.train[0].tolist() == [0, 0, 1]


def test_load_from_str_path(tmp_path):
    d = _raw_dir(tmp_path)
    assert _named(load_dataset(data_path=str(d)), "test") == TEST


def test_dglke_layout_data_path_slash_dataset(tmp_path):
    _raw_dir(tmp_path, name="fancy")
    kg = load_dataset("fancy", data_path=tmp_path)
    assert kg.name == "fancy"
    assert _named(kg, "train") == TRAIN


def test_dataset_name_with_folder_that_is_the_dataset(tmp_path):
    d = _raw_dir(tmp_path, name="folder")
    kg = load_dataset("label", data_path=d)  # no d/label: d itself is used, named after the dataset
    assert kg.name == "label"
    assert _named(kg, "valid") == VALID


def test_tiny_fixture(tiny_kg, tiny_kg_dir):
    assert isinstance(tiny_kg, KG)
    assert tiny_kg.num_entities == 6 and tiny_kg.num_relations == 3
    assert len(tiny_kg.train) == 8 and len(tiny_kg.valid) == 2 and len(tiny_kg.test) == 2
    assert tiny_kg.name == tiny_kg_dir.name


@pytest.mark.parametrize("order", ["htr", "rht", "trh", "thr", "rth"])
def test_raw_udd_column_orders_give_same_triples(tmp_path, order):
    ref = load_dataset(data_path=_raw_dir(tmp_path, name="ref"))
    other = load_dataset(data_path=_raw_dir(tmp_path, order=order, name="other"), fmt=f"raw_udd_{order}")
    for split in ("train", "valid", "test"):
        assert _named(other, split) == _named(ref, split)
        assert torch.equal(other.split(split), ref.split(split))


def test_wrong_column_order_is_not_silently_equal(tmp_path):
    d = _raw_dir(tmp_path, order="htr")
    kg = load_dataset(data_path=d)  # read as hrt: relations and tails swap
    assert _named(kg, "train") != TRAIN
    assert set(kg.relations) == {"b", "c", "d", "e", "a"}


def test_custom_delimiter(tmp_path):
    d = tmp_path / "comma"
    d.mkdir()
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        _write(d / f"{split}.txt", triples, sep=",")
    kg = load_dataset(data_path=d, delimiter=",")
    assert _named(kg, "test") == TEST


def test_blank_lines_and_crlf_and_whitespace_are_tolerated(tmp_path):
    d = _raw_dir(tmp_path)
    (d / "train.txt").write_bytes(b"\n".join(f" {h}\t{r} \t{t}\r".encode() for h, r, t in TRAIN) + b"\n\n   \n")
    kg = load_dataset(data_path=d)
    assert _named(kg, "train") == TRAIN


@pytest.mark.parametrize("order", ["hrt", "htr", "rth"])
def test_udd_with_dicts(tmp_path, order):
    d, entities, relations = _udd_dir(tmp_path, order)
    kg = load_dataset(data_path=d, fmt=f"udd_{order}")
    assert kg.entities == entities and kg.relations == relations
    assert _named(kg, "train") == TRAIN
    assert _named(kg, "valid") == VALID
    assert _named(kg, "test") == TEST
    assert kg.train[0].tolist() == [2, 1, 4]  # a r1 b in the dict's ids


def test_udd_load_udd_directly(tmp_path):
    d, entities, _ = _udd_dir(tmp_path)
    kg = load_udd(d)
    assert kg.entities == entities and kg.name == "udd"


def test_data_files_raw(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    _write(d / "tr.tsv", TRAIN)
    _write(d / "va.tsv", VALID)
    other = tmp_path / "elsewhere.tsv"
    _write(other, TEST)
    kg = load_dataset(data_path=d, data_files=["tr.tsv", "va.tsv", str(other)])  # relative and absolute
    assert _named(kg, "train") == TRAIN
    assert _named(kg, "valid") == VALID
    assert _named(kg, "test") == TEST


def test_data_files_udd(tmp_path):
    d, entities, relations = _udd_dir(tmp_path)
    for old, new in (("entities.dict", "ent.txt"), ("relations.dict", "rel.txt"), ("train.txt", "a.txt"),
                     ("valid.txt", "b.txt"), ("test.txt", "c.txt")):
        (d / old).rename(d / new)
    kg = load_dataset(data_path=d, fmt="udd_hrt", data_files=["ent.txt", "rel.txt", "a.txt", "b.txt", "c.txt"])
    assert kg.entities == entities and kg.relations == relations
    assert _named(kg, "test") == TEST


def test_data_files_wrong_count(tmp_path):
    d = _raw_dir(tmp_path)
    with pytest.raises(DataError, match="expected 3 files, got 2"):
        load_dataset(data_path=d, data_files=["train.txt", "valid.txt"])
    with pytest.raises(DataError, match="expected 5 files, got 3"):
        load_dataset(data_path=d, fmt="udd_hrt", data_files=["train.txt", "valid.txt", "test.txt"])


# ---------------------------------------------------------------- error paths

def _assert_names(exc: pytest.ExceptionInfo, path: Path, lineno: int | None):
    msg = str(exc.value)
    assert str(path) in msg, msg
    if lineno is not None:
        assert f"{path}:{lineno}:" in msg, msg


def test_error_two_fields(tmp_path):
    d = _raw_dir(tmp_path)
    _write_lines(d / "valid.txt", ["a\tr1\tb", "", "b\tr2"])  # blank line 2 still counts
    with pytest.raises(DataError, match="expected 3 fields") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "valid.txt", 3)
    assert "got 2" in str(exc.value)


def test_error_four_fields(tmp_path):
    d = _raw_dir(tmp_path)
    _write_lines(d / "train.txt", ["a\tr1\tb", "a\tr1\tb\t"])
    with pytest.raises(DataError, match="got 4") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "train.txt", 2)


def test_error_empty_field(tmp_path):
    d = _raw_dir(tmp_path)
    _write_lines(d / "test.txt", ["a\tr1\tb", "c\tr1\td", "a\t \tb"])
    with pytest.raises(DataError, match="empty field") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "test.txt", 3)


def test_error_udd_entity_id_out_of_range(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "valid.txt", ["0\t0\t1", "0\t1\t5"])  # 5 entities: 5 is out of range
    with pytest.raises(DataError, match=r"entity id out of range \[0, 5\)") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "valid.txt", 2)


def test_error_udd_negative_entity_id(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "test.txt", ["-1\t0\t1"])
    with pytest.raises(DataError, match="entity id out of range") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "test.txt", 1)


def test_error_udd_relation_id_out_of_range(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "train.txt", ["0\t0\t1", "1\t2\t2", "2\t3\t0"])  # 3 relations
    with pytest.raises(DataError, match=r"relation id out of range \[0, 3\)") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "train.txt", 3)


def test_error_udd_non_integer_id(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "train.txt", ["0\t0\t1", "x\t0\t1"])
    with pytest.raises(DataError, match="expected integer ids") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "train.txt", 2)


def test_error_udd_dict_non_integer_id(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "relations.dict", ["0\tr3", "one\tr1", "2\tr2"])
    with pytest.raises(DataError, match="got id 'one'") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "relations.dict", 2)


def test_error_udd_dict_duplicate_and_gap(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "entities.dict", ["0\te", "1\tc", "1\ta"])
    with pytest.raises(DataError, match="id 1 defined twice") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "entities.dict", 3)
    _write_lines(d / "entities.dict", ["0\te", "2\tc"])
    with pytest.raises(DataError, match="without gaps") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "entities.dict", None)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_error_empty_split_raw(tmp_path, split):
    d = _raw_dir(tmp_path)
    (d / f"{split}.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=f"the {split} split is empty") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / f"{split}.txt", None)


def test_error_empty_split_udd(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    (d / "test.txt").write_text("")
    with pytest.raises(DataError, match="the test split is empty") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "test.txt", None)


@pytest.mark.parametrize("missing", ["train.txt", "valid.txt", "test.txt"])
def test_error_missing_file_raw(tmp_path, missing):
    d = _raw_dir(tmp_path)
    (d / missing).unlink()
    with pytest.raises(DataError, match="file not found") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / missing, None)


def test_error_missing_dict_udd(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    (d / "entities.dict").unlink()
    with pytest.raises(DataError, match="file not found") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "entities.dict", None)


def test_error_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder") as exc:
        load_dataset(data_path=tmp_path / "nope")
    assert str(tmp_path / "nope") in str(exc.value)


@pytest.mark.parametrize("fmt", ["raw_udd_hrr", "raw_udd_hr", "udd_xyz", "raw_udd_hrtt"])
def test_error_bad_format_suffix(tmp_path, fmt):
    d = _raw_dir(tmp_path)
    with pytest.raises(DataError, match="permutation of 'hrt'") as exc:
        load_dataset(data_path=d, fmt=fmt)
    assert repr(fmt) in str(exc.value)


@pytest.mark.parametrize("fmt", ["csv", "hrt", "rawudd_hrt", ""])
def test_error_unknown_format(tmp_path, fmt):
    d = _raw_dir(tmp_path)
    with pytest.raises(DataError, match="--format") as exc:
        load_dataset(data_path=d, fmt=fmt)
    assert repr(fmt) in str(exc.value)


def test_error_unknown_builtin():
    with pytest.raises(DataError, match="'wn18rr' is not built in") as exc:
        load_dataset("wn18rr")
    for name in BUILTIN_DATASETS:
        assert name in str(exc.value)


def test_error_nothing_given():
    with pytest.raises(ValueError, match="--data_path"):
        load_dataset()


# ---------------------------------------------------------------- unseen policy

UNSEEN_VALID = [("a", "r1", "c"), ("a", "r1", "zz"), ("b", "r2", "c"), ("yy", "rnew", "b")]
UNSEEN_TEST = [("c", "r1", "e"), ("zz", "r1", "a")]  # zz is only in valid


def _unseen_dir(tmp_path):
    return _raw_dir(tmp_path, valid=UNSEEN_VALID, test=UNSEEN_TEST, name="unseen")


def test_unseen_keep_default_warns_and_keeps(tmp_path):
    d = _unseen_dir(tmp_path)
    with pytest.warns(UserWarning, match=r"3 entities/relations never occur in train") as rec:
        kg = load_dataset(data_path=d)
    assert any(str(d / "valid.txt") in str(w.message) for w in rec)
    assert _named(kg, "valid") == UNSEEN_VALID
    assert _named(kg, "test") == UNSEEN_TEST
    # the train vocabulary keeps the first ids, unseen names are appended
    assert kg.entities == ["a", "b", "c", "d", "e", "zz", "yy"]
    assert kg.relations == ["r1", "r2", "r3", "rnew"]
    train_ids = set(kg.train[:, [0, 2]].flatten().tolist())
    assert kg.entity_id("zz") not in train_ids and kg.entity_id("yy") not in train_ids
    # the test split only reuses zz (already added by valid): no second warning for test
    assert not any(str(d / "test.txt") in str(w.message) for w in rec)


def test_unseen_keep_explicit_on_test_split(tmp_path):
    d = _raw_dir(tmp_path, test=[("c", "r1", "e"), ("q", "r1", "a")], name="t")
    with pytest.warns(UserWarning) as rec:
        kg = load_dataset(data_path=d, unseen="keep")
    msgs = [str(w.message) for w in rec]
    assert any(str(d / "test.txt") in m and "'q'" in m and "unseen='keep'" in m for m in msgs), msgs
    assert _named(kg, "test")[1] == ("q", "r1", "a")


def test_unseen_drop(tmp_path):
    d = _unseen_dir(tmp_path)
    with pytest.warns(UserWarning, match="dropped") as rec:
        kg = load_dataset(data_path=d, unseen="drop")
    msgs = [str(w.message) for w in rec]
    assert any(str(d / "valid.txt") in m and "dropped 2 triples" in m for m in msgs), msgs
    assert any(str(d / "test.txt") in m and "dropped 1 triples" in m for m in msgs), msgs
    assert _named(kg, "valid") == [("a", "r1", "c"), ("b", "r2", "c")]
    assert _named(kg, "test") == [("c", "r1", "e")]
    assert kg.entities == ["a", "b", "c", "d", "e"]
    assert kg.relations == ["r1", "r2", "r3"]


def test_unseen_error(tmp_path):
    d = _unseen_dir(tmp_path)
    with pytest.raises(DataError, match="'zz' does not occur in the training split") as exc:
        load_dataset(data_path=d, unseen="error")
    _assert_names(exc, d / "valid.txt", 2)


def test_unseen_error_relation_on_test(tmp_path):
    d = _raw_dir(tmp_path, test=[("c", "r1", "e"), ("a", "r1", "b"), ("a", "rX", "b")], name="rel")
    with pytest.raises(DataError, match="'rX'") as exc:
        load_dataset(data_path=d, unseen="error")
    _assert_names(exc, d / "test.txt", 3)


@pytest.mark.parametrize("policy", ["keep", "drop", "error"])
def test_unseen_policies_no_warning_when_all_seen(tmp_path, policy):
    d = _raw_dir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kg = load_dataset(data_path=d, unseen=policy)
    assert _named(kg, "valid") == VALID and _named(kg, "test") == TEST


def test_unseen_bad_policy(tmp_path):
    d = _raw_dir(tmp_path)
    with pytest.raises(ValueError, match="unseen='ignore'"):
        load_raw_triples(d, unseen="ignore")


# ---------------------------------------------------------------- KG helpers

def test_remap_to_permuted_vocabulary(tmp_path):
    kg = load_dataset(data_path=_raw_dir(tmp_path))
    ents = ["zzz_extra"] + list(reversed(kg.entities))
    rels = ["r3", "r1", "r2", "r_extra"]
    out = kg.remap(ents, rels)
    assert out.entities == ents and out.relations == rels
    assert out.name == kg.name
    for split in ("train", "valid", "test"):
        assert _named(out, split) == _named(kg, split)
    assert not torch.equal(out.train, kg.train)
    assert out.entity_id("a") == ents.index("a")
    assert out.relation_id("r1") == 1


def test_remap_identity(tiny_kg):
    out = tiny_kg.remap(tiny_kg.entities, tiny_kg.relations)
    for split in ("train", "valid", "test"):
        assert torch.equal(out.split(split), tiny_kg.split(split))


def test_remap_missing_names(tiny_kg):
    with pytest.raises(DataError, match=r"1 entities and 0 relations") as exc:
        tiny_kg.remap([e for e in tiny_kg.entities if e != "c"], tiny_kg.relations)
    assert "'c'" in str(exc.value)
    with pytest.raises(DataError, match=r"0 entities and 1 relations"):
        tiny_kg.remap(tiny_kg.entities, tiny_kg.relations[:-1])


def test_entity_and_relation_id(tiny_kg):
    for i, name in enumerate(tiny_kg.entities):
        assert tiny_kg.entity_id(name) == i
    for i, name in enumerate(tiny_kg.relations):
        assert tiny_kg.relation_id(name) == i
    with pytest.raises(KeyError, match=re.escape("unknown entity 'nobody'")):
        tiny_kg.entity_id("nobody")
    with pytest.raises(KeyError, match=re.escape("unknown relation 'r99'")):
        tiny_kg.relation_id("r99")


def test_split_unknown(tiny_kg):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        tiny_kg.split("dev")


def test_kg_validates_tensors():
    z = torch.zeros((1, 3), dtype=torch.int64)
    with pytest.raises(DataError, match="int64"):
        KG(["a"], ["r"], z.to(torch.int32), z, z)
    with pytest.raises(DataError, match="entity ids outside"):
        KG(["a"], ["r"], torch.tensor([[0, 0, 1]]), z, z)
    with pytest.raises(DataError, match="relation ids outside"):
        KG(["a"], ["r"], torch.tensor([[0, 1, 0]]), z, z)
    kg = KG(["a"], ["r"], z, torch.empty((0, 3), dtype=torch.int64), z)
    assert "valid=0" in repr(kg)


# ---------------------------------------------------------------- text rules (BOM, header, bytes, line ends)

BOM = "\ufeff"


def test_bom_is_not_part_of_a_name(tmp_path):
    d = _raw_dir(tmp_path)
    for split, triples in (("train", TRAIN), ("valid", VALID)):
        (d / f"{split}.txt").write_bytes(BOM.encode() + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples).encode())
    kg = load_dataset(data_path=d)
    assert kg.entities == ["a", "b", "c", "d", "e"]
    assert _named(kg, "train") == TRAIN and _named(kg, "valid") == VALID
    from kgengine.data import read_triples
    assert read_triples(d / "train.txt")[0] == TRAIN[0]


def test_bom_only_at_file_start_is_dropped(tmp_path):
    d = _raw_dir(tmp_path)
    (d / "train.txt").write_text(BOM + "a\tr1\tb\n" + BOM + "c\tr1\td\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="never occur in train"):
        kg = load_dataset(data_path=d)
    assert kg.entities[:3] == ["a", "b", BOM + "c"]  # a BOM inside the file is a character like any other


def test_bom_in_udd_files(tmp_path):
    d, entities, relations = _udd_dir(tmp_path)
    for f in ("entities.dict", "relations.dict", "train.txt"):
        (d / f).write_bytes(BOM.encode() + (d / f).read_bytes())
    kg = load_dataset(data_path=d, fmt="udd_hrt")
    assert kg.entities == entities and kg.relations == relations
    assert _named(kg, "train") == TRAIN


HEADERS = ["head\trelation\ttail", "H\tR\tT", "Subject\tPredicate\tObject", "source\trelation\ttarget",
           "head\ttail\trelation"]


@pytest.mark.parametrize("header_line", HEADERS)
def test_header_row_warns_with_file_and_line(tmp_path, header_line):
    d = _raw_dir(tmp_path)
    _write_lines(d / "train.txt", ["", header_line] + ["\t".join(t) for t in TRAIN])
    with pytest.warns(UserWarning, match="looks like a header row") as rec:
        kg = load_dataset(data_path=d)
    msgs = [str(w.message) for w in rec if "header" in str(w.message)]
    assert len(msgs) == 1 and f"{d / 'train.txt'}:2:" in msgs[0] and "header=True" in msgs[0]
    assert len(kg.train) == len(TRAIN) + 1  # still loaded as a triple, as before


def test_header_rows_in_all_files_give_one_warning(tmp_path):
    d = _raw_dir(tmp_path)
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        _write_lines(d / f"{split}.txt", ["head\trelation\ttail"] + ["\t".join(t) for t in triples])
    with pytest.warns(UserWarning) as rec:
        load_dataset(data_path=d)
    msgs = [str(w.message) for w in rec if "header row" in str(w.message)]
    assert len(msgs) == 1
    assert all(f"{d / s}.txt:1" in msgs[0] for s in ("train", "valid", "test")), msgs


@pytest.mark.parametrize("first", ["a\tr1\tb", "head\tlikes\ttail", "heads\trelation\ttail", "h\tr"])
def test_no_header_warning_beyond_the_vocabulary(tmp_path, first):
    d = _raw_dir(tmp_path)
    _write_lines(d / "train.txt", [first, *["\t".join(t) for t in TRAIN]] if first.count("\t") == 2
                 else ["\t".join(t) for t in TRAIN])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(data_path=d)


def test_header_true_skips_first_nonblank_line_of_each_triple_file(tmp_path):
    d = _raw_dir(tmp_path)
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        _write_lines(d / f"{split}.txt", ["", "  ", "head\trelation\ttail"] + ["\t".join(t) for t in triples])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kg in (load_dataset(data_path=d, header=True), load_raw_triples(d, header=True)):
            assert _named(kg, "train") == TRAIN and _named(kg, "valid") == VALID and _named(kg, "test") == TEST
            assert "head" not in kg.entities


def test_header_true_line_numbers_still_count_the_header(tmp_path):
    d = _raw_dir(tmp_path)
    _write_lines(d / "test.txt", ["h\tr\tt", "c\tr1\te", "a\tr9\tb"])
    with pytest.raises(DataError, match="'r9' does not occur") as exc:
        load_dataset(data_path=d, header=True, unseen="error")
    _assert_names(exc, d / "test.txt", 3)


def test_header_udd(tmp_path):
    d, entities, _ = _udd_dir(tmp_path)
    for split in ("train", "valid", "test"):
        (d / f"{split}.txt").write_text("head\trelation\ttail\n" + (d / f"{split}.txt").read_text())
    with pytest.raises(DataError, match="looks like a header row: pass header=True") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "train.txt", 1)
    kg = load_udd(d, header=True)
    assert kg.entities == entities and _named(kg, "test") == TEST
    assert _named(load_dataset(data_path=d, fmt="udd_hrt", header=True), "valid") == VALID


@pytest.mark.parametrize("split,lineno", [("train", 3), ("valid", 1), ("test", 2)])
def test_undecodable_bytes_name_file_and_line(tmp_path, split, lineno):
    d = _raw_dir(tmp_path)
    lines = [b"a\tr1\tb", b"c\tr1\td", b"e\tr2\ta"]
    lines[lineno - 1] = b"a\tr\xff1\tb"
    (d / f"{split}.txt").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match="not UTF-8: byte 0xff") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / f"{split}.txt", lineno)


def test_undecodable_bytes_udd_and_dict(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    (d / "entities.dict").write_bytes((d / "entities.dict").read_bytes().replace(b"\tc", b"\t\xe9c"))
    with pytest.raises(DataError, match="not UTF-8") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "entities.dict", 2)


BAD_IDS = ["1_0", "+3", " 7", "\u0663", "\uff13", "0x1", "1.0", "1e2", "", "--1", "-", "3 4"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_udd_ids_must_be_plain_ascii_integers(tmp_path, bad):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "valid.txt", ["0\t0\t1", f"0\t{bad}\t1"])
    with pytest.raises(DataError) as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "valid.txt", 2)
    assert "expected integer ids" in str(exc.value) or "empty field" in str(exc.value) or "fields" in str(exc.value)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_dict_ids_must_be_plain_ascii_integers(tmp_path, bad):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "relations.dict", ["0\tr3", f"{bad}\tr1", "2\tr2"])
    with pytest.raises(DataError) as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "relations.dict", 2)


def test_udd_ids_trailing_whitespace_and_leading_zeros_are_fine(tmp_path):
    d, entities, relations = _udd_dir(tmp_path)
    _write_lines(d / "entities.dict", [f"{i}  \t{n}" for i, n in enumerate(entities)])
    rest = (d / "train.txt").read_text().splitlines()[1:]
    _write_lines(d / "train.txt", ["002 \t001\t004\r", *rest])
    kg = load_dataset(data_path=d, fmt="udd_hrt")
    assert kg.entities == entities and _named(kg, "train") == TRAIN


def test_dict_name_listed_twice(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "entities.dict", ["0\te", "1\tc", "2\ta", "3\t c ", "4\tb"])
    with pytest.raises(DataError, match=r"name 'c' listed twice, as ids 1 and 3 \(first at line 2\)") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "entities.dict", 4)


def test_dict_error_order_is_line_order(tmp_path):
    d, _, _ = _udd_dir(tmp_path)
    _write_lines(d / "relations.dict", ["0\tr3", "0\tr1", "x\tr3"])  # line 2: id twice, line 3: bad id
    with pytest.raises(DataError, match="id 0 defined twice") as exc:
        load_dataset(data_path=d, fmt="udd_hrt")
    _assert_names(exc, d / "relations.dict", 2)


def test_bare_cr_is_a_line_break(tmp_path):
    d = _raw_dir(tmp_path)
    (d / "train.txt").write_bytes(b"a\tr1\tb\rb\tr1\tc\r\rc\tr2\td\r\nd\tr2\te\re\tr3\ta")  # old Mac line ends
    assert _named(load_dataset(data_path=d), "train") == TRAIN
    (d / "train.txt").write_bytes(b"a\tr1\tb\nb\tr1\rc\n")  # a CR inside a line splits it: line 2 has 2 fields
    with pytest.raises(DataError, match="got 2") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "train.txt", 2)
    (d / "train.txt").write_bytes(b"a\tr1\tb\r\nb\tr1\tc\r\r\nc\tr2\n")  # CR, CRLF count one line each
    with pytest.raises(DataError, match="got 2") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "train.txt", 4)


def test_tabs_inside_names_with_another_delimiter(tmp_path):
    d = tmp_path / "comma"
    d.mkdir()
    _write_lines(d / "train.txt", ["a\tx, r1 ,b\t", "\tb,r1,c"])
    _write_lines(d / "valid.txt", ["a\tx,r1,c"])
    _write_lines(d / "test.txt", ["b,r1,a\tx"])
    kg = load_dataset(data_path=d, delimiter=",")
    assert kg.entities == ["a\tx", "b", "c"]  # inner tab kept; tabs and spaces around a field stripped
    assert _named(kg, "test") == [("b", "r1", "a\tx")]
    with pytest.raises(DataError, match="empty field") as exc:  # the same file read as TSV: 'a', 'x, r1 ,b', ''
        load_dataset(data_path=d)
    _assert_names(exc, d / "train.txt", 1)


def test_names_that_look_like_numbers_or_nan_stay_strings(tmp_path):
    triples = [("007", "1e5", "7"), ("7.0", "nan", "NA"), ("null", "#c", '"q"'), ("-0", "1e5", "007")]
    d = _raw_dir(tmp_path, train=triples, valid=triples[:1], test=triples[1:2])
    kg = load_dataset(data_path=d)
    assert kg.entities == ["007", "7", "7.0", "NA", "null", '"q"', "-0"]
    assert kg.relations == ["1e5", "nan", "#c"]
    assert _named(kg, "train") == triples


def test_duplicate_and_self_loop_triples_are_kept(tmp_path):
    train = TRAIN + [("a", "r1", "b"), ("c", "r1", "c")]
    kg = load_dataset(data_path=_raw_dir(tmp_path, train=train))
    assert _named(kg, "train") == train


# ---------------------------------------------------------------- every error names its file

def _errors_of(tmp_path) -> list[tuple[str, DataError]]:
    out = []

    def case(name, fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fn()
            except DataError as e:
                out.append((name, e))
            else:
                raise AssertionError(f"{name}: no DataError")

    d = _raw_dir(tmp_path, name="raw")
    u, _, _ = _udd_dir(tmp_path)
    case("data_files", lambda: load_dataset(data_path=d, data_files=["a"]))
    case("data_files_udd", lambda: load_dataset(data_path=u, fmt="udd_hrt", data_files=["a"]))
    case("suffix", lambda: load_dataset(data_path=d, fmt="raw_udd_hrx"))
    case("format", lambda: load_dataset(data_path=d, fmt="csv"))
    case("folder", lambda: load_dataset(data_path=d / "nope"))
    case("missing", lambda: load_dataset(data_path=d, data_files=["train.txt", "valid.txt", "nope.txt"]))
    case("dict_missing", lambda: load_dataset(data_path=u, fmt="udd_hrt", data_files=[
        "nope.dict", "relations.dict", "train.txt", "valid.txt", "test.txt"]))
    return out


def test_every_data_error_names_the_file_or_folder(tmp_path):
    for name, e in _errors_of(tmp_path):
        assert str(tmp_path) in str(e), (name, str(e))
        assert len(str(e)) > len(str(tmp_path)) + 20, (name, str(e))  # and says what is wrong


# ---------------------------------------------------------------- the vectorised reader gives today's KG

def _reference(d: Path, unseen: str = "keep", delimiter: str = "\t") -> tuple[list, list, dict]:
    """The loader before the vectorised reader, as an oracle: ids by first appearance, train
    heads and tails interleaved row by row, then valid/test names unseen in train."""
    rows = {}
    for s in ("train", "valid", "test"):
        with open(d / f"{s}.txt", encoding="utf-8") as f:
            rows[s] = [tuple(p.strip() for p in line.rstrip("\r\n").split(delimiter)) for line in f if line.strip()]
    ent, rel = {}, {}
    for h, r, t in rows["train"]:
        ent.setdefault(h, len(ent))
        rel.setdefault(r, len(rel))
        ent.setdefault(t, len(ent))
    out = {"train": rows["train"]}
    for s in ("valid", "test"):
        out[s] = []
        for h, r, t in rows[s]:
            if unseen == "drop" and (h not in ent or t not in ent or r not in rel):
                continue
            ent.setdefault(h, len(ent))
            rel.setdefault(r, len(rel))
            ent.setdefault(t, len(ent))
            out[s].append((h, r, t))
    ids = {s: [(ent[h], rel[r], ent[t]) for h, r, t in v] for s, v in out.items()}
    return list(ent), list(rel), ids


def _assert_same(kg: KG, ref: tuple[list, list, dict]) -> None:
    assert kg.entities == ref[0]
    assert kg.relations == ref[1]
    for s in ("train", "valid", "test"):
        assert kg.split(s).tolist() == [list(x) for x in ref[2][s]], s


def _random_graph(root: Path, n: int = 3000, seed: int = 0) -> Path:
    """Names of many kinds (numeric-looking, Freebase-like, non-ASCII, inner spaces, padded);
    valid/test use some names train never does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = [lambda i: str(i), lambda i: f"/m/0{i:x}", lambda i: f"café {i}", lambda i: f"0{i}", lambda i: f"e{i}.0"]
    names = [kinds[i % len(kinds)](i) for i in range(400)]
    rels = [f"/r/{i}" if i % 3 else str(i) for i in range(30)]
    d = root / "rand"
    d.mkdir()
    for split, m, top in (("train", n, 350), ("valid", n // 10, 400), ("test", n // 10, 400)):
        h, t = rng.integers(0, top, m), (rng.integers(0, top, m) ** 1.3).astype(int) % top
        r = rng.integers(0, 30 if split == "train" else 31, m)  # 30: a relation train does not have
        pad = rng.random(m) < 0.05
        lines = [f"{' ' if p else ''}{names[a]}\t{rels[b] if b < 30 else 'r_new'}\t{names[c]}{'  ' if p else ''}"
                 for a, b, c, p in zip(h, r, t, pad)]
        (d / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("name", sorted(BUILTIN_COUNTS))
def test_builtin_equals_reference_loader(name):
    import kgengine

    _assert_same(load_dataset(name), _reference(Path(kgengine.__file__).parent / "datasets" / name))


@pytest.mark.parametrize("unseen", ["keep", "drop"])
@pytest.mark.parametrize("chunk", [None, 97])
def test_generated_graph_equals_reference_loader(tmp_path, monkeypatch, unseen, chunk):
    if chunk:  # many chunks: the vocabulary grows across chunks and files
        _chunks(monkeypatch, chunk)
    d = _random_graph(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kg = load_dataset(data_path=d, unseen=unseen, cache=False)
    _assert_same(kg, _reference(d, unseen))


def test_line_reader_fallback_equals_vectorised(tmp_path, monkeypatch):
    d = _random_graph(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = load_dataset(data_path=d, cache=False)

        def no_pandas(*a, **k):
            raise T._Fallback

        monkeypatch.setattr(T, "_read_table_fast", no_pandas)
        monkeypatch.setattr(T, "_read_table_arrow", no_pandas)
        slow = load_dataset(data_path=d, cache=False)
    _assert_same(fast, _reference(d))
    _assert_same(slow, _reference(d))


def test_fallback_after_some_chunks_forgets_their_names(tmp_path, monkeypatch):
    """pandas (or pyarrow) reads a few chunks, then meets a whitespace line it keeps as a row: the
    file is read again line by line, and the names of the chunks already read are not counted twice."""
    _chunks(monkeypatch, 50)
    d = _random_graph(tmp_path)
    lines = (d / "valid.txt").read_text().splitlines()
    (d / "valid.txt").write_text("\n".join(lines[:200] + [" \t "] + lines[200:]) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(load_dataset(data_path=d, cache=False), _reference(d))


def test_unseen_keep_warnings_equal_reference_order(tmp_path):
    # a name new in valid as relation and entity at once, and several new names in one row
    d = _raw_dir(tmp_path, valid=[("a", "zz", "yy"), ("xx", "r1", "zz"), ("yy", "ww", "vv")], test=[("vv", "r1", "uu")])
    with pytest.warns(UserWarning) as rec:
        load_dataset(data_path=d)
    msgs = [str(w.message) for w in rec]
    want = "valid.txt: 5 entities/relations never occur in train (first: ['yy', 'zz', 'xx'])"
    assert any(want in m for m in msgs), msgs
    assert any("test.txt: 1 entities/relations never occur in train (first: ['uu'])" in m for m in msgs), msgs


@pytest.mark.skipif(not Path("/work/shared/tools/gen_synthetic_kg.py").is_file(), reason="generator not present")
def test_synthetic_kg_equals_reference_loader(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, "/work/shared/tools/gen_synthetic_kg.py", "--entities", "3000", "--relations", "20",
                    "--triples", "20000", "--out", str(tmp_path / "syn"), "--no-sha"], check=True, capture_output=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(load_dataset(data_path=tmp_path / "syn"), _reference(tmp_path / "syn"))


def test_vocab_hash_collisions_fall_back_to_exact_names(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_str_hash", lambda s: len(s) % 5)  # nearly every name collides (pandas' vocabulary)
    _chunks(monkeypatch, 300)
    d = _random_graph(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(load_dataset(data_path=d, cache=False), _reference(d))


def test_header_line_is_skipped_unchecked(tmp_path):
    d = _raw_dir(tmp_path)
    for split, triples in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        _write_lines(d / f"{split}.txt", ["\x0c", "# made by hand\tv2\t\t"] + ["\t".join(t) for t in triples])
    kg = load_dataset(data_path=d, header=True)
    assert _named(kg, "train") == TRAIN and _named(kg, "test") == TEST


def test_first_line_with_too_many_fields_is_refused(tmp_path):
    # pandas alone would only warn and drop the extra field of a first line
    d = _raw_dir(tmp_path)
    _write_lines(d / "valid.txt", ["a\tr2\tc\tx", "b\tr3\td"])
    with pytest.raises(DataError, match="got 4") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "valid.txt", 1)


@pytest.mark.parametrize("first", ["a\tr2\tc\t", "a\tr2\tc\t\t", "\n \na\tr2\tc\t"])
def test_first_line_with_a_trailing_delimiter_is_refused(tmp_path, first):
    # pandas alone reads a first line "a<TAB>r2<TAB>c<TAB>" as three fields
    d = _raw_dir(tmp_path)
    (d / "valid.txt").write_text(first + "\nb\tr3\td\n")
    with pytest.raises(DataError, match="got [45]") as exc:
        load_dataset(data_path=d)
    _assert_names(exc, d / "valid.txt", first.count("\n") + 1)


def test_a_wide_first_line_does_not_hide_wide_lines_below(tmp_path):
    # pandas alone sizes its table by a first line "h r t <TAB>" and then drops every line's 4th field
    d = _raw_dir(tmp_path)
    _write_lines(d / "train.txt", ["h\tr\tt\t", "a\tr1\tb", "b\tr1\tc\td"])
    with pytest.raises(DataError, match="got 4") as exc:
        load_dataset(data_path=d, header=True)
    _assert_names(exc, d / "train.txt", 3)
    _write_lines(d / "train.txt", ["head\trelation\ttail\tweight", *["\t".join(t) for t in TRAIN]])
    assert _named(load_dataset(data_path=d, header=True), "train") == TRAIN


# ---------------------------------------------------------------- the pyarrow reader

def test_whitespace_table_is_what_str_strip_strips():
    assert T._WS == "".join(c for c in map(chr, range(0x110000)) if c.isspace())


@needs_pyarrow
def test_arrow_strip_is_str_strip():
    import pyarrow as pa
    import pyarrow.compute as pc

    chars = sorted(set(T._WS) | {chr(c) for c in range(0x3100)} | set("\u180e\u200b\u200c\u200d\u2060\ufeff\U0001f600"))
    chars = [c for c in chars if not 0xD800 <= ord(c) < 0xE000]
    for form in ("{}", "a{}", "{}a", "{}a{}", "{}{}b{}", "x{}y"):
        vals = [form.format(c, c, c) for c in chars]
        assert pc.utf8_trim(pa.array(vals), T._WS).to_pylist() == [v.strip() for v in vals], form
        assert pc.utf8_rtrim(pa.array(vals), T._WS).to_pylist() == [v.rstrip() for v in vals], form


@needs_pyarrow
def test_arrow_ids_are_plain_ids():
    import pyarrow as pa

    fields = ["0", "7", "007", "123", "-1", "-0", "-007", "1 ", "1\t", "1\u3000", "2\x1c", "9" * 18, "9" * 19,
              "-" + "9" * 18, "-" + "9" * 19, "1" * 40] + [b for b in BAD_IDS if b.strip()]
    for group in (fields, [f for f in fields if f.isdigit() and len(f) < 19], ["1" * 19]):
        want = [T._plain_id(f) for f in group]
        assert T._arrow_ids(pa.array(group)).tolist() == want, group
        assert T._arrow_ids(pa.chunked_array([group[:2], group[2:]])).tolist() == want, group
    for empty in ("", " ", "\t"):
        with pytest.raises(T._Fallback):
            T._arrow_ids(pa.array(["1", empty]))


def _variants_dir(root: Path) -> Path:
    """train/valid/test with a BOM, CRLF and CR line ends, empty lines, padded names, a header row."""
    d = root / "variants"
    d.mkdir()
    (d / "train.txt").write_bytes(b"\xef\xbb\xbf\r\n  \nhead\trel\ttail\r\n" + b"".join(
        f"{h}\t {r}\t{t}  {end}".encode() for (h, r, t), end in zip(TRAIN, ["\r\n", "\n", "\r", "\n\n", "\r\r\n"])))
    (d / "valid.txt").write_bytes(b"h\tr\tt\n" + "".join(f"{h}\t{r}\t{t}\n" for h, r, t in VALID).encode())
    (d / "test.txt").write_bytes(b"\n\n\xef\xbb\xbfh\tr\tt\n" + "{}\t{}\t{}".format(*TEST[0]).encode()
                                 + "\n\u3000{}\t{}\t{}\xa0\n".format(*TEST[1]).encode())
    return d


def test_common_text_variants_load_alike(tmp_path):
    kg = load_dataset(data_path=_variants_dir(tmp_path), header=True)
    assert kg.entities == ["a", "b", "c", "d", "e"] and kg.relations == ["r1", "r2", "r3"]
    assert _named(kg, "train") == TRAIN and _named(kg, "valid") == VALID and _named(kg, "test") == TEST


def test_pyarrow_reads_common_variants_without_the_line_reader(tmp_path, monkeypatch, reader):
    if reader != "pyarrow":
        pytest.skip("pandas checks the first lines with the line reader")
    d = _variants_dir(tmp_path)
    monkeypatch.setattr(T, "_iter_rows", lambda *a, **k: pytest.fail("fell back to the line reader"))
    kg = load_dataset(data_path=d, header=True, cache=False)
    assert _named(kg, "train") == TRAIN and _named(kg, "test") == TEST
    u, entities, _ = _udd_dir(tmp_path)
    _write_lines(u / "entities.dict", [f"{i} \t {n}" for i, n in enumerate(entities)])
    assert load_dataset(data_path=u, fmt="udd_hrt", cache=False).entities == entities


@needs_pyarrow
def test_pyarrow_chunks_by_rows_bytes_and_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "_ARROW", True)
    d = _random_graph(tmp_path)
    ref = _reference(d)
    for rows, nbytes, block, large in ((7, 1 << 28, 1 << 12, 1 << 30), (1 << 22, 2000, 1 << 12, 1 << 30),
                                       (1000, 1 << 28, 1 << 22, 1 << 30), (300, 1 << 28, 1 << 22, 100)):
        monkeypatch.setattr(T, "_ARROW_CHUNK_ROWS", rows)
        monkeypatch.setattr(T, "_ARROW_CHUNK_BYTES", nbytes)
        monkeypatch.setattr(T, "_ARROW_BLOCK", block)
        monkeypatch.setattr(T, "_LARGE_NAMES", large)  # names in large_string from the second chunk on
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _assert_same(load_dataset(data_path=d, cache=False), ref)


@pytest.mark.parametrize("header", [False, True])
def test_a_name_that_starts_with_a_bom_after_the_bom(tmp_path, header):
    d = _raw_dir(tmp_path)
    (d / "train.txt").write_bytes(BOM.encode() + (b"h\tr\tt\n" if header else b"") + (BOM + "a\tr1\tb\n").encode()
                                  + "".join("\t".join(t) + "\n" for t in TRAIN[1:]).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kg = load_dataset(data_path=d, header=header)
    assert kg.entities[:3] == [BOM + "a", "b", "c"]


def test_header_with_bad_bytes_and_a_header_beyond_the_first_block(tmp_path, monkeypatch):
    d = _raw_dir(tmp_path)
    (d / "train.txt").write_bytes(b"\n \nh\xff\tr\tt\n" + "".join("\t".join(t) + "\n" for t in TRAIN).encode())
    with pytest.raises(DataError, match="not UTF-8") as exc:
        load_dataset(data_path=d, header=True)
    _assert_names(exc, d / "train.txt", 3)
    monkeypatch.setattr(T, "_HEAD_BYTES", 4)  # the header line ends past the bytes looked at first
    (d / "train.txt").write_bytes(b"\n \nhead\trel\ttail\n" + "".join("\t".join(t) + "\n" for t in TRAIN).encode())
    assert _named(load_dataset(data_path=d, header=True, cache=False), "train") == TRAIN


def test_without_pyarrow_pandas_reads(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(T, "_ARROW", None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    assert not T.arrow_enabled()
    monkeypatch.setattr(T, "_read_table_arrow", lambda *a, **k: pytest.fail("used pyarrow"))
    kg = load_dataset(data_path=_raw_dir(tmp_path), cache=False)
    assert _named(kg, "train") == TRAIN
    monkeypatch.setattr(T, "_ARROW", True)
    monkeypatch.setenv("KGENGINE_NO_PYARROW", "1")
    assert not T.arrow_enabled()
    monkeypatch.setenv("KGENGINE_NO_PYARROW", "0")
    assert T.arrow_enabled("\t") and not T.arrow_enabled("::") and not T.arrow_enabled("\u00a6")
