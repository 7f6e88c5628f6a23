#!/usr/bin/env python
"""Training-throughput benchmark: kgengine vs PyKEEN on the same data and matched settings.

Both engines train the same model (TransE_l2 and/or ComplEx) on the same id
triples with the same embedding dimension, batch size, negatives per positive,
optimizer (Adagrad, lr 0.1) and loss (``-(mean logsigmoid(pos) + mean
logsigmoid(-neg)) / 2``: kgengine's loss, PyKEEN's ``NSSALoss`` with
``adversarial_temperature=0`` i.e. uniform weights, or ``SoftplusLoss`` with
``--pykeen-loss softplus``). Throughput is positive triples per second over
``--steps`` PyKEEN batches / ``--kgengine-steps`` kgengine steps after
``--warmup`` untimed batches, measured ``--repeats`` times;
every measurement runs in its own subprocess (so peak RSS is per engine), and
the engines are interleaved (alternating which goes first) so that drifting
machine load hits both alike.

The design difference being measured:

* kgengine: a batch of B positives is cut into B/chunk chunks; every positive
  of a chunk is scored against the SAME k negative entities (one bmm per
  chunk); only the distinct rows the batch touched are gathered and updated
  (row-sparse Adagrad).
* PyKEEN (sLCWA + BasicNegativeSampler): every positive gets k INDEPENDENT
  corrupted triples (B*k triples scored one by one, head or tail corrupted at
  random), embeddings are dense ``nn.Embedding``s with dense gradients, and
  ``torch.optim.Adagrad`` updates the full tables every step.

Usage (see benchmarks/README.md)::

    python benchmarks/bench_speed.py --dataset kinships --repeats 1              # smoke
    python benchmarks/bench_speed.py                                              # FB15k-237
    python benchmarks/bench_speed.py --profile-kgengine 50                        # where a kgengine step goes
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = "/work/shared/data/fb15k-237"
ENGINES = ("kgengine", "pykeen")
MODELS = ("TransE_l2", "ComplEx")


# ----------------------------------------------------------------------------- helpers
def _rss_mib() -> float:
    """Peak RSS of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _load(args) -> str:
    return "%.2f %.2f %.2f" % os.getloadavg()


class _Stop(Exception):
    """Raised from a PyKEEN callback to end training after the timed window (not a RuntimeError,
    which PyKEEN's loop catches and logs)."""


def _load_kg(args):
    import kgengine

    if args.kg_cache and Path(args.kg_cache).is_file():
        import torch

        d = torch.load(args.kg_cache, weights_only=False)
        return kgengine.KG(d["entities"], d["relations"], d["train"], d["valid"], d["test"], name=d["name"])
    if args.data_path:
        return kgengine.load_dataset(data_path=args.data_path)
    return kgengine.load_dataset(args.dataset)


# ----------------------------------------------------------------------------- workers (one measurement each)
def _worker_kgengine(args, kg) -> dict:
    import torch
    from kgengine.train import TrainConfig, Trainer

    cfg = TrainConfig(model_name=args.model, hidden_dim=args.dim, gamma=args.gamma, lr=args.lr,
                      batch_size=args.batch_size, neg_sample_size=args.negs, neg_chunk_size=args.chunk,
                      max_step=args.warmup + args.kgengine_steps, seed=args.seed, num_thread=args.threads,
                      progress=False, log_interval=10**9)
    trainer = Trainer(kg, cfg)
    torch.set_num_threads(args.threads)
    losses, n = [], args.kgengine_steps
    for s in range(args.warmup):
        losses.append(trainer.train_step(s))
    rss_before = _current_rss_mib()
    t0 = time.perf_counter()
    for s in range(args.warmup, args.warmup + n):
        losses.append(trainer.train_step(s))
    dt = time.perf_counter() - t0
    return {"seconds": dt, "positives": n * args.batch_size, "steps": n, "first_loss": losses[0],
            "last_loss": losses[-1], "chunk": cfg.neg_chunk_size, "rss_before_timed_mib": rss_before}


