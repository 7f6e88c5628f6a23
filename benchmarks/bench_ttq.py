#!/usr/bin/env python
"""Time to quality: test MRR against training wall time, kgengine beside PyKEEN at PyKEEN's best settings.

Every run trains for ``--budget`` seconds of wall time (1 thread), stopping the
clock at ``--points`` log-spaced moments (budget/128 ... budget) to rank valid and test with ONE shared
evaluator (kgengine's: filtered, realistic ties, all entities), so the curves are
comparable point for point. PyKEEN's vectors are read out of its model and ranked
by the same code (its inverse relations mapped to kgengine's reciprocal rows); at
the end of each PyKEEN run its own RankBasedEvaluator ranks test once more, as a
check on that mapping (``pykeen_own_test_mrr``).

Engines (``--engines``):

* ``kgengine``: its preset for the dataset (``kgengine.presets``; CoDEx-S has none:
  the model defaults), chunk-shared negatives, row-sparse Adagrad, eager (no ``--compile``).
* ``pykeen-default``: what ``pykeen.pipeline`` gives a user who names only the model:
  sLCWA with 1 negative per positive (basic sampler), the model's default loss
  (TransE: margin ranking, ComplEx: softplus), init and regulariser, Adam lr 1e-3, batch 256.
* ``pykeen-lcwa``: the strongest recipe of the PyKEEN / LibKGE reproduction studies:
  LCWA (1-vs-all) + cross-entropy + inverse triples, xavier init (PyKEEN's default
  N(0, 1) init for ComplEx barely trains), Adam lr 1e-3, batch 256, no regulariser.
* ``torchkge``: TorchKGE 0.17's README recipe (its only documented setting): Adam lr 4e-4,
  weight decay 1e-5, batch 32768, Bernoulli sampler with 1 negative, margin loss 0.5 for TransE
  (squared L2, entities normalised) and TorchKGE's logistic loss for ComplEx, entity
  normalisation after every epoch.
* ``pykeen-trouillon`` (ComplEx only): PyKEEN's own reproduction config for ComplEx
  (``experiments/complex/trouillon2016_complex_fb15k.json``: sLCWA, 10 negatives,
  softplus, Adagrad lr 0.5, L2 weight 0.01, batch 4831, xavier).

Each engine runs in its own subprocess and its own Python (``--pykeen-python``: a venv with
pykeen; ``--torchkge-python`` likewise; kgengine is put on their path for the shared
evaluator). ``--lanes 2`` runs two at a time, a kgengine run beside a peer's, so both see the
same machine load.

Usage::

    python benchmarks/bench_ttq.py --datasets umls codex-s --budget 240 --pykeen-python /path/venv/bin/python
    python benchmarks/bench_ttq.py --plot benchmarks/out/ttq.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DATASETS = {"umls": DATA / "umls", "codex-s": DATA / "codex-s", "fb15k-237": DATA / "fb15k-237"}
ENGINES = ("kgengine", "pykeen-default", "pykeen-lcwa", "pykeen-trouillon", "torchkge")
MODELS = ("ComplEx", "TransE_l2")
DIM = {"ComplEx": 200, "TransE_l2": 200}  # PyKEEN's ComplEx dim counts complex numbers, as kgengine's


# ----------------------------------------------------------------------------- worker side
def _shared_eval(model, kg, known) -> tuple[float, float]:
    from kgengine import evaluate

    return evaluate(model, kg.valid, known)["mrr"], evaluate(model, kg.test, known)["mrr"]


def _kgengine_run(kg, a, clock):
    from kgengine.presets import preset_values
    from kgengine.train import TrainConfig, Trainer

    vals = preset_values(a.model, a.dataset)
    for item in a.kgengine_set:  # --kgengine-set key=value: a setting other than the preset's
        key, value = item.split("=", 1)
        vals[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    vals.update(max_step=10**9, seed=a.seed, num_thread=1, progress=False, log_interval=10**9, eval_interval=0,
                early_stop_patience=0)
    tr = Trainer(kg, TrainConfig(**vals))
    step = 0

    def train_until(t_end):
        nonlocal step
        while clock() < t_end:
            for _ in range(10):
                tr.train_step(step)
                step += 1
        return {"steps": step}

    shown = ("hidden_dim", "batch_size", "neg_sample_size", "lr", "loss_genre", "regularization_coef",
             "neg_adversarial_sampling")
    return tr.model, train_until, {k: getattr(tr.cfg, k) for k in shown}


def _pykeen_to_kgengine(pk_model, kg, name: str, inverse: bool):
    """kgengine model with PyKEEN's vectors (rank-equivalent scores)."""
    import torch
    from kgengine.models import create_model

    with torch.no_grad():
        E = pk_model.entity_representations[0](indices=None).detach()
        R = pk_model.relation_representations[0](indices=None).detach()
        if torch.is_complex(E):
            E, R = (torch.cat([x.real, x.imag], -1) for x in (E, R))
        if inverse:  # PyKEEN: relation r at row 2r, its inverse at 2r + 1; kgengine: r and R + r
            R = torch.cat([R[0::2], R[1::2]])
        m = create_model(name, kg.num_entities, kg.num_relations, E.shape[1] // (2 if name == "ComplEx" else 1),
                         reciprocal=inverse)
        m.tables["entity"].copy_(E.float())
        m.tables["relation"].copy_(R.float())
    return m


