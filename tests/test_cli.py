"""The kge command end to end: train, eval, predict, similar, export, --help, DGL-KE aliases, errors."""
import json

import numpy as np
import pytest

from kgengine.cli import main
from kgengine.saved import TrainedKGE

FAST = ["--dim", "8", "--max_step", "20", "-b", "64", "-n", "8", "--no-progress"]


@pytest.fixture(scope="module")
def kin_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("kin") / "run"
    assert main(["train", "--dataset", "kinships", "--model", "ComplEx", "--save-path", str(path), *FAST]) == 0
    return path


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "similar", "export"])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: kge " + cmd in capsys.readouterr().out


def test_train_writes_a_loadable_folder(kin_model):
    metrics = json.loads((kin_model / "metrics.json").read_text())
    assert set(metrics["test"]) == {"mrr", "mr", "hits@1", "hits@3", "hits@10"}
    trained = TrainedKGE.from_pretrained(kin_model)
    assert trained.model.name == "ComplEx" and len(trained.entities) == 104
    assert trained.config["hidden_dim"] == 8 and trained.config["max_step"] == 20


def test_dglke_flag_names_equal_short_forms(tmp_path):
    short = ["train", "--dataset", "nations", "--model", "TransE_l1", "--dim", "8", "--save-path", str(tmp_path / "a"),
             "--max-step", "5", "--batch-size", "32", "--neg-sample-size", "8", "-adv", "--no-progress", "--no-eval"]
    dglke = ["train", "--dataset", "nations", "--model_name", "TransE_l1", "--hidden_dim", "8",
             "--save_path", str(tmp_path / "b"), "--max_step", "5", "--batch_size", "32", "--neg_sample_size", "8",
             "--neg_adversarial_sampling", "--no-progress", "--no_eval", "-de"]
    assert main(short) == 0 and main(dglke) == 0
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert a == b
    assert a["neg_adversarial_sampling"] is True and a["hidden_dim"] == 8


