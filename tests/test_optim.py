"""RowSparseAdagrad against torch.optim.Adagrad on a dense copy of the tables."""
import copy

import pytest
import torch

from kgengine.optim import RowSparseAdagrad

torch.set_num_threads(1)

LR = 0.3


def make_tables(seed=0, shapes=(("entity", (10, 4)), ("relation", (5, 3)))):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes}


def random_rows(n, m, g):
    return torch.randperm(n, generator=g)[:m]


def dense_reference(tables, lr=LR):
    params = {k: torch.nn.Parameter(v.clone()) for k, v in tables.items()}
    opt = torch.optim.Adagrad(list(params.values()), lr=lr, eps=1e-10, initial_accumulator_value=0.0)
    return params, opt


def dense_step(params, opt, name, idx, grad):
    for k, p in params.items():
        p.grad = torch.zeros_like(p)
    params[name].grad[idx] = grad
    opt.step()


def assert_same(params, opt, sparse):
    for k, p in params.items():
        torch.testing.assert_close(sparse.tables[k], p.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sparse.state[k], opt.state[p]["sum"], rtol=1e-12, atol=1e-12)


def test_matches_torch_adagrad_over_many_steps():
    tables = make_tables()
    params, opt = dense_reference(tables)
    sparse = RowSparseAdagrad(tables, lr=LR)
    g = torch.Generator().manual_seed(1)
    fixed = torch.tensor([0, 3, 7])
    n_checked = 0
    for step in range(25):
        name = "entity" if step % 3 else "relation"
        n = tables[name].shape[0]
        if step % 5 == 0 and name == "entity":
            idx = fixed  # the same rows again and again
        else:
            idx = random_rows(n, int(torch.randint(1, n + 1, (1,), generator=g)), g)
        grad = torch.randn(len(idx), tables[name].shape[1], generator=g, dtype=torch.float64) * (1 + step)
        dense_step(params, opt, name, idx, grad)
        sparse.step(name, idx, grad)
        assert_same(params, opt, sparse)
        n_checked += 1
    assert n_checked == 25
    # the tables really moved, and the state accumulated on overlapping rows over several steps
    assert not torch.allclose(tables["entity"], make_tables()["entity"])
    assert (sparse.state["entity"][fixed] > 0).all()


def test_repeated_steps_on_the_same_rows():
    tables = make_tables(shapes=(("w", (6, 2)),))
    params, opt = dense_reference(tables)
    sparse = RowSparseAdagrad(tables, lr=LR)
    idx = torch.tensor([4, 1])
    grad = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    for k in range(1, 5):
        dense_step(params, opt, "w", idx, grad)
        sparse.step("w", idx, grad)
        assert_same(params, opt, sparse)
        torch.testing.assert_close(sparse.state["w"][idx], k * grad * grad)
    # closed form for a constant gradient: sum_k lr * g / (sqrt(k) |g|) = lr * sign(g) * sum_k 1/sqrt(k)
    expected = make_tables(shapes=(("w", (6, 2)),))["w"]
    expected[idx] -= LR * torch.sign(grad) * sum(1 / k ** 0.5 for k in range(1, 5))
    torch.testing.assert_close(tables["w"], expected, rtol=1e-9, atol=1e-9)


def test_first_step_formula():
    W = torch.zeros(3, 2, dtype=torch.float64)
    opt = RowSparseAdagrad({"w": W}, lr=0.5, eps=0.25)
    opt.step("w", torch.tensor([2]), torch.tensor([[2.0, -4.0]], dtype=torch.float64))
    # S = g^2; W -= lr * g / (sqrt(S) + eps) = 0.5 * g / (|g| + 0.25)
    torch.testing.assert_close(W[2], torch.tensor([-0.5 * 2 / 2.25, 0.5 * 4 / 4.25], dtype=torch.float64))
    torch.testing.assert_close(opt.state["w"][2], torch.tensor([4.0, 16.0], dtype=torch.float64))


def test_step_changes_only_the_touched_rows():
    tables = make_tables()
    before = {k: v.clone() for k, v in tables.items()}
    opt = RowSparseAdagrad(tables, lr=LR)
    idx = torch.tensor([8, 2, 5])
    grad = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    opt.step("entity", idx, grad)
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(tables["entity"][untouched], before["entity"][untouched])
    assert torch.equal(opt.state["entity"][untouched], torch.zeros(int(untouched.sum()), 4, dtype=torch.float64))
    assert (tables["entity"][idx] != before["entity"][idx]).all()
    torch.testing.assert_close(opt.state["entity"][idx], grad * grad)
    # the other table and its state are untouched
    assert torch.equal(tables["relation"], before["relation"])
    assert torch.count_nonzero(opt.state["relation"]) == 0
    # updates are in place: the caller's tensors are the optimizer's tables
    assert opt.tables["entity"] is tables["entity"]