def _worker_pykeen(args, kg) -> dict:
    import torch
    from pykeen.losses import NSSALoss, SoftplusLoss
    from pykeen.models import ComplEx, TransE
    from pykeen.training import SLCWATrainingLoop
    from pykeen.training.callbacks import TrainingCallback
    from pykeen.triples import CoreTriplesFactory

    torch.set_num_threads(args.threads)
    tf = CoreTriplesFactory(mapped_triples=kg.train, num_entities=kg.num_entities, num_relations=kg.num_relations)
    if args.model == "TransE_l2":
        margin = args.gamma  # kgengine scores gamma - ||h + r - t||; PyKEEN scores -||h + r - t||
        # entity_constrainer=None: PyKEEN's default re-normalises the WHOLE entity table after every step,
        # which kgengine does not do; left out so that the same work is compared.
        model_kw = dict(scoring_fct_norm=2, entity_constrainer=None)
        cls = TransE
    elif args.model == "ComplEx":
        margin = 0.0  # kgengine's ComplEx has no margin in its score
        model_kw = dict(regularizer=None)  # PyKEEN's default adds an Lp regulariser; kgengine's coef is 0
        cls = ComplEx
    else:
        raise SystemExit(f"no PyKEEN counterpart configured for {args.model}")
    if args.pykeen_loss == "nssa":
        loss = NSSALoss(margin=margin, adversarial_temperature=0.0)  # uniform weights == kgengine's loss
    else:
        loss = SoftplusLoss()
    model = cls(triples_factory=tf, embedding_dim=args.dim, loss=loss, random_seed=args.seed, **model_kw)
    loop = SLCWATrainingLoop(model=model, triples_factory=tf, optimizer="adagrad",
                             optimizer_kwargs=dict(lr=args.lr), automatic_memory_optimization=False,
                             negative_sampler="basic", negative_sampler_kwargs=dict(num_negs_per_pos=args.negs))

    W, N = args.warmup, args.steps
    rec: dict = {"t": [], "sizes": [], "losses": []}

    class Timer(TrainingCallback):
        # User callbacks run before PyKEEN's optimizer callback, so pre_batch(i + 1) is the first hook
        # after batch i's optimizer step: the window pre_batch(W) .. pre_batch(W + N) spans N full
        # batches (load + negative sampling + forward + backward + step + post_parameter_update).
        def pre_batch(self, **kw):
            i = len(rec["t"])
            rec["t"].append(time.perf_counter())
            if i == W:
                rec["rss_before_timed_mib"] = _current_rss_mib()
            if i == W + N:
                raise _Stop

        def on_batch(self, epoch, batch, batch_loss, **kw):
            rec["sizes"].append(int(batch["positives"].shape[0]))
            rec["losses"].append(float(batch_loss))

    per_epoch = len(kg.train) // args.batch_size
    epochs = (W + N) // max(per_epoch, 1) + 2
    try:
        loop.train(triples_factory=tf, num_epochs=epochs, batch_size=args.batch_size, use_tqdm=False,
                   use_tqdm_batch=False, callbacks=Timer(), drop_last=True, pin_memory=False, num_workers=0)
    except _Stop:
        pass
    if len(rec["t"]) < W + N + 1:
        raise SystemExit(f"PyKEEN stopped after {len(rec['t'])} batches, wanted {W + N + 1}")
    dt = rec["t"][W + N] - rec["t"][W]
    return {"seconds": dt, "positives": sum(rec["sizes"][W:W + N]), "steps": N, "first_loss": rec["losses"][0],
            "last_loss": rec["losses"][W + N - 1], "rss_before_timed_mib": rec["rss_before_timed_mib"]}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    kg = _load_kg(args)
    rss_data = _current_rss_mib()
    fn = _worker_kgengine if args.engine == "kgengine" else _worker_pykeen
    out = fn(args, kg)
    out.update(engine=args.engine, model=args.model, threads=torch.get_num_threads(),
               pos_per_s=out["positives"] / out["seconds"], peak_rss_mib=_rss_mib(), rss_after_data_mib=rss_data)
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- profile
def profile_kgengine(args) -> None:
    """cProfile + torch.profiler over ``--profile-kgengine`` kgengine steps (after the warm-up)."""
    import cProfile
    import io
    import pstats

    import torch
    from kgengine.train import TrainConfig, Trainer

    torch.set_num_threads(args.threads)
    kg = _load_kg(args)
    n = args.profile_kgengine
    lines = [f"kgengine profile: {args.models[0]} on {kg.name}, {n} steps, threads={torch.get_num_threads()}, "
             f"B={args.batch_size}, k={args.negs}, dim={args.dim}, load {_load(args)}"]
    cfg = TrainConfig(model_name=args.models[0], hidden_dim=args.dim, gamma=args.gamma, lr=args.lr,
                      batch_size=args.batch_size, neg_sample_size=args.negs, neg_chunk_size=args.chunk,
                      max_step=10**9, seed=args.seed, num_thread=args.threads, progress=False)
    tr = Trainer(kg, cfg)
    for s in range(args.warmup):
        tr.train_step(s)
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for s in range(args.warmup, args.warmup + n):
        tr.train_step(s)
    pr.disable()
    lines.append(f"cProfile wall {time.perf_counter() - t0:.3f}s for {n} steps")
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(25)
    lines.append(buf.getvalue())
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(args.warmup + n, args.warmup + 2 * n):
            tr.train_step(s)
    lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    text = "\n".join(lines)
    print(text)
    out = HERE / "out" / f"profile_kgengine_{args.models[0]}_{_dt.date.today().isoformat()}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


