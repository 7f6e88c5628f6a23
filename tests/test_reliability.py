"""Reliability: a run owns its save path, saves are whole, checkpoints never run code, damaged files are
refused by name, and the kge command answers input and environment errors with one line and exit code 2.
benchmarks/RELIABILITY.md lists the fault classes these tests cover."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from kgengine import TrainConfig, Trainer, load_dataset, train
from kgengine.cli import main
from kgengine.errors import ConfigError, MemoryPlanError, ModelFolderError, RunLockedError, SavePathError
from kgengine.persist import LOCK_NAME, SaveLock, commit_folder, verify_folder
from kgengine.saved import TrainedKGE
from kgengine.train import read_checkpoint

SMALL = dict(hidden_dim=16, batch_size=64, neg_sample_size=16, lr=0.1, progress=False, log_interval=10)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kinships():
    return load_dataset("kinships")


def tables(x):
    return {k: v.detach().clone() for k, v in x.model.tables.items()}


# ---- a run owns its save path ---------------------------------------------------------------
def test_a_fresh_run_refuses_a_folder_with_another_run(kinships, tmp_path):
    old = dict(max_step=40, checkpoint_interval=20, seed=1, **SMALL)
    train(kinships, TrainConfig(**old), tmp_path / "r", evaluate_test=False)
    with pytest.raises(SavePathError, match="--resume.*--overwrite"):
        train(kinships, TrainConfig(**dict(old, seed=2, max_step=10)), tmp_path / "r", evaluate_test=False)
    # nothing of the old run was touched by the refused one
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == [
        "step_000000020.pt", "step_000000040.pt"]
    TrainedKGE.from_pretrained(tmp_path / "r")


def test_overwrite_moves_the_old_run_aside_and_resume_continues_the_new_one(kinships, tmp_path):
    old = dict(max_step=40, checkpoint_interval=20, seed=1, **SMALL)
    first = train(kinships, TrainConfig(**old), tmp_path / "r", evaluate_test=False)
    new = dict(old, seed=2, lr=0.05, max_step=20, checkpoint_interval=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(kinships, TrainConfig(**new), tmp_path / "r", overwrite=True, evaluate_test=False)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.replaced-")]
    assert len(aside) == 1 and any("moved to" in str(w.message) for w in caught)
    assert torch.equal(TrainedKGE.from_pretrained(aside[0]).model.tables["entity"], first.model.tables["entity"])
    # only the new run's checkpoints remain, and --resume continues *it* (the stale-checkpoint bug)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == [
        "step_000000010.pt", "step_000000020.pt"]
    resumed = Trainer(kinships, TrainConfig(**dict(new, max_step=30)), tmp_path / "r")
    resumed.train(resume=True)
    assert resumed.step == 30 and resumed.history[0]["step"] == 10


def test_resume_names_every_training_field_that_differs(kinships, tmp_path):
    cfg = dict(max_step=20, checkpoint_interval=10, seed=1, **SMALL)
    train(kinships, TrainConfig(**cfg), tmp_path / "r", evaluate_test=False)
    with pytest.raises(ConfigError) as e:
        train(kinships, TrainConfig(**dict(cfg, seed=5, lr=0.3, max_step=40)), tmp_path / "r", resume=True)
    assert "seed" in str(e.value) and "lr" in str(e.value) and "max_step" not in str(e.value)


def test_resume_refuses_another_dataset(kinships, tmp_path):
    cfg = dict(max_step=20, checkpoint_interval=10, **SMALL)
    train(kinships, TrainConfig(**cfg), tmp_path / "r", evaluate_test=False)
    with pytest.raises(ConfigError, match="dataset"):
        train(load_dataset("umls"), TrainConfig(**dict(cfg, max_step=40)), tmp_path / "r", resume=True)


def test_save_path_that_is_a_file(kinships, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SavePathError, match="is a file"):
        train(kinships, TrainConfig(max_step=5, **SMALL), tmp_path / "f")
    with pytest.raises(SavePathError, match="part of the path is a file"):
        train(kinships, TrainConfig(max_step=5, **SMALL), tmp_path / "f" / "under")


# ---- the lock --------------------------------------------------------------------------------
def _hold_lock(path: Path) -> subprocess.Popen:
    code = f"""
