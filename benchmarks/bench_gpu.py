"""The GPU measurements of benchmarks/gpu_check.sh: presets to MRR, throughput against batch size,
bf16 and torch.compile, evaluation time, and a 10M-entity graph GPU-resident vs --mix_cpu_gpu.

Every section appends one JSON record per measurement to ``OUT/gpu_check.jsonl`` and a row to the text
table ``OUT/gpu_check.txt`` as soon as it is measured, so a run cut short still leaves what it did.

    python benchmarks/bench_gpu.py --out DIR [--data ../shared/data] [--sections presets,throughput,...]
    python benchmarks/bench_gpu.py --out DIR --quick --device cpu     # the same pipeline, tiny, on the CPU

Timing: ``torch.cuda.synchronize()`` before every clock reading; throughput is the median of
``--repeats`` windows of ``--steps`` steps after ``--warmup`` steps; positives/s counts the positive
triples of each batch (every positive is scored against its chunk's shared negatives).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kgengine import KG, TrainConfig, Trainer, evaluate, load_dataset  # noqa: E402
from kgengine.evaluate import on_device  # noqa: E402
from kgengine.presets import preset_config  # noqa: E402
from kgengine.train import evaluate_and_record  # noqa: E402

SECTIONS = ("presets", "eval", "throughput", "big", "multi", "compile")  # run in this order


class Report:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl, self.txt = out / "gpu_check.jsonl", out / "gpu_check.txt"

    def add(self, section: str, row: str, **record) -> None:
        record = dict(section=section, **record)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(self.txt, "a") as f:
            f.write(row + "\n")
        print(row, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def throughput(trainer: Trainer, warmup: int, steps: int, repeats: int) -> float:
    """Median positives/s over ``repeats`` windows of ``steps`` steps (each window ends with a sync)."""
    dev = torch.device(trainer.cfg.device)
    trainer.engine.run(warmup, 0)
    rates, s = [], warmup
    for _ in range(repeats):
        sync(dev)
        t = time.perf_counter()
        trainer.engine.run(steps, s)  # returns the losses on the host: the window ends after the last step
        rates.append(steps * trainer.cfg.batch_size / (time.perf_counter() - t))
        s += steps
    return statistics.median(rates)


# ---- sections ---------------------------------------------------------------------------------
def section_presets(a, rep: Report, kg: KG) -> dict:
    """The dataset's presets, as `kge train` runs them, on the device: time, positives/s, test MRR."""
    trained_models = {}
    for model in a.preset_models:
        for amp in (False, True):
            cfg = preset_config(model, a.dataset, device=a.device, amp=amp, progress=False, **a.preset_overrides)
            reset_peak(torch.device(a.device))
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(kg, cfg, tmp)
                t0 = time.perf_counter()
                trained = trainer.train()
                sync(torch.device(a.device))
                t_train = time.perf_counter() - t0
                t0 = time.perf_counter()
                metrics = evaluate_and_record(trained, kg, filtered=cfg.eval_filter, device=a.device,
                                              splits=("test",))["test"]
                t_test = time.perf_counter() - t0
            rates = [r["pos_per_s"] for r in trainer.history if "pos_per_s" in r]
            rec = dict(model=model, amp=amp, steps=trainer.step, train_s=t_train, test_eval_s=t_test,
                       pos_per_s=statistics.median(rates) if rates else None, test=metrics,
                       peak_gib=peak_gib(torch.device(a.device)),
                       config={k: v for k, v in cfg.to_dict().items() if k in (
                           "hidden_dim", "batch_size", "neg_sample_size", "loss_genre", "max_step", "eval_interval")})
            rep.add("presets", f"preset {a.dataset} {model:9s} amp={amp!s:5s} steps={trainer.step:6d} "
                    f"train {t_train:7.1f} s (incl. validations) {rec['pos_per_s'] or 0:12,.0f} pos/s  test MRR "
                    f"{metrics['mrr']:.4f} H@10 {metrics['hits@10']:.4f}  test eval {t_test:5.2f} s  "
                    f"peak {rec['peak_gib']:.2f} GiB", **rec)
            if not amp:
                trained_models[model] = trained
    return trained_models


def section_eval(a, rep: Report, kg: KG, trained: dict) -> None:
    """Full filtered evaluation of the test split (both sides), timed after a warm-up run."""
    for model, t in trained.items():
        m = on_device(t.model, a.device)
        known = kg.known()
        evaluate(m, kg.test[:256], known)  # warm-up: kernels, allocator
        times = []
        for _ in range(3):
            sync(torch.device(a.device))
            t0 = time.perf_counter()
            res = evaluate(m, kg.test, known)
            sync(torch.device(a.device))
            times.append(time.perf_counter() - t0)
        n, N, d = 2 * len(kg.test), kg.num_entities, m.entity_dim
        rep.add("eval", f"eval   {a.dataset} {model:9s} full filtered test ({n} queries x {N} entities, d={d}): "
                f"{statistics.median(times):6.3f} s (median of 3), MRR {res['mrr']:.4f}",
                model=model, seconds=statistics.median(times), times=times, queries=n, entities=N, dim=d,
                mrr=res["mrr"])