def _pykeen_run(kg, a, clock):
    from pykeen.models import ComplEx, TransE
    from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop
    from pykeen.triples import CoreTriplesFactory

    inverse = a.engine == "pykeen-lcwa"
    tf = CoreTriplesFactory(mapped_triples=kg.train, num_entities=kg.num_entities, num_relations=kg.num_relations,
                            create_inverse_triples=inverse)
    cls = ComplEx if a.model == "ComplEx" else TransE
    kw = dict(embedding_dim=DIM[a.model], random_seed=a.seed)
    if a.model == "TransE_l2":
        kw["scoring_fct_norm"] = 2
    opt, opt_kw, batch, loop_kw = "adam", dict(lr=1e-3), 256, {}
    if a.engine == "pykeen-default":
        loop_cls = SLCWATrainingLoop
    elif a.engine == "pykeen-lcwa":
        loop_cls = LCWATrainingLoop
        kw.update(loss="crossentropy", entity_initializer="xavier_uniform", relation_initializer="xavier_uniform")
        if a.model == "ComplEx":
            kw["regularizer"] = None
    elif a.engine == "pykeen-trouillon":
        if a.model != "ComplEx":
            raise SystemExit("pykeen-trouillon is a ComplEx config")
        loop_cls = SLCWATrainingLoop
        kw.update(loss="softplus", entity_initializer="xavier_uniform", relation_initializer="xavier_uniform",
                  regularizer="lp", regularizer_kwargs=dict(weight=0.01, p=2.0, normalize=False))
        opt, opt_kw, batch = "adagrad", dict(lr=0.5), 4831
        loop_kw = dict(negative_sampler="basic", negative_sampler_kwargs=dict(num_negs_per_pos=10))
    else:
        raise SystemExit(f"unknown engine {a.engine}")
    pk = cls(triples_factory=tf, **kw)
    loop = loop_cls(model=pk, triples_factory=tf, optimizer=opt, optimizer_kwargs=opt_kw,
                    automatic_memory_optimization=False, **loop_kw)
    epochs = 0

    def train_until(t_end):
        nonlocal epochs
        while clock() < t_end:
            loop.train(triples_factory=tf, num_epochs=epochs + 1, batch_size=min(batch, len(kg.train)),
                       use_tqdm=False, use_tqdm_batch=False, continue_training=epochs > 0, num_workers=0)
            epochs += 1
        return {"epochs": epochs}

    state = {"pk": pk, "tf": tf}
    model_fn = lambda: _pykeen_to_kgengine(pk, kg, a.model, inverse)  # noqa: E731
    desc = dict(loop=loop_cls.__name__, optimizer=opt, **opt_kw, batch_size=batch, inverse=inverse,
                **{k: (v if isinstance(v, (int, float, str, type(None))) else str(v)) for k, v in kw.items()},
                **{k: str(v) for k, v in loop_kw.items()})
    return (model_fn, state), train_until, desc


