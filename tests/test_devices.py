"""Placements and processes, checked on the CPU: offloaded tables (the --mix_cpu_gpu code path with a
CPU compute device), the asynchronous update thread, worker processes on shared tables, bf16 autocast,
the torch.compile fallback, and training on a machine without DGL. The CUDA runs of the same paths are
in test_cuda.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from kgengine import TrainConfig, Trainer, load_dataset, train
from kgengine.optim import RowSparseAdagrad
from kgengine.parallel import split_positives, worker_devices
from kgengine.rowstore import RowStore
from kgengine.sampling import StepBatch, triple_degrees

SMALL = dict(hidden_dim=16, batch_size=64, neg_sample_size=16, lr=0.1, progress=False, log_interval=10)


@pytest.fixture(scope="module")
def kinships():
    return load_dataset("kinships")


def tables(x):
    return {k: v.detach().cpu().clone() for k, v in x.model.tables.items()}


# ---- configuration ----------------------------------------------------------------------------
def test_gpu_list_sets_device_and_one_process_per_gpu():
    cfg = TrainConfig(gpu=[1, 2], **SMALL)
    assert cfg.device == "cuda:1" and cfg.num_proc == 2 and cfg.offloaded()
    assert worker_devices(cfg) == ["cuda:1", "cuda:2"]
    cfg = TrainConfig(gpu=[0], num_proc=3, **SMALL)
    assert worker_devices(cfg) == ["cuda:0"] * 3
    assert TrainConfig(gpu=[-1], **SMALL).device == "cpu"
    assert worker_devices(TrainConfig(num_proc=2, **SMALL)) == ["cpu", "cpu"]
    assert not TrainConfig(num_proc=2, **SMALL).offloaded()


@pytest.mark.parametrize("bad", [dict(async_update=True), dict(num_proc=0), dict(gpu=[0, -1])])
def test_bad_placement_flags_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad, **SMALL)


def test_degrees_by_bincount_match_a_loop():
    triples = torch.tensor([[0, 0, 1], [1, 1, 1], [2, 0, 0]])
    expected = [0] * 4
    for h, _, t in triples.tolist():
        expected[h] += 1
        expected[t] += 1
    assert triple_degrees(triples, 4).tolist() == expected


def test_split_positives_is_a_seeded_partition():
    shares = split_positives(103, 3, seed=5)
    assert [len(s) for s in shares] == [35, 34, 34]
    assert torch.equal(torch.sort(torch.cat(shares)).values, torch.arange(103))
    assert all(torch.equal(a, b) for a, b in zip(shares, split_positives(103, 3, seed=5)))
    assert not torch.equal(shares[0], split_positives(103, 3, seed=6)[0])


def test_step_batch_stays_put_on_the_cpu():
    b = StepBatch(torch.arange(3), torch.tensor([0, 1, 2, 2]), torch.arange(1), torch.zeros(2, dtype=torch.long))
    assert b.to(torch.device("cpu")) is b


# ---- offloaded tables -------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["TransE_l2", "ComplEx", "TransR"])
def test_offloaded_tables_give_the_resident_result(kinships, model):
    """--mix_cpu_gpu's gather/update path (here with a CPU compute device) changes no number."""
    cfg = dict(model_name=model, max_step=25, seed=2, **SMALL)
    plain = train(kinships, TrainConfig(**cfg), evaluate_test=False)
    mixed = train(kinships, TrainConfig(mix_cpu_gpu=True, **cfg), evaluate_test=False)
    for k, v in tables(plain).items():
        assert torch.equal(v, tables(mixed)[k]), k


def test_async_update_applies_every_update_and_learns(kinships):
    cfg = TrainConfig(model_name="ComplEx", max_step=300, seed=1, mix_cpu_gpu=True, async_update=True,
                      **dict(SMALL, hidden_dim=32))
    trainer = Trainer(kinships, cfg)
    before = tables(trainer)
    trained = trainer.train()
    store = trainer.engine.store
    assert store.updates_applied == 300 * 2  # every step: the entity and the relation table
    assert store._thread is None  # stopped when training ends
    assert all(torch.isfinite(v).all() for v in tables(trained).values())
    assert not torch.equal(before["entity"], tables(trained)["entity"])
    from kgengine.evaluate import evaluate

    assert evaluate(trained.model, kinships.test, kinships.all_triples())["mrr"] > 0.3


