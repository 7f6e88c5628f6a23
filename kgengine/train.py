"""Training: shared-negative logsigmoid loss, row-sparse Adagrad, validation, checkpoints.

One step:

1. draw ``B`` positives and ``C = B / chunk`` sets of ``k`` negative entities;
   even steps corrupt tails, odd steps heads (DGL-KE's alternation); with
   ``reciprocal`` the positives also include ``(t, r_inv, h)`` for every train
   triple and only tails are corrupted;
2. gather the distinct entity and relation rows the step uses (the only rows
   that get gradients);
3. score positives aligned and each chunk against its negatives as one
   candidate-set product;
4. loss (``--loss_genre``): ``Logsigmoid`` (default, DGL-KE's)
   ``-(mean logsigmoid(pos) + mean_w logsigmoid(-neg)) / 2`` with ``w`` uniform,
   or the self-adversarial softmax of the negative scores (``-adv``,
   temperature ``-a``); or ``Softmax``, the cross-entropy of each positive
   against its chunk's ``k`` negatives (sampled softmax, PyKEEN's
   ``CrossEntropyLoss`` under sLCWA); plus ``coef * sum |x|^p`` over the used rows;
5. row-sparse Adagrad on exactly those rows.

Given a seed the run is deterministic on CPU, and ``resume=True`` continues
from the newest checkpoint in ``save_path/checkpoints`` to the very same
final vectors.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import KG
from .evaluate import evaluate
from .graph import build_graph, entity_degrees
from .models import KGEModel, create_model
from .optim import RowSparseAdagrad
from .sampling import ChunkNegativeSampler, EdgeBatcher
from .saved import TrainedKGE, atomic_write_text

__all__ = ["TrainConfig", "Trainer", "train", "LOSS_GENRES"]

LOSS_GENRES = ("Logsigmoid", "Softmax")


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
    num_thread: int = 0  # torch threads (0: leave torch's setting)
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def eval_options(self) -> dict:
        """Keyword arguments of :func:`~kgengine.evaluate.evaluate` beyond the triples."""
        return dict(ties=self.eval_ties, batch_size=self.batch_size_eval, num_candidates=self.neg_sample_size_eval,
                    fraction=self.eval_percent / 100.0, seed=self.seed)


class Trainer:
    """Trains one model on one KG; see the module docstring for the step.

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
        self.model = create_model(config.model_name, kg.num_entities, kg.num_relations, config.hidden_dim,
                                  gamma=config.gamma, reciprocal=config.reciprocal)
        self.model.reset_parameters(self.generator)
        self.model.to(self.device)
        self.tables = {k: v.data for k, v in self.model.tables.items()}
        self.optimizer = RowSparseAdagrad(self.tables, config.lr)
        train_triples = kg.train
        if config.reciprocal:
            h, r, t = kg.train.unbind(1)
            train_triples = torch.cat([kg.train, torch.stack([t, r + kg.num_relations, h], 1)])
        self.batcher = EdgeBatcher(len(train_triples), config.batch_size, self.generator)
        degrees = entity_degrees(build_graph(kg)) if config.neg_deg_sample else None
        self.neg_sampler = ChunkNegativeSampler(kg.num_entities, config.neg_sample_size, self.generator, degrees)
        self.train_triples = train_triples.to(self.device)
        self.step = 0
        self.best_mrr = float("-inf")
        self.bad_evals = 0
        self.history: list[dict] = []
        self._best_tables: dict[str, torch.Tensor] | None = None  # in-memory best when there is no save_path

    # ---- one step ----------------------------------------------------------
    def train_step(self, step: int) -> float:
        cfg, model = self.cfg, self.model
        B, k, c = cfg.batch_size, cfg.neg_sample_size, cfg.neg_chunk_size
        C = B // c
        pos = self.train_triples[self.batcher.next().to(self.device)]
        neg = self.neg_sampler.sample(C).to(self.device)
        h, r, t = pos[:, 0], pos[:, 1], pos[:, 2]
        uniq_e, inv_e = torch.unique(torch.cat([h, t, neg.flatten()]), return_inverse=True)
        uniq_r, inv_r = torch.unique(r, return_inverse=True)
        ent = self.tables["entity"].index_select(0, uniq_e).requires_grad_()
        rel_names = [n for n, idx in model.table_index.items() if idx == "relation"]
        rel = {n: self.tables[n].index_select(0, uniq_r).requires_grad_() for n in rel_names}
        rows = ent.index_select(0, inv_e)  # one gather: its backward is a single index_add_
        he, te, ne = rows[:B], rows[B:2 * B], rows[2 * B:].view(C, k, -1)
        pos_score = model.score_emb(he, inv_r, rel, te)
        rq = inv_r.view(C, c)
        if step % 2 and not cfg.reciprocal:  # reciprocal: heads are the inverse triples' tails
            neg_score = model.score_heads_emb(ne, rq, rel, te.view(C, c, -1))
        else:
            neg_score = model.score_tails_emb(he.view(C, c, -1), rq, rel, ne)
        if cfg.loss_genre == "Softmax":
            # the softmax already weights each negative by its score, so -adv has nothing to add
            logits = torch.cat([pos_score.view(C, c, 1), neg_score], dim=-1)
            loss = -torch.log_softmax(logits, dim=-1)[..., 0].mean()
        else:
            neg_ls = F.logsigmoid(-neg_score)
            if cfg.neg_adversarial_sampling:
                w = torch.softmax(neg_score.detach() * cfg.adversarial_temperature, dim=-1)
                neg_loss = -(w * neg_ls).sum(-1).mean()
            else:
                neg_loss = -neg_ls.mean()
            loss = (-F.logsigmoid(pos_score).mean() + neg_loss) / 2
        if cfg.regularization_coef > 0:
            p = cfg.regularization_norm
            reg = ent.abs().pow(p).sum() + sum(x.abs().pow(p).sum() for x in rel.values())
            loss = loss + cfg.regularization_coef * reg
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the loss is {loss.item()}; lower --lr or check the data")
        loss.backward()
        self.optimizer.step("entity", uniq_e, ent.grad)
        for n, x in rel.items():
            self.optimizer.step(n, uniq_r, x.grad)
        return float(loss.detach())

    # ---- validation, checkpoints -------------------------------------------
    def validate(self) -> dict[str, float]:
        known = self.kg.all_triples() if self.cfg.eval_filter else None
        m = evaluate(self.model, self.kg.valid, known, **self.cfg.eval_options())
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
            "batcher": self.batcher.state_dict(),
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
        state = torch.load(path, map_location="cpu", weights_only=False)
        for name in ("model_name", "hidden_dim", "batch_size", "neg_sample_size", "neg_chunk_size", "reciprocal"):
            if state["config"].get(name, False) != getattr(self.cfg, name):
                raise ValueError(f"{path}: checkpoint has {name}={state['config'][name]!r}, "
                                 f"but this run has {getattr(self.cfg, name)!r}")
        for k, v in state["tables"].items():
            self.tables[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.batcher.load_state_dict(state["batcher"])
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
        t0, window_loss, window_steps = time.perf_counter(), 0.0, 0
        stopped_early = False
        while self.step < cfg.max_step:
            loss = self.train_step(self.step)
            self.step += 1
            window_loss += loss
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % cfg.log_interval == 0 or self.step == cfg.max_step:
                dt = time.perf_counter() - t0
                rec = {"step": self.step, "loss": window_loss / window_steps,
                       "pos_per_s": window_steps * cfg.batch_size / max(dt, 1e-9)}
                self._log(rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", pos_s=f"{rec['pos_per_s']:.0f}")
                t0, window_loss, window_steps = time.perf_counter(), 0.0, 0
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
                if cfg.early_stop_patience and self.bad_evals >= cfg.early_stop_patience:
                    stopped_early = True
                t0 = time.perf_counter()  # positives/s excludes validation time
            if cfg.checkpoint_interval and self.save_path is not None and self.step % cfg.checkpoint_interval == 0:
                self.save_checkpoint()
            if stopped_early:
                if bar is not None:
                    bar.write(f"early stop at step {self.step}: no better valid MRR in "
                              f"{cfg.early_stop_patience} validations")
                break
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
                        filtered: bool = True, **eval_options) -> dict:
    """Filtered metrics per split (``{"test": {...}, "valid": {...}}``); written to ``metrics.json``.

    ``eval_options`` go to :func:`~kgengine.evaluate.evaluate` (``batch_size``, ``num_candidates``,
    ``fraction``, ``seed``).
    """
    out = {}
    for split in splits:
        triples = kg.split(split)
        if len(triples):
            m = evaluate(trained.model, triples, kg.all_triples() if filtered else None, ties=ties, **eval_options)
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
                                                        **config.eval_options())
    return trained