def _torchkge_run(kg, a, clock):
    import torch
    import torch.nn.functional as F
    from torchkge.data_structures import KnowledgeGraph
    from torchkge.models import ComplExModel, TransEModel
    from torchkge.sampling import BernoulliNegativeSampler
    from torchkge.utils import DataLoader, LogisticLoss, MarginLoss
    from kgengine.models import create_model

    perm = torch.randperm(len(kg.train), generator=torch.Generator().manual_seed(a.seed))
    tr = kg.train[perm]  # its DataLoader does not shuffle
    tkg = KnowledgeGraph(kg={"heads": tr[:, 0].contiguous(), "tails": tr[:, 2].contiguous(),
                             "relations": tr[:, 1].contiguous()},
                         ent2ix={n: i for i, n in enumerate(kg.entities)},
                         rel2ix={n: i for i, n in enumerate(kg.relations)})
    if a.model == "TransE_l2":
        model, loss = TransEModel(DIM[a.model], kg.num_entities, kg.num_relations, dissimilarity_type="L2"), \
            MarginLoss(0.5)
    else:
        model, loss = ComplExModel(DIM[a.model], kg.num_entities, kg.num_relations), LogisticLoss()
    opt = torch.optim.Adam(model.parameters(), lr=4e-4, weight_decay=1e-5)
    sampler = BernoulliNegativeSampler(tkg)
    loader = DataLoader(tkg, batch_size=32768)
    epochs = 0

    def train_until(t_end):
        nonlocal epochs
        while clock() < t_end:
            for h, t, r in loader:
                nh, nt = sampler.corrupt_batch(h, t, r)
                opt.zero_grad()
                pos, neg = model(h, t, r, nh, nt)
                loss(pos, neg).backward()
                opt.step()
            model.normalize_parameters()
            epochs += 1
        return {"epochs": epochs}

    def to_kgengine():
        with torch.no_grad():
            emb = model.get_embeddings()
            if a.model == "TransE_l2":
                E, R = F.normalize(emb[0], dim=1), emb[1]  # TorchKGE normalises h and t in every score
            else:
                E, R = torch.cat([emb[0], emb[1]], 1), torch.cat([emb[2], emb[3]], 1)
            m = create_model(a.model, kg.num_entities, kg.num_relations, DIM[a.model])
            m.tables["entity"].copy_(E.float())
            m.tables["relation"].copy_(R.float())
        return m

    desc = dict(optimizer="adam", lr=4e-4, weight_decay=1e-5, batch_size=32768, sampler="bernoulli, 1 negative",
                loss=type(loss).__name__, dim=DIM[a.model])
    return (to_kgengine, None), train_until, desc


def _pykeen_own_test_mrr(state, kg) -> float:
    from pykeen.evaluation import RankBasedEvaluator

    ev = RankBasedEvaluator(filtered=True)
    res = ev.evaluate(state["pk"], kg.test, additional_filter_triples=[kg.train, kg.valid], batch_size=256,
                      use_tqdm=False)
    return float(res.get_metric("both.realistic.inverse_harmonic_mean_rank"))


def worker(a) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT))
    import torch
    from kgengine import load_dataset

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    kg = load_dataset(data_path=str(DATASETS[a.dataset]))
    known = kg.known()
    paused = 0.0
    t_setup = time.perf_counter()
    if a.engine == "kgengine":
        model, train_until, desc = _kgengine_run(kg, a, lambda: clock())
        get_model, state = (lambda: model), None
    elif a.engine == "torchkge":
        (get_model, state), train_until, desc = _torchkge_run(kg, a, lambda: clock())
    else:
        (get_model, state), train_until, desc = _pykeen_run(kg, a, lambda: clock())
    t0 = time.perf_counter()  # imports and model construction are not training time
    setup_s = t0 - t_setup

    def clock():  # training wall time: evaluation pauses are subtracted
        return time.perf_counter() - t0 - paused

    curve = []
    for i in range(a.points):
        # log-spaced from budget/128 to budget: early points resolve the time to a given MRR
        progress = train_until(a.budget * 128.0 ** (i / max(1, a.points - 1) - 1))
        train_s = clock()
        e0 = time.perf_counter()
        v, t = _shared_eval(get_model(), kg, known)
        curve.append(dict(train_s=round(train_s, 2), valid_mrr=v, test_mrr=t, **progress))
        paused += time.perf_counter() - e0
    out = dict(engine=a.engine, dataset=a.dataset, model=a.model, budget_s=a.budget, seed=a.seed, config=desc,
               setup_s=round(setup_s, 2),
               curve=curve, best_valid=max(curve, key=lambda r: r["valid_mrr"]))
    if state is not None:
        out["pykeen_own_test_mrr"] = _pykeen_own_test_mrr(state, kg)
        out["shared_final_test_mrr"] = curve[-1]["test_mrr"]
    return out


# ----------------------------------------------------------------------------- driver side
def time_to(curve: list[dict], target: float) -> float | None:
    """Training seconds at the first evaluation whose test MRR reaches ``target`` (None: never)."""
    return next((r["train_s"] for r in curve if r["test_mrr"] >= target), None)