def test_async_update_error_surfaces_on_the_training_thread():
    W = {"entity": torch.zeros(5, 2)}
    opt = RowSparseAdagrad(W, lr=0.1)
    store = RowStore(opt, torch.device("cpu"), offload=True, async_update=True)

    def broken(*a, **k):
        raise MemoryError("update failed")

    opt.add_increments = broken
    idx = torch.tensor([0, 1])
    store.gather("entity", idx, idx)
    store.update("entity", idx, idx, torch.ones(2, 2))
    with pytest.raises(MemoryError, match="update failed"):
        store.flush()
    store.close()


def test_async_update_is_refused_for_resident_tables():
    opt = RowSparseAdagrad({"entity": torch.zeros(3, 2)}, lr=0.1)
    with pytest.raises(ValueError, match="offload"):
        RowStore(opt, torch.device("cpu"), offload=False, async_update=True)


def test_offloaded_gather_reads_the_rows_it_is_given():
    W = torch.arange(12.0).view(6, 2)
    store = RowStore(RowSparseAdagrad({"entity": W}, lr=0.1), torch.device("cpu"), offload=True)
    idx = torch.tensor([4, 1])
    rows = store.gather("entity", idx, idx)
    assert rows.requires_grad and rows.is_leaf
    assert torch.equal(rows.detach(), W[idx])


