"""Worker processes that train one model together (``--num_proc N``, ``--gpu 0 1 ...``).

DGL-KE's design on current PyTorch: the entity and relation tables and their
Adagrad state sit in shared memory (``share_memory_()``); each worker process
owns a seeded generator and its own share of the positives and runs
:class:`~kgengine.step.StepEngine` steps on them, Hogwild-style (no locks; two
workers that touch the same row may interleave their updates). Workers on a
GPU gather their rows from the shared CPU tables (the offloaded
:class:`~kgengine.rowstore.RowStore`, so several GPUs see one model), workers
on the CPU update the shared tables in place.

The parent process (:class:`~kgengine.train.Trainer`) keeps the loop: it asks
the pool for a round of steps, and between rounds, with every worker idle, it
logs, validates, checkpoints and saves. ``max_step`` counts the steps of all
workers together, so a run with N processes trains on as many positives as a
single-process run with the same ``max_step`` (DGL-KE counts per process).
"""
from __future__ import annotations

import os
import queue
import traceback

import torch
import torch.multiprocessing as mp

from .errors import ConfigError

__all__ = ["WorkerPool", "worker_devices", "split_positives"]


def worker_devices(cfg) -> list[str]:
    """The device of each of ``cfg.num_proc`` workers: GPUs from ``cfg.gpu`` round-robin, else ``cfg.device``."""
    gpus = [g for g in cfg.gpu if g >= 0]
    if gpus:
        return [f"cuda:{gpus[i % len(gpus)]}" for i in range(cfg.num_proc)]
    return [cfg.device] * cfg.num_proc


def split_positives(num_triples: int, num_parts: int, seed: int) -> list[torch.Tensor]:
    """A seeded random split of ``range(num_triples)`` into ``num_parts`` near-equal shares."""
    perm = torch.randperm(num_triples, generator=torch.Generator().manual_seed(seed))
    return [perm[i::num_parts].sort().values for i in range(num_parts)]


def _worker_seed(seed: int, rank: int, first_step: int) -> int:
    return (seed * 1_000_003 + (rank + 1) * 7_919 + first_step) % (2**63)


def _worker_main(rank: int, device: str, cfg_dict: dict, model_cfg: dict, tables: dict, states: dict,
                 triples: torch.Tensor, degrees: torch.Tensor | None, candidates: torch.Tensor | None,
                 first_step: int, threads: int, commands, results) -> None:
    from .models import model_from_config
    from .optim import RowSparseAdagrad
    from .rowstore import RowStore
    from .sampling import StepSampler
    from .step import StepEngine
    from .train import TrainConfig

    try:
        torch.set_num_threads(threads)
        cfg = TrainConfig(**cfg_dict)
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        with torch.device("meta"):  # the scorer only: its rows come from the shared tables
            model = model_from_config(model_cfg)
        offload = dev.type != "cpu"
        optimizer = RowSparseAdagrad(tables, cfg.lr, state=states, check_finite=not offload,
                                     state_mode=cfg.optimizer_state, fused=cfg.compile)
        store = RowStore(optimizer, dev, offload=offload, async_update=cfg.async_update and offload)
        gen = torch.Generator().manual_seed(_worker_seed(cfg.seed, rank, first_step))
        sampler = StepSampler(triples, model.num_entities, cfg.batch_size, cfg.neg_sample_size, cfg.neg_chunk_size,
                              gen, degrees, candidates)
        engine = StepEngine(model, store, sampler, cfg)
        results.put((rank, "ready", None))
    except BaseException:
        results.put((rank, "error", ("RuntimeError", traceback.format_exc())))
        return
    local_step = 0
    while True:
        cmd = commands.get()
        if cmd is None:
            store.close()
            return
        try:
            losses = engine.run(cmd, local_step)
            local_step += cmd
            results.put((rank, "done", losses))
        except FloatingPointError as e:
            results.put((rank, "error", ("FloatingPointError", f"worker {rank}: {e}")))
        except BaseException:
            results.put((rank, "error", ("RuntimeError", traceback.format_exc())))


