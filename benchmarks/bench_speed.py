#!/usr/bin/env python
"""Training-throughput benchmark: kgengine vs PyKEEN, PyG and TorchKGE on the same data and matched settings.

Every engine trains the same model (TransE_l2 and/or ComplEx) on the same id
triples with the same embedding dimension, batch size, optimizer
(``torch.optim.Adagrad`` / kgengine's row-sparse Adagrad, lr 0.1) and thread
count, and with the same number of negatives per positive where the library
lets one choose it. Throughput is positive triples per second over a window of
whole batches after ``--warmup`` untimed batches, measured ``--repeats`` times;
every measurement runs in its own subprocess (so peak RSS is per engine), and
the engines are interleaved (the order reverses every repeat) so that drifting
machine load hits all of them alike. Ratios are kgengine / each peer.

The engines (``--engines``, default: every one whose package imports):

* kgengine: a batch of B positives is cut into B/chunk chunks; every positive
  of a chunk is scored against the SAME k negative entities (one bmm per
  chunk); only the distinct rows the batch touched are gathered and updated
  (row-sparse Adagrad). Loss ``-(mean logsigmoid(pos) + mean logsigmoid(-neg)) / 2``.
* pykeen (sLCWA + BasicNegativeSampler): every positive gets k INDEPENDENT
  corrupted triples (B*k triples scored one by one, head or tail corrupted at
  random), dense ``nn.Embedding``s and gradients, ``torch.optim.Adagrad`` over
  the full tables. ``NSSALoss(adversarial_temperature=0)`` = kgengine's loss
  (``--pykeen-loss softplus`` for ``SoftplusLoss``).
* pyg (``torch_geometric.nn.kge`` TransE(p_norm=2) / ComplEx, the loop of PyG's
  ``examples/kge_fb15k_237.py``: ``model.loader`` + ``model.loss``):
  ``KGEModel.loss`` draws ONE random corruption per positive (``random_sample``:
  half the batch head-, half tail-corrupted) and has its own loss (TransE:
  margin ranking, margin 1; ComplEx: BCE with logits); the negatives per
  positive cannot be set. ``--pyg-mode matched`` instead scores k independent
  corruptions per positive through the model's forward with kgengine's loss.
  Dense embeddings unless ``--pyg-sparse``.
* torchkge (TransEModel(dissimilarity_type='L2') / ComplExModel, the loop of
  TorchKGE's README: ``torchkge.utils.DataLoader`` +
  ``UniformNegativeSampler(n_neg=k).corrupt_batch`` + ``LogisticLoss``, then
  ``normalize_parameters()`` at every epoch end): k INDEPENDENT corruptions per
  positive (head or tail at random), dense embeddings and gradients.

Usage (see benchmarks/README.md)::

    python benchmarks/bench_speed.py --dataset kinships --repeats 1              # smoke
    python benchmarks/bench_speed.py                                              # FB15k-237
    python benchmarks/bench_speed.py --engines kgengine pyg torchkge              # a subset
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
DEFAULT_DATA = str(HERE.parents[1] / "shared" / "data" / "fb15k-237")  # ../shared beside the checkout
ENGINES = ("kgengine", "pykeen", "pyg", "torchkge")
# what a peer needs: the distribution (for its version) and the imports its worker does
PEER_PACKAGES = {
    "pykeen": ("pykeen", "import pykeen.models, pykeen.training, pykeen.losses, pykeen.triples"),
    "pyg": ("torch_geometric", "from torch_geometric.nn.kge import TransE, ComplEx"),
    "torchkge": ("torchkge", "from torchkge.models import TransEModel, ComplExModel; "
                             "from torchkge.sampling import UniformNegativeSampler; "
                             "from torchkge.utils import DataLoader, LogisticLoss; "
                             "from torchkge.data_structures import KnowledgeGraph"),
}
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

        d = torch.load(args.kg_cache, weights_only=True)  # names and id tensors: plain data, never code
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
            "last_loss": losses[-1], "chunk": cfg.neg_chunk_size, "rss_before_timed_mib": rss_before,
            "negs_per_pos": args.negs, "negs_label": f"{args.negs} (shared/chunk {cfg.neg_chunk_size})"}


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
            "last_loss": rec["losses"][W + N - 1], "rss_before_timed_mib": rec["rss_before_timed_mib"],
            "negs_per_pos": args.negs, "negs_label": f"{args.negs} (indep.)"}


def _timed_batches(epoch, step, W: int, N: int, on_epoch_end=None) -> dict:
    """Run ``step(batch)`` over ``epoch()`` (an iterable of ``(batch, n_positives)``, called again for every
    epoch) and time batches ``W .. W + N - 1``: a clock reading at the top of every loop body, the window from
    reading ``W`` to reading ``W + N``, i.e. ``N`` whole batches including the loader's work for them (as the
    PyKEEN window: load + negative sampling + forward + backward + optimizer step, and ``on_epoch_end`` when an
    epoch ends inside the window)."""
    t, sizes, losses, rss = [], [], [], float("nan")
    while True:
        seen = 0
        for batch, n in epoch():
            seen += 1
            i = len(t)
            t.append(time.perf_counter())
            if i == W:
                rss = _current_rss_mib()
            if i == W + N:
                return {"seconds": t[W + N] - t[W], "positives": sum(sizes[W:W + N]), "steps": N,
                        "first_loss": losses[0], "last_loss": losses[W + N - 1], "rss_before_timed_mib": rss}
            losses.append(step(batch))
            sizes.append(n)
        if not seen:
            raise SystemExit("the training loader yields no batch (fewer train triples than --batch-size?)")
        if on_epoch_end is not None:
            on_epoch_end()


def _worker_pyg(args, kg) -> dict:
    """PyG's KGE loop (examples/kge_fb15k_237.py): ``model.loader(...)`` batches, ``model.loss(h, r, t)``."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn.kge import ComplEx, TransE

    torch.manual_seed(args.seed)
    if args.model == "TransE_l2":
        # p_norm=2: L2 distance (and PyG L2-normalises the gathered head/tail rows in every forward);
        # margin: PyG's default 1.0 for its margin ranking loss (not kgengine's gamma, which is a score offset).
        model = TransE(kg.num_entities, kg.num_relations, args.dim, p_norm=2.0, sparse=args.pyg_sparse)
        offset = args.gamma  # --pyg-mode matched: kgengine's score gamma - ||h + r - t||
    elif args.model == "ComplEx":
        model = ComplEx(kg.num_entities, kg.num_relations, args.dim, sparse=args.pyg_sparse)  # d complex = 2d reals
        offset = 0.0
    else:
        raise SystemExit(f"no PyG counterpart configured for {args.model}")
    opt = torch.optim.Adagrad(model.parameters(), lr=args.lr)  # handles sparse gradients too (--pyg-sparse)
    tr = kg.train
    loader = model.loader(head_index=tr[:, 0].contiguous(), rel_type=tr[:, 1].contiguous(),
                          tail_index=tr[:, 2].contiguous(), batch_size=args.batch_size, shuffle=True,
                          drop_last=True, num_workers=0,
                          generator=torch.Generator().manual_seed(args.seed))
    k = args.negs

    def step(batch) -> float:
        h, r, t = batch
        opt.zero_grad()
        if args.pyg_mode == "native":
            loss = model.loss(h, r, t)  # 1 random corruption per positive, PyG's own loss
        else:
            # k independent corruptions per positive with PyG's own sampler (random_sample corrupts the heads of
            # the first half of its input and the tails of the second), kgengine's uniform logsigmoid loss
            nh, nr, nt = model.random_sample(h.repeat(k), r.repeat(k), t.repeat(k))
            pos, neg = model(h, r, t) + offset, model(nh, nr, nt) + offset
            loss = -(F.logsigmoid(pos).mean() + F.logsigmoid(-neg).mean()) / 2
        loss.backward()
        opt.step()
        return float(loss.detach())

    steps = args.pyg_steps if args.pyg_steps is not None else (50 if args.pyg_mode == "native" else args.steps)
    out = _timed_batches(lambda: ((b, int(b[0].numel())) for b in loader), step, args.warmup, steps)
    if args.pyg_mode == "native":
        out.update(negs_per_pos=1, negs_label="1 (indep.; fixed by PyG's KGEModel.loss)")
    else:
        out.update(negs_per_pos=k, negs_label=f"{k} (indep.; --pyg-mode matched)")
    out.update(pyg_mode=args.pyg_mode, sparse=args.pyg_sparse)
    return out