import sys, time
from kgengine.persist import SaveLock
SaveLock({str(path)!r}).acquire()
print('locked', flush=True)
time.sleep(60)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_run_into_a_locked_folder_is_refused_at_once(kinships, tmp_path):
    holder = _hold_lock(tmp_path / "r")
    try:
        with pytest.raises(RunLockedError, match=f"pid.*{holder.pid}"):
            train(kinships, TrainConfig(max_step=5, **SMALL), tmp_path / "r")
    finally:
        holder.kill()
        holder.wait()
    # killed with SIGKILL: the OS released its flock; the next run takes the stale lock over with a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(kinships, TrainConfig(max_step=5, **SMALL), tmp_path / "r", evaluate_test=False)
    assert any("taking over a lock" in str(w.message) for w in caught)
    assert (tmp_path / "r" / LOCK_NAME).read_text() == ""  # released at the end of the run


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with SaveLock(tmp_path / "x"), SaveLock(tmp_path / "x"):
        pass
    with SaveLock(tmp_path / "x"):
        pass


# ---- checkpoints -----------------------------------------------------------------------------
class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/kgengine_pwned_marker")


def test_a_crafted_checkpoint_is_refused_and_never_executed(kinships, tmp_path):
    MARKER.unlink(missing_ok=True)
    cfg = dict(max_step=20, checkpoint_interval=10, **SMALL)
    train(kinships, TrainConfig(**cfg), tmp_path / "r", evaluate_test=False)
    evil = tmp_path / "r" / "checkpoints" / "step_000000030.pt"
    torch.save({"step": 30, "payload": _Boom()}, evil)  # torch.save pickles the object
    with pytest.raises(ModelFolderError, match="refused"):
        read_checkpoint(evil)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = Trainer(kinships, TrainConfig(**dict(cfg, max_step=25)), tmp_path / "r")
        t.train(resume=True)
    assert not MARKER.exists()
    assert any("step_000000030.pt" in str(w.message) and "refused" in str(w.message) for w in caught)
    assert t.history[0]["step"] == 10  # continued from step 20, the newest checkpoint that loads


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "not-a-dict", "missing-keys"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(kinships, tmp_path, damage):
    cfg = dict(max_step=20, checkpoint_interval=10, seed=3, **SMALL)
    full = train(kinships, TrainConfig(**dict(cfg, max_step=30)), tmp_path / "full", evaluate_test=False)
    train(kinships, TrainConfig(**cfg), tmp_path / "r", evaluate_test=False)
    newest = tmp_path / "r" / "checkpoints" / "step_000000020.pt"
    data = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        newest.write_bytes(b"")
    elif damage == "garbage":
        newest.write_bytes(os.urandom(2000))
    elif damage == "not-a-dict":
        torch.save([1, 2, 3], newest)
    else:
        torch.save({"step": 20}, newest)
    with pytest.raises(ModelFolderError):
        read_checkpoint(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(kinships, TrainConfig(**dict(cfg, max_step=30)), tmp_path / "r", resume=True,
                        evaluate_test=False)
    assert any("step_000000020.pt" in str(w.message) for w in caught)
    # step 10 -> 30 replays exactly what the uninterrupted run did
    for k, v in tables(full).items():
        assert torch.equal(v, tables(resumed)[k])


def test_resume_with_no_readable_checkpoint_says_so(kinships, tmp_path):
    cfg = dict(max_step=10, checkpoint_interval=10, **SMALL)
    train(kinships, TrainConfig(**cfg), tmp_path / "r", evaluate_test=False)
    (tmp_path / "r" / "checkpoints" / "step_000000010.pt").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelFolderError, match="none of the 1 checkpoints"):
            train(kinships, TrainConfig(**dict(cfg, max_step=20)), tmp_path / "r", resume=True)


# ---- saved-model folders ---------------------------------------------------------------------
@pytest.fixture
def saved(kinships, tmp_path):
    train(kinships, TrainConfig(max_step=10, **SMALL), tmp_path / "m")
    return tmp_path / "m"


MODEL_FILES = ["model.safetensors", "model_config.json", "entities.tsv", "relations.tsv", "triples.safetensors",
               "config.json"]


@pytest.mark.parametrize("name", MODEL_FILES)
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "append"])
def test_every_file_of_a_saved_model_is_checked(saved, name, damage):
    path = saved / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(data + b"\n")
    with pytest.raises(ModelFolderError, match=name if damage != "delete" or name != "model.safetensors"
                       else "no model.safetensors"):
        TrainedKGE.from_pretrained(saved)


