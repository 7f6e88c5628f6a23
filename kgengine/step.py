"""One training step on one device, and runs of steps.

A step (see :mod:`kgengine.train` for the whole recipe):

1. the :class:`~kgengine.sampling.StepSampler` draws ``B`` positives and ``C``
   chunks of ``k`` shared negatives on the CPU and indexes their distinct rows;
2. the ids travel to the device in one asynchronous copy, and the
   :class:`~kgengine.rowstore.RowStore` gathers the distinct rows as leaves;
3. positives are scored aligned, each chunk against its negatives as one
   candidate-set product (``bmm``), optionally under bf16 autocast (``amp``);
4. the loss (:mod:`kgengine.losses`) plus ``coef * sum |x|^p`` over the used
   rows; backward; the row-sparse update of exactly those rows.

On a GPU nothing in a step waits for the device: the loss stays on the device
and is checked for NaN/inf once per run of steps (:meth:`StepEngine.run`), so
the CPU prepares step ``i + 1`` while the GPU computes step ``i``. On the CPU
the loss is checked every step, before it can touch a table.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .compiled import compiled_or_eager
from .losses import create_loss
from .models import KGEModel
from .rowstore import RowStore
from .sampling import StepSampler

__all__ = ["StepEngine"]


class StepEngine:
    """Runs training steps of ``model`` on ``store``'s tables with batches from ``sampler``.

    Args:
        model: the scorer (its own tables are not read: rows come from ``store``).
        store: tables, optimizer state and their placement.
        sampler: the step ids.
        cfg: a :class:`~kgengine.train.TrainConfig` (batch shape, loss, regularisation,
            ``reciprocal``, ``amp``, ``compile``).
    """

    def __init__(self, model: KGEModel, store: RowStore, sampler: StepSampler, cfg) -> None:
        self.model, self.store, self.sampler, self.cfg = model, store, sampler, cfg
        self.device = store.device
        self.loss_fn = create_loss(cfg.loss_genre, cfg.neg_adversarial_sampling, cfg.adversarial_temperature)
        self.rel_names = [n for n, idx in model.table_index.items() if idx == "relation"]
        self.check_each_step = self.device.type == "cpu"  # free on the CPU; a host sync per step on a GPU
        self._objective: Callable = self.objective
        if cfg.compile:
            self._objective = compiled_or_eager(self.objective, "the step's scoring and loss")

    def _autocast(self):
        if not self.cfg.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def objective(self, ent: torch.Tensor, rel: dict[str, torch.Tensor], inv_e: torch.Tensor, inv_r: torch.Tensor,
                  head_side: bool) -> torch.Tensor:
        """The step's loss from its distinct rows ``ent (m, d)`` / ``rel`` and the batch layout ``inv_e``, ``inv_r``."""
        cfg, model = self.cfg, self.model
        B, k, c = cfg.batch_size, cfg.neg_sample_size, cfg.neg_chunk_size
        C = B // c
        he, te, ne = _GatherParts.apply(ent, inv_e, B, B, C * k)
        # one query serves the positives and the chunk's negatives: (h, r, ?) for tails, (?, r, t) for heads
        anchor, other, side = (te, he, "head") if head_side else (he, te, "tail")
        with self._autocast():
            q = model.query(anchor, inv_r, rel, side)
            pos = model.match(q, other)
            neg = model.match_candidates(q.view(C, c, -1), ne.view(C, k, -1))
        loss = self.loss_fn(pos.float().view(C, c), neg.float())
        if cfg.regularization_coef > 0:
            p = cfg.regularization_norm
            reg = ent.abs().pow(p).sum() + sum(x.abs().pow(p).sum() for x in rel.values())
            loss = loss + cfg.regularization_coef * reg
        return loss

    def step(self, step: int) -> torch.Tensor:
        """One step (``step`` picks the corrupted side: odd steps corrupt heads); the loss, on the device."""
        cpu = self.sampler.next()
        b = cpu.to(self.device)
        ent = self.store.gather("entity", cpu.uniq_e, b.uniq_e)
        rel = {n: self.store.gather(n, cpu.uniq_r, b.uniq_r) for n in self.rel_names}
        head_side = bool(step % 2) and not self.cfg.reciprocal  # reciprocal: heads are the inverse triples' tails
        loss = self._objective(ent, rel, b.inv_e, b.inv_r, head_side)
        if self.check_each_step and not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: the loss is {loss.item()}; lower --lr or check the data")
        loss.backward()
        self.store.update("entity", cpu.uniq_e, b.uniq_e, ent.grad)
        for n, x in rel.items():
            self.store.update(n, cpu.uniq_r, b.uniq_r, x.grad)
        return loss.detach()

    def run(self, num_steps: int, first_step: int, on_step: Callable[[], None] | None = None) -> torch.Tensor:
        """Steps ``first_step .. first_step + num_steps - 1``; ``float64 (num_steps,)`` losses on the CPU.

        Raises :class:`FloatingPointError` naming the first step whose loss is not finite.
        """
        losses = []
        for s in range(first_step, first_step + num_steps):
            losses.append(self.step(s))
            if on_step is not None:
                on_step()
        self.store.flush()
        out = torch.stack(losses).double().cpu() if losses else torch.empty(0, dtype=torch.float64)
        bad = (~torch.isfinite(out)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise FloatingPointError(
                f"step {first_step + i}: the loss is {float(out[i])}; lower --lr or check the data (on "
                f"{self.device} the loss is checked once per log interval, after the steps ran)")
        return out


class _GatherParts(torch.autograd.Function):
    """``ent[inv]`` cut into consecutive parts of ``sizes`` rows, each its own tensor.

    Slicing one gathered tensor would make autograd zero-fill a full-size gradient per
    slice in backward (14-18% of a step, measured); here backward fills one ``(m, d)``
    buffer and adds each part's gradient into it with ``index_add_``.
    """

    @staticmethod
    def forward(ctx, ent: torch.Tensor, inv: torch.Tensor, *sizes: int) -> tuple[torch.Tensor, ...]:
        parts = inv.split(sizes)
        ctx.save_for_backward(*parts)
        ctx.rows = ent.shape[0]
        return tuple(ent.index_select(0, p) for p in parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        parts = ctx.saved_tensors
        g = next(x for x in grads if x is not None)
        out = g.new_zeros(ctx.rows, g.shape[-1])
        for p, x in zip(parts, grads):
            if x is not None:
                out.index_add_(0, p, x)
        return (out, None) + (None,) * len(parts)
