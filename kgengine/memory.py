"""The memory plan of a run: what training will allocate, checked before it allocates anything.

A 5M-entity, dim-2000 run needs 40 GB of entity table and as much again of
Adagrad state; without a plan it loads its data, then dies allocating (or is
OOM-killed). :func:`memory_plan` adds up the tables, the optimizer state and the
other large buffers from the configuration and the graph's sizes, per device;
:func:`check_memory` compares them with what the machine has free and refuses
with the numbers and the flags that shrink them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from .errors import MemoryPlanError

__all__ = ["MemoryItem", "memory_plan", "plan_for", "check_memory", "available_bytes", "format_plan"]

GiB = 2**30


@dataclass
class MemoryItem:
    what: str
    bytes: int
    device: str  # "cpu" or "cuda:N"


def _cgroup_free() -> int | None:
    """Room left under a cgroup v2 memory limit (containers, CI), if there is one."""
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
    except (OSError, ValueError):
        return None
    return int(limit) - used if limit.isdigit() else None


def available_bytes(device: str) -> int | None:
    """Free memory on ``device`` (for the CPU: MemAvailable, or a cgroup's room if smaller); ``None`` if unknown."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0] if torch.cuda.is_available() else None
    free = None
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except OSError:
        pass
    room = _cgroup_free()
    return room if free is None else (free if room is None else min(free, room))


def plan_for(cfg, kg, save_path=None) -> list[MemoryItem]:
    """:func:`memory_plan` of training ``cfg`` on ``kg`` (a :class:`~kgengine.data.KG`)."""
    return memory_plan(cfg, kg.num_entities, kg.num_relations, len(kg.train), sum(map(len, kg.known())),
                       keep_best_in_memory=save_path is None and cfg.eval_interval > 0)


def memory_plan(cfg, num_entities: int, num_relations: int, num_train: int, num_known: int,
                keep_best_in_memory: bool) -> list[MemoryItem]:
    """What a run of ``cfg`` (a :class:`~kgengine.train.TrainConfig`) will allocate beyond the loaded data."""
    from .models import create_model

    with torch.device("meta"):
        model = create_model(cfg.model_name, num_entities, num_relations, cfg.hidden_dim, gamma=cfg.gamma,
                             reciprocal=cfg.reciprocal)
    table_dev = "cpu" if cfg.offloaded() or cfg.num_proc > 1 else cfg.device
    items = []
    for name, shape in model.table_shapes().items():
        nbytes = math.prod(shape) * 4
        items.append(MemoryItem(f"{name} table {shape[0]:,} x {shape[1]:,} float32", nbytes, table_dev))
        state = nbytes if cfg.optimizer_state == "element" else shape[0] * 4
        items.append(MemoryItem(f"{name} Adagrad state ({cfg.optimizer_state}-wise)", state, table_dev))
        if keep_best_in_memory:
            items.append(MemoryItem(f"{name} best-validation copy", nbytes, table_dev))
    if cfg.reciprocal:
        items.append(MemoryItem("inverse training triples", num_train * 3 * 8, "cpu"))
    if cfg.num_proc > 1:
        items.append(MemoryItem("workers' shares of the positives", num_train * (2 if cfg.reciprocal else 1) * 24,
                                "cpu"))
    # the filter index: sorted keys and values for both sides, plus argsort temporaries
    items.append(MemoryItem("evaluation filter index", num_known * 8 * 6, "cpu"))
    rows = 2 * cfg.batch_size + cfg.batch_size // cfg.neg_chunk_size * cfg.neg_sample_size
    row_bytes = sum(math.prod(s[1:]) for s in model.table_shapes().values()) * 4
    items.append(MemoryItem("one step's rows, gradients and scores",
                            rows * row_bytes * 4 + cfg.batch_size * cfg.neg_sample_size * 4 * 4, cfg.device))
    eval_dev = cfg.device
    items.append(MemoryItem("evaluation score batches", (2 if eval_dev.startswith("cuda") else 0.25) * GiB, eval_dev))
    return items


def _size(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 4 else f"{n / 2**20:.1f} MiB"


def format_plan(items: list[MemoryItem]) -> str:
    lines = [f"  {_size(it.bytes):>11}  {it.device:7s} {it.what}" for it in items]
    by_dev: dict[str, int] = {}
    for it in items:
        by_dev[it.device] = by_dev.get(it.device, 0) + it.bytes
    lines.append("  total: " + ", ".join(f"{_size(b)} on {d}" for d, b in by_dev.items()))
    return "memory plan:\n" + "\n".join(lines)


def check_memory(items: list[MemoryItem], headroom: float = 0.9) -> None:
    """Refuse (:class:`MemoryPlanError`) when a device's planned total exceeds ``headroom`` of its free memory."""
    if os.environ.get("KGENGINE_SKIP_MEMORY_CHECK"):
        return
    by_dev: dict[str, int] = {}
    for it in items:
        by_dev[it.device] = by_dev.get(it.device, 0) + it.bytes
    for dev, need in by_dev.items():
        free = available_bytes(dev)
        if free is None or need <= headroom * free:
            continue
        big = sorted((it for it in items if it.device == dev), key=lambda it: -it.bytes)[:3]
        raise MemoryPlanError(
            f"this run needs about {need / GiB:.1f} GiB on {dev} but {free / GiB:.1f} GiB is free "
            f"(largest: {'; '.join(f'{it.what} {it.bytes / GiB:.1f} GiB' for it in big)}); lower --hidden_dim, "
            + ("use --mix_cpu_gpu to keep the tables in CPU memory, " if dev.startswith("cuda") else "")
            + "or train on a machine with more memory (KGENGINE_SKIP_MEMORY_CHECK=1 skips this check)")