def test_dglke_eval_flags(tmp_path, capsys):
    base = ["train", "--dataset", "nations", "--model", "DistMult", "--dim", "8", "--max_step", "5", "-b", "32",
            "-n", "8", "--no-progress"]
    assert main([*base, "--save_path", str(tmp_path / "a"), "--no_eval_filter", "--eval_percent", "50",
                 "--batch_size_eval", "7", "--neg_sample_size_eval", "10", "--loss_genre", "Softmax"]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (cfg["eval_filter"], cfg["eval_percent"], cfg["batch_size_eval"], cfg["neg_sample_size_eval"],
            cfg["loss_genre"]) == (False, 50.0, 7, 10, "Softmax")
    assert main([*base, "--save_path", str(tmp_path / "b"), "--neg_sample_size_eval", "-1"]) == 0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["neg_sample_size_eval"] == 0 and cfg["eval_filter"] is True and cfg["loss_genre"] == "Logsigmoid"
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert 0 < a["test"]["mrr"] <= 1
    assert main([*base, "--save_path", str(tmp_path / "c"), "--eval_percent", "0"]) == 2
    assert "eval_percent" in capsys.readouterr().err


def test_presets_apply_unless_overridden(tmp_path):
    assert main(["train", "--dataset", "nations", "--model", "ComplEx", "--save-path", str(tmp_path / "p"),
                 "--max_step", "3", "--no-progress", "--no-eval", "--lr", "0.05"]) == 0
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["lr"] == 0.05  # explicit
    assert cfg["hidden_dim"] == 200 and cfg["regularization_coef"] == 1e-5  # ComplEx preset
    assert cfg["batch_size"] == 512  # built-in dataset preset


def test_train_from_data_path(tiny_kg_dir, tmp_path):
    assert main(["train", "--data-path", str(tiny_kg_dir), "--model", "DistMult", "--save-path", str(tmp_path / "t"),
                 "--dim", "4", "--max_step", "5", "-b", "4", "-n", "2", "--no-progress"]) == 0
    assert TrainedKGE.from_pretrained(tmp_path / "t").dataset == "tiny"


def test_eval_json_matches_metrics_file(kin_model, capsys):
    assert main(["eval", "--model-path", str(kin_model), "--dataset", "kinships", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads((kin_model / "metrics.json").read_text())
    assert main(["eval", "--model-path", str(kin_model), "--split", "test", "--json"]) == 0  # stored triples
    assert json.loads(capsys.readouterr().out)["test"] == out["test"]


def test_predict_and_similar(kin_model, capsys):
    assert main(["predict", "--model-path", str(kin_model), "--head", "person12", "--rel", "term7",
                 "--topk", "5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and all(r["name"].startswith("person") for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert main(["predict", "--model-path", str(kin_model), "--head", "person12", "--tail", "person3",
                 "--topk", "3"]) == 0
    assert "term" in capsys.readouterr().out
    assert main(["similar", "--model-path", str(kin_model), "--entity", "person12", "--topk", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and "person12" not in [r["name"] for r in rows]


def test_export_npy_has_dglke_names(kin_model, tmp_path):
    assert main(["export", "--model-path", str(kin_model), "--format", "npy", "w2v", "--out", str(tmp_path)]) == 0
    ent = np.load(tmp_path / "kinships_ComplEx_entity.npy")
    assert ent.shape == (104, 16)
    assert (tmp_path / "kinships_ComplEx_relation.npy").is_file()
    assert (tmp_path / "kinships_ComplEx_entity.w2v.txt").read_text().splitlines()[0] == "104 16"


@pytest.mark.parametrize("argv,needle", [
    (["predict", "--head", "nobody", "--rel", "term7"], "unknown entity 'nobody'"),
    (["predict", "--head", "person1"], "exactly two"),
    (["similar", "--entity", "person1", "--topk", "0"], "topk"),
])
def test_errors_exit_2_with_a_message(kin_model, capsys, argv, needle):
    assert main([argv[0], "--model-path", str(kin_model), *argv[1:]]) == 2
    assert needle in capsys.readouterr().err


def test_malformed_data_names_file_and_line(tiny_kg_dir, tmp_path, capsys):
    with open(tiny_kg_dir / "valid.txt", "a") as f:
        f.write("a\tr1\n")
    assert main(["train", "--data-path", str(tiny_kg_dir), "--save-path", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "valid.txt:3" in err and "expected 3 fields" in err


def test_unknown_builtin_and_missing_model(tmp_path, capsys):
    assert main(["train", "--dataset", "freebase", "--save-path", str(tmp_path / "y"), *FAST]) == 2
    assert "not built in" in capsys.readouterr().err
    assert main(["eval", "--model-path", str(tmp_path / "nothing")]) == 2
    assert "not a kgengine model folder" in capsys.readouterr().err


def test_kge_bridge_is_routed_to_the_bridge_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bridge", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: kge bridge" in out and all(c in out for c in ("fit", "pretrain", "probe", "finetune", "corpus"))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bridge" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["bridge", "corpus", "--help"])
    assert e.value.code == 0 and "usage: kge bridge corpus" in capsys.readouterr().out


def test_add_on_commands_come_from_entry_points_and_kgengine_never_imports_bridge(monkeypatch, capsys):
    import ast
    from pathlib import Path

    from kgengine import cli

    assert cli.addon_commands()["bridge"].value == "bridge.cli:main"
    calls = []

    class FakeEP:
        name, value = "hello", "somewhere:main"

        def load(self):
            return lambda argv, prog: calls.append((argv, prog)) or 7

    monkeypatch.setattr(cli, "addon_commands", lambda: {"hello": FakeEP()})
    assert main(["hello", "a", "--b"]) == 7 and calls == [(["a", "--b"], "kge hello")]
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "hello" in out and "bridge" not in out
    for path in Path(cli.__file__).parent.rglob("*.py"):  # the engine does not know its add-ons
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not any(n == "bridge" or n.startswith("bridge.") for n in names), f"{path}:{node.lineno}"
