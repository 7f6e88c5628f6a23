#!/usr/bin/env python
"""How close a training step and a full evaluation come to the machine's GEMM limit.

For each model on FB15k-237 (1 thread unless ``--threads``):

* **step**: the median time of a training step split into its phases (sampling,
  gathering rows, forward, backward, row-sparse update), eager and with
  ``--compile``, against the forward + backward time of the chunk's ``bmm``
  alone at the same shapes (``C`` chunks of ``c`` queries against ``k``
  candidates of width ``D``), the step's GEMM floor, and against the row
  traffic (gathering and updating the step's distinct rows and their Adagrad
  state, as plain ``index_select`` / ``index_add_``).
* **eval**: full filtered ranking of the test split (both sides), against one
  ``torch.mm`` of the same FLOPs (queries x all entities x D), in query batches
  of the evaluator's size.

Usage::

    python benchmarks/bench_step.py                          # TransE_l2 d=400 and ComplEx d=200
    python benchmarks/bench_step.py --what step --steps 100
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
MODELS = {"TransE_l2": 400, "ComplEx": 200}  # d: both have 400 floats per entity


def _phases(trainer, steps: int, first: int) -> dict[str, float]:
    """Median milliseconds of each phase of ``steps`` steps (the StepEngine's own calls, timed apart)."""
    eng = trainer.engine
    pc = time.perf_counter
    rec: dict[str, list[float]] = {k: [] for k in ("sample", "gather", "forward", "backward", "update", "step")}
    for s in range(first, first + steps):
        t0 = pc()
        cpu = eng.sampler.next()
        b = cpu.to(eng.device)
        t1 = pc()
        ent = eng.store.gather("entity", cpu.uniq_e, b.uniq_e)
        rel = {n: eng.store.gather(n, cpu.uniq_r, b.uniq_r) for n in eng.rel_names}
        t2 = pc()
        loss = eng._objective(ent, rel, b.inv_e, b.inv_r, bool(s % 2))
        t3 = pc()
        loss.backward()
        t4 = pc()
        eng.store.update("entity", cpu.uniq_e, b.uniq_e, ent.grad)
        for n, x in rel.items():
            eng.store.update(n, cpu.uniq_r, b.uniq_r, x.grad)
        t5 = pc()
        for k, a, z in (("sample", t0, t1), ("gather", t1, t2), ("forward", t2, t3), ("backward", t3, t4),
                        ("update", t4, t5), ("step", t0, t5)):
            rec[k].append((z - a) * 1e3)
    return {k: statistics.median(v) for k, v in rec.items()}


def _timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def step_rows(kg, name: str, dim: int, args) -> list[dict]:
    import torch
    from kgengine import TrainConfig, Trainer

    rows = []
    for compile_ in (False, True):
        cfg = TrainConfig(model_name=name, hidden_dim=dim, gamma=12.0, lr=0.1, batch_size=args.batch_size,
                          neg_sample_size=args.negs, max_step=10**9, seed=0, num_thread=args.threads,
                          progress=False, compile=compile_)
        tr = Trainer(kg, cfg)
        for s in range(8):  # warm-up (and compilation, with its one recompile for dynamic row counts)
            tr.train_step(s)
        ph = _phases(tr, args.steps, 8)
        C, c, k, D = cfg.batch_size // cfg.neg_chunk_size, cfg.neg_chunk_size, cfg.neg_sample_size, tr.model.entity_dim
        q = torch.randn(C, c, D, requires_grad=True)
        x = torch.randn(C, k, D, requires_grad=True)
        gemm = _timed(lambda: torch.bmm(q, x.transpose(1, 2)).sum().backward(), args.steps)
        # row traffic: the step's distinct rows and their state, gathered and added back once each
        W, S = tr.tables["entity"], tr.optimizer.state["entity"]
        m = int(tr.engine.sampler.next().uniq_e.numel())
        idx = torch.randperm(W.shape[0])[:m]
        g = torch.randn(m, W.shape[1]) * 1e-6

        def rows_io():
            W.index_select(0, idx)
            S.index_select(0, idx)
            S.index_add_(0, idx, g * 0)
            W.index_add_(0, idx, g * 0)

        traffic = _timed(rows_io, args.steps)
        rows.append(dict(what="step", model=name, dim=dim, compile=compile_, **ph, bmm_fwd_bwd=gemm,
                         row_traffic=traffic, distinct_rows=m, B=cfg.batch_size, k=k, chunk=c,
                         ratio=ph["step"] / gemm))
    return rows


def eval_rows(kg, name: str, dim: int, args) -> list[dict]:
    import torch
    from kgengine import evaluate
    from kgengine.evaluate import DEFAULT_BUDGET_BYTES
    from kgengine.models import create_model

    model = create_model(name, kg.num_entities, kg.num_relations, dim)
    known = kg.known()
    t0 = time.perf_counter()
    m = evaluate(model, kg.test, known)
    secs = time.perf_counter() - t0
    E = model.tables["entity"]
    N, D = E.shape
    nq = 2 * len(kg.test)
    b = max(1, min(4096, DEFAULT_BUDGET_BYTES // (N * (model.pair_cost() + 8))))
    Q = torch.randn(b, D)
    t0 = time.perf_counter()
    done = 0
    while done < nq:
        n = min(b, nq - done)
        torch.mm(Q[:n], E.T)
        done += n
    mm = time.perf_counter() - t0
    return [dict(what="eval", model=name, dim=dim, seconds=secs, mm_seconds=mm, ratio=secs / mm, queries=nq,
                 batch=b, gflop=2 * nq * N * D / 1e9, mrr_untrained=m["mrr"])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=str(DATA))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--what", nargs="+", default=["step", "eval"], choices=["step", "eval"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--negs", type=int, default=256)
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "step.jsonl")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    import torch
    from kgengine import load_dataset

    torch.set_num_threads(args.threads)
    kg = load_dataset(data_path=args.data_path)
    stamp = dict(date=time.strftime("%Y-%m-%d %H:%M"), threads=args.threads, torch=torch.__version__)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        rows = []
        if "step" in args.what:
            rows += step_rows(kg, name, MODELS[name], args)
        if "eval" in args.what:
            rows += eval_rows(kg, name, MODELS[name], args)
        for r in rows:
            r.update(stamp, loadavg=os.getloadavg())
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
            if r["what"] == "step":
                print(f"{name} d={r['dim']} {'compiled' if r['compile'] else 'eager   '}: step {r['step']:.2f} ms "
                      f"(sample {r['sample']:.2f}, gather {r['gather']:.2f}, fwd {r['forward']:.2f}, "
                      f"bwd {r['backward']:.2f}, update {r['update']:.2f}); bmm fwd+bwd {r['bmm_fwd_bwd']:.2f} ms "
                      f"-> {r['ratio']:.2f}x; row traffic {r['row_traffic']:.2f} ms ({r['distinct_rows']} rows)",
                      flush=True)
            else:
                print(f"{name} d={r['dim']} eval: {r['seconds']:.1f} s for {r['queries']} queries "
                      f"({r['gflop']:.0f} GFLOP); torch.mm of the same FLOPs {r['mm_seconds']:.1f} s -> "
                      f"{r['ratio']:.2f}x", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
