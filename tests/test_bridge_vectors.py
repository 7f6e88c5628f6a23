"""bridge.vectors: KG vector tables from kgengine folders and exports, with file:line errors."""
import numpy as np
import pytest
import torch

from bridge.vectors import KGVectors, load_kg_vectors


@pytest.fixture
def trained(tmp_path):
    """A saved ComplEx model folder (6 entities, complex dim 3: 6 stored columns)."""
    from kgengine.models import create_model
    from kgengine.saved import TrainedKGE

    torch.manual_seed(0)
    model = create_model("ComplEx", 6, 2, 3)
    t = TrainedKGE(model, ["dog.n.01", "cat.n.01", "paris", "hot_dog.n.01", "e5", "e6"], ["r1", "r2"],
                   config={"dataset": "tiny"})
    t.save_pretrained(tmp_path / "run")
    return t, tmp_path / "run"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---- the table itself -----------------------------------------------------------------
def test_basics_and_lookup_errors():
    kv = KGVectors(["a", "b", "c"], torch.arange(6.0).view(3, 2), source="mem")
    assert len(kv) == 3 and kv.dim == 2 and kv.vectors.dtype == torch.float32
    assert kv.index("b") == 1 and "c" in kv and "z" not in kv
    assert kv.indices(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="'zebra'"):
        kv.index("zebra")
    with pytest.raises(KeyError, match="'q'"):
        kv.indices(["a", "q"])


@pytest.mark.parametrize("names, vec, msg", [
    (["a", "b"], torch.zeros(3, 2), "2 names but 3"),
    (["a", "a"], torch.zeros(2, 2), "'a' occurs more than once"),
    (["a", "b"], torch.zeros(4), "2-D"),
    (["a", "b"], torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), r"row 1 \('b'\).*NaN"),
    (["a"], torch.tensor([[float("inf")]]), "row 0"),
])
def test_table_validation(names, vec, msg):
    with pytest.raises(ValueError, match=msg):
        KGVectors(names, vec)


# ---- kgengine folder and exports ---------------------------------------------------------
def test_from_kgengine_complex_real_imag(trained):
    t, path = trained
    kv = KGVectors.from_kgengine(path)
    assert kv.names == t.entities
    assert kv.dim == 6  # complex dim 3 stored as real | imaginary
    assert torch.equal(kv.vectors, t.model.entity_embeddings.detach())
    assert torch.equal(load_kg_vectors(path).vectors, kv.vectors)


@pytest.mark.parametrize("fmt", ["npy", "tsv", "w2v", "safetensors"])
def test_export_formats_round_trip(trained, tmp_path, fmt):
    from kgengine.export import export

    t, _ = trained
    out = tmp_path / f"exp_{fmt}"
    files = export(t, out, fmt)
    ref = t.model.entity_embeddings.detach()
    entity_file = next(f for f in files if "entit" in f.name and f.name != "entities.tsv" or f.suffix == ".safetensors")
    for src in (out, entity_file):  # the folder and the file itself
        kv = load_kg_vectors(src)
        assert kv.names == t.entities
        assert torch.equal(kv.vectors, ref)  # text formats write 9 digits: exact for float32


def test_word2vec_names_with_spaces_round_trip(trained, tmp_path):
    """kge export percent-encodes whitespace and '%' in w2v names; the bridge decodes them."""
    from kgengine.export import export
    from kgengine.saved import TrainedKGE

    t, _ = trained
    names = [f"name {i}" if i % 3 == 0 else f"name_{i}" if i % 3 == 1 else f"{i}%" for i in range(len(t.entities))]
    renamed = TrainedKGE(t.model, names, t.relations, t.triples, t.config)
    kv = load_kg_vectors(next(f for f in export(renamed, tmp_path, "w2v")))
    assert kv.names == names
    assert KGVectors.from_word2vec(tmp_path / next(p.name for p in tmp_path.iterdir()), unescape=False).names[0] \
        == "name%200"


def test_from_npy_explicit_names_and_errors(tmp_path):
    np.save(tmp_path / "x_entity.npy", np.ones((2, 3), dtype=np.float64))
    names = write(tmp_path / "names.tsv", "0\ta\n1\tb\n")
    kv = KGVectors.from_npy(tmp_path / "x_entity.npy", names)
    assert kv.names == ["a", "b"] and kv.vectors.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="entities.tsv"):
        KGVectors.from_npy(tmp_path / "x_entity.npy")
    write(tmp_path / "entities.tsv", "0\ta\n1\tb\n2\tc\n")
    with pytest.raises(ValueError, match="2 rows but .*3 entities"):
        KGVectors.from_npy(tmp_path / "x_entity.npy")
    write(tmp_path / "entities.tsv", "0\ta\n5\tb\n")
    with pytest.raises(ValueError, match="entities.tsv:2"):
        KGVectors.from_npy(tmp_path / "x_entity.npy")
    np.save(tmp_path / "flat.npy", np.ones(3))
    with pytest.raises(ValueError, match="2-D"):
        KGVectors.from_npy(tmp_path / "flat.npy", names)
    arr = np.ones((2, 3))
    arr[1, 2] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(ValueError, match=r"row 1 \('b'\)"):
        KGVectors.from_npy(tmp_path / "nan.npy", names)
    write(tmp_path / "junk.npy", "not numpy")
    with pytest.raises(ValueError, match="junk.npy"):
        KGVectors.from_npy(tmp_path / "junk.npy", names)


