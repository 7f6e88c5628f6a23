"""Training: the configuration and the loop (logging, validation, checkpoints, saving).

One step (:mod:`kgengine.step`):

1. draw ``B`` positives and ``C = B / chunk`` sets of ``k`` negative entities on
   the CPU; even steps corrupt tails, odd steps heads (DGL-KE's alternation);
   with ``reciprocal`` the positives also include ``(t, r_inv, h)`` for every
   train triple and only tails are corrupted;
2. gather the distinct entity and relation rows the step uses (the only rows
   that get gradients) onto the compute device;
3. score positives aligned and each chunk against its negatives as one
   candidate-set product;
4. loss (``--loss_genre``, :mod:`kgengine.losses`): ``Logsigmoid`` (default,
   DGL-KE's), optionally self-adversarial (``-adv``), or ``Softmax``, the
   cross-entropy of each positive against its chunk's negatives; plus
   ``coef * sum |x|^p`` over the used rows;
5. row-sparse Adagrad on exactly those rows.

Where it runs: the CPU (default), one GPU (``--device cuda`` / ``--gpu 0``),
a GPU with the tables in CPU memory (``--mix_cpu_gpu``, optionally
``--async_update``), or several worker processes on shared tables
(``--num_proc N``, ``--gpu 0 1 ...``; :mod:`kgengine.parallel`).

The loop runs steps in rounds that end where something must happen (a log
line, a validation, a checkpoint), so a GPU never waits for the host inside a
round. Given a seed a single-process CPU run is deterministic, and
``resume=True`` continues from the newest checkpoint in
``save_path/checkpoints`` to the very same final vectors.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import KG
from .evaluate import evaluate, on_device
from .losses import loss_names
from .models import KGEModel, create_model
from .optim import RowSparseAdagrad
from .rowstore import RowStore
from .sampling import StepSampler, triple_degrees
from .saved import TrainedKGE, atomic_write_text
from .step import StepEngine

__all__ = ["TrainConfig", "Trainer", "train", "LOSS_GENRES"]

LOSS_GENRES = loss_names()


@dataclass
class TrainConfig:
    """Hyperparameters; names are DGL-KE's flag names."""

    model_name: str = "TransE_l2"
    hidden_dim: int = 400
    gamma: float = 12.0
    lr: float = 0.1
    batch_size: int = 1024
    neg_sample_size: int = 256
    neg_chunk_size: int = -1  # positives sharing one negative set; -1: neg_sample_size (capped at batch_size)
    neg_deg_sample: bool = False
    neg_adversarial_sampling: bool = False
    adversarial_temperature: float = 1.0
    regularization_coef: float = 0.0
    regularization_norm: int = 3
    loss_genre: str = "Logsigmoid"  # or "Softmax" (cross-entropy of the positive against its negatives)
    reciprocal: bool = False  # train (t, r_inverse, h) beside every (h, r, t); only tails are corrupted
    max_step: int = 10000
    seed: int = 0
    device: str = "cpu"
    log_interval: int = 100
    eval_interval: int = 0  # validate every N steps (0: only at the end)
    early_stop_patience: int = 0  # stop after N validations without a better valid MRR (0: never)
    checkpoint_interval: int = 0  # write a checkpoint every N steps (0: none)
    keep_checkpoints: int = 2
    eval_ties: str = "realistic"
    # DGL-KE's evaluation flags; the defaults are the full filtered ranking the quality table uses
    eval_filter: bool = True  # --no_eval_filter: raw ranking
    eval_percent: float = 100.0  # rank a seeded random share of valid/test
    batch_size_eval: int = 0  # queries per evaluation batch (0: sized by a memory budget)
    neg_sample_size_eval: int = 0  # k > 0: rank against k sampled entities (0 or -1: all entities)
    num_thread: int = 0  # torch threads per process (0: torch's setting; workers: cores / num_proc)
    # where it runs (DGL-KE's flags)
    num_proc: int = 1  # worker processes on shared tables; max_step counts all workers' steps together
    gpu: list[int] = field(default_factory=list)  # --gpu 0 1: one worker per GPU; [-1]: the CPU
    mix_cpu_gpu: bool = False  # tables and optimizer state in CPU memory, rows moved to the GPU per step
    async_update: bool = False  # apply offloaded updates in a background thread (overlaps the next step)
    amp: bool = False  # score in bfloat16 under autocast; tables and optimizer state stay float32
    compile: bool = False  # torch.compile the step's scoring and loss (falls back to eager if it fails)
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("hidden_dim", "batch_size", "neg_sample_size", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_step", "eval_interval", "early_stop_patience", "checkpoint_interval", "num_thread"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "gamma", "adversarial_temperature", "regularization_coef"):
            v = getattr(self, name)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"--{name} must be a finite number, got {v}")
        if self.neg_sample_size_eval < 0:  # DGL-KE's -1: all entities
            self.neg_sample_size_eval = 0
        if self.batch_size_eval < 0:
            raise ValueError(f"--batch_size_eval must be >= 0, got {self.batch_size_eval}")
        if not 0.0 < self.eval_percent <= 100.0:
            raise ValueError(f"--eval_percent must be in (0, 100], got {self.eval_percent}")
        if self.loss_genre not in LOSS_GENRES:
            raise ValueError(f"--loss_genre {self.loss_genre!r}: expected one of {', '.join(LOSS_GENRES)}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.neg_chunk_size < 0:
            self.neg_chunk_size = min(self.neg_sample_size, self.batch_size)
        if self.neg_chunk_size < 1 or self.batch_size % self.neg_chunk_size:
            raise ValueError(f"--neg_chunk_size {self.neg_chunk_size} must divide --batch_size {self.batch_size}")
        self.gpu = [int(g) for g in self.gpu]
        if self.gpu and any(g < 0 for g in self.gpu) and self.gpu != [-1]:
            raise ValueError(f"--gpu {self.gpu}: GPU ids are >= 0 (-1 alone means the CPU)")
        if self.gpu and self.gpu != [-1]:
            self.device = f"cuda:{self.gpu[0]}"
            if len(self.gpu) > 1 and self.num_proc == 1:  # DGL-KE: one process per GPU
                self.num_proc = len(self.gpu)
        if self.num_proc < 1:
            raise ValueError(f"--num_proc must be >= 1, got {self.num_proc}")
        if self.async_update and not self.offloaded():
            raise ValueError("--async_update needs --mix_cpu_gpu (or GPU worker processes): it overlaps the "
                             "update of CPU-resident tables with the next step")

    def offloaded(self) -> bool:
        """Whether tables live in CPU memory while a GPU computes (rows travel every step)."""
        return self.mix_cpu_gpu or (self.num_proc > 1 and self.device.startswith("cuda"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def eval_options(self) -> dict:
        """Keyword arguments of :func:`~kgengine.evaluate.evaluate` beyond the triples."""
        return dict(ties=self.eval_ties, batch_size=self.batch_size_eval, num_candidates=self.neg_sample_size_eval,
                    fraction=self.eval_percent / 100.0, seed=self.seed)


class Trainer:
    """Trains one model on one KG; see the module docstring for the step and the placements.

    Args:
        kg: the data.
        config: hyperparameters.
        save_path: folder for the saved model, logs and checkpoints (``None``: keep in memory).
    """

    def __init__(self, kg: KG, config: TrainConfig, save_path: str | os.PathLike | None = None) -> None:
        if len(kg.train) == 0:
            raise ValueError("the training split is empty")
        self.kg, self.cfg = kg, config
        self.save_path = Path(save_path) if save_path else None
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        if config.num_thread:
            torch.set_num_threads(config.num_thread)
        self.generator = torch.Generator().manual_seed(config.seed)
        with torch.device("meta"):  # allocate once and draw once (a 10M x 400 table is 16 GB)
            self.model = create_model(config.model_name, kg.num_entities, kg.num_relations, config.hidden_dim,
                                      gamma=config.gamma, reciprocal=config.reciprocal)
        self.model.to_empty(device="cpu")
        self.model.reset_parameters(self.generator)  # on the CPU stream: every device starts from the same vectors
        offload = config.offloaded()
        # offloaded tables and every multi-process run keep the tables in CPU memory
        self.model.to("cpu" if offload or config.num_proc > 1 else self.device)
        self.tables = {k: v.data for k, v in self.model.tables.items()}
        self.optimizer = RowSparseAdagrad(self.tables, config.lr, check_finite=self.device.type == "cpu")
        train_triples = kg.train
        if config.reciprocal:
            h, r, t = kg.train.unbind(1)
            train_triples = torch.cat([kg.train, torch.stack([t, r + kg.num_relations, h], 1)])
        self.train_triples = train_triples
        self.degrees = triple_degrees(kg.train, kg.num_entities) if config.neg_deg_sample else None
        self.sampler = StepSampler(train_triples, kg.num_entities, config.batch_size, config.neg_sample_size,
                                   config.neg_chunk_size, self.generator, self.degrees)
        self.engine: StepEngine | None = None
        if config.num_proc == 1:
            store = RowStore(self.optimizer, self.device, offload=offload, async_update=config.async_update)
            self.engine = StepEngine(self.model, store, self.sampler, config)
        self.step = 0
        self.best_mrr = float("-inf")
        self.bad_evals = 0
        self.history: list[dict] = []
        self._best_tables: dict[str, torch.Tensor] | None = None  # in-memory best when there is no save_path

    # ---- steps -------------------------------------------------------------
    def train_step(self, step: int) -> float:
        """One single-process step (``step`` picks the corrupted side); its loss. Waits for the device."""
        if self.engine is None:
            raise RuntimeError("train_step runs a single-process trainer; this one has --num_proc > 1")
        return float(self.engine.run(1, step)[0])

    def _runner(self):
        """What runs rounds of steps: this process's engine, or a pool of worker processes."""
        if self.engine is not None:
            return self.engine
        from .parallel import WorkerPool

        return WorkerPool(self.cfg, self.model.config(), self.tables, self.optimizer.state, self.train_triples,
                          self.degrees, first_step=self.step)

    def _next_stop(self) -> int:
        """The next step at which the loop must log, validate or checkpoint (the end of a round)."""
        cfg, stops = self.cfg, [self.cfg.max_step]
        for every in (cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval):
            if every:
                stops.append((self.step // every + 1) * every)
        return min(stops)

    # ---- validation, checkpoints -------------------------------------------
    def validate(self) -> dict[str, float]:
        known = self.kg.all_triples() if self.cfg.eval_filter else None
        m = evaluate(on_device(self.model, self.device), self.kg.valid, known, **self.cfg.eval_options())
        return {k: v for k, v in m.items() if not isinstance(v, dict)}

    def _ckpt_dir(self) -> Path:
        assert self.save_path is not None
        return self.save_path / "checkpoints"

    def save_checkpoint(self) -> Path:
        d = self._ckpt_dir()
        d.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "tables": {k: v.cpu().clone() for k, v in self.tables.items()},
            "optimizer": self.optimizer.state_dict(),
            # worker processes draw from their own streams, which a checkpoint does not keep
            "batcher": self.sampler.state_dict() if self.engine is not None else None,
            "num_proc": self.cfg.num_proc,
            "generator": self.generator.get_state(),
            "best_mrr": self.best_mrr,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "config": self.cfg.to_dict(),
        }
        path = d / f"step_{self.step:09d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(d.glob("step_*.pt"))[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        if self.save_path is None or not self._ckpt_dir().is_dir():
            return None
        ckpts = sorted(self._ckpt_dir().glob("step_*.pt"))
        return ckpts[-1] if ckpts else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
        for name in ("model_name", "hidden_dim", "batch_size", "neg_sample_size", "neg_chunk_size", "reciprocal"):
            if state["config"].get(name, False) != getattr(self.cfg, name):
                raise ValueError(f"{path}: checkpoint has {name}={state['config'][name]!r}, "
                                 f"but this run has {getattr(self.cfg, name)!r}")
        for k, v in state["tables"].items():
            self.tables[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("batcher") is not None and self.engine is not None:
            self.sampler.load_state_dict(state["batcher"])
        self.generator.set_state(state["generator"])
        self.step, self.best_mrr, self.bad_evals = state["step"], state["best_mrr"], state["bad_evals"]
        self.history = list(state["history"])

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.save_path is not None:
            with open(self.save_path / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _save_best(self) -> None:
        if self.save_path is not None:
            self.model.save_pretrained(self.save_path / "best")
        else:
            self._best_tables = {k: v.clone() for k, v in self.tables.items()}

    def _restore_best(self) -> None:
        if self.save_path is not None and (self.save_path / "best" / "model.safetensors").is_file():
            best = KGEModel.from_pretrained(self.save_path / "best")
            for k, v in best.tables.items():
                self.tables[k].copy_(v)
        elif self._best_tables is not None:
            for k, v in self._best_tables.items():
                self.tables[k].copy_(v)

    # ---- the loop ----------------------------------------------------------
    def _loop(self, runner, bar) -> None:
        """Rounds of steps up to the next log / validation / checkpoint, then what is due there."""
        cfg = self.cfg
        t0, window_loss, window_steps = time.perf_counter(), 0.0, 0
        on_step = (lambda: bar.update(1)) if bar is not None and runner is self.engine else None
        while self.step < cfg.max_step:
            n = self._next_stop() - self.step
            losses = runner.run(n, self.step, on_step)
            if on_step is None and bar is not None:
                bar.update(n)
            self.step += n
            window_loss += sum(losses.tolist())
            window_steps += n
            if self.step % cfg.log_interval == 0 or self.step == cfg.max_step:
                dt = time.perf_counter() - t0
                rec = {"step": self.step, "loss": window_loss / window_steps,
                       "pos_per_s": window_steps * cfg.batch_size / max(dt, 1e-9)}
                self._log(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", pos_s=f"{rec['pos_per_s']:.0f}")
                t0, window_loss, window_steps = time.perf_counter(), 0.0, 0
            stop_early = False
            if cfg.eval_interval and self.step % cfg.eval_interval == 0 and len(self.kg.valid):
                m = self.validate()
                self._log({"step": self.step, "valid": m})
                if bar is not None:
                    bar.write(f"step {self.step}: valid MRR {m['mrr']:.4f}  Hits@10 {m['hits@10']:.4f}")
                if m["mrr"] > self.best_mrr:
                    self.best_mrr, self.bad_evals = m["mrr"], 0
                    self._save_best()
                else:
                    self.bad_evals += 1
                stop_early = bool(cfg.early_stop_patience and self.bad_evals >= cfg.early_stop_patience)
                t0 = time.perf_counter()  # positives/s excludes validation time
            if cfg.checkpoint_interval and self.save_path is not None and self.step % cfg.checkpoint_interval == 0:
                self.save_checkpoint()
            if stop_early:
                if bar is not None:
                    bar.write(f"early stop at step {self.step}: no better valid MRR in "
                              f"{cfg.early_stop_patience} validations")
                return

    def train(self, resume: bool = False) -> TrainedKGE:
        """Run to ``max_step`` (or early stop); returns the trained model with its vocabulary."""
        cfg = self.cfg
        if self.save_path is not None:
            self.save_path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.save_path / "config.json",
                              json.dumps(dict(cfg.to_dict(), dataset=self.kg.name), indent=2))
        if resume:
            ckpt = self.latest_checkpoint()
            if ckpt is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {self.save_path}/checkpoints")
            self.load_checkpoint(ckpt)
            if self.save_path is not None:  # the log is rewritten from the checkpoint's copy
                atomic_write_text(self.save_path / "train_log.jsonl",
                                  "".join(json.dumps(r) + "\n" for r in self.history))
        elif self.save_path is not None:
            (self.save_path / "train_log.jsonl").unlink(missing_ok=True)
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_step, initial=self.step, desc=f"{cfg.model_name} {self.kg.name}", unit="step",
                       dynamic_ncols=True)
        runner = self._runner()
        try:
            self._loop(runner, bar)
        finally:
            runner.close() if runner is not self.engine else self.engine.store.close()
            if bar is not None:
                bar.close()
        if cfg.eval_interval and self.best_mrr > float("-inf"):
            # keep the vectors of the best validation, not the last step's
            last_validated = self.step % cfg.eval_interval == 0
            if (self.bad_evals > 0) if last_validated else (self.validate()["mrr"] < self.best_mrr):
                self._restore_best()
        trained = TrainedKGE.from_kg(self.model, self.kg, cfg.to_dict())
        trained.config["steps_done"] = self.step
        if self.save_path is not None:
            trained.save_pretrained(self.save_path)
        return trained


def evaluate_and_record(trained: TrainedKGE, kg: KG, save_path: str | os.PathLike | None = None,
                        ties: str = "realistic", splits: tuple[str, ...] = ("valid", "test"),
                        filtered: bool = True, device: str | torch.device | None = None, **eval_options) -> dict:
    """Filtered metrics per split (``{"test": {...}, "valid": {...}}``); written to ``metrics.json``.

    ``device``: where to score (default: where the model's tables are). ``eval_options`` go to
    :func:`~kgengine.evaluate.evaluate` (``batch_size``, ``num_candidates``, ``fraction``, ``seed``).
    """
    out = {}
    model = trained.model if device is None else on_device(trained.model, device)
    for split in splits:
        triples = kg.split(split)
        if len(triples):
            m = evaluate(model, triples, kg.all_triples() if filtered else None, ties=ties, **eval_options)
            out[split] = {k: v for k, v in m.items() if not isinstance(v, dict)}
    if save_path is not None:
        atomic_write_text(Path(save_path) / "metrics.json", json.dumps(out, indent=2))
    return out


def train(kg: KG, config: TrainConfig | None = None, save_path: str | os.PathLike | None = None,
          resume: bool = False, evaluate_test: bool = True, **overrides) -> TrainedKGE:
    """Train, then (by default) evaluate valid and test and write ``metrics.json``.

    ``train(kg, model_name="ComplEx", hidden_dim=200, max_step=2000)``.
    """
    config = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    trained = Trainer(kg, config, save_path).train(resume=resume)
    if evaluate_test:
        trained.config["metrics"] = evaluate_and_record(trained, kg, save_path, filtered=config.eval_filter,
                                                        device=config.device, **config.eval_options())
    return trained
