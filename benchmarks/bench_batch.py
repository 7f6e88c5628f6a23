#!/usr/bin/env python
"""Throughput (and optionally quality after a fixed time) against batch size and negatives per chunk.

FB15k-237, the dataset's preset for each model with ``batch_size`` and ``neg_sample_size``
overridden (negatives are shared by chunks of ``min(k, B)`` positives, kgengine's default),
1 thread. For each cell: positives/s as the median over ``--steps`` timed steps after a
warm-up; with ``--train-seconds S`` also the valid MRR after S seconds of training from
scratch (the shared evaluator), which is what a default should maximise.

Usage::

    python benchmarks/bench_batch.py                                  # positives/s grid
    python benchmarks/bench_batch.py --models ComplEx --batches 1024 4096 --negs 256 1024 --train-seconds 120
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "fb15k-237"


def cell(kg, model: str, batch: int, negs: int, args) -> dict:
    from kgengine import evaluate
    from kgengine.presets import preset_values
    from kgengine.train import TrainConfig, Trainer

    vals = preset_values(model, "fb15k-237")
    vals.update(batch_size=batch, neg_sample_size=negs, neg_chunk_size=-1, max_step=10**9, seed=0, num_thread=1,
                progress=False, log_interval=10**9, eval_interval=0, early_stop_patience=0)
    tr = Trainer(kg, TrainConfig(**vals))
    for s in range(3):
        tr.train_step(s)
    times = []
    for s in range(3, 3 + args.steps):
        t0 = time.perf_counter()
        tr.train_step(s)
        times.append(time.perf_counter() - t0)
    out = dict(model=model, batch=batch, negs=negs, chunk=tr.cfg.neg_chunk_size,
               pos_per_s=batch / statistics.median(times), step_ms=statistics.median(times) * 1e3)
    if args.train_seconds:
        tr = Trainer(kg, TrainConfig(**vals))
        t0, s = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.train_seconds:
            tr.train_step(s)
            s += 1
        out.update(train_seconds=args.train_seconds, steps=s,
                   valid_mrr=evaluate(tr.model, kg.valid, kg.known())["mrr"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=str(DATA))
    p.add_argument("--models", nargs="+", default=["TransE_l2", "ComplEx"])
    p.add_argument("--batches", nargs="+", type=int, default=[1024, 2048, 4096, 8192])
    p.add_argument("--negs", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--train-seconds", type=float, default=0.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "batch.jsonl")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    import torch
    from kgengine import load_dataset

    torch.set_num_threads(1)
    kg = load_dataset(data_path=args.data_path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        for b in args.batches:
            for k in args.negs:
                r = cell(kg, model, b, k, args)
                r.update(date=time.strftime("%Y-%m-%d %H:%M"), loadavg=os.getloadavg())
                with open(args.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                extra = f", valid MRR after {args.train_seconds:.0f} s: {r['valid_mrr']:.3f} ({r['steps']} steps)" \
                    if args.train_seconds else ""
                print(f"{model} B={b} k={k}: {r['pos_per_s']:,.0f} pos/s ({r['step_ms']:.1f} ms/step){extra}",
                      flush=True)


if __name__ == "__main__":
    main()