def _worker_torchkge(args, kg) -> dict:
    """TorchKGE's training loop as its README shows it: ``torchkge.utils.DataLoader`` batches,
    ``sampler.corrupt_batch`` negatives, ``model(h, t, r, nh, nt)``, a ``torchkge.utils`` loss, and
    ``model.normalize_parameters()`` after every epoch."""
    import torch
    from torchkge.data_structures import KnowledgeGraph
    from torchkge.models import ComplExModel, TransEModel
    from torchkge.sampling import UniformNegativeSampler
    from torchkge.utils import DataLoader, LogisticLoss

    torch.manual_seed(args.seed)
    # torchkge's DataLoader walks the triples in order (no shuffling; the last batch of an epoch is partial):
    # hand it the train split shuffled once, seeded, so it does not profit from sorted ids.
    perm = torch.randperm(len(kg.train), generator=torch.Generator().manual_seed(args.seed))
    tr = kg.train[perm]
    tkg = KnowledgeGraph(kg={"heads": tr[:, 0].contiguous(), "tails": tr[:, 2].contiguous(),
                             "relations": tr[:, 1].contiguous()},
                         ent2ix={n: i for i, n in enumerate(kg.entities)},
                         rel2ix={n: i for i, n in enumerate(kg.relations)})
    if args.model == "TransE_l2":
        # 'L2' = squared L2 distance ||h + r - t||^2; h and t rows are L2-normalised in every scoring call
        model = TransEModel(args.dim, kg.num_entities, kg.num_relations, dissimilarity_type="L2")
    elif args.model == "ComplEx":
        model = ComplExModel(args.dim, kg.num_entities, kg.num_relations)  # d complex = 2d reals
    else:
        raise SystemExit(f"no TorchKGE counterpart configured for {args.model}")
    criterion = LogisticLoss()  # softplus(-pos) + softplus(neg), summed: TorchKGE's logsigmoid-type loss
    sampler = UniformNegativeSampler(tkg, n_neg=args.negs)  # head or tail at random, n_neg per positive
    loader = DataLoader(tkg, batch_size=args.batch_size)
    opt = torch.optim.Adagrad(model.parameters(), lr=args.lr)

    def step(batch) -> float:
        h, t, r = batch
        nh, nt = sampler.corrupt_batch(h, t, r)  # (B * n_neg,) each; positives are repeated n_neg times
        opt.zero_grad()
        pos, neg = model(h, t, r, nh, nt)
        loss = criterion(pos, neg)
        loss.backward()
        opt.step()
        return float(loss.detach())

    out = _timed_batches(lambda: ((b, int(b[0].numel())) for b in loader), step, args.warmup, args.steps,
                         on_epoch_end=model.normalize_parameters)
    out.update(negs_per_pos=args.negs, negs_label=f"{args.negs} (indep.)")
    return out