# ----------------------------------------------------------------------------- driver
def _worker_cmd(args, engine: str, model: str, cache: str) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--engine", engine, "--models", model,
           "--kg-cache", cache, "--threads", str(args.threads), "--batch-size", str(args.batch_size),
           "--negs", str(args.negs), "--chunk", str(args.chunk), "--dim", str(args.dim), "--gamma", str(args.gamma),
           "--lr", str(args.lr), "--steps", str(args.steps), "--kgengine-steps", str(args.kgengine_steps),
           "--warmup", str(args.warmup), "--seed", str(args.seed),
           "--pykeen-loss", args.pykeen_loss]
    return cmd


def _run_worker(cmd: list[str], args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONWARNINGS="ignore")
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker failed (rc {p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")


def driver(args) -> None:
    import torch

    import kgengine

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = _load(args)
    try:
        from importlib.metadata import version

        pk_version = version("pykeen")
    except Exception:  # noqa: BLE001
        pk_version = "not installed"
    kg = _load_kg(args)
    header = [
        f"# kgengine vs PyKEEN training throughput ({_dt.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"- data: {kg!r} (source: {args.data_path or 'built-in ' + args.dataset})",
        f"- torch {torch.__version__}, kgengine {kgengine.__version__}, pykeen {pk_version}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})",
        f"- threads: torch.set_num_threads({args.threads}) in every worker (torch.get_num_threads() is reported "
        f"per row); OMP/MKL_NUM_THREADS={args.threads}; OMP_WAIT_POLICY="
        f"{args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY') or '(unset: libgomp default, spins)'}",
        f"- settings: batch {args.batch_size} positives, {args.negs} negatives per positive, dim {args.dim} "
        f"(ComplEx: {args.dim} complex = {2 * args.dim} reals per vector in both engines), Adagrad lr {args.lr}, "
        f"gamma/margin {args.gamma} (TransE_l2), loss: kgengine logsigmoid, PyKEEN "
        + ("NSSALoss(adversarial_temperature=0) = the same uniform logsigmoid loss" if args.pykeen_loss == "nssa"
           else "SoftplusLoss"),
        f"- timing: {args.warmup} warm-up batches, then {args.kgengine_steps} (kgengine) / {args.steps} (PyKEEN) timed "
        f"batches; {args.repeats} repeats, each in a "
        "fresh subprocess, engines alternating first; positives/s = timed positives / timed wall seconds",
        f"- kgengine: neg_chunk_size {args.chunk if args.chunk > 0 else min(args.negs, args.batch_size)} -> each chunk "
        f"of positives SHARES one set of {args.negs} negatives (one bmm per chunk), row-sparse Adagrad on used rows",
        f"- PyKEEN: SLCWATrainingLoop + BasicNegativeSampler(num_negs_per_pos={args.negs}) -> {args.negs} INDEPENDENT "
        f"corrupted triples per positive ({args.batch_size * args.negs} triples scored per batch), dense "
        "embeddings/gradients, torch.optim.Adagrad over the full tables; TransE entity_constrainer=None, "
        "ComplEx regularizer=None (kgengine does neither)",
        f"- load average (1/5/15 min) at start: {load_start}",
        "",
    ]
    print("\n".join(header), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "kg.pt")
        torch.save({"entities": kg.entities, "relations": kg.relations, "train": kg.train, "valid": kg.valid,
                    "test": kg.test, "name": kg.name}, cache)
        results: dict[tuple[str, str], list[dict]] = {}
        for model in args.models:
            for r in range(args.repeats):
                order = list(args.engines) if r % 2 == 0 else list(reversed(args.engines))
                for engine in order:
                    res = _run_worker(_worker_cmd(args, engine, model, cache), args)
                    res["load_after"] = _load(args)
                    results.setdefault((engine, model), []).append(res)
                    print(f"  {model:9s} {engine:8s} repeat {r + 1}/{args.repeats}: {res['pos_per_s']:>10.0f} pos/s "
                          f"({res['seconds']:.2f}s for {res['steps']} batches), peak RSS "
                          f"{res['peak_rss_mib']:.0f} MiB, loss {res['first_loss']:.4f} -> {res['last_loss']:.4f}, "
                          f"threads {res['threads']}, load {res['load_after']}", flush=True)

    rows = [
        "| engine | model | threads | batch | negs | dim | positives/s median | min..max | peak RSS MiB "
        "| ratio kgengine/PyKEEN |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        med = {e: statistics.median(x["pos_per_s"] for x in results[(e, model)]) for e in args.engines
               if (e, model) in results}
        for engine in args.engines:
            rs = results.get((engine, model))
            if not rs:
                continue
            v = [x["pos_per_s"] for x in rs]
            ratio = (f"{med['kgengine'] / med['pykeen']:.2f}x" if engine == "kgengine" and "pykeen" in med
                     else ("1.00x (ref)" if engine == "pykeen" else "-"))
            rows.append(f"| {engine} | {model} | {rs[0]['threads']} | {args.batch_size} | {args.negs}"
                        f"{' (shared/chunk ' + str(rs[0]['chunk']) + ')' if engine == 'kgengine' else ' (indep.)'} "
                        f"| {args.dim} | {med[engine]:.0f} | {min(v):.0f}..{max(v):.0f} "
                        f"| {max(x['peak_rss_mib'] for x in rs):.0f} | {ratio} |")
    busy = max(os.getloadavg()[0], float(load_start.split()[0])) >= (os.cpu_count() or 1)
    footer = [
        "",
        f"- load average at end: {_load(args)}; total wall {time.perf_counter() - t_start:.0f}s",
    ] + ([
        f"- WARNING: load average >= {os.cpu_count()} CPUs: other jobs compete for the cores. With --threads > 1 and "
        "libgomp's default spin-waiting, every parallel op can wait a scheduler slice for a descheduled thread; "
        "kgengine (many small ops per step) suffers far more than PyKEEN (few large ones). Compare with "
        "--omp-wait-policy PASSIVE or --threads 1 (benchmarks/README.md)."
    ] if busy and args.threads > 1 and (args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY")) != "PASSIVE"
        else []) + [
        "- peak RSS is the whole worker process (imports + data + training), from resource.getrusage(RUSAGE_SELF).",
        "- the negatives column: kgengine scores each positive against the negatives its chunk shares; PyKEEN draws "
        "and scores that many independent corrupted triples per positive. That is the design difference measured.",
    ]
    table = "\n".join(rows)
    print("\n" + table + "\n" + "\n".join(footer))
    if not args.no_write:
        out = HERE / "out" / f"speed_{_dt.datetime.now().strftime('%Y-%m-%d_%H%M%S')}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        raw = ["", "## raw measurements", "", "```json"] + [
            json.dumps({"engine": e, "model": m, "runs": v}) for (e, m), v in results.items()] + ["```", ""]
        out.write_text("\n".join(header) + "\n" + table + "\n" + "\n".join(footer) + "\n" + "\n".join(raw))
        print(f"\nwritten to {out}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=None, help=f"folder with train/valid/test.txt (default {DEFAULT_DATA})")
    p.add_argument("--dataset", default=None, help="a kgengine built-in dataset instead (kinships, umls, nations)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--negs", type=int, default=256, help="negatives per positive")
    p.add_argument("--chunk", type=int, default=-1, help="kgengine neg_chunk_size (-1: = negs, kgengine's default)")
    p.add_argument("--dim", type=int, default=200, help="kgengine hidden_dim = PyKEEN embedding_dim")
    p.add_argument("--gamma", type=float, default=12.0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10, help="timed PyKEEN batches per measurement")
    p.add_argument("--kgengine-steps", type=int, default=50,
                   help="timed kgengine batches per measurement (kgengine steps are much shorter; pass the same "
                        "value as --steps for identical counts)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches before the timed ones (both engines)")
    p.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default=None,
                   help="set OMP_WAIT_POLICY in the workers (default: inherit; unset = libgomp spins)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pykeen-loss", choices=("nssa", "softplus"), default="nssa")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/out/speed_<date>.md")
    p.add_argument("--profile-kgengine", type=int, default=0, metavar="STEPS",
                   help="instead of the benchmark: profile STEPS kgengine steps of the first --models model")
    # internal
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    p.add_argument("--kg-cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dataset is None and args.data_path is None:
        args.data_path = DEFAULT_DATA
    if args.worker:
        args.model = args.models[0]
        worker(args)
    elif args.profile_kgengine:
        profile_kgengine(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