def section_throughput(a, rep: Report, kg: KG) -> None:
    """Positives/s against batch size (d=400 TransE_l2, ComplEx 2x200 reals; 256 shared negatives)."""
    base = dict(neg_sample_size=256, neg_chunk_size=256, progress=False, device=a.device, lr=0.1, gamma=10.0)
    runs = [(m, b, {}) for m in ("TransE_l2", "ComplEx") for b in a.batches]
    mid = a.batches[min(1, len(a.batches) - 1)]
    runs += [("TransE_l2", mid, {"amp": True}), ("ComplEx", mid, {"amp": True})]
    speed_runs(a, rep, kg, runs, base)


def section_compile(a, rep: Report, kg: KG) -> None:
    """--compile against eager at the middle batch size (compilation time reported apart)."""
    base = dict(neg_sample_size=256, neg_chunk_size=256, progress=False, device=a.device, lr=0.1, gamma=10.0)
    mid = a.batches[min(1, len(a.batches) - 1)]
    speed_runs(a, rep, kg, [("TransE_l2", mid, {"compile": True}), ("ComplEx", mid, {"compile": True})], base)


def speed_runs(a, rep: Report, kg: KG, runs: list, base: dict) -> None:
    for model, batch, extra in runs:
        dim = a.dim if model == "TransE_l2" else a.dim // 2
        cfg = TrainConfig(model_name=model, hidden_dim=dim, batch_size=batch, **base, **extra)
        reset_peak(torch.device(a.device))
        t0 = time.perf_counter()
        trainer = Trainer(kg, cfg)
        warm = a.warmup + (a.compile_warmup if extra.get("compile") else 0)
        rate = throughput(trainer, warm, a.steps, a.repeats)
        tag = ",".join(f"{k}" for k in extra) or "fp32"
        rep.add("throughput", f"speed  {a.dataset} {model:9s} d={dim:3d} B={batch:6d} k=256 {tag:8s} "
                f"{rate:14,.0f} pos/s  ({rate * 256:.3g} negative scores/s; setup+warm-up "
                f"{time.perf_counter() - t0:5.1f} s; peak {peak_gib(torch.device(a.device)):.2f} GiB)",
                model=model, dim=dim, batch=batch, neg=256, variant=tag, pos_per_s=rate, peak_gib=peak_gib(
                    torch.device(a.device)))
        del trainer


def synthetic_kg(num_entities: int, num_relations: int, num_triples: int, seed: int = 0) -> KG:
    """Uniformly random triples (no structure: every step touches ~2B + C*k distinct rows, the worst case)."""
    g = torch.Generator().manual_seed(seed)
    train = torch.stack([torch.randint(0, num_entities, (num_triples,), generator=g),
                         torch.randint(0, num_relations, (num_triples,), generator=g),
                         torch.randint(0, num_entities, (num_triples,), generator=g)], 1)
    few = train[:1000].clone()
    return KG([f"e{i}" for i in range(num_entities)], [f"r{i}" for i in range(num_relations)], train, few, few,
              name="synthetic")


def section_big(a, rep: Report) -> None:
    """A 10M-entity graph: tables on the GPU vs in CPU memory (--mix_cpu_gpu, sync and async update)."""
    t0 = time.perf_counter()
    kg = synthetic_kg(a.big_entities, 1000, a.big_triples)
    rep.add("big", f"big    synthetic graph: {a.big_entities:,} entities, 1,000 relations, {a.big_triples:,} "
            f"triples, built in {time.perf_counter() - t0:.1f} s", entities=a.big_entities, triples=a.big_triples)
    for variant in ({}, {"mix_cpu_gpu": True}, {"mix_cpu_gpu": True, "async_update": True}):
        cfg = TrainConfig(model_name="TransE_l2", hidden_dim=a.big_dim, batch_size=a.big_batch, neg_sample_size=256,
                          neg_chunk_size=256, lr=0.1, progress=False, device=a.device, num_thread=a.threads,
                          **variant)
        reset_peak(torch.device(a.device))
        t0 = time.perf_counter()
        trainer = Trainer(kg, cfg)
        t_init = time.perf_counter() - t0
        rate = throughput(trainer, a.warmup, a.steps, a.repeats)
        tag = "+".join(variant) or "gpu-resident"
        table_gib = sum(t.numel() * t.element_size() for t in trainer.tables.values()) / 2**30
        rep.add("big", f"big    TransE_l2 d={a.big_dim} B={a.big_batch} k=256 {tag:24s} {rate:12,.0f} pos/s  "
                f"(tables {table_gib:.1f} GiB + Adagrad state; init {t_init:5.1f} s; GPU peak "
                f"{peak_gib(torch.device(a.device)):.2f} GiB)", variant=tag, pos_per_s=rate, init_s=t_init,
                table_gib=table_gib, peak_gib=peak_gib(torch.device(a.device)))
        trainer.engine.store.close()
        del trainer


