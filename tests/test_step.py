"""The fast step against the plain one: the same loss and the same gradients, to float tolerance.

The step gathers heads, tails and negatives as separate tensors, scores the
positives and the chunk's negatives from one query, and uses a hand-written
softplus backward; the reference here is the textbook form of the same objective
(one gather sliced into parts, aligned scores by ``score_emb``, autograd's
logsigmoid), so any change of meaning in the fast path fails these tests.
"""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from kgengine import TrainConfig
from kgengine.models import create_model, model_names
from kgengine.optim import RowSparseAdagrad, _fused_step
from kgengine.step import StepEngine

B, K, CHUNK, M, U = 12, 5, 4, 20, 3


def _reference(model, cfg, ent, rel, inv_e, inv_r, head_side):
    C = B // CHUNK
    rows = ent.index_select(0, inv_e)
    he, te, ne = rows[:B], rows[B:2 * B], rows[2 * B:].view(C, K, -1)
    rq = inv_r.view(C, CHUNK)
    pos = model.score_emb(he, inv_r, rel, te).view(C, CHUNK)
    if head_side:
        neg = model.score_heads_emb(ne, rq, rel, te.view(C, CHUNK, -1))
    else:
        neg = model.score_tails_emb(he.view(C, CHUNK, -1), rq, rel, ne)
    if cfg.loss_genre == "Softmax":
        logits = torch.cat([pos.unsqueeze(-1), neg], -1).view(B, -1)
        loss = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
    else:
        ls = F.logsigmoid(-neg)
        if cfg.neg_adversarial_sampling:
            w = torch.softmax(neg.detach() * cfg.adversarial_temperature, -1)
            neg_loss = -(w * ls).sum(-1).mean()
        else:
            neg_loss = -ls.mean()
        loss = (-F.logsigmoid(pos).mean() + neg_loss) / 2
    if cfg.regularization_coef > 0:
        p = cfg.regularization_norm
        loss = loss + cfg.regularization_coef * (ent.abs().pow(p).sum() + sum(x.abs().pow(p).sum()
                                                                              for x in rel.values()))
    return loss


def _leaves(model, seed):
    g = torch.Generator().manual_seed(seed)
    ent = (torch.rand(M, model.entity_dim, generator=g) - 0.5).requires_grad_()
    rel = {n: (torch.rand(U, model.tables[n].shape[1], generator=g) - 0.5).requires_grad_()
           for n, idx in model.table_index.items() if idx == "relation"}
    inv_e = torch.randint(M, (2 * B + (B // CHUNK) * K,), generator=g)
    inv_r = torch.randint(U, (B,), generator=g)
    return ent, rel, inv_e, inv_r


LOSSES = [dict(loss_genre="Logsigmoid"), dict(loss_genre="Logsigmoid", neg_adversarial_sampling=True,
                                              adversarial_temperature=0.7),
          dict(loss_genre="Softmax"), dict(loss_genre="Logsigmoid", regularization_coef=1e-3)]


@pytest.mark.parametrize("head_side", [False, True])
@pytest.mark.parametrize("loss", LOSSES, ids=["logsigmoid", "adversarial", "softmax", "regularised"])
@pytest.mark.parametrize("name", model_names())
def test_step_objective_matches_the_textbook_objective(name, loss, head_side):
    model = create_model(name, 30, 7, 6)
    cfg = TrainConfig(model_name=name, batch_size=B, neg_sample_size=K, neg_chunk_size=CHUNK, **loss)
    engine = StepEngine(model, types.SimpleNamespace(device=torch.device("cpu")), None, cfg)
    ent, rel, inv_e, inv_r = _leaves(model, 3)
    fast = engine.objective(ent, rel, inv_e, inv_r, head_side)
    fast.backward()
    got = [ent.grad.clone()] + [x.grad.clone() for x in rel.values()]
    for x in [ent, *rel.values()]:
        x.grad = None
    ref = _reference(model, cfg, ent, rel, inv_e, inv_r, head_side)
    ref.backward()
    assert float(fast.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-7)
    for a, b in zip(got, [ent.grad] + [x.grad for x in rel.values()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert got[0].abs().sum() > 0  # the gradient reached the entity rows


@pytest.mark.parametrize("mode", ["element", "row"])
def test_fused_adagrad_step_is_the_eager_step(mode):
    g = torch.Generator().manual_seed(0)
    W, S = torch.randn(50, 8, generator=g), torch.rand(50, 8 if mode == "element" else 1, generator=g)
    idx, grad = torch.randperm(50, generator=g)[:17], torch.randn(17, 8, generator=g)
    eager = RowSparseAdagrad({"e": W.clone()}, lr=0.3, state={"e": S.clone()}, state_mode=mode)
    eager.step("e", idx, grad)
    W2, S2 = W.clone(), S.clone()
    _fused_step(S2, W2, idx, grad, 0.3, 1e-10, mode == "row")  # the fused function, run eagerly
    assert torch.equal(W2, eager.tables["e"]) and torch.equal(S2, eager.state["e"])
    fused = RowSparseAdagrad({"e": W.clone()}, lr=0.3, state={"e": S.clone()}, state_mode=mode, fused=True)
    fused.step("e", idx, grad)  # compiled where a compiler works, else the same function eagerly
    torch.testing.assert_close(fused.tables["e"], eager.tables["e"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fused.state["e"], eager.state["e"], rtol=1e-6, atol=1e-7)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(fused.tables["e"][untouched], W[untouched])
