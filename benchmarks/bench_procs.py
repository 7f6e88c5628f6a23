"""Worker processes on one machine: positives/s and test MRR of --num_proc 1 vs 2 (random split and METIS
partition with local negatives), and how much the partition keeps workers off each other's rows.

    python benchmarks/bench_procs.py throughput [--steps 600 --repeats 3]   # FB15k-237 presets, interleaved
    python benchmarks/bench_procs.py overlap                               # edge cut, shared rows per step
    python benchmarks/bench_procs.py quality --model TransE_l2 --procs 2 [--partition metis]  # a full preset run

Every process runs one torch thread (OMP_NUM_THREADS=1, --num_thread 1): on this 2-core machine, 2 processes
use both cores. positives/s is the median of the trainer's logged windows after the first (the first holds the
workers' start-up). Results print as markdown rows with the date and load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from kgengine import Trainer, load_dataset, train  # noqa: E402
from kgengine.partition import compute_partition, edge_cut, positives_by_part, row_overlap, save_partition  # noqa
from kgengine.presets import preset_config  # noqa: E402
from kgengine.sampling import StepSampler  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "fb15k-237"


def _partition_file(kg, method: str, parts: int, folder: Path) -> str:
    path = folder / f"{method}-{parts}"
    if not path.with_suffix(".npy").is_file():
        save_partition(path, compute_partition(kg, parts, method), kg, method)
    return str(path.with_suffix(".npy"))


def _split(kg, procs: int, partition: str, folder: Path) -> dict:
    """Config fields of a way to split the positives among workers: random, METIS/random parts, by relation."""
    if partition == "rel":
        return dict(num_proc=procs, rel_part=True)
    if partition:
        return dict(num_proc=procs, partition=_partition_file(kg, partition, procs, folder))
    return dict(num_proc=procs)


def _run(kg, model: str, procs: int, partition: str, steps: int, folder: Path) -> float:
    extra = _split(kg, procs, partition, folder)
    cfg = preset_config(model, "fb15k-237", max_step=steps, log_interval=max(1, steps // 6), eval_interval=0,
                        progress=False, num_thread=1, **extra)
    trainer = Trainer(kg, cfg)
    trainer.train()
    rates = [r["pos_per_s"] for r in trainer.history if "pos_per_s" in r][1:]
    return statistics.median(rates)


def cmd_throughput(a) -> None:
    kg = load_dataset(data_path=a.data)
    folder = Path(tempfile.mkdtemp())
    variants = [(1, ""), (2, ""), (2, "metis"), (2, "rel")]
    for model in a.models:
        got: dict = {v: [] for v in variants}
        for rep in range(a.repeats):
            order = variants if rep % 2 == 0 else variants[::-1]  # drifting load hits every variant
            for procs, part in order:
                got[(procs, part)].append(_run(kg, model, procs, part, a.steps, folder))
        base = statistics.median(got[(1, "")])
        for (procs, part), rates in got.items():
            r = statistics.median(rates)
            print(f"| {model} | {procs} | {part or 'random split'} | {r:,.0f} | {r / base:.2f}x | "
                  f"{', '.join(f'{x:,.0f}' for x in rates)} |", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, load average at the end {os.getloadavg()}, {a.steps} steps per run, "
          f"{a.repeats} interleaved repeats, 1 thread per process")


def cmd_overlap(a) -> None:
    kg = load_dataset(data_path=a.data)
    for parts in (2, 4):
        for method in ("random", "metis"):
            p = compute_partition(kg, parts, method)
            for local in (False, True):
                samplers = []
                for i, share in enumerate(positives_by_part(kg.train, p, parts)):
                    cand = torch.nonzero(p == i).flatten() if local else None
                    samplers.append(StepSampler(kg.train[share], kg.num_entities, 1024, 256, 256,
                                                torch.Generator().manual_seed(i), candidates=cand))
                print(f"| {parts} | {method} | {edge_cut(kg.train, p):.3f} | {'local' if local else 'global'} | "
                      f"{row_overlap(samplers, a.steps):.3f} |", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}; FB15k-237, batch 1024, 256 negatives per chunk of 256, "
          f"mean over {a.steps} simultaneous steps")


def cmd_quality(a) -> None:
    kg = load_dataset(data_path=a.data)
    folder = Path(tempfile.mkdtemp())
    extra = dict(num_thread=1, optimizer_state=a.optimizer_state, **_split(kg, a.procs, a.partition, folder))
    cfg = preset_config(a.model, "fb15k-237", progress=False, **extra)
    t0 = time.perf_counter()
    trained = train(kg, cfg, folder / "run")
    wall = time.perf_counter() - t0
    m = trained.config["metrics"]["test"]
    rec = dict(model=a.model, procs=a.procs, partition=a.partition or "random split", optimizer_state=a.optimizer_state,
               steps=trained.config["steps_done"],
               wall_s=wall, test=m, date=time.strftime("%Y-%m-%d %H:%M"), loadavg=os.getloadavg())
    print(json.dumps(rec))
    print(f"| {a.model} | {a.procs} | {rec['partition']} | {a.optimizer_state} | {rec['steps']} | {m['mrr']:.4f} | "
          f"{m['hits@10']:.4f} | "
          f"{wall / 60:.1f} min |")


def main() -> None:
    warnings.simplefilter("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("throughput", "overlap", "quality"))
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--models", nargs="+", default=["TransE_l2", "ComplEx"])
    p.add_argument("--model", default="TransE_l2")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--partition", choices=("", "metis", "random", "rel"), default="",
                   help="how workers split the positives: random (default), METIS/random parts, by relation")
    p.add_argument("--optimizer-state", default="element", choices=("element", "row"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    {"throughput": cmd_throughput, "overlap": cmd_overlap, "quality": cmd_quality}[a.what](a)


if __name__ == "__main__":
    main()
