"""SemEval-2010 Task 8 with WordNet knowledge: every variant, same seeds and budget, one table.

Runs ``kge bridge finetune`` once per (variant, seed), ``--procs`` runs at a time (one thread each;
runs of the same seed are started side by side so that every variant sees the same machine
state), then prints a markdown table: official macro-F1 (the perl scorer) mean +- std over seeds,
accuracy, validation F1, training minutes, link coverage, and the load average. A variant is
``NAME`` or ``NAME+CONTROL`` (``inject+permuted``: every nominal reads another entity's vector;
``inject+random``: random vectors of the same norms). ``kg-only`` (a head on the two projected
vectors, no encoder) runs at its own settings (:data:`KG_ONLY_ARGS`).

    python benchmarks/bench_semeval.py --kg RUN_DIR --out benchmarks/out/semeval \\
        --variants text inject late-fusion kg-only inject+permuted --seeds 0 1 2 --procs 2

The KG (``--kg``) is a kgengine model of ``../shared/data/wordnet-full``; RESULTS.md gives the
command that trained it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# kg-only trains a head from scratch on two vectors (no encoder): at the encoder's 5e-5 it learns
# nothing in 3 epochs (F1 0.0, measured); its own best settings, as for any baseline
KG_ONLY_ARGS = ["--lr", "1e-3", "--epochs", "30", "--patience", "6"]
SHARED = HERE.parents[1] / "shared" / "data"


def _job_cmd(a: argparse.Namespace, spec: str, seed: int, out: Path) -> list[str]:
    variant, _, control = spec.partition("+")
    cmd = [sys.executable, "-m", "bridge.cli", "finetune", "--data", str(a.data), "--lm", a.lm, "--out", str(out),
           "--variant", variant, "--seeds", str(seed), "--threads", "1", "--epochs", str(a.epochs),
           "--lr", str(a.lr), "--batch-size", str(a.batch_size)]
    if variant != "text":
        cmd += ["--kg", str(a.kg), "--names", str(a.names), "--wordnet", str(a.wordnet), "--link", a.link]
    if control:
        cmd += ["--kg-control", control]
    if variant == "kg-only":
        cmd += KG_ONLY_ARGS  # later flags win
    return cmd


def run_all(a: argparse.Namespace) -> None:
    jobs = [(spec, s) for s in a.seeds for spec in a.variants]  # seed-major: one seed's variants side by side
    running: list[tuple[subprocess.Popen, str, int, float]] = []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    while jobs or running:
        while jobs and len(running) < a.procs:
            spec, seed = jobs.pop(0)
            out = a.out / spec / f"s{seed}"
            if (out / f"seed{seed}" / "finetune.json").is_file() and not a.rerun:
                continue
            logf = open(a.out / f"{spec}_s{seed}.log", "w")
            p = subprocess.Popen(_job_cmd(a, spec, seed, out), stdout=logf, stderr=subprocess.STDOUT, env=env)
            running.append((p, spec, seed, time.time()))
            print(f"started {spec} seed {seed} (load {os.getloadavg()[0]:.2f})", flush=True)
        time.sleep(5)
        for job in list(running):
            p, spec, seed, t = job
            if p.poll() is not None:
                running.remove(job)
                print(f"done {spec} seed {seed}: rc {p.returncode}, {time.time() - t:.0f} s", flush=True)


def table(a: argparse.Namespace) -> str:
    import numpy as np

    rows = ["| variant | official macro-F1 (mean ± std) | per seed | accuracy | valid F1 | train min/run "
            "| link coverage |",
            "|---|---|---|---|---|---|---|"]
    for spec in a.variants:
        runs = [json.loads(f.read_text()) for f in sorted((a.out / spec).glob("s*/seed*/finetune.json"))]
        if not runs:
            rows.append(f"| {spec} | (no run) | | | | | |")
            continue
        f1 = np.array([r["official_f1_perl"] if r["official_f1_perl"] is not None else r["test"]["macro_f1"]
                       for r in runs])
        acc = np.array([r["test"]["accuracy"] for r in runs])
        val = np.array([r["valid_macro_f1"] or 0 for r in runs])
        mins = np.array([r["train_seconds"] for r in runs]) / 60
        std = f1.std(ddof=1) if len(f1) > 1 else 0.0
        cov = runs[0]["linking"]["test"]["coverage"] if runs[0].get("linking") else None
        rows.append(f"| {spec} | **{f1.mean():.2f}** ± {std:.2f} | {', '.join(f'{x:.2f}' for x in f1)} | "
                    f"{acc.mean():.2f} | {val.mean():.2f} | {mins.mean():.1f} | "
                    f"{'' if cov is None else f'{100 * cov:.1f}%'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=SHARED / "semeval2010-task8")
    p.add_argument("--lm", default="minilm")
    p.add_argument("--kg", type=Path, required=True, help="kgengine model folder of wordnet-full")
    p.add_argument("--names", type=Path, default=SHARED / "wordnet-full" / "entities.tsv")
    p.add_argument("--wordnet", type=Path, default=SHARED / "wordnet-3.0" / "WNdb-3.0.tar.gz")
    p.add_argument("--link", default="first")
    p.add_argument("--variants", nargs="+", default=["text", "inject", "late-fusion", "kg-only"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, default=HERE / "out" / "semeval")
    p.add_argument("--rerun", action="store_true", help="rerun (variant, seed) pairs that already have a result")
    p.add_argument("--table-only", action="store_true")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()
    if not a.table_only:
        run_all(a)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}; load before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{(time.time() - t0) / 60:.1f} min; {a.procs} processes x 1 thread\n")
    print(table(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