@pytest.mark.parametrize("name,damage,needle", [
    ("entities.tsv", lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "entities.tsv has 103 names"),
    ("model_config.json", lambda t: "[1, 2]", "expected a JSON object"),
    ("model_config.json", lambda t: json.dumps(dict(json.loads(t), colour="red")), "unknown key"),
    ("config.json", lambda t: "{not json", "unreadable"),
    ("entities.tsv", lambda t: t.replace("0\t", "zero\t", 1), "entities.tsv:1"),
])
def test_inconsistent_files_are_refused_without_a_manifest(saved, name, damage, needle):
    """Folders from before manifests (or hand-edited ones) are still checked for consistency."""
    (saved / "manifest.json").unlink()
    path = saved / name
    path.write_text(damage(path.read_text()))
    with pytest.raises(ModelFolderError, match=needle):
        TrainedKGE.from_pretrained(saved)


def _commit(folder: Path, value: float, fail_at: str | None = None, monkeypatch=None) -> None:
    files = {n: (lambda p, n=n: p.write_text(f"{n} {value}\n")) for n in ("a.txt", "b.txt", "c.txt")}
    commit_folder(folder, files)


def test_an_interrupted_save_leaves_the_old_or_the_new_folder(tmp_path, monkeypatch):
    """Kill points inside commit_folder: before the commit point the old files stay; after it the next
    reader rolls the new ones forward. Never a mix."""
    import kgengine.persist as persist

    folder = tmp_path / "f"
    _commit(folder, 1)
    real_replace = os.replace

    class Killed(BaseException):  # like SIGKILL: nothing after it runs (no cleanup of our own)
        pass

    # 1) killed while staging (after the first new file): old content intact, strays cleaned by the next reader
    calls = {"n": 0}

    def die_second_write(write, tmp, final):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed
        write(tmp)

    monkeypatch.setattr(persist, "_run_writer", die_second_write)
    with pytest.raises(Killed):
        _commit(folder, 2)
    monkeypatch.undo()
    verify_folder(folder)
    assert {p.read_text() for p in folder.glob("*.txt")} == {f"{n} 1\n" for n in ("a.txt", "b.txt", "c.txt")}
    assert not list(folder.glob("*.kge-new"))

    # 2) killed after the commit point, between two renames: the reader finishes the save
    renames = {"n": 0}

    def die_mid_rename(src, dst):
        if str(src).endswith(".kge-new"):
            renames["n"] += 1
            if renames["n"] == 2:
                raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(persist.os, "replace", die_mid_rename)
    with pytest.raises(Killed):
        _commit(folder, 3)
    monkeypatch.undo()
    verify_folder(folder)
    assert {p.read_text() for p in folder.glob("*.txt")} == {f"{n} 3\n" for n in ("a.txt", "b.txt", "c.txt")}


def _kill_script(folder: Path, kill_at: str) -> str:
    return textwrap.dedent(f"""
        import os, signal
        import kgengine.persist as persist
        from kgengine import load_dataset, train, TrainConfig
        real_run_writer, real_replace = persist._run_writer, os.replace
        seen = {{"writes": 0, "renames": 0}}
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        def run_writer(write, tmp, final):
            seen["writes"] += 1
            if {kill_at!r} == "staging" and final.name == "entities.tsv":
                die()
            real_run_writer(write, tmp, final)
        def replace(src, dst):
            if str(src).endswith(".kge-new"):
                seen["renames"] += 1
                if {kill_at!r} == "rename" and seen["renames"] == 3:
                    die()
            real_replace(src, dst)
        persist._run_writer = run_writer
        persist.os.replace = replace
        cfg = TrainConfig(max_step=60, checkpoint_interval=20, hidden_dim=16, batch_size=64, neg_sample_size=16,
                          seed=9, progress=False, log_interval=10)
        train(load_dataset("kinships"), cfg, {str(folder)!r}, resume=True, evaluate_test=False)
        print("finished")
    """)