WORKERS = {"kgengine": _worker_kgengine, "pykeen": _worker_pykeen, "pyg": _worker_pyg,
           "torchkge": _worker_torchkge}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    kg = _load_kg(args)
    rss_data = _current_rss_mib()
    out = WORKERS[args.engine](args, kg)
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
           "--pykeen-loss", args.pykeen_loss, "--pyg-mode", args.pyg_mode]
    if args.pyg_steps is not None:
        cmd += ["--pyg-steps", str(args.pyg_steps)]
    if args.pyg_sparse:
        cmd.append("--pyg-sparse")
    return cmd


def _worker_env(args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONWARNINGS="ignore")
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    return env


def _run_worker(cmd: list[str], args) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(args))
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"worker failed (rc {p.returncode}): {' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")


def _probe_engines(args, wanted: list[str]) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Which of ``wanted`` can run: each peer's imports are tried in a subprocess of this interpreter (a
    broken install, or one built for another torch, then cannot take the driver down). Returns the usable
    engines, ``{engine: version}`` and ``{skipped engine: reason}``."""
    from importlib.metadata import PackageNotFoundError, version

    import kgengine

    ok, versions, skipped = [], {"kgengine": kgengine.__version__}, {}
    for engine in wanted:
        if engine == "kgengine":
            ok.append(engine)
            continue
        dist, imports = PEER_PACKAGES[engine]
        try:
            versions[engine] = version(dist)
        except PackageNotFoundError:
            skipped[engine] = f"package {dist!r} is not installed in {sys.prefix}"
            continue
        p = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True,
                           env=_worker_env(args))
        if p.returncode:
            err = (p.stderr.strip().splitlines() or [f"rc {p.returncode}"])[-1]
            skipped[engine] = f"{dist} {versions[engine]} is installed but does not import with this torch: {err}"
            continue
        ok.append(engine)
    return ok, versions, skipped


_ENGINE_NAMES = {"kgengine": "kgengine", "pykeen": "PyKEEN", "pyg": "PyG", "torchkge": "TorchKGE"}


def _engine_lines(args, engines: list[str]) -> list[str]:
    """One header line per engine: what a batch does there."""
    k, B = args.negs, args.batch_size
    pyg_steps = args.pyg_steps if args.pyg_steps is not None else (50 if args.pyg_mode == "native" else args.steps)
    pyg_negatives = (
        "**1 random corruption per positive** (KGEModel.random_sample; the number of negatives cannot be "
        f"set, so NOT the {k} of the other engines), PyG's own loss (TransE: margin ranking; ComplEx: BCE "
        "with logits)" if args.pyg_mode == "native" else
        f"--pyg-mode matched: {k} INDEPENDENT corruptions per positive from KGEModel.random_sample on the "
        "batch repeated k times, scored by the model's forward, kgengine's uniform logsigmoid loss")
    sparse = "sparse" if args.pyg_sparse else "dense"
    pyg_line = ("- PyG: torch_geometric.nn.kge TransE(p_norm=2, margin=1) / ComplEx, model.loader(shuffle=True, "
                "drop_last=True) + model.loss: " + pyg_negatives + "; TransE L2-normalises the gathered head/tail "
                f"rows every forward; {sparse} embedding gradients, torch.optim.Adagrad; {pyg_steps} timed batches")
    lines = {
        "kgengine": f"- kgengine: neg_chunk_size {args.chunk if args.chunk > 0 else min(k, B)} -> each chunk "
                    f"of positives SHARES one set of {k} negatives (one bmm per chunk), row-sparse Adagrad on used "
                    f"rows; loss -(mean logsigmoid(pos) + mean logsigmoid(-neg))/2, TransE score gamma - ||h+r-t||; "
                    f"{args.kgengine_steps} timed batches",
        "pykeen": f"- PyKEEN: SLCWATrainingLoop + BasicNegativeSampler(num_negs_per_pos={k}) -> {k} INDEPENDENT "
                  f"corrupted triples per positive ({B * k} triples scored per batch), dense "
                  "embeddings/gradients, torch.optim.Adagrad over the full tables; TransE entity_constrainer=None, "
                  "ComplEx regularizer=None (kgengine does neither); loss "
                  + ("NSSALoss(adversarial_temperature=0) = kgengine's uniform logsigmoid loss"
                     if args.pykeen_loss == "nssa" else "SoftplusLoss") + f"; {args.steps} timed batches",
        "pyg": pyg_line,
        "torchkge": f"- TorchKGE: TransEModel(dissimilarity_type='L2': squared L2 distance, head/tail rows "
                    f"L2-normalised every call) / ComplExModel; torchkge.utils.DataLoader (in order, over the train "
                    f"split shuffled once) + UniformNegativeSampler(n_neg={k}).corrupt_batch -> {k} INDEPENDENT "
                    f"corruptions per positive ({B * k} triples scored per batch), LogisticLoss (summed softplus), "
                    "dense embeddings/gradients, torch.optim.Adagrad, normalize_parameters() at epoch ends; "
                    f"{args.steps} timed batches",
    }
    return [lines[e] for e in engines]


def driver(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = _load(args)
    wanted = list(dict.fromkeys(args.engines or ENGINES))
    engines, versions, skipped = _probe_engines(args, wanted)
    for e, why in skipped.items():
        print(f"skipping {e}: {why}", flush=True)
    if not engines:
        raise SystemExit("no engine left to run")
    kg = _load_kg(args)
    peers = [e for e in engines if e != "kgengine"]
    title = (f"kgengine vs {', '.join(_ENGINE_NAMES[e] for e in peers)}" if "kgengine" in engines and peers
             else ", ".join(_ENGINE_NAMES[e] for e in engines))
    header = [
        f"# {title} training throughput ({_dt.datetime.now().isoformat(timespec='seconds')})",
        "",
        f"- data: {kg!r} (source: {args.data_path or 'built-in ' + args.dataset})",
        f"- torch {torch.__version__}, " + ", ".join(f"{e if e != 'pyg' else 'torch_geometric'} {versions[e]}"
                                                     for e in engines)
        + f", python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()})",
        f"- threads: torch.set_num_threads({args.threads}) in every worker (torch.get_num_threads() is reported "
        f"per row); OMP/MKL_NUM_THREADS={args.threads}; OMP_WAIT_POLICY="
        f"{args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY') or '(unset: libgomp default, spins)'}",
        f"- settings: batch {args.batch_size} positives, {args.negs} negatives per positive where the library lets "
        f"one set it (see the negs column), dim {args.dim} (ComplEx: {args.dim} complex = {2 * args.dim} reals per "
        f"vector in every engine), Adagrad lr {args.lr}, gamma {args.gamma} (TransE_l2: kgengine's score offset, "
        "PyKEEN's NSSA margin)",
        f"- timing: {args.warmup} warm-up batches, then the timed batches given per engine below; {args.repeats} "
        "repeats, each in a fresh subprocess, engine order reversed every repeat; positives/s = timed positives / "
        "timed wall seconds",
    ] + _engine_lines(args, engines) + [
        f"- load average (1/5/15 min) at start: {load_start}",
        "",
    ]
    print("\n".join(header), flush=True)

    failed: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "kg.pt")
        torch.save({"entities": kg.entities, "relations": kg.relations, "train": kg.train, "valid": kg.valid,
                    "test": kg.test, "name": kg.name}, cache)
        results: dict[tuple[str, str], list[dict]] = {}
        for model in args.models:
            for r in range(args.repeats):
                order = list(engines) if r % 2 == 0 else list(reversed(engines))
                for engine in order:
                    if (engine, model) in failed:
                        continue
                    try:
                        res = _run_worker(_worker_cmd(args, engine, model, cache), args)
                    except RuntimeError as exc:
                        if engine == "kgengine":
                            raise
                        # a peer that breaks at run time: report it, keep the rest of the comparison
                        failed[(engine, model)] = str(exc).strip().splitlines()[-1][:300]
                        print(f"  {model:9s} {engine:8s} FAILED, skipped for this model: {exc}", flush=True)
                        continue
                    res["load_after"] = _load(args)
                    results.setdefault((engine, model), []).append(res)
                    print(f"  {model:9s} {engine:8s} repeat {r + 1}/{args.repeats}: {res['pos_per_s']:>10.0f} pos/s "
                          f"({res['seconds']:.2f}s for {res['steps']} batches), peak RSS "
                          f"{res['peak_rss_mib']:.0f} MiB, loss {res['first_loss']:.4f} -> {res['last_loss']:.4f}, "
                          f"threads {res['threads']}, load {res['load_after']}", flush=True)

    rows = [
        "| engine | model | threads | batch | negs per positive | dim | positives/s median | min..max "
        "| peak RSS MiB | ratio kgengine/engine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        med = {e: statistics.median(x["pos_per_s"] for x in results[(e, model)]) for e in engines
               if (e, model) in results}
        for engine in engines:
            rs = results.get((engine, model))
            if not rs:
                if (engine, model) in failed:
                    rows.append(f"| {engine} | {model} | - | - | - | - | failed: {failed[(engine, model)]} "
                                "| - | - | - |")
                continue
            v = [x["pos_per_s"] for x in rs]
            if engine == "kgengine":
                ratio = "1.00x (ref)"
            else:
                ratio = f"{med['kgengine'] / med[engine]:.2f}x" if "kgengine" in med else "-"
            rows.append(f"| {engine} | {model} | {rs[0]['threads']} | {args.batch_size} | {rs[0]['negs_label']} "
                        f"| {args.dim} | {med[engine]:.0f} | {min(v):.0f}..{max(v):.0f} "
                        f"| {max(x['peak_rss_mib'] for x in rs):.0f} | {ratio} |")
    busy = max(os.getloadavg()[0], float(load_start.split()[0])) >= (os.cpu_count() or 1)
    footer = [
        "",
        f"- load average at end: {_load(args)}; total wall {time.perf_counter() - t_start:.0f}s",
    ] + ([
        f"- WARNING: load average >= {os.cpu_count()} CPUs: other jobs compete for the cores. With --threads > 1 and "
        "libgomp's default spin-waiting, every parallel op can wait a scheduler slice for a descheduled thread; "
        "kgengine (many small ops per step) suffers far more than the peers (few large ones). Compare with "
        "--omp-wait-policy PASSIVE or --threads 1 (benchmarks/README.md)."
    ] if busy and args.threads > 1 and (args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY")) != "PASSIVE"
        else []) + [
        "- ratio: kgengine's median positives/s divided by that engine's (> 1: kgengine is faster).",
        "- peak RSS is the whole worker process (imports + data + training), from resource.getrusage(RUSAGE_SELF).",
        "- the negs column: kgengine scores each positive against the negatives its chunk shares; the peers draw "
        "and score that many independent corrupted triples per positive. That is the design difference measured.",
    ] + ([
        "- PyG's KGEModel.loss draws ONE negative per positive and its number cannot be set: its rows do a "
        f"different (much smaller) amount of work per positive than the {args.negs}-negative rows, so its ratio "
        "is not like for like. --pyg-mode matched scores the same number of negatives as the others."
    ] if "pyg" in engines and args.pyg_mode == "native" else []) + [
        f"- skipped {e}: {why}" for e, why in skipped.items()]
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
    p.add_argument("--engines", nargs="+", default=None, type=lambda x: [e for e in x.split(",") if e],
                   help=f"engines to run, space- or comma-separated, from {','.join(ENGINES)} (default: all of "
                        "them; a peer whose package is missing or does not import is skipped with the reason)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--negs", type=int, default=256, help="negatives per positive")
    p.add_argument("--chunk", type=int, default=-1, help="kgengine neg_chunk_size (-1: = negs, kgengine's default)")
    p.add_argument("--dim", type=int, default=200,
                   help="kgengine hidden_dim = PyKEEN embedding_dim = PyG hidden_channels = TorchKGE emb_dim")
    p.add_argument("--gamma", type=float, default=12.0)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--steps", type=int, default=10, help="timed batches per measurement for PyKEEN and TorchKGE "
                                                         "(and PyG with --pyg-mode matched)")
    p.add_argument("--kgengine-steps", type=int, default=50,
                   help="timed kgengine batches per measurement (kgengine steps are much shorter; pass the same "
                        "value as --steps for identical counts)")
    p.add_argument("--pyg-steps", type=int, default=None,
                   help="timed PyG batches per measurement (default 50 with --pyg-mode native, else --steps)")
    p.add_argument("--pyg-mode", choices=("native", "matched"), default="native",
                   help="native: PyG's KGEModel.loss (1 random negative per positive, PyG's loss); matched: --negs "
                        "independent corruptions per positive through the model's forward, kgengine's loss")
    p.add_argument("--pyg-sparse", action="store_true",
                   help="PyG embeddings with sparse=True (sparse gradients; torch.optim.Adagrad takes them)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches before the timed ones (every engine)")
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
    if args.engines is not None:
        args.engines = [e for group in args.engines for e in group]
        bad = [e for e in args.engines if e not in ENGINES]
        if bad:
            p.error(f"--engines: unknown {', '.join(bad)} (choose from {', '.join(ENGINES)})")
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