# ---- text formats: every error names file and line ----------------------------------------------
def test_tsv_parse_and_blank_lines(tmp_path):
    p = write(tmp_path / "v.tsv", "new york\t1\t2\n\nparis\t3\t4.5e-1\n")
    kv = KGVectors.from_tsv(p)
    assert kv.names == ["new york", "paris"]
    assert torch.allclose(kv.vectors, torch.tensor([[1.0, 2.0], [3.0, 0.45]]))


@pytest.mark.parametrize("text, msg", [
    ("a\t1\t2\nb\t3\n", r"v.tsv:2: 1 values, but line 1 has 2 \(dimension mismatch\)"),
    ("a\t1\t2\nb\n", r"v.tsv:2: expected 'name<TAB>v1<TAB>...', got 1 column"),
    ("a\t1\t2\n\nb\t3\tx\n", r"v.tsv:3: value 2 'x' is not a number"),
    ("a\t1\t2\nb\tnan\t1\n", r"v.tsv:2: entity 'b' has a NaN"),
    ("\n\n", "no vectors"),
    ("a\t1\na\t2\n", "'a' occurs more than once"),
])
def test_tsv_errors(tmp_path, text, msg):
    with pytest.raises(ValueError, match=msg):
        KGVectors.from_tsv(write(tmp_path / "v.tsv", text))


def test_word2vec_parse(tmp_path):
    p = write(tmp_path / "v.txt", "2 3\ndog 1 2 3\ncat  4 5 6 \n")
    kv = KGVectors.from_word2vec(p)
    assert kv.names == ["dog", "cat"] and kv.vectors[1].tolist() == [4.0, 5.0, 6.0]
    assert load_kg_vectors(p).names == ["dog", "cat"]


@pytest.mark.parametrize("text, msg", [
    ("", "empty file"),
    ("dog 1 2\n", r"v.txt:1: expected the word2vec header"),
    ("2 3\ndog 1 2 3\ncat 1 2\n", r"v.txt:3: expected a name and 3 values.*got 3 field.*dimension mismatch"),
    ("2 2\ndog 1 2\ncat 1 2 3\n", r"v.txt:3: .*got 4 field"),
    ("3 2\ndog 1 2\ncat 1 2\n", "header says 3 vectors, the file has 2"),
    ("1 2\ndog 1 NaN\n", r"v.txt:2: entity 'dog' has a NaN"),
])
def test_word2vec_errors(tmp_path, text, msg):
    with pytest.raises(ValueError, match=msg):
        KGVectors.from_word2vec(write(tmp_path / "v.txt", text))


def test_binary_file_rejected(tmp_path):
    p = tmp_path / "v.bin"
    p.write_bytes(b"2 3\n\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match="not UTF-8"):
        KGVectors.from_word2vec(p)


# ---- dispatch and own format ---------------------------------------------------------------------
def test_load_dispatch_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_kg_vectors(tmp_path / "missing")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no KG vectors found"):
        load_kg_vectors(tmp_path / "empty_dir")
    with pytest.raises(ValueError, match=r"plain.txt:1: neither a word2vec header"):
        load_kg_vectors(write(tmp_path / "plain.txt", "dog 1 2\n"))
    with pytest.raises(ValueError, match="empty file"):
        load_kg_vectors(write(tmp_path / "blank.txt", "\n"))
    two = tmp_path / "two"
    two.mkdir()
    for k in ("a", "b"):
        np.save(two / f"{k}_entity.npy", np.ones((1, 2)))
    with pytest.raises(ValueError, match="several"):
        load_kg_vectors(two)


def test_save_pretrained_round_trip(tmp_path):
    kv = KGVectors(["a b", "c\td"], torch.randn(2, 5))
    kv.save_pretrained(tmp_path / "kg")
    back = load_kg_vectors(tmp_path / "kg")
    assert back.names == kv.names and torch.equal(back.vectors, kv.vectors)
    with pytest.raises(ValueError, match="line break"):
        KGVectors(["x\ny"], torch.zeros(1, 1)).save_pretrained(tmp_path / "bad")
