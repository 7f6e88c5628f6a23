"""Quality runs: train with the presets, evaluate (filtered, realistic ties), check the targets.

    python benchmarks/quality.py                          # the fast ones: kinships, umls
    python benchmarks/quality.py fb15k-237:TransE_l2 wn18rr:RotatE --threads 1

Each run prints the equivalent ``kge train`` command, the wall time and the test
metrics, and appends a JSON line to benchmarks/out/quality.jsonl. Exit status 1
if a run misses its target. The large graphs are read from ../shared/data.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

# (dataset, model) -> minimum test metrics (the engine issue's quality table)
TARGETS = {
    ("kinships", "ComplEx"): {"mrr": 0.80, "hits@10": 0.97},
    ("umls", "ComplEx"): {"mrr": 0.90},
    ("fb15k-237", "TransE_l2"): {"mrr": 0.30},
    ("fb15k-237", "ComplEx"): {"mrr": 0.32},
    ("wn18rr", "ComplEx"): {"mrr": 0.44},
    ("wn18rr", "RotatE"): {"mrr": 0.45},
}
FAST = ["kinships:ComplEx", "umls:ComplEx"]


def command_line(dataset: str, cfg: dict, data_path: str | None) -> str:
    from kgengine.train import TrainConfig

    base = TrainConfig(model_name=cfg["model_name"])
    src = f"--data-path {data_path}" if data_path else f"--dataset {dataset}"
    flags = [f"--model {cfg['model_name']}", src]
    for k, v in cfg.items():
        if k in ("model_name", "progress", "neg_chunk_size") or v == getattr(base, k):
            continue
        if isinstance(v, bool):
            flags.append(f"--{k}" if v else "")
        else:
            flags.append(f"--{k} {v}")
    return "kge train " + " ".join(f for f in flags if f) + " --save-path runs/" + f"{dataset}_{cfg['model_name']}"


def run(spec: str, threads: int, save_root: Path) -> dict:
    import torch

    from kgengine import load_dataset, train
    from kgengine.presets import preset_config

    dataset, model = spec.split(":")
    torch.set_num_threads(threads)
    data_path = None if dataset in ("kinships", "umls", "nations") else str(SHARED / dataset)
    kg = load_dataset(dataset if data_path is None else None, data_path)
    cfg = preset_config(model, dataset, progress=False, num_thread=threads)
    cmd = command_line(dataset, {k: v for k, v in cfg.to_dict().items() if k != "num_thread"}, data_path)
    print(f"\n== {spec}\n$ {cmd} --num_thread {threads}", flush=True)
    t0 = time.perf_counter()
    trained = train(kg, cfg, save_root / f"{dataset}_{model}")
    wall = time.perf_counter() - t0
    test = trained.config["metrics"]["test"]
    target = TARGETS.get((dataset, model), {})
    ok = all(test[k] >= v for k, v in target.items())
    print(f"wall {wall:.0f}s  test " + "  ".join(f"{k} {v:.4f}" for k, v in test.items())
          + f"  target {target or '-'}: {'MET' if ok else 'MISSED'}", flush=True)
    return {"spec": spec, "command": cmd, "threads": threads, "wall_s": round(wall, 1), "test": test,
            "valid": trained.config["metrics"].get("valid"), "target": target, "met": ok,
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=FAST, help="dataset:model pairs (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (default %(default)s)")
    p.add_argument("--save-root", default=str(ROOT / "benchmarks" / "out" / "runs"))
    args = p.parse_args()
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    results = [run(spec, args.threads, Path(args.save_root)) for spec in args.runs]
    with open(out / "quality.jsonl", "a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    print("\n| dataset:model | MRR | Hits@1 | Hits@10 | target | wall (s) |")
    print("|---|---:|---:|---:|---|---:|")
    for r in results:
        t = r["test"]
        print(f"| {r['spec']} | {t['mrr']:.3f} | {t['hits@1']:.3f} | {t['hits@10']:.3f} | "
              f"{r['target'] or '-'} {'met' if r['met'] else 'MISSED'} | {r['wall_s']:.0f} |")
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