class WorkerPool:
    """``cfg.num_proc`` worker processes over the shared ``tables`` / ``states``.

    Args:
        cfg: the run's :class:`~kgengine.train.TrainConfig`.
        model_cfg: ``KGEModel.config()`` (workers rebuild the scorer from it).
        tables, states: ``{name: tensor}`` in shared memory (moved there if they are not).
        triples: ``int64 (n, 3)`` all training positives; each worker gets a share.
        degrees: weights for ``--neg_deg_sample`` (``None``: uniform negatives).
        first_step: the run's current step (seeds the workers' generators).
        shares: each worker's triple indices (default: a seeded random split).
        candidates: each worker's negative entities (default: all).
    """

    def __init__(self, cfg, model_cfg: dict, tables: dict[str, torch.Tensor], states: dict[str, torch.Tensor],
                 triples: torch.Tensor, degrees: torch.Tensor | None, first_step: int = 0,
                 shares: list[torch.Tensor] | None = None, candidates: list[torch.Tensor] | None = None) -> None:
        for t in list(tables.values()) + list(states.values()):
            if t.device.type != "cpu":
                raise ValueError("worker processes share CPU tables; offload them (--mix_cpu_gpu) first")
            t.share_memory_()
        self.num_proc = cfg.num_proc
        devices = worker_devices(cfg)
        threads = cfg.num_thread or max(1, (os.cpu_count() or 1) // self.num_proc)
        ctx = mp.get_context("spawn")  # fork would copy a CUDA context and the parent's OpenMP pool
        self.results = ctx.Queue()
        self.commands = [ctx.SimpleQueue() for _ in range(self.num_proc)]
        if shares is None:
            shares = split_positives(len(triples), self.num_proc, cfg.seed)
        if any(len(s) == 0 for s in shares):
            raise ConfigError("a worker's share of the positives is empty (a partition part without triples?)")
        self.procs = []
        for rank in range(self.num_proc):
            share = triples[shares[rank]].contiguous().share_memory_()
            cand = candidates[rank].contiguous().share_memory_() if candidates is not None else None
            p = ctx.Process(target=_worker_main, name=f"kgengine-worker-{rank}", daemon=True,
                            args=(rank, devices[rank], cfg.to_dict(), model_cfg, tables, states, share, degrees,
                                  cand, first_step, threads, self.commands[rank], self.results))
            p.start()
            self.procs.append(p)
        try:
            self._collect("ready")
        except BaseException:
            self.close()
            raise

    def _collect(self, kind: str) -> dict[int, object]:
        """One ``kind`` message from every worker; a worker's error (or death) is raised here."""
        got: dict[int, object] = {}
        error = None
        while len(got) < self.num_proc:
            try:
                rank, status, payload = self.results.get(timeout=5.0)
            except queue.Empty:
                dead = [i for i, p in enumerate(self.procs) if not p.is_alive() and i not in got]
                if dead:
                    hint = "" if kind != "ready" else (
                        " while starting: a script that trains with num_proc > 1 must guard its entry point "
                        "with `if __name__ == '__main__':` (spawned workers re-import it)")
                    raise RuntimeError(f"worker process(es) {dead} died (exit codes "
                                       f"{[self.procs[i].exitcode for i in dead]}){hint}") from None
                continue
            if status == "error":
                error = error or payload
                got[rank] = None
            else:
                got[rank] = payload
        if error is not None:
            kind_name, message = error
            raise FloatingPointError(message) if kind_name == "FloatingPointError" else RuntimeError(
                f"a worker process failed:\n{message}")
        return got

    def run(self, num_steps: int, first_step: int, on_step=None) -> torch.Tensor:
        """``num_steps`` steps shared among the workers; their ``float64`` losses (worker by worker)."""
        per, extra = divmod(num_steps, self.num_proc)
        counts = [per + (r < extra) for r in range(self.num_proc)]
        for rank, n in enumerate(counts):
            self.commands[rank].put(n)
        got = self._collect("done")
        return torch.cat([got[r] for r in range(self.num_proc)])

    def close(self) -> None:
        for rank, p in enumerate(self.procs):
            if p.is_alive():
                try:
                    self.commands[rank].put(None)
                except (OSError, ValueError):
                    pass
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join()
        self.procs = []