def test_zero_and_empty_steps_are_no_ops():
    tables = make_tables()
    before = {k: v.clone() for k, v in tables.items()}
    opt = RowSparseAdagrad(tables, lr=LR)
    opt.step("entity", torch.tensor([1, 4]), torch.zeros(2, 4, dtype=torch.float64))
    opt.step("entity", torch.empty(0, dtype=torch.int64), torch.empty(0, 4, dtype=torch.float64))
    for k in tables:
        assert torch.equal(tables[k], before[k])
        assert torch.count_nonzero(opt.state[k]) == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_gradient_raises_and_changes_nothing(bad):
    tables = make_tables()
    opt = RowSparseAdagrad(tables, lr=LR)
    opt.step("entity", torch.tensor([0, 1]), torch.ones(2, 4, dtype=torch.float64))
    before = {k: v.clone() for k, v in tables.items()}
    state_before = {k: v.clone() for k, v in opt.state.items()}
    grad = torch.ones(2, 4, dtype=torch.float64)
    grad[1, 2] = bad
    with pytest.raises(FloatingPointError, match="entity"):
        opt.step("entity", torch.tensor([1, 3]), grad)
    for k in tables:
        assert torch.equal(tables[k], before[k])
        assert torch.equal(opt.state[k], state_before[k])


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_bad_lr_raises(lr):
    with pytest.raises(ValueError, match="lr"):
        RowSparseAdagrad(make_tables(), lr=lr)


def test_state_dict_round_trip():
    g = torch.Generator().manual_seed(4)
    steps = [(name, random_rows(n, 3, g), torch.randn(3, d, generator=g, dtype=torch.float64))
             for name, n, d in [("entity", 10, 4), ("relation", 5, 3), ("entity", 10, 4), ("entity", 10, 4)]]
    tables_a = make_tables()
    a = RowSparseAdagrad(tables_a, lr=LR, eps=1e-6)
    for s in steps[:2]:
        a.step(*s)
    sd = a.state_dict()
    assert sd["lr"] == LR and sd["eps"] == 1e-6
    saved = copy.deepcopy(sd)

    # a fresh optimizer (other lr/eps) on a copy of the tables, restored from the state dict
    tables_b = {k: v.clone() for k, v in tables_a.items()}
    b = RowSparseAdagrad(tables_b, lr=1.0)
    b.load_state_dict(sd)
    assert b.lr == LR and b.eps == 1e-6
    for k in a.state:
        assert torch.equal(b.state[k], a.state[k])
        assert b.state[k] is not sd["state"][k]  # copied in, not aliased
    for s in steps[2:]:
        a.step(*s)
        b.step(*s)
    for k in tables_a:
        assert torch.equal(tables_a[k], tables_b[k])
        assert torch.equal(a.state[k], b.state[k])
    # the state dict was a snapshot: later steps did not change it
    for k in saved["state"]:
        assert torch.equal(sd["state"][k], saved["state"][k])
    assert not torch.equal(sd["state"]["entity"], a.state["entity"])


def test_state_dict_survives_torch_save(tmp_path):
    tables = make_tables()
    a = RowSparseAdagrad(tables, lr=LR)
    a.step("relation", torch.tensor([1, 2]), torch.ones(2, 3, dtype=torch.float64))
    torch.save(a.state_dict(), tmp_path / "opt.pt")
    b = RowSparseAdagrad({k: v.clone() for k, v in tables.items()}, lr=LR)
    b.load_state_dict(torch.load(tmp_path / "opt.pt"))
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k])


# ---- row-wise state (PyTorch-BigGraph's / DGL-KE's) -------------------------------------------
def rowwise_reference(tables, steps, lr=LR, eps=1e-10):
    """A plain loop over rows: one accumulator per row, += mean(g^2), W -= lr * g / (sqrt(S) + eps)."""
    W = {k: v.clone() for k, v in tables.items()}
    S = {k: torch.zeros(v.shape[0], dtype=v.dtype) for k, v in tables.items()}
    for name, idx, grad in steps:
        for row, g in zip(idx.tolist(), grad):
            S[name][row] += float((g * g).mean())
            W[name][row] -= lr * g / (S[name][row].sqrt() + eps)
    return W, S


def test_rowwise_state_matches_a_reference_loop():
    tables = make_tables()
    g = torch.Generator().manual_seed(2)
    steps = []
    for step in range(20):
        name = "entity" if step % 3 else "relation"
        n = tables[name].shape[0]
        idx = random_rows(n, int(torch.randint(1, n + 1, (1,), generator=g)), g)
        steps.append((name, idx, torch.randn(len(idx), tables[name].shape[1], generator=g, dtype=torch.float64)))
    W, S = rowwise_reference(tables, steps)
    opt = RowSparseAdagrad({k: v.clone() for k, v in tables.items()}, lr=LR, state_mode="row")
    assert opt.state["entity"].shape == (10, 1)
    for name, idx, grad in steps:
        opt.step(name, idx, grad)
    for k in tables:
        torch.testing.assert_close(opt.tables[k], W[k], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(opt.state[k][:, 0], S[k], rtol=1e-12, atol=1e-12)


def test_rowwise_state_round_trips_and_refuses_the_other_mode():
    opt = RowSparseAdagrad(make_tables(), lr=LR, state_mode="row")
    opt.step("entity", torch.tensor([1, 2]), torch.ones(2, 4, dtype=torch.float64))
    sd = opt.state_dict()
    again = RowSparseAdagrad(make_tables(), lr=LR, state_mode="row")
    again.load_state_dict(sd)
    assert torch.equal(again.state["entity"], opt.state["entity"])
    with pytest.raises(ValueError, match="row-wise"):
        RowSparseAdagrad(make_tables(), lr=LR).load_state_dict(sd)
    with pytest.raises(ValueError, match="state_mode"):
        RowSparseAdagrad(make_tables(), lr=LR, state_mode="column")
