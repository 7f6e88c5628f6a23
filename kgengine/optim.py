"""Row-sparse Adagrad: updates and state touch only the rows a batch used.

For a table ``W (n, d)`` and the ``m`` distinct rows ``idx`` a batch touched,
with their summed gradient ``g (m, d)``::

    S[idx] += g * g
    W[idx] -= lr * g / (sqrt(S[idx]) + eps)

This is exactly ``torch.optim.Adagrad`` (``lr_decay=0``, ``weight_decay=0``,
``initial_accumulator_value=0``) on the dense gradient, whose rows outside
``idx`` are zero and therefore leave both ``W`` and ``S`` unchanged; here no
dense ``(n, d)`` gradient is ever formed. State is element-wise, on the same
device as the table.
"""
from __future__ import annotations

import torch

__all__ = ["RowSparseAdagrad"]


class RowSparseAdagrad:
    """Adagrad over named tables with row-sparse steps.

    Args:
        tables: ``{name: (n, d) tensor}`` updated in place.
        lr: learning rate.
        eps: added to ``sqrt(state)``.
    """

    def __init__(self, tables: dict[str, torch.Tensor], lr: float, eps: float = 1e-10) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.tables, self.lr, self.eps = tables, lr, eps
        self.state = {k: torch.zeros_like(v) for k, v in tables.items()}

    @torch.no_grad()
    def step(self, name: str, idx: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply the gradient ``grad (m, d)`` of the distinct rows ``idx (m,)`` of table ``name``."""
        if not torch.isfinite(grad.sum()):  # one pass; NaN/inf propagate through the sum
            raise FloatingPointError(f"non-finite gradient for table {name!r}; lower --lr or check the data")
        S, W = self.state[name], self.tables[name]
        s = S.index_select(0, idx).addcmul_(grad, grad)
        S.index_copy_(0, idx, s)
        W.index_add_(0, idx, grad / (s.sqrt_().add_(self.eps)), alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "eps": self.eps, "state": {k: v.clone() for k, v in self.state.items()}}

    def load_state_dict(self, sd: dict) -> None:
        self.lr, self.eps = sd["lr"], sd["eps"]
        for k, v in sd["state"].items():
            self.state[k].copy_(v)
