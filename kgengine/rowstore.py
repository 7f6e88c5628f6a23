"""Where the embedding tables and their optimizer state live, and how a step's rows move.

Two placements, one interface (:meth:`RowStore.gather`, :meth:`RowStore.update`):

* **resident**: tables and Adagrad state on the compute device (the CPU, or a
  GPU with ``--device cuda``): a gather is an ``index_select``, the update runs
  in place on the device;
* **offloaded** (``--mix_cpu_gpu``, DGL-KE's flag; every GPU worker of a
  multi-process run): tables and state stay in CPU memory (shared memory for
  worker processes), so a table may be larger than the GPU. A step gathers its
  distinct rows and their Adagrad state on the CPU into pinned memory and copies
  them to the device without a host sync; after backward the device computes the
  Adagrad arithmetic and sends back two increments, which the CPU adds to its
  rows (two ``index_add_`` passes: the CPU does no arithmetic of its own, and
  increments, unlike overwritten rows, compose with what other workers wrote
  meanwhile). With ``async_update`` (DGL-KE's ``--async_update``) a background
  thread adds the increments of step ``i`` while the device computes step
  ``i + 1``; at most ``max_pending`` updates wait, so a gathered row is at most
  that many steps stale (the Hogwild bargain DGL-KE makes). :meth:`flush`
  waits for them all.

An offloaded store also runs with a CPU compute device, which is how its
bookkeeping is tested without a GPU.
"""
from __future__ import annotations

import queue
import threading

import torch

from .optim import RowSparseAdagrad

__all__ = ["RowStore"]


class RowStore:
    """The tables of ``optimizer`` as seen from ``device``.

    Args:
        optimizer: holds the tables and their state (on the CPU when ``offload``).
        device: where scoring runs.
        offload: tables live in CPU memory and rows travel per step.
        async_update: apply offloaded updates in a background thread.
        max_pending: offloaded updates that may wait before :meth:`update` blocks.
    """

    def __init__(self, optimizer: RowSparseAdagrad, device: torch.device, offload: bool = False,
                 async_update: bool = False, max_pending: int = 2) -> None:
        if async_update and not offload:
            raise ValueError("async_update needs offloaded tables (--mix_cpu_gpu or GPU worker processes)")
        if offload and any(t.device.type != "cpu" for t in optimizer.tables.values()):
            raise ValueError("offloaded tables must live in CPU memory")
        self.optimizer, self.device, self.offload = optimizer, torch.device(device), offload
        self.async_update, self.max_pending = async_update, max_pending
        self._pin = offload and self.device.type == "cuda"
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._state_rows: dict[str, torch.Tensor] = {}  # offloaded: each gathered table's Adagrad rows
        self.updates_applied = 0

    @property
    def tables(self) -> dict[str, torch.Tensor]:
        return self.optimizer.tables

    def gather(self, name: str, idx_home: torch.Tensor, idx_device: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` of table ``name`` on the compute device, as a leaf that collects their gradient.

        ``idx_home`` indexes on the table's own device (the CPU when offloaded), ``idx_device``
        is the same ids already on the compute device.
        """
        W = self.optimizer.tables[name]
        if not self.offload:
            return W.index_select(0, idx_device).requires_grad_()
        S = self.optimizer.state[name]
        staged = [torch.empty((len(idx_home),) + T.shape[1:], dtype=T.dtype, pin_memory=self._pin) for T in (W, S)]
        for T, out in zip((W, S), staged):
            torch.index_select(T, 0, idx_home, out=out)
        # the caching host allocator keeps each staged buffer alive until its copy has run
        rows, state = (t.to(self.device, non_blocking=True) for t in staged) if self._pin else staged
        self._state_rows[name] = state
        return rows.requires_grad_()

    @torch.no_grad()
    def update(self, name: str, idx_home: torch.Tensor, idx_device: torch.Tensor, grad: torch.Tensor) -> None:
        """Apply the summed gradient ``grad (m, d)`` of the rows ``idx`` of table ``name``."""
        if not self.offload:
            self.optimizer.step(name, idx_device, grad)
            return
        self._raise_pending_error()
        self.optimizer.check(name, grad)
        g2, delta = self.optimizer.row_update(self._state_rows.pop(name), grad)
        event = None
        if self._pin:
            g2, delta = (torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                         for t in (g2, delta))
            event = torch.cuda.Event()
            event.record()
        if not self.async_update:
            if event is not None:
                event.synchronize()  # the CPU waits for this step: what --async_update avoids
            self.optimizer.add_increments(name, idx_home, g2, delta)
            self.updates_applied += 1
            return
        if self._thread is None:  # started on first use, stopped by close()
            self._queue = queue.Queue(maxsize=self.max_pending)
            self._thread = threading.Thread(target=self._apply_pending, name="kgengine-async-update", daemon=True)
            self._thread.start()
        assert self._queue is not None
        self._queue.put((name, idx_home, g2, delta, event))

    def _apply_pending(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                name, idx, g2, delta, event = item
                if self._error is None:  # after a failure, drain without applying
                    if event is not None:
                        event.synchronize()
                    self.optimizer.add_increments(name, idx, g2, delta)
                    self.updates_applied += 1
            except BaseException as e:  # surfaced on the training thread by the next update or flush
                self._error = e
            finally:
                self._queue.task_done()

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def flush(self) -> None:
        """Wait until every pending update is applied (before reading the tables)."""
        if self._queue is not None:
            self._queue.join()
        self._raise_pending_error()

    def close(self) -> None:
        """Apply what is pending and stop the update thread."""
        if self._thread is not None:
            try:
                self.flush()
            finally:
                assert self._queue is not None
                self._queue.put(None)
                self._thread.join()
                self._thread = self._queue = None
