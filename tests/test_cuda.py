"""The CUDA paths against the CPU: every model's step, evaluation ranks, offloaded tables (--mix_cpu_gpu)
and worker processes sharing one GPU. Skipped without a GPU; benchmarks/gpu_check.sh runs them on a lent one."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kgengine import TrainConfig, Trainer, load_dataset, model_names, train
from kgengine.evaluate import FilterIndex, evaluate, on_device, rank_triples

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SMALL = dict(hidden_dim=16, batch_size=64, neg_sample_size=16, lr=0.1, progress=False, log_interval=10)


@pytest.fixture(scope="module", autouse=True)
def exact_float32():
    # the CPU reference is plain float32: keep TF32 off for this comparison
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope="module")
def kinships():
    return load_dataset("kinships")


def tables(trainer):
    return {k: v.detach().cpu() for k, v in trainer.tables.items()}


def close(a, b, tol=1e-4):
    return all(torch.allclose(a[k], b[k], rtol=tol, atol=tol) for k in a)


@pytest.mark.parametrize("model", model_names())
def test_cuda_steps_equal_cpu_steps(kinships, model):
    cfg = dict(model_name=model, seed=3, **SMALL)
    cpu, gpu = Trainer(kinships, TrainConfig(**cfg)), Trainer(kinships, TrainConfig(device="cuda", **cfg))
    assert gpu.tables["entity"].is_cuda and gpu.optimizer.state["entity"].is_cuda
    for step in range(4):  # both corruption sides
        a, b = cpu.train_step(step), gpu.train_step(step)
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5), (step, a, b)
    assert close(tables(cpu), tables(gpu))


@pytest.mark.parametrize("model", ["TransE_l2", "ComplEx", "RotatE"])
def test_mix_cpu_gpu_equals_gpu_resident(kinships, model):
    cfg = dict(model_name=model, seed=5, max_step=20, device="cuda", **SMALL)
    resident = Trainer(kinships, TrainConfig(**cfg))
    mixed = Trainer(kinships, TrainConfig(mix_cpu_gpu=True, **cfg))
    assert mixed.tables["entity"].device.type == "cpu"
    resident.train()
    mixed.train()
    assert close(tables(resident), tables(mixed), 1e-5)


def test_async_update_on_the_gpu_learns(kinships):
    cfg = TrainConfig(model_name="ComplEx", seed=1, max_step=400, device="cuda", mix_cpu_gpu=True, async_update=True,
                      **dict(SMALL, hidden_dim=32))
    trainer = Trainer(kinships, cfg)
    trained = trainer.train()
    assert trainer.engine.store.updates_applied == 400 * 2
    assert evaluate(on_device(trained.model, "cuda"), kinships.test, kinships.all_triples())["mrr"] > 0.3


@pytest.mark.parametrize("model", ["TransE_l2", "ComplEx", "TransR", "RotatE"])
def test_cuda_ranks_equal_cpu_ranks(kinships, model):
    trained = train(kinships, TrainConfig(model_name=model, max_step=50, seed=0, **SMALL), evaluate_test=False)
    fi = FilterIndex(kinships.all_triples(), kinships.num_entities, kinships.num_relations)
    gpu_model = on_device(trained.model, "cuda")
    assert gpu_model.tables["entity"].is_cuda
    for side in ("tail", "head"):
        a = rank_triples(trained.model, kinships.test, side, fi)
        b = rank_triples(gpu_model, kinships.test, side, fi)
        # float32 sums in another order may flip a near-tie: allow a handful, not a pattern
        assert (a != b).float().mean() < 0.01, side
        assert abs(float((1 / a).mean() - (1 / b).mean())) < 2e-3


def test_non_finite_loss_on_the_gpu_names_its_step(kinships):
    trainer = Trainer(kinships, TrainConfig(device="cuda", max_step=30, **SMALL))
    trainer.cfg.max_step = 10
    trainer.train()
    trainer.cfg.max_step = 30
    trainer.tables["entity"].fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="step 10"):
        trainer.train()


def test_amp_on_the_gpu_stays_close(kinships):
    cfg = dict(model_name="ComplEx", seed=2, device="cuda", **SMALL)
    a = Trainer(kinships, TrainConfig(**cfg)).train_step(0)
    b = Trainer(kinships, TrainConfig(amp=True, **cfg)).train_step(0)
    assert a == pytest.approx(b, rel=2e-2)


def test_two_worker_processes_share_one_gpu(kinships, tmp_path):
    """--gpu 0 0: the several-GPU code path (one process per GPU, shared CPU tables) on a one-GPU machine."""
    cfg = TrainConfig(model_name="ComplEx", seed=0, max_step=600, gpu=[0, 0], num_thread=2,
                      **dict(SMALL, hidden_dim=32, log_interval=100))
    assert cfg.num_proc == 2 and cfg.offloaded()
    trained = train(kinships, cfg, tmp_path / "two")
    assert trained.config["metrics"]["test"]["mrr"] > 0.3
    log = [json.loads(x) for x in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]


def test_cli_trains_on_the_gpu(tmp_path):
    out = subprocess.run([sys.executable, "-m", "kgengine.cli", "train", "--dataset", "kinships", "--model",
                          "DistMult", "--gpu", "0", "--max_step", "200", "--save-path", str(tmp_path / "g"),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    assert cfg["device"] == "cuda:0"
