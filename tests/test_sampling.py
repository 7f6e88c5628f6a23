"""kgengine.sampling: positive edge batches and chunked negative sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kgengine.sampling import ChunkNegativeSampler, EdgeBatcher


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- EdgeBatcher

@pytest.mark.parametrize("num_edges,batch_size", [(100, 10), (97, 10), (5, 7), (1, 1), (12, 12)])
def test_batches_have_exact_size(num_edges, batch_size):
    b = EdgeBatcher(num_edges, batch_size, _gen())
    for _ in range(3 * num_edges // batch_size + 3):
        x = b.next()
        assert x.shape == (batch_size,)
        assert x.dtype == torch.int64
        assert 0 <= int(x.min()) and int(x.max()) < num_edges


def test_one_epoch_covers_every_edge_once_when_divisible():
    num_edges, bs = 120, 8
    b = EdgeBatcher(num_edges, bs, _gen(3))
    for epoch in range(3):
        seen = torch.cat([b.next() for _ in range(num_edges // bs)])
        assert torch.equal(torch.sort(seen).values, torch.arange(num_edges)), epoch
        assert b.epoch == epoch  # the reshuffle happens lazily at the next draw
        assert b.pos == num_edges


def test_epochs_are_reshuffled():
    num_edges, bs = 64, 16
    b = EdgeBatcher(num_edges, bs, _gen(1))
    e0 = torch.cat([b.next() for _ in range(4)])
    e1 = torch.cat([b.next() for _ in range(4)])
    assert b.epoch == 1
    assert not torch.equal(e0, e1)
    assert not torch.equal(e0, torch.arange(num_edges))


@pytest.mark.parametrize("num_edges,batch_size", [(97, 10), (10, 3), (5, 7)])
def test_stream_is_a_concatenation_of_permutations(num_edges, batch_size):
    """Batches that run past an epoch continue into the next permutation: nothing is skipped or repeated."""
    b = EdgeBatcher(num_edges, batch_size, _gen(2))
    epochs = 4
    n_batches = -(-epochs * num_edges // batch_size)
    stream = torch.cat([b.next() for _ in range(n_batches)])
    for e in range(epochs):
        seg = stream[e * num_edges:(e + 1) * num_edges]
        assert torch.equal(torch.sort(seg).values, torch.arange(num_edges)), e


def test_same_seed_same_batches_different_seed_different():
    a, b, c = (EdgeBatcher(50, 7, _gen(s)) for s in (5, 5, 6))
    xa = [a.next() for _ in range(20)]
    xb = [b.next() for _ in range(20)]
    xc = [c.next() for _ in range(20)]
    assert all(torch.equal(p, q) for p, q in zip(xa, xb))
    assert not all(torch.equal(p, q) for p, q in zip(xa, xc))


@pytest.mark.parametrize("warmup", [0, 3, 10, 13])  # 10: saved exactly at the end of an epoch
def test_state_dict_resumes_the_same_future_batches(warmup):
    num_edges, bs = 40, 4
    g = _gen(11)
    b = EdgeBatcher(num_edges, bs, g)
    for _ in range(warmup):
        b.next()
    state, gstate = b.state_dict(), g.get_state()
    expected = [b.next() for _ in range(25)]  # crosses several epoch boundaries
    expected_epoch = b.epoch

    g2 = _gen(999)  # a different stream, fixed below the way the trainer does
    b2 = EdgeBatcher(num_edges, bs, g2)
    b2.load_state_dict(state)
    g2.set_state(gstate)
    got = [b2.next() for _ in range(25)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))
    assert b2.epoch == expected_epoch


def test_state_dict_is_a_snapshot():
    b = EdgeBatcher(20, 3, _gen())
    state = b.state_dict()
    perm, pos, epoch = state["perm"].clone(), state["pos"], state["epoch"]
    for _ in range(15):
        b.next()
    assert torch.equal(state["perm"], perm) and state["pos"] == pos and state["epoch"] == epoch
    assert set(state) >= {"perm", "pos", "epoch"}


def test_load_state_dict_does_not_alias():
    b = EdgeBatcher(20, 3, _gen())
    state = b.state_dict()
    b2 = EdgeBatcher(20, 3, _gen(1))
    b2.load_state_dict(state)
    state["perm"][:] = 0
    assert torch.equal(torch.sort(b2.perm).values, torch.arange(20))


@pytest.mark.parametrize("num_edges,batch_size", [(0, 1), (-3, 1), (10, 0), (10, -1)])
def test_edge_batcher_bad_args(num_edges, batch_size):
    with pytest.raises(ValueError):
        EdgeBatcher(num_edges, batch_size, _gen())


# ---------------------------------------------------------------- ChunkNegativeSampler: uniform

@pytest.mark.parametrize("num_chunks,k", [(1, 1), (4, 16), (7, 3), (0, 5)])
def test_uniform_shapes_and_range(num_chunks, k):
    s = ChunkNegativeSampler(13, k, _gen())
    x = s.sample(num_chunks)
    assert x.shape == (num_chunks, k)
    assert x.dtype == torch.int64
    if x.numel():
        assert 0 <= int(x.min()) and int(x.max()) < 13


def test_uniform_covers_all_entities_roughly_evenly():
    n = 20
    x = ChunkNegativeSampler(n, 1000, _gen(4)).sample(40)  # 40 000 draws, 2000 expected each
    counts = torch.bincount(x.flatten(), minlength=n).double()
    assert counts.shape == (n,)
    assert (counts > 0).all()
    chi2 = float(((counts - 2000) ** 2 / 2000).sum())
    assert chi2 < 60, chi2  # df = 19: the 99.99th percentile is about 50


def test_uniform_same_seed_same_samples():
    a = ChunkNegativeSampler(100, 32, _gen(7))
    b = ChunkNegativeSampler(100, 32, _gen(7))
    c = ChunkNegativeSampler(100, 32, _gen(8))
    xa, xb, xc = a.sample(5), b.sample(5), c.sample(5)
    assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    assert not torch.equal(a.sample(5), xa)  # the stream advances


# ---------------------------------------------------------------- ChunkNegativeSampler: degree-proportional

def _degree_weights():
    # zeros at the first, a middle and the last positions; very uneven positive weights
    return torch.tensor([0, 5, 1, 0, 40, 2, 0, 100, 9, 3, 0, 20, 1, 0], dtype=torch.int64)


def test_degree_shapes_range_and_dtype():
    deg = _degree_weights()
    s = ChunkNegativeSampler(len(deg), 8, _gen(), degrees=deg)
    x = s.sample(6)
    assert x.shape == (6, 8) and x.dtype == torch.int64
    assert 0 <= int(x.min()) and int(x.max()) < len(deg)
    assert s.sample(0).shape == (0, 8)


def test_degree_zero_never_drawn_and_frequencies_follow_degrees():
    deg = _degree_weights()
    n_draws = 400_000
    s = ChunkNegativeSampler(len(deg), 1000, _gen(12), degrees=deg)
    counts = torch.bincount(s.sample(n_draws // 1000).flatten(), minlength=len(deg)).double()
    assert int(counts.sum()) == n_draws
    zero = deg == 0
    assert counts[zero].sum() == 0, counts
    assert (counts[~zero] > 0).all(), counts
    expected = deg[~zero].double() / deg.sum() * n_draws
    chi2 = float(((counts[~zero] - expected) ** 2 / expected).sum())
    assert chi2 < 40, chi2  # df = 8: the 99.99th percentile is about 31
    r = np.corrcoef(counts.numpy(), deg.double().numpy())[0, 1]
    assert r > 0.999, r


def test_degree_sampling_with_real_degrees():
    """Kinships degrees plus two isolated entities (one first, one last)."""
    from kgengine.data import load_dataset
    from kgengine.sampling import triple_degrees

    kg = load_dataset("kinships")
    deg = triple_degrees(kg.train, kg.num_entities)
    deg = torch.cat([torch.zeros(1, dtype=deg.dtype), deg, torch.zeros(1, dtype=deg.dtype)])
    n = len(deg)
    n_draws = 300_000
    s = ChunkNegativeSampler(n, 500, _gen(21), degrees=deg)
    counts = torch.bincount(s.sample(n_draws // 500).flatten(), minlength=n).double()
    assert counts[0] == 0 and counts[-1] == 0
    expected = deg.double() / deg.sum() * n_draws
    nz = deg > 0
    chi2 = float(((counts[nz] - expected[nz]) ** 2 / expected[nz]).sum())
    df = int(nz.sum()) - 1
    assert chi2 < df + 6 * (2 * df) ** 0.5, (chi2, df)
    assert np.corrcoef(counts.numpy(), expected.numpy())[0, 1] > 0.98


def test_degree_single_positive_entity():
    deg = torch.tensor([0, 0, 3, 0])
    x = ChunkNegativeSampler(4, 50, _gen(), degrees=deg).sample(10)
    assert (x == 2).all()


def test_degree_float_weights_accepted():
    deg = torch.tensor([0.5, 0.0, 1.5])
    x = ChunkNegativeSampler(3, 2000, _gen(3), degrees=deg).sample(10).flatten()
    counts = torch.bincount(x, minlength=3)
    assert counts[1] == 0
    assert 0.70 < counts[2].item() / len(x) < 0.80


def test_degree_same_seed_same_samples():
    deg = _degree_weights()
    a = ChunkNegativeSampler(len(deg), 64, _gen(9), degrees=deg).sample(7)
    b = ChunkNegativeSampler(len(deg), 64, _gen(9), degrees=deg).sample(7)
    c = ChunkNegativeSampler(len(deg), 64, _gen(10), degrees=deg).sample(7)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_state_resumes_negative_stream():
    deg = _degree_weights()
    g = _gen(4)
    s = ChunkNegativeSampler(len(deg), 16, g, degrees=deg)
    s.sample(3)
    state = g.get_state()
    expected = [s.sample(2) for _ in range(5)]
    g.set_state(state)
    assert all(torch.equal(x, s.sample(2)) for x in expected)


# ---------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("k", [0, -2])
def test_bad_neg_sample_size(k):
    with pytest.raises(ValueError, match="neg_sample_size must be >= 1"):
        ChunkNegativeSampler(10, k, _gen())


@pytest.mark.parametrize(
    "degrees",
    [
        torch.ones(9),                      # wrong length
        torch.ones(10, 1),                  # wrong shape
        torch.tensor([1, 2, -1, 0, 0, 0, 0, 0, 0, 0]),  # negative weight
        torch.zeros(10),                    # zero sum
    ],
    ids=["short", "2d", "negative", "all-zero"],
)
def test_bad_degrees(degrees):
    with pytest.raises(ValueError, match="degrees must be"):
        ChunkNegativeSampler(10, 4, _gen(), degrees=degrees)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_degrees_rejected(bad):
    degrees = torch.tensor([1.0, bad, 1.0, 1.0])
    with pytest.raises(ValueError, match="degrees must be"):
        ChunkNegativeSampler(4, 4, _gen(), degrees=degrees)
