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

import contextlib
import dataclasses
import hashlib
import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import KG
from .errors import ConfigError, DeviceError, ModelFolderError, SavePathError
from .evaluate import evaluate, on_device
from .losses import loss_names
from .memory import check_memory, plan_for
from .models import KGEModel, create_model
from .optim import STATE_MODES, RowSparseAdagrad
from .rowstore import RowStore
from .sampling import StepSampler, triple_degrees
from .partition import load_partition, positives_by_part, positives_by_relation
from .persist import FORMAT_VERSION, LOCK_NAME, SaveLock, atomic_write, atomic_write_json, atomic_write_text
from .saved import TrainedKGE
from .step import StepEngine
from .threads import check_wait_policy

__all__ = ["TrainConfig", "Trainer", "train", "LOSS_GENRES", "TRAJECTORY_FIELDS"]

# The fields that define a run's trajectory: --resume refuses a checkpoint whose values differ.
# The rest (max_step, intervals, devices, processes, threads, evaluation options) may change on resume.
TRAJECTORY_FIELDS = ("model_name", "hidden_dim", "gamma", "lr", "batch_size", "neg_sample_size", "neg_chunk_size",
                     "neg_deg_sample", "neg_adversarial_sampling", "adversarial_temperature", "regularization_coef",
                     "regularization_norm", "loss_genre", "reciprocal", "seed", "optimizer_state")
_CHECKPOINT_KEYS = ("step", "tables", "optimizer", "generator", "best_mrr", "bad_evals", "history", "config")


def dataset_identity(kg: KG) -> dict:
    """Sizes and a fingerprint of ``kg`` (ids of the training triples, the vocabularies' first names)."""
    checksum = int((kg.train * torch.tensor([1_000_003, 10_007, 1])).sum())  # int64 wraps: still deterministic
    names = "\n".join(list(kg.entities[:10_000]) + list(kg.relations)).encode("utf-8", "surrogatepass")
    return {"num_entities": kg.num_entities, "num_relations": kg.num_relations, "num_train": len(kg.train),
            "fingerprint": f"{checksum}:{hashlib.sha256(names).hexdigest()[:16]}"}


