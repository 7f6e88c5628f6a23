"""Loading speed of a large text graph: the old line-by-line reader against the vectorised
readers, pyarrow's and pandas' (first load, with and without writing the cache), and the
cached load (memory-mapped).

    OMP_NUM_THREADS=1 python benchmarks/bench_load.py                  # 1M and 10M lines
    OMP_NUM_THREADS=1 python benchmarks/bench_load.py --lines 1000000 --no-old
    OMP_NUM_THREADS=1 python benchmarks/bench_load.py --lines 10000000 --entities 1000000 --readers pyarrow

Graphs are written by a numpy writer into a temporary folder with FB15k-237-like names
(``/m/0…`` entities, ``/domain/type/property`` relations, skewed degrees, ~1% valid and
test each, some names unseen in train). Their mtimes are set an hour back: a file modified
within 2 s of its load is also hashed (kgengine.datacache's guard against same-size rewrites
inside one mtime tick), which a data set at rest never is. Each measurement runs in a fresh
process, so peak RSS is that of one load; "over imports" subtracts the RSS after importing
torch, pandas (pyarrow for its reader) and kgengine. The pandas reader is measured with
``KGENGINE_NO_PYARROW=1``; without pyarrow installed only it runs. Each row records the load
average (1, 5, 15 min) when its run began, since other work on the machine slows a run down.
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def write_graph(out: Path, lines: int, n_ent: int = 0, seed: int = 0) -> None:
    """train/valid/test.txt with ``lines`` lines in all (98% train), ``n_ent`` entities (default lines/10)."""
    rng = np.random.default_rng(seed)
    n_ent, n_rel = n_ent or max(1000, lines // 10), 500
    digits = np.array(list("0123456789bcdfghjklmnpqrstvwxyz_"))
    codes = [digits[(np.arange(n_ent) >> (5 * k)) % 32] for k in range(4)]
    ents = np.char.add("/m/0", np.char.add(np.char.add(codes[3], codes[2]), np.char.add(codes[1], codes[0])))
    rels = np.array([f"/domain_{i % 23}/type_{i % 41}/property_number_{i}" for i in range(n_rel)])
    ent_b, rel_b = np.char.encode(ents), np.char.encode(rels)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": lines - 2 * (lines // 100), "valid": lines // 100, "test": lines // 100}
    for split, n in sizes.items():
        with open(out / f"{split}.txt", "wb") as f:
            for lo in range(0, n, 1 << 20):
                m = min(1 << 20, n - lo)
                h = (n_ent * rng.random(m) ** 2).astype(np.int64)   # skewed degrees
                t = (n_ent * rng.random(m) ** 1.5).astype(np.int64)
                r = (n_rel * rng.random(m) ** 3).astype(np.int64)
                row = np.char.add(np.char.add(np.char.add(ent_b[h], b"\t"), np.char.add(rel_b[r], b"\t")), ent_b[t])
                f.write(b"\n".join(row.tolist()) + b"\n")
    old = time.time() - 3600
    for split in sizes:
        os.utime(out / f"{split}.txt", (old, old))


def old_load(path: Path):
    """kgengine.data before the vectorised reader: per-line split, dict vocabularies, tensor of tuples."""
    import torch

    def read_rows(p):
        rows = []
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 3 or any(not x.strip() for x in parts):
                    raise ValueError(f"{p}:{lineno}")
                rows.append((lineno, [x.strip() for x in parts]))
        return rows

    split_rows = {s: [(ln, (f[0], f[1], f[2])) for ln, f in read_rows(path / f"{s}.txt")]
                  for s in ("train", "valid", "test")}
    ent, rel = {}, {}
    for _, (h, r, t) in split_rows["train"]:
        ent.setdefault(h, len(ent))
        rel.setdefault(r, len(rel))
        ent.setdefault(t, len(ent))
    out = {"train": [tr for _, tr in split_rows["train"]]}
    for split in ("valid", "test"):  # unseen='keep'
        out[split] = []
        for _, (h, r, t) in split_rows[split]:
            ent.setdefault(h, len(ent))
            rel.setdefault(r, len(rel))
            ent.setdefault(t, len(ent))
            out[split].append((h, r, t))
    return {s: torch.tensor([(ent[h], rel[r], ent[t]) for h, r, t in v], dtype=torch.int64) for s, v in out.items()}


def child(mode: str, path: Path) -> None:
    import pandas  # noqa: F401  (imported before the baseline, as kgengine.data would)
    import torch  # noqa: F401

    from kgengine import textread
    from kgengine.data import load_raw_triples

    reader = "pyarrow" if textread.arrow_enabled() else "pandas"
    if reader == "pyarrow":
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    if mode == "old":
        n = sum(len(v) for v in old_load(path).values())
    else:
        kg = load_raw_triples(path, cache=mode != "nocache")
        n = len(kg.train) + len(kg.valid) + len(kg.test)
        if mode == "cached":
            int(kg.train.sum())  # touch every page of the memory map
    sec = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": sec, "rows": n, "peak_mb": peak / 1024, "base_mb": base / 1024,
                      "reader": reader}))


def have_pyarrow() -> bool:
    res = subprocess.run([sys.executable, "-c", "import pyarrow.csv, pyarrow.compute"], capture_output=True)
    return res.returncode == 0


def run(mode: str, reader: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if reader == "pandas":
        env["KGENGINE_NO_PYARROW"] = "1"
    else:
        env.pop("KGENGINE_NO_PYARROW", None)
    load = os.getloadavg()
    res = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], env=env, capture_output=True,
                         text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if mode in ("nocache", "first") and out["reader"] != reader:
        raise SystemExit(f"asked for the {reader} reader, the load used {out['reader']}")
    return dict(out, load=load)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--entities", type=int, default=0, help="entities per graph (default: lines / 10)")
    p.add_argument("--readers", nargs="+", choices=["pyarrow", "pandas"], default=["pyarrow", "pandas"],
                   help="vectorised readers to measure (pyarrow only when installed)")
    p.add_argument("--no-old", action="store_true", help="skip the old reader (slow, several GB at 10M)")
    p.add_argument("--dir", type=Path, default=None, help="where graphs go (default: a temporary folder)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]))
    readers = [r for r in args.readers if r != "pyarrow" or have_pyarrow()]
    if readers != args.readers:
        print("pyarrow is not installed: measuring the pandas reader only", file=sys.stderr)
    root = args.dir or Path(tempfile.mkdtemp(prefix="kge-bench-load-"))
    rows = []
    try:
        for n in args.lines:
            g = root / (f"g{n}" + (f"-e{args.entities}" if args.entities else ""))
            if not (g / "train.txt").is_file():
                t = time.perf_counter()
                write_graph(g, n, args.entities)
                print(f"wrote {g} ({n} lines, {sum(f.stat().st_size for f in g.glob('*.txt')) / 1e6:.0f} MB) "
                      f"in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            runs = ([] if args.no_old else [("old", "")])
            runs += [(mode, r) for r in readers for mode in ("nocache", "first")] + [("cached", readers[0])]
            for mode, reader in runs:
                if mode != "cached":
                    shutil.rmtree(g / ".kgengine_cache", ignore_errors=True)
                r = run(mode, reader or "pandas", g)
                rows.append((n, mode, reader, r))
                print(f"{n} {mode} {reader}: {r}", file=sys.stderr)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    label = {"old": "old line reader", "nocache": "{}, cache=False", "first": "{}, first load (writes cache)",
             "cached": "cached load (mmap)"}
    print(f"\n{datetime.datetime.now().isoformat(timespec='seconds')}, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs, "
          f"command: `OMP_NUM_THREADS=1 python benchmarks/bench_load.py {' '.join(sys.argv[1:])}`\n")
    print("| lines | entities | reader | seconds | lines/s | peak RSS MB | over imports MB | load avg at start |")
    print("|---:|---:|---|---:|---:|---:|---:|---|")
    for n, mode, reader, r in rows:
        print(f"| {n:,} | {args.entities or max(1000, n // 10):,} | {label[mode].format(reader)} | "
              f"{r['seconds']:.2f} | {r['rows'] / r['seconds'] / 1e6:.2f}M | {r['peak_mb']:.0f} | "
              f"{r['peak_mb'] - r['base_mb']:.0f} | {' / '.join(f'{x:.2f}' for x in r['load'])} |")


if __name__ == "__main__":
    main()
