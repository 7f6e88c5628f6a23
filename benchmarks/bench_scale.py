"""Scale on one machine: synthetic graphs of 1M, 10M and 100M triples (100k, 1M and 10M entities).

For each graph: the first load of the text files (which writes the binary cache), the cached load, one
epoch of TransE_l2 (d=100) at 1 and 2 worker processes (positives/s, wall time, peak RSS), and evaluation
on the big graph (ranking 1,000 test triples against sampled candidates and against all entities, filtered).
Every measurement runs in its own subprocess so its peak RSS is its own (workers' RSS is reported apart:
shared tables are counted in each process that maps them).

    python benchmarks/bench_scale.py --sizes 1M 10M 100M --dir /tmp/kgscale [--procs 1 2] [--skip-epoch 100M:1]

The graphs come from ../shared/tools/gen_synthetic_kg.py (power-law entity degrees, planted patterns).
Results: one JSON line per measurement in DIR/scale.jsonl, a markdown table on stdout, and
benchmarks/figures/scale_epoch_time.png (time per epoch against triples).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT.parent / "shared" / "tools" / "gen_synthetic_kg.py"
SIZES = {"1M": 1_000_000, "10M": 10_000_000, "100M": 100_000_000}
TRAIN_CFG = dict(model_name="TransE_l2", hidden_dim=100, gamma=10.0, lr=0.1, batch_size=4096, neg_sample_size=256,
                 neg_chunk_size=256, loss_genre="Softmax", progress=False, eval_interval=0, num_thread=1)


def _rss_gib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # KiB on Linux


# ---- measurements, each in its own process -----------------------------------------------------------
def worker(kind: str, path: str, arg: str) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    import torch

    from kgengine import TrainConfig, Trainer, evaluate, load_dataset

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    kg = load_dataset(data_path=path)
    load_s = time.perf_counter() - t0
    out = {"load_s": load_s, "train": len(kg.train), "entities": kg.num_entities}
    if kind == "epoch":
        procs = int(arg)
        steps = math.ceil(len(kg.train) / TRAIN_CFG["batch_size"])
        cfg = TrainConfig(**TRAIN_CFG, num_proc=procs, max_step=steps, log_interval=max(1, steps // 10))
        trainer = Trainer(kg, cfg)
        t0 = time.perf_counter()
        trainer.train()
        out["epoch_s"] = time.perf_counter() - t0
        rates = [r["pos_per_s"] for r in trainer.history if "pos_per_s" in r]
        out["pos_per_s"] = sorted(rates)[len(rates) // 2]
        out["steps"], out["procs"] = steps, procs
        out["loss_first_last"] = [trainer.history[0]["loss"], trainer.history[-1]["loss"]]
        out["workers_peak_rss_gib"] = _rss_gib(resource.RUSAGE_CHILDREN)
        out["_model"] = trainer.model
    if kind == "eval":
        from kgengine.models import create_model

        # freshly initialised vectors: this measures the cost of ranking, not its quality
        model = create_model("TransE_l2", kg.num_entities, kg.num_relations, TRAIN_CFG["hidden_dim"])
        test = kg.test[:1000]
        for name, k in (("sampled_1000", 1000), ("full_filtered", 0)):
            t0 = time.perf_counter()
            m = evaluate(model, test, kg.known(), num_candidates=k)
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_mrr"] = m["mrr"]
    out.pop("_model", None)
    out["peak_rss_gib"] = _rss_gib()
    return out


def run(kind: str, path: Path, arg: str = "") -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, str(path), arg]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def generate(n: int, folder: Path) -> float:
    if (folder / "train.txt").is_file():
        return 0.0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(GEN), "--entities", str(n // 10), "--relations", "1000", "--triples", str(n),
                    "--out", str(folder), "--no-sha"], check=True, capture_output=True)
    return time.perf_counter() - t0


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for procs in sorted({r["procs"] for r in records}):
        pts = sorted((r["train"], r["epoch_s"]) for r in records if r["procs"] == procs)
        ax.loglog(*zip(*pts), "o-", label=f"{procs} process(es)")
    xs = sorted({r["train"] for r in records})
    base = min(records, key=lambda r: r["train"])
    ax.loglog(xs, [base["epoch_s"] * x / base["train"] for x in xs], "k:", label="linear in triples")
    ax.set_xlabel("training triples")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("TransE_l2 d=100, batch 4096, 256 shared negatives, 1 thread/process", fontsize=9)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(*sys.argv[2:5])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["1M", "10M"], choices=list(SIZES))
    p.add_argument("--dir", type=Path, default=Path("/tmp/kgscale"))
    p.add_argument("--procs", nargs="+", type=int, default=[1, 2])
    p.add_argument("--skip-epoch", nargs="*", default=[], help="SIZE:PROCS pairs to skip (e.g. 100M:1)")
    p.add_argument("--eval-sizes", nargs="*", default=["100M"], help="sizes whose evaluation is timed")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from DIR/scale.jsonl")
    a = p.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    log = a.dir / "scale.jsonl"
    if a.plot_only:
        recs = [json.loads(x) for x in log.read_text().splitlines()]
        plot([r for r in recs if "epoch_s" in r], ROOT / "benchmarks" / "figures" / "scale_epoch_time.png")
        return
    epochs = []
    print("| graph | what | seconds | rate | peak RSS GiB | notes |\n|---|---|---:|---:|---:|---|")
    for size in a.sizes:
        n, folder = SIZES[size], a.dir / f"syn{size}"
        gen_s = generate(n, folder)
        shutil.rmtree(folder / ".kgengine_cache", ignore_errors=True)
        rows = [("first load (text, writes the cache)", run("load", folder)), ("cached load", run("load", folder))]
        for procs in a.procs:
            if f"{size}:{procs}" not in a.skip_epoch:
                rows.append((f"one epoch, {procs} process(es)", run("epoch", folder, str(procs))))
        if size in a.eval_sizes:
            rows.append(("evaluation of 1,000 test triples", run("eval", folder)))
        for what, r in rows:
            r.update(size=size, what=what, gen_s=gen_s, date=time.strftime("%Y-%m-%d %H:%M"), loadavg=os.getloadavg())
            with open(log, "a") as f:
                f.write(json.dumps(r) + "\n")
            if "error" in r:
                last = (r["error"].strip().splitlines() or ["killed"])[-1]
                print(f"| {size} | {what} | failed | | | {last[:120]} |", flush=True)
                continue
            if "epoch_s" in r:
                epochs.append(r)
                secs, rate = r["epoch_s"], f"{r['pos_per_s']:,.0f} pos/s"
                note = (f"{r['steps']} steps; workers' peak RSS {r['workers_peak_rss_gib']:.1f} GiB; "
                        f"loss {r['loss_first_last'][0]:.3f} -> {r['loss_first_last'][1]:.3f}")
            elif "full_filtered_s" in r:
                secs, rate = r["full_filtered_s"], ""
                note = f"full filtered; sampled (1,000 candidates) {r['sampled_1000_s']:.1f} s"
            else:
                secs, rate = r["load_s"], f"{r['train'] / r['load_s'] / 1e6:.2f}M lines/s"
                note = f"{r['entities']:,} entities, {r['train']:,} train triples"
            print(f"| {size} | {what} | {secs:.1f} | {rate} | {r['peak_rss_gib']:.2f} | {note} |", flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()}; 1 thread per process")
    if epochs:
        plot(epochs, ROOT / "benchmarks" / "figures" / "scale_epoch_time.png")


if __name__ == "__main__":
    main()