def _torch_save(obj, path: Path) -> None:
    with open(path, "wb") as f:  # a file object: a full disk then raises OSError(ENOSPC), not a bare RuntimeError
        torch.save(obj, f)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's state, loaded with ``weights_only=True``: tensors and plain data only, never code.

    A truncated, empty, garbage or crafted file raises :class:`ModelFolderError` naming it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ModelFolderError(f"{path}: refused: it holds more than tensors and plain data ({str(e)[:120]})") \
            from None
    except Exception as e:  # a damaged file fails anywhere in the unpickler (struct.error, EOFError, zip errors...)
        raise ModelFolderError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(state, dict) or any(k not in state for k in _CHECKPOINT_KEYS) \
            or not isinstance(state["tables"], dict) or not isinstance(state["config"], dict):
        raise ModelFolderError(f"{path}: not a kgengine checkpoint (missing or malformed entries)")
    return state


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
    optimizer_state: str = "element"  # Adagrad accumulators per weight, or "row": one per row (half the memory)
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
    partition: str = ""  # kge partition's file: worker i trains the triples whose head is in part i, local negatives
    rel_part: bool = False  # worker i trains the triples of its own relations (no shared relation rows)
    mix_cpu_gpu: bool = False  # tables and optimizer state in CPU memory, rows moved to the GPU per step
    async_update: bool = False  # apply offloaded updates in a background thread (overlaps the next step)
    amp: bool = False  # score in bfloat16 under autocast; tables and optimizer state stay float32
    compile: bool = False  # torch.compile the step's scoring, loss and optimizer update (eager if it fails)
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("hidden_dim", "batch_size", "neg_sample_size", "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_step", "eval_interval", "early_stop_patience", "checkpoint_interval", "num_thread"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "gamma", "adversarial_temperature", "regularization_coef"):
            v = getattr(self, name)
            if v != v or v in (float("inf"), float("-inf")):
                raise ConfigError(f"--{name} must be a finite number, got {v}")
        if self.neg_sample_size_eval < 0:  # DGL-KE's -1: all entities
            self.neg_sample_size_eval = 0
        if self.batch_size_eval < 0:
            raise ConfigError(f"--batch_size_eval must be >= 0, got {self.batch_size_eval}")
        if not 0.0 < self.eval_percent <= 100.0:
            raise ConfigError(f"--eval_percent must be in (0, 100], got {self.eval_percent}")
        if self.optimizer_state not in STATE_MODES:
            raise ConfigError(f"--optimizer_state {self.optimizer_state!r}: expected one of {', '.join(STATE_MODES)}")
        if self.loss_genre not in LOSS_GENRES:
            raise ConfigError(f"--loss_genre {self.loss_genre!r}: expected one of {', '.join(LOSS_GENRES)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.regularization_coef < 0:
            raise ConfigError(f"-rc/--regularization_coef must be >= 0, got {self.regularization_coef}")
        if self.regularization_norm < 1:
            raise ConfigError(f"-rn/--regularization_norm must be >= 1, got {self.regularization_norm}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.neg_chunk_size < 0:
            self.neg_chunk_size = min(self.neg_sample_size, self.batch_size)
        if self.neg_chunk_size < 1 or self.batch_size % self.neg_chunk_size:
            raise ConfigError(f"--neg_chunk_size {self.neg_chunk_size} must divide --batch_size {self.batch_size}")
        self.gpu = [int(g) for g in self.gpu]
        if self.gpu and any(g < 0 for g in self.gpu) and self.gpu != [-1]:
            raise ConfigError(f"--gpu {self.gpu}: GPU ids are >= 0 (-1 alone means the CPU)")
        if self.gpu and self.gpu != [-1]:
            self.device = f"cuda:{self.gpu[0]}"
            if len(self.gpu) > 1 and self.num_proc == 1:  # DGL-KE: one process per GPU
                self.num_proc = len(self.gpu)
        if self.num_proc < 1:
            raise ConfigError(f"--num_proc must be >= 1, got {self.num_proc}")
        if (self.partition or self.rel_part) and self.num_proc < 2:
            raise ConfigError("--partition / --rel_part split the positives among worker processes: use --num_proc P")
        if self.partition and self.rel_part:
            raise ConfigError("--partition and --rel_part each decide which worker trains a triple: pick one")
        if self.async_update and not self.offloaded():
            raise ConfigError("--async_update needs --mix_cpu_gpu (or GPU worker processes): it overlaps the "
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
            raise ConfigError("the training split is empty")
        self.kg, self.cfg = kg, config
        self.save_path = Path(save_path) if save_path else None
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"--device {config.device} was asked for, but torch sees no CUDA device here")
        if config.num_thread:
            torch.set_num_threads(config.num_thread)
        if config.num_proc == 1:  # worker processes start fresh and inherit the policy
            check_wait_policy(torch.get_num_threads())
        self.memory_plan = plan_for(config, kg, save_path)
        check_memory(self.memory_plan)  # before allocating: refuse with numbers, not an OOM kill
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
        self.optimizer = RowSparseAdagrad(self.tables, config.lr, check_finite=self.device.type == "cpu",
                                          state_mode=config.optimizer_state, fused=config.compile)
        train_triples = kg.train
        if config.reciprocal:
            h, r, t = kg.train.unbind(1)
            train_triples = torch.cat([kg.train, torch.stack([t, r + kg.num_relations, h], 1)])
        self.train_triples = train_triples
        self.degrees = triple_degrees(kg.train, kg.num_entities) if config.neg_deg_sample else None
        self.parts = load_partition(config.partition, kg, config.num_proc) if config.partition else None
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
        self._claimed = False  # this trainer owns its save path (set by the first train())

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

        shares = candidates = None
        if self.parts is not None:  # DGL-KE's locality: own heads, own negatives
            shares = positives_by_part(self.train_triples, self.parts, self.cfg.num_proc)
            candidates = [torch.nonzero(self.parts == i).flatten() for i in range(self.cfg.num_proc)]
        elif self.cfg.rel_part:
            shares = positives_by_relation(self.train_triples, self.kg.num_relations, self.cfg.num_proc)
        return WorkerPool(self.cfg, self.model.config(), self.tables, self.optimizer.state, self.train_triples,
                          self.degrees, first_step=self.step, shares=shares, candidates=candidates)

    def _next_stop(self) -> int:
        """The next step at which the loop must log, validate or checkpoint (the end of a round)."""
        cfg, stops = self.cfg, [self.cfg.max_step]
        for every in (cfg.log_interval, cfg.eval_interval, cfg.checkpoint_interval):
            if every:
                stops.append((self.step // every + 1) * every)
        return min(stops)

    # ---- validation, checkpoints -------------------------------------------
    def validate(self) -> dict[str, float]:
        known = self.kg.known() if self.cfg.eval_filter else None
        m = evaluate(on_device(self.model, self.device), self.kg.valid, known, **self.cfg.eval_options())
        return {k: v for k, v in m.items() if not isinstance(v, dict)}

    def _ckpt_dir(self) -> Path:
        assert self.save_path is not None
        return self.save_path / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_XXXXXXXXX.pt`` (fsync'd before it appears) and prune old ones."""
        d = self._ckpt_dir()
        d.mkdir(parents=True, exist_ok=True)
        state = {
            "format_version": FORMAT_VERSION,
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
            "dataset": dataset_identity(self.kg),
        }
        path = d / f"step_{self.step:09d}.pt"
        atomic_write(path, lambda p: _torch_save(state, p))
        for old in sorted(d.glob("step_*.pt"))[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def checkpoints(self) -> list[Path]:
        """This run's checkpoints, newest first."""
        if self.save_path is None or not self._ckpt_dir().is_dir():
            return []
        return sorted(self._ckpt_dir().glob("step_*.pt"), reverse=True)

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[0] if ckpts else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Continue from ``path``; refuses a checkpoint of another run (naming the fields that differ)."""
        state = read_checkpoint(path)
        differ = [f"{k} (checkpoint {state['config'].get(k)!r}, this run {getattr(self.cfg, k)!r})"
                  for k in TRAJECTORY_FIELDS if k in state["config"] and state["config"][k] != getattr(self.cfg, k)]
        mine = dataset_identity(self.kg)
        differ += [f"dataset {k} (checkpoint {state['dataset'][k]!r}, this run {mine[k]!r})"
                   for k in mine if k in state.get("dataset", {}) and state["dataset"][k] != mine[k]]
        if differ:
            raise ConfigError(f"{path}: --resume continues the same run, but these differ: {'; '.join(differ)}")
        for k, v in state["tables"].items():
            if k not in self.tables or self.tables[k].shape != v.shape:
                raise ModelFolderError(f"{path}: table {k} {tuple(v.shape)} does not fit this run")
            self.tables[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("batcher") is not None and self.engine is not None:
            self.sampler.load_state_dict(state["batcher"])
        self.generator.set_state(state["generator"])
        self.step, self.best_mrr, self.bad_evals = state["step"], state["best_mrr"], state["bad_evals"]
        self.history = list(state["history"])

    def resume_from_checkpoints(self) -> Path:
        """Load the newest checkpoint that reads; a damaged newer one is skipped with a warning."""
        ckpts = self.checkpoints()
        if not ckpts:
            raise SavePathError(f"--resume: no checkpoint under {self.save_path}/checkpoints "
                                "(train with --checkpoint_interval N to write them)")
        for path in ckpts:
            try:
                self.load_checkpoint(path)
                return path
            except ModelFolderError as e:
                warnings.warn(f"{e}; trying the previous checkpoint")
        raise ModelFolderError(f"--resume: none of the {len(ckpts)} checkpoints under {self._ckpt_dir()} "
                               "can be read (see the warnings)")

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

    def lock(self) -> SaveLock | contextlib.nullcontext:
        """The save path's lock (a no-op without a save path); held by :meth:`train` and :func:`train`."""
        return SaveLock(self.save_path) if self.save_path is not None else contextlib.nullcontext()

    def _claim_save_path(self, resume: bool, overwrite: bool) -> None:
        """A fresh run owns its folder: an earlier run's files are refused, or moved aside with ``overwrite``."""
        assert self.save_path is not None
        if resume or self._claimed:
            return
        old = sorted(p.name for p in self.save_path.iterdir() if p.name != LOCK_NAME)
        if old and not overwrite:
            raise SavePathError(
                f"--save-path {self.save_path} already holds files of another run ({', '.join(old[:4])}"
                f"{', ...' if len(old) > 4 else ''}); pass --resume to continue it, --overwrite to replace it "
                "(the old files are moved aside, not deleted), or choose another folder")
        if old:
            aside = self.save_path.with_name(f"{self.save_path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            aside.mkdir()
            for name in old:
                os.replace(self.save_path / name, aside / name)
            warnings.warn(f"--overwrite: the earlier run's files in {self.save_path} were moved to {aside}")
        self._claimed = True

    def train(self, resume: bool = False, overwrite: bool = False) -> TrainedKGE:
        """Run to ``max_step`` (or early stop); returns the trained model with its vocabulary.

        With a save path the run holds the folder's lock throughout. A fresh run refuses a folder that
        holds another run's files unless ``overwrite`` (they are moved to ``<folder>.replaced-<time>``);
        ``resume`` continues from the newest readable checkpoint of the same run.
        """
        with self.lock():
            return self._train(resume, overwrite)

    def _train(self, resume: bool, overwrite: bool) -> TrainedKGE:
        cfg = self.cfg
        if self.save_path is not None:
            self._claim_save_path(resume, overwrite)
            if not resume:
                atomic_write_json(self.save_path / "config.json", dict(cfg.to_dict(), dataset=self.kg.name))
        if resume:
            if self.save_path is None:
                raise SavePathError("--resume needs the --save-path of the run to continue")
            self.resume_from_checkpoints()
            # the log is rewritten from the checkpoint's copy
            atomic_write_text(self.save_path / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
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
    """Filtered metrics per split (``{"test": {...}, "valid": {...}}``); written to ``save_path/metrics.json``.

    ``device``: where to score (default: where the model's tables are). ``eval_options`` go to
    :func:`~kgengine.evaluate.evaluate` (``batch_size``, ``num_candidates``, ``fraction``, ``seed``).
    """
    out = {}
    model = trained.model if device is None else on_device(trained.model, device)
    for split in splits:
        triples = kg.split(split)
        if len(triples):
            m = evaluate(model, triples, kg.known() if filtered else None, ties=ties, **eval_options)
            out[split] = {k: v for k, v in m.items() if not isinstance(v, dict)}
    if save_path is not None:
        atomic_write_json(Path(save_path) / "metrics.json", out)
    return out


def train(kg: KG, config: TrainConfig | None = None, save_path: str | os.PathLike | None = None,
          resume: bool = False, evaluate_test: bool = True, overwrite: bool = False,
          on_metrics=None, **overrides) -> TrainedKGE:
    """Train, then (by default) evaluate valid and test and write ``metrics.json``.

    ``train(kg, model_name="ComplEx", hidden_dim=200, max_step=2000)``. The save path stays locked
    from the start of training until the metrics are written. ``on_metrics(metrics)`` is called
    before ``metrics.json`` is written (the CLI prints them there, so a full disk cannot lose them).
    """
    config = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    trainer = Trainer(kg, config, save_path)
    with trainer.lock():
        trained = trainer.train(resume=resume, overwrite=overwrite)
        if evaluate_test:
            metrics = evaluate_and_record(trained, kg, filtered=config.eval_filter, device=config.device,
                                          **config.eval_options())
            trained.config["metrics"] = metrics
            if on_metrics is not None:
                on_metrics(metrics)
            if save_path is not None:
                atomic_write_json(Path(save_path) / "metrics.json", metrics)
    return trained