@pytest.mark.parametrize("kill_at", ["staging", "rename", "random"])
def test_kill_9_during_training_or_the_final_save(kinships, tmp_path, kill_at):
    """A run extends a finished model (--resume) and is killed -9 while it trains or saves: the folder then
    holds the old complete model or the new one, never a mix, and --resume still works."""
    folder = tmp_path / "m"
    cfg = dict(max_step=40, checkpoint_interval=20, seed=9, **SMALL)
    old = tables(train(kinships, TrainConfig(**cfg), folder, evaluate_test=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _kill_script(folder, kill_at)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    if kill_at == "random":
        import random
        import time

        time.sleep(random.uniform(1.0, 3.0))  # start-up (imports) then training: somewhere in there
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    if kill_at != "random":
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    loaded = TrainedKGE.from_pretrained(folder)  # recovers an interrupted save if there is one
    got = tables(loaded)
    is_old = all(torch.equal(got[k], old[k]) for k in old)
    if kill_at == "staging":
        assert is_old  # killed before the commit point: nothing of the new save is visible
    if kill_at == "rename":
        assert not is_old and loaded.config["steps_done"] == 60  # after it: rolled forward, the new model
    # either way the run can be continued
    resumed = train(kinships, TrainConfig(**dict(cfg, max_step=80)), folder, resume=True, evaluate_test=False)
    assert resumed.config["steps_done"] == 80


# ---- kge eval and metrics --------------------------------------------------------------------
def test_kge_eval_never_changes_the_models_metrics(saved, tmp_path, capsys):
    before = (saved / "metrics.json").read_bytes()
    for extra in (["--split", "valid"], ["--no-filter"], ["--dataset", "kinships", "--ties", "optimistic"]):
        assert main(["eval", "--model-path", str(saved), *extra]) == 0
    assert (saved / "metrics.json").read_bytes() == before
    assert main(["eval", "--model-path", str(saved), "--split", "test", "--output", str(tmp_path / "o.json")]) == 0
    assert set(json.loads((tmp_path / "o.json").read_text())) == {"test"}


def test_a_save_drops_the_old_metrics(kinships, tmp_path):
    cfg = dict(max_step=20, checkpoint_interval=10, **SMALL)
    train(kinships, TrainConfig(**cfg), tmp_path / "r")
    assert (tmp_path / "r" / "metrics.json").is_file()
    train(kinships, TrainConfig(**dict(cfg, max_step=30)), tmp_path / "r", resume=True, evaluate_test=False)
    assert not (tmp_path / "r" / "metrics.json").exists()  # they described the previous model


# ---- one-line errors from the kge command ----------------------------------------------------
FAST = ["--max_step", "5", "--dim", "8", "-b", "32", "-n", "8", "--no-progress"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_cli_errors_are_one_line_with_exit_2(saved, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert main(["train", "--dataset", "kinships", "--save-path", str(tmp_path / "file"), *FAST]) == 2
    assert "is a file" in _err(capsys)
    assert main(["train", "--dataset", "kinships", "--save-path", str(saved), *FAST]) == 2
    assert "--overwrite" in _err(capsys)
    assert main(["train", "--dataset", "kinships", "--save-path", str(tmp_path / "n"), "-rc", "-1", *FAST]) == 2
    assert "regularization_coef" in _err(capsys)
    (saved / "model_config.json").write_text("[1]")
    for cmd in (["eval"], ["predict", "--head", "person1", "--rel", "term1"], ["similar", "--entity", "person1"],
                ["export", "--out", str(tmp_path / "x")]):
        assert main([cmd[0], "--model-path", str(saved), *cmd[1:]]) == 2
        assert "model_config.json" in _err(capsys)
    if not torch.cuda.is_available():
        assert main(["eval", "--model-path", str(saved), "--device", "cuda"]) == 2
        assert "CUDA" in _err(capsys)


def test_a_full_disk_while_writing_metrics_loses_no_metrics(tmp_path, capsys, monkeypatch):
    import importlib

    train_mod = importlib.import_module("kgengine.train")  # (kgengine.train is also the train function)

    real = train_mod.atomic_write_json

    def full(path, obj):
        if Path(path).name != "metrics.json":
            return real(path, obj)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(train_mod, "atomic_write_json", full)
    assert main(["train", "--dataset", "kinships", "--save-path", str(tmp_path / "m"), *FAST]) == 2
    out, err = capsys.readouterr()
    assert "mrr" in out and "test" in out  # printed before the write failed
    assert "No space left on device" in err and "metrics.json" in err


def test_a_full_disk_during_the_final_save_names_the_file_and_keeps_the_old_model(tmp_path, capsys, monkeypatch):
    import kgengine.persist as persist

    saved = tmp_path / "m"
    assert main(["train", "--dataset", "kinships", "--save-path", str(saved), *FAST, "--max_step", "10",
                 "--checkpoint_interval", "10"]) == 0
    before = TrainedKGE.from_pretrained(saved).model.tables["entity"].clone()
    real = persist._run_writer

    def full(write, tmp, final):
        if final.name == "entities.tsv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))
        real(write, tmp, final)

    monkeypatch.setattr(persist, "_run_writer", full)
    assert main(["train", "--dataset", "kinships", "--save-path", str(saved), "--resume", *FAST,
                 "--max_step", "20", "--checkpoint_interval", "10"]) == 2
    assert "entities.tsv" in _err(capsys)
    monkeypatch.undo()
    assert torch.equal(TrainedKGE.from_pretrained(saved).model.tables["entity"], before)


def test_non_finite_vectors_are_refused_by_predict_similar_and_export(saved, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    t = load_file(str(saved / "model.safetensors"))
    t["entity"][7] = float("nan")
    save_file(t, str(saved / "model.safetensors"))
    (saved / "manifest.json").unlink()  # as if saved so by an older version: the content check still refuses
    for cmd in (["predict", "--head", "person1", "--rel", "term1"], ["similar", "--entity", "person1"],
                ["export", "--out", str(tmp_path / "x")]):
        assert main([cmd[0], "--model-path", str(saved), *cmd[1:]]) == 2
        assert "1 of 104 rows with NaN or inf" in _err(capsys)


def test_debug_shows_the_traceback_and_bugs_keep_theirs(saved, monkeypatch, capsys):
    good = (saved / "model_config.json").read_text()
    (saved / "model_config.json").write_text("[1]")
    with pytest.raises(ModelFolderError):
        main(["--debug", "eval", "--model-path", str(saved)])
    with pytest.raises(ModelFolderError):
        main(["eval", "--model-path", str(saved), "--debug"])
    import kgengine.predict as predict_mod

    def bug(*a, **k):
        raise KeyError("an internal bug")

    monkeypatch.setattr(predict_mod, "similar", bug)
    (saved / "model_config.json").write_text(good)
    with pytest.raises(KeyError):
        main(["similar", "--model-path", str(saved), "--entity", "person1"])


# ---- memory ----------------------------------------------------------------------------------
def test_a_run_that_cannot_fit_is_refused_before_allocating(kinships, monkeypatch):
    import kgengine.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**20)
    with pytest.raises(MemoryPlanError, match=r"needs about .* GiB on cpu but 0.0 GiB is free.*--hidden_dim"):
        Trainer(kinships, TrainConfig(max_step=5, **SMALL))
    monkeypatch.setenv("KGENGINE_SKIP_MEMORY_CHECK", "1")
    Trainer(kinships, TrainConfig(max_step=5, **SMALL))


def test_the_memory_plan_counts_tables_and_adagrad_state():
    from kgengine.memory import memory_plan

    items = memory_plan(TrainConfig(model_name="ComplEx", hidden_dim=200), 5_000_000, 10, 100, 100, False)
    by = {it.what.split(" ")[0] + " " + it.what.split(" ")[1]: it.bytes for it in items}
    assert by["entity table"] == 5_000_000 * 400 * 4 and by["entity Adagrad"] == 5_000_000 * 400 * 4
    offloaded = memory_plan(TrainConfig(hidden_dim=8, gpu=[0], mix_cpu_gpu=True), 100, 2, 10, 10, False)
    assert {it.device for it in offloaded if "table" in it.what} == {"cpu"}
    rowwise = memory_plan(TrainConfig(model_name="ComplEx", hidden_dim=200, optimizer_state="row"), 5_000_000, 10,
                          100, 100, False)
    assert next(it.bytes for it in rowwise if it.what.startswith("entity Adagrad")) == 5_000_000 * 4


def test_unreadable_data_and_unwritable_export_are_one_line(saved, tiny_kg_dir, tmp_path, capsys):
    (tiny_kg_dir / "valid.txt").unlink()
    (tiny_kg_dir / "valid.txt").mkdir()  # open() fails with an OSError naming the file (root ignores chmod)
    assert main(["train", "--data-path", str(tiny_kg_dir), "--save-path", str(tmp_path / "t"), *FAST]) == 2
    assert "valid.txt" in _err(capsys)
    (tmp_path / "afile").write_text("x")
    assert main(["export", "--model-path", str(saved), "--out", str(tmp_path / "afile"), "--format", "tsv"]) == 2
    assert "afile" in _err(capsys)
