"""Training losses over one step's scores: each positive against its chunk's shared negatives.

A loss takes ``pos (C, c)``, the scores of the ``c`` positives of each of ``C``
chunks, and ``neg (C, c, k)``, the scores of each positive's corruptions by the
chunk's ``k`` shared negatives, and returns a scalar:

* ``Logsigmoid`` (DGL-KE's): ``-(mean logsigmoid(pos) + mean_w logsigmoid(-neg)) / 2``
  with uniform weights ``w``, or self-adversarial ``w = softmax(temperature * neg)``
  (``-adv``, ``-a``; the weights carry no gradient);
* ``Softmax``: the cross-entropy of each positive against its ``k`` negatives
  (sampled softmax; PyKEEN's ``CrossEntropyLoss`` under sLCWA). The softmax
  already weights each negative by its score, so ``-adv`` adds nothing to it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "create_loss", "loss_names"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _SoftplusMean(torch.autograd.Function):
    """``mean(softplus(x)) = -mean(logsigmoid(-x))``; backward ``sigmoid(x) / n`` written into one buffer.

    Autograd's version negates a copy of the scores and makes two full-size passes in backward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.softplus(x).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return torch.sigmoid(x).mul_(grad / x.numel())


def _logsigmoid(adversarial: bool, temperature: float) -> Loss:
    def loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if adversarial:
            w = torch.softmax(neg.detach() * temperature, dim=-1)
            neg_loss = (w * F.softplus(neg)).sum(-1).mean()
        else:
            neg_loss = _SoftplusMean.apply(neg)
        return (F.softplus(-pos).mean() + neg_loss) / 2

    return loss


def _softmax(adversarial: bool, temperature: float) -> Loss:
    def loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)
        return -torch.log_softmax(logits, dim=-1)[..., 0].mean()

    return loss


LOSSES: dict[str, Callable[[bool, float], Loss]] = {"Logsigmoid": _logsigmoid, "Softmax": _softmax}


def loss_names() -> tuple[str, ...]:
    return tuple(LOSSES)


def create_loss(name: str, adversarial: bool = False, temperature: float = 1.0) -> Loss:
    """The loss ``fn(pos (C, c), neg (C, c, k)) -> scalar`` registered as ``name``."""
    if name not in LOSSES:
        raise ValueError(f"loss_genre {name!r}: expected one of {', '.join(LOSSES)}")
    return LOSSES[name](adversarial, temperature)