# ---- worker processes -------------------------------------------------------------------------
def test_two_worker_processes_train_the_shared_tables(kinships, tmp_path):
    cfg = TrainConfig(model_name="ComplEx", max_step=400, seed=0, num_proc=2, num_thread=1, checkpoint_interval=200,
                      **dict(SMALL, hidden_dim=32, log_interval=100))
    trainer = Trainer(kinships, cfg, tmp_path / "mp")
    before = tables(trainer)
    trained = trainer.train()
    after = tables(trained)
    # the parent's tables are the ones the workers updated (shared memory)
    assert not torch.equal(before["entity"], after["entity"])
    assert not torch.equal(before["relation"], after["relation"])
    assert torch.count_nonzero(trainer.optimizer.state["entity"]) > 0
    assert trainer.step == 400
    log = [json.loads(x) for x in (tmp_path / "mp" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [100, 200, 300, 400]
    assert log[-1]["loss"] < log[0]["loss"]
    from kgengine.evaluate import evaluate

    mrr = evaluate(trained.model, kinships.test, kinships.all_triples())["mrr"]
    assert mrr > 0.3
    # resume with workers: not bit-identical, but it continues from the checkpoint and loses nothing
    more = Trainer(kinships, TrainConfig(**dict(cfg.to_dict(), max_step=600)), tmp_path / "mp")
    resumed = more.train(resume=True)
    assert more.step == 600
    assert evaluate(resumed.model, kinships.test, kinships.all_triples())["mrr"] > mrr - 0.05


def test_a_failing_worker_stops_training_with_its_error(kinships):
    trainer = Trainer(kinships, TrainConfig(max_step=20, num_proc=2, num_thread=1, **SMALL))
    trainer.tables["entity"].fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="worker"):
        trainer.train()


# ---- bf16 autocast and torch.compile ----------------------------------------------------------
@pytest.mark.parametrize("model", ["TransE_l2", "DistMult", "ComplEx"])
def test_amp_loss_is_close_to_the_float32_loss(kinships, model):
    cfg = dict(model_name=model, seed=4, **SMALL)
    full, half = Trainer(kinships, TrainConfig(**cfg)), Trainer(kinships, TrainConfig(amp=True, **cfg))
    a, b = full.train_step(0), half.train_step(0)
    assert a == pytest.approx(b, rel=2e-2)
    assert half.tables["entity"].dtype == torch.float32 and half.optimizer.state["entity"].dtype == torch.float32
    assert not torch.equal(full.tables["entity"], half.tables["entity"])  # bf16 scoring is not a no-op


def test_compile_falls_back_to_eager_when_compiling_fails(kinships, monkeypatch):
    def failing_compile(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", failing_compile)
    cfg = dict(max_step=5, seed=1, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = train(kinships, TrainConfig(compile=True, **cfg), evaluate_test=False)
    assert any("--compile" in str(w.message) for w in caught)
    eager = train(kinships, TrainConfig(**cfg), evaluate_test=False)
    for k, v in tables(eager).items():
        assert torch.equal(v, tables(compiled)[k])


# ---- no DGL -----------------------------------------------------------------------------------
def test_training_evaluation_and_export_run_without_dgl(tmp_path):
    """A lent GPU machine has torch but no DGL: nothing on the training path may import it."""
    code = f"""
import sys
sys.modules['dgl'] = None  # any import of dgl now raises ImportError
import kgengine
from kgengine import load_dataset, train, TrainConfig
from kgengine.export import export
kg = load_dataset('kinships')
t = train(kg, TrainConfig(max_step=20, hidden_dim=8, batch_size=64, neg_sample_size=8, progress=False,
                          neg_deg_sample=True), {str(tmp_path / 'run')!r})
export(t, {str(tmp_path / 'vec')!r}, 'npy')
assert sys.modules['dgl'] is None
print('ok', t.config['metrics']['test']['mrr'] > 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["ok", "True"]


def test_gpu_blocks_are_larger_than_cache_blocks():
    from kgengine import models

    assert models.block_budget(torch.device("cpu"), models.CACHE_BLOCK_BYTES) == models.CACHE_BLOCK_BYTES
    assert models.block_budget(torch.device("cuda"), models.CACHE_BLOCK_BYTES) >= 64 * models.CACHE_BLOCK_BYTES
    assert models.block_budget(torch.device("cuda"), models.BLOCK_BUDGET_BYTES) >= models.BLOCK_BUDGET_BYTES


def test_gpu_check_script_starts_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh on a CPU-only machine: says so, skips the CUDA parts, dry-runs the pipeline."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the script would run the full check")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(["bash", os.path.join(root, "benchmarks", "gpu_check.sh"), str(tmp_path)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "no CUDA device" in out.stdout
    records = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    sections = {r["section"] for r in records}
    assert {"presets", "eval", "throughput", "big"} <= sections
    assert records[-1]["failed"] == []
    assert all(r["pos_per_s"] > 0 for r in records if r["section"] == "throughput")


def test_rowwise_state_trains_resident_and_offloaded_alike(kinships):
    cfg = dict(model_name="ComplEx", max_step=25, seed=2, optimizer_state="row", **SMALL)
    plain = Trainer(kinships, TrainConfig(**cfg))
    assert plain.optimizer.state["entity"].shape == (kinships.num_entities, 1)
    plain.train()
    mixed = Trainer(kinships, TrainConfig(mix_cpu_gpu=True, **cfg))
    mixed.train()
    for k, v in tables(plain).items():
        assert torch.equal(v, tables(mixed)[k]), k


# ---- OpenMP wait policy ---------------------------------------------------------------------------
@pytest.mark.parametrize("first, env, warns", [
    ("import torch; import kgengine", {}, True),  # too late: libgomp already spins
    ("import kgengine; import torch", {}, False),
    ("import torch; import kgengine", {"OMP_WAIT_POLICY": "ACTIVE"}, False),  # the user's own choice
])
def test_spinning_wait_policy_is_detected(first, env, warns):
    code = f"""{first}
import os, warnings
from kgengine import TrainConfig, Trainer, load_dataset
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    Trainer(load_dataset("kinships"), TrainConfig(num_thread=2, hidden_dim=8, progress=False))
    Trainer(load_dataset("kinships"), TrainConfig(num_thread=1, hidden_dim=8, progress=False))
print(sum("wait policy" in str(w.message) for w in caught), os.environ["OMP_WAIT_POLICY"])
"""
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env},
                         check=True).stdout.split()
    assert out == [str(int(warns)), env.get("OMP_WAIT_POLICY", "PASSIVE")]