def summarise(records: list[dict]) -> str:
    lines = ["| dataset | model | engine | best test MRR (at s) | final test MRR | kgengine time to the "
             "best peer's MRR | peer's time to it | ratio |", "|---|---|---|---:|---:|---:|---:|---:|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["model"]), []).append(r)
    for (ds, model), rs in groups.items():
        ours = [r for r in rs if r["engine"] == "kgengine"]
        peers = [r for r in rs if r["engine"] != "kgengine"]
        best_peer = max(peers, key=lambda r: max(p["test_mrr"] for p in r["curve"]), default=None)
        target = max(p["test_mrr"] for p in best_peer["curve"]) if best_peer else None
        for r in rs:
            top = max(r["curve"], key=lambda p: p["test_mrr"])
            cells = [ds, model, r["engine"], f"{top['test_mrr']:.3f} ({top['train_s']:.0f})",
                     f"{r['curve'][-1]['test_mrr']:.3f}"]
            if r is best_peer and ours and target is not None:
                k, p = time_to(ours[0]["curve"], target), time_to(r["curve"], target)
                ratio = f"{p / k:.1f}x" if k and p else ("not reached by kgengine" if p else "")
                cells += ["n/a" if k is None else f"{k:.0f} s", f"{p:.0f} s", ratio]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(records: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for ds in sorted({r["dataset"] for r in records}):
        rs = [r for r in records if r["dataset"] == ds]
        models = sorted({r["model"] for r in rs})
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
        for ax, model in zip(axes[0], models):
            for r in (r for r in rs if r["model"] == model):
                ax.plot([p["train_s"] for p in r["curve"]], [p["test_mrr"] for p in r["curve"]], "o-", ms=3,
                        label=r["engine"])
            ax.set_xscale("log")
            ax.set_title(f"{ds}: {model} (1 thread)", fontsize=10)
            ax.set_xlabel("training wall time, s (log scale)")
            ax.set_ylabel("filtered test MRR (shared evaluator)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"ttq_{ds}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["umls", "codex-s"], choices=list(DATASETS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--budget", type=float, default=240, help="training seconds per run")
    p.add_argument("--points", type=int, default=12, help="evaluations per run (log-spaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lanes", type=int, default=2, help="runs at a time (1 thread each)")
    p.add_argument("--pykeen-python", default=sys.executable, help="python of a venv with pykeen")
    p.add_argument("--torchkge-python", default=sys.executable, help="python of a venv with torchkge")
    p.add_argument("--kgengine-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="kgengine settings over its preset (e.g. loss_genre=Softmax regularization_coef=1e-4)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "ttq.jsonl")
    p.add_argument("--plot", type=Path, default=None, help="only summarise and plot this jsonl")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--dataset", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a)))
        return
    if a.plot:
        recs = [json.loads(x) for x in a.plot.read_text().splitlines() if x.strip()]
        print(summarise(recs))
        for path in plot(recs, ROOT / "benchmarks" / "figures"):
            print(f"wrote {path}")
        return
    jobs = [(ds, m, e) for ds in a.datasets for m in a.models for e in a.engines
            if not (e == "pykeen-trouillon" and m != "ComplEx")]
    # pair each kgengine run with a PyKEEN run of the same dataset and model: the same load for both
    jobs.sort(key=lambda j: (j[0], j[1], j[2] != "kgengine"))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    running: list[tuple[subprocess.Popen, tuple, float]] = []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    while jobs or running:
        while jobs and len(running) < a.lanes:
            ds, m, e = jobs.pop(0)
            py = {"kgengine": sys.executable, "torchkge": a.torchkge_python}.get(e, a.pykeen_python)
            cmd = [py, __file__, "--worker", "--engine", e, "--dataset", ds, "--model", m, "--budget", str(a.budget),
                   "--points", str(a.points), "--seed", str(a.seed)]
            if e == "kgengine" and a.kgengine_set:
                cmd += ["--kgengine-set", *a.kgengine_set]
            running.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env),
                            (ds, m, e), time.time()))
        time.sleep(2)
        for proc, job, started in list(running):
            if proc.poll() is None:
                continue
            running.remove((proc, job, started))
            out, err = proc.communicate()
            if proc.returncode != 0:
                print(f"{job}: failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}", flush=True)
                continue
            rec = json.loads(out.strip().splitlines()[-1])
            rec.update(date=time.strftime("%Y-%m-%d %H:%M"), loadavg=os.getloadavg(), wall_s=time.time() - started)
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            best = max(rec["curve"], key=lambda r: r["test_mrr"])
            own = rec.get("pykeen_own_test_mrr")
            print(f"{job}: best test MRR {best['test_mrr']:.3f} at {best['train_s']:.0f} s; final "
                  f"{rec['curve'][-1]['test_mrr']:.3f}" + (f"; PyKEEN's own evaluator {own:.3f}" if own else ""),
                  flush=True)


if __name__ == "__main__":
    main()