def section_multi(a, rep: Report, kg: KG) -> None:
    """Worker processes on one GPU (the --gpu 0 1 code path): throughput of 1 and 2 processes."""
    for procs in (1, 2):
        gpu = [0] * procs if a.device.startswith("cuda") else []
        cfg = TrainConfig(model_name="TransE_l2", hidden_dim=a.dim, batch_size=a.batches[0], neg_sample_size=256,
                          neg_chunk_size=256, lr=0.1, progress=False, device=a.device, gpu=gpu,
                          num_proc=procs, mix_cpu_gpu=a.device.startswith("cuda"), max_step=a.multi_steps,
                          log_interval=a.multi_steps // 4, num_thread=a.threads)
        trainer = Trainer(kg, cfg)
        t0 = time.perf_counter()
        trainer.train()
        dt = time.perf_counter() - t0
        # the log's windows start once the workers are up; the first window also holds their warm-up
        rates = [r["pos_per_s"] for r in trainer.history if "pos_per_s" in r][1:]
        rate = statistics.median(rates) if rates else float("nan")
        rep.add("multi", f"multi  {a.dataset} TransE_l2 d={a.dim} B={cfg.batch_size} {procs} process(es) on "
                f"{a.device} (tables in CPU memory): {rate:12,.0f} pos/s (median of the last log windows; "
                f"{dt:.1f} s for {a.multi_steps} steps incl. start-up)", procs=procs, pos_per_s=rate, seconds=dt)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder holding fb15k-237/")
    p.add_argument("--device", default="cuda")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--quick", action="store_true", help="tiny sizes (Kinships, a 20k-entity graph): a dry run")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (mix_cpu_gpu updates)")
    a = p.parse_args(argv)
    a.dataset, a.preset_models, a.preset_overrides = "fb15k-237", ("TransE_l2", "ComplEx"), {}
    a.batches, a.dim, a.warmup, a.steps, a.repeats, a.compile_warmup = (1024, 4096, 16384), 400, 20, 100, 3, 40
    a.big_entities, a.big_triples, a.big_dim, a.big_batch = 10_000_000, 10_000_000, 400, 4096
    a.multi_steps = 2000
    if a.quick:
        a.dataset, a.preset_overrides = "kinships", dict(max_step=40, eval_interval=20, hidden_dim=16)
        a.batches, a.dim, a.warmup, a.steps, a.repeats, a.compile_warmup = (256, 512), 32, 2, 5, 2, 2
        a.big_entities, a.big_triples, a.big_dim, a.big_batch, a.multi_steps = 20_000, 50_000, 16, 512, 40
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    rep = Report(a.out)
    env = dict(torch=torch.__version__, python=sys.version.split()[0], device=a.device, cpus=os.cpu_count(),
               loadavg=os.getloadavg(), threads=a.threads, quick=a.quick,
               gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
               date=time.strftime("%Y-%m-%d %H:%M:%S"))
    rep.add("env", f"env    {env}", **env)
    sections = [s for s in a.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"--sections: unknown {sorted(unknown)}")
    kg = load_dataset(a.dataset) if a.quick else load_dataset(data_path=os.path.join(a.data, a.dataset))
    trained: dict = {}
    failed = []
    steps = {"presets": lambda: trained.update(section_presets(a, rep, kg)),
             "eval": lambda: section_eval(a, rep, kg, trained), "throughput": lambda: section_throughput(a, rep, kg),
             "big": lambda: section_big(a, rep), "multi": lambda: section_multi(a, rep, kg),
             "compile": lambda: section_compile(a, rep, kg)}
    for name in SECTIONS:  # in this order: the most wanted figures first, in case time runs out
        if name not in sections:
            continue
        t0 = time.perf_counter()
        try:
            steps[name]()
        except Exception as e:  # report and go on: one broken section must not cost the others' figures
            import traceback

            failed.append(name)
            rep.add(name, f"FAILED {name}: {type(e).__name__}: {e}", error=traceback.format_exc())
        print(f"[section {name}: {time.perf_counter() - t0:.1f} s]", flush=True)
    rep.add("env", f"done   load average {os.getloadavg()}; failed sections: {failed or 'none'}",
            loadavg_end=os.getloadavg(), failed=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
