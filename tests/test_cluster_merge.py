"""Merge combinations on small random tensors, merge weights, and profile clustering."""
import numpy as np
import pytest
import torch

from engine.training import merge as M
from engine.methods.cluster import cluster_personas, map_2d
from engine.methods.merging import merge_weights

D_OUT, D_IN, R, K = 12, 10, 3, 3
W = [0.5, 0.3, 0.2]


@pytest.fixture
def adapters():
    g = torch.Generator().manual_seed(0)
    As = [torch.randn(R, D_IN, generator=g, dtype=torch.float64) for _ in range(K)]
    Bs = [torch.randn(D_OUT, R, generator=g, dtype=torch.float64) for _ in range(K)]
    return As, Bs


def _sum(As, Bs):
    return sum(w * B @ A for w, A, B in zip(W, As, Bs))


def test_ab_mean_averages_factors_not_updates(adapters):
    As, Bs = adapters
    A, B = M.ab_mean(As, Bs, W)
    assert torch.allclose(A, sum(w * a for w, a in zip(W, As))) and torch.allclose(B, sum(w * b for w, b in zip(W, Bs)))
    assert not torch.allclose(B @ A, _sum(As, Bs))  # the study's merge is not the mean of the updates


def test_exact_is_the_weighted_sum_of_updates(adapters):
    As, Bs = adapters
    A, B = M.exact(As, Bs, W)
    assert A.shape == (K * R, D_IN) and B.shape == (D_OUT, K * R)
    assert torch.allclose(B @ A, _sum(As, Bs), atol=1e-12)


def test_svd_is_the_best_rank_r_approximation(adapters):
    As, Bs = adapters
    A, B, kept = M.svd(As, Bs, W, R)
    assert A.shape == (R, D_IN) and B.shape == (D_OUT, R)
    U, S, Vh = torch.linalg.svd(_sum(As, Bs))
    best = U[:, :R] @ torch.diag(S[:R]) @ Vh[:R]
    assert torch.allclose(B @ A, best, atol=1e-10)
    assert kept == pytest.approx(float((S[:R] ** 2).sum() / (S ** 2).sum()))
    A1, B1, kept1 = M.svd(As[:1], Bs[:1], [1.0], R)  # one rank-r adapter: nothing lost
    assert torch.allclose(B1 @ A1, Bs[0] @ As[0], atol=1e-10) and kept1 == pytest.approx(1.0)


def test_ties_by_hand():
    """Trim to top half by magnitude, elect the sign of Σ w·kept, weighted mean of the agreeing kept entries;
    an entry no adapter kept takes the same over the untrimmed values."""
    t1 = torch.tensor([[4.0, -1.0], [2.0, 0.5]])
    t2 = torch.tensor([[-3.0, -4.0], [1.0, 2.0]])
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    tasks = torch.stack([t1, t2]).double()
    kept = torch.stack([M.top_keep(t1, 0.5), M.top_keep(t2, 0.5)])
    assert kept.tolist() == [[[True, False], [True, False]], [[True, True], [False, False]]]
    # (0,0): kept 4 and -3, sign of 2 - 1.5 > 0 -> 4; (0,1): only -4; (1,0): only 2;
    # (1,1): kept by neither -> over all: 0.5 and 2 agree on + -> their mean 1.25
    assert M.sign_elect_mean(tasks, w, kept).tolist() == [[4, -4], [2, 1.25]]
    # as LoRA factors (rank 2 = full rank here, so the SVD step is exact)
    A, B, kept_energy = M.ties([torch.eye(2), torch.eye(2)], [t1, t2], [0.5, 0.5], rank=2, density=0.5)
    assert torch.allclose(B @ A, torch.tensor([[4.0, -4.0], [2.0, 1.25]]), atol=1e-5)
    assert kept_energy == pytest.approx(1.0)


def test_ties_with_full_density_and_agreeing_signs_is_the_weighted_mean(adapters):
    As, Bs = adapters
    As = [A.abs() for A in As]
    Bs = [B.abs() for B in Bs]  # all updates positive: every entry agrees
    A, B, _ = M.ties(As, Bs, W, rank=min(D_OUT, D_IN), density=1.0)
    assert torch.allclose(B @ A, _sum(As, Bs), atol=1e-10)


def test_dare_ties_is_seeded(adapters):
    As, Bs = adapters
    run = lambda seed: M.merge_layer(As, Bs, W, "dare_ties", R, 0.5, torch.Generator().manual_seed(seed))
    a1, b1, _ = run(1)
    a2, b2, _ = run(1)
    a3, b3, _ = run(2)
    assert torch.equal(b1 @ a1, b2 @ a2) and not torch.allclose(b1 @ a1, b3 @ a3)
    assert a1.shape[0] == K * R  # ties variants keep the rank budget of `exact`
    keep = M.dare_keep(torch.ones(10_000), 0.3, torch.Generator().manual_seed(0))
    assert abs(float(keep.float().mean()) - 0.3) < 0.02


@pytest.mark.parametrize("combination, density", [(c, 0.5) for c in M.COMBINATIONS] +
                         [("ties", 0.2), ("dare_ties", 0.2), ("ties", 1.0), ("dare_ties", 1.0)])
@pytest.mark.parametrize("weights", [[0.2] * 5, [0.4, 0.3, 0.15, 0.1, 0.05]])
def test_five_identical_adapters_merge_to_the_same_update(combination, density, weights):
    """Merging copies of one adapter must return it, whatever the combination: DARE's 1/density rescale
    inside the disjoint mean returned 1.96x the update, TIES' trim 0.94x."""
    g = torch.Generator().manual_seed(5)
    A, B = torch.randn(4, 24, generator=g, dtype=torch.float64), torch.randn(20, 4, generator=g, dtype=torch.float64)
    state = {"layer": (A, B)}
    merged, kept = M.merge_adapters([state] * 5, weights, combination, r=4, density=density, seed=11)
    A2, B2 = merged["layer"]
    assert torch.allclose(B2 @ A2, B @ A, rtol=1e-6, atol=1e-8), float((B2 @ A2).norm() / (B @ A).norm())
    assert kept == pytest.approx(1.0)


def test_merge_adapters_and_zero_padding_are_exact(adapters):
    As, Bs = adapters
    states = [{"l": (A.float(), B.float())} for A, B in zip(As, Bs)]
    for comb in M.COMBINATIONS:
        merged, kept = M.merge_adapters(states, W, comb, R, seed=3)
        A, B = merged["l"]
        padded = M.pad_rank(merged, 40)["l"]
        assert padded[0].shape == (40, D_IN) and torch.allclose(padded[1] @ padded[0], B @ A)
        assert 0 < kept <= 1 + 1e-6
    with pytest.raises(ValueError, match="sum"):
        M.merge_adapters(states, [0.5, 0.5, 0.5], "exact", R)
    with pytest.raises(ValueError, match="unknown merge"):
        M.merge_adapters(states, W, "nope", R)


def test_merge_weights():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    val = np.array([0.9, 0.5, 0.7, 0.0, 0.3, 0.6])
    for p, (nb, w, cent, sim) in enumerate(merge_weights(emb, val, 4)):
        assert nb[0] == p and len(nb) == 4 and len(set(nb)) == 4
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        S = emb @ emb.T
        others = sorted((q for q in range(6) if q != p), key=lambda q: -S[p, q])
        assert set(nb[1:]) == set(others[:3])
        q = nb[1]
        expect = np.mean([S[q, j] for j in nb if j != q])
        assert cent[1] == pytest.approx(max(expect, 0.0)) and sim[1] == pytest.approx(S[p, q])
        raw = np.clip(val[nb], 0, None) * cent
        if raw.sum() > 0:
            assert np.allclose(w, raw / raw.sum())
    (nb, w, cent, _), = merge_weights(emb[:1], val[:1], 5)  # K capped at the number of personas
    assert nb == [0] and w.tolist() == [1.0] and cent.tolist() == [1.0]


def _blobs(per=4, k=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[:k] * 5
    X = np.concatenate([c + rng.normal(scale=0.3, size=(per, dim)) for c in centers])
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.slow
def test_cluster_auto_finds_the_blobs():
    X = _blobs()
    info = cluster_personas(X, [f"p{i}" for i in range(len(X))], "auto", seed=0)
    assert info["k"] == 3 and info["silhouette"] > 0.5
    assert list(info["k_scores"].k) == list(range(2, 11)) and info["k_scores"].chosen.sum() == 1
    df = info["personas"]
    assert list(df.columns) == ["persona_id", "cluster", "silhouette", "umap_x", "umap_y"]
    assert df.cluster.nunique() == 3 and df.silhouette.notna().all() and np.isfinite(df[["umap_x", "umap_y"]]).all().all()
    fixed = cluster_personas(X, list(df.persona_id), 20, seed=0, with_map=False)  # K capped at P
    assert fixed["k"] == len(X) and fixed["personas"].cluster.nunique() == len(X)
    ks = fixed["k_scores"]  # the sweep is kept beside the fixed K, which is the one marked chosen
    assert list(ks.k) == list(range(2, 11)) + [len(X)] and ks[ks.chosen].k.tolist() == [len(X)]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_few_personas_never_crash(n):
    X = _blobs(per=1, k=3)[:n]
    info = cluster_personas(X, [f"p{i}" for i in range(n)], "auto", seed=0)
    assert len(info["personas"]) == n and info["k"] >= 1
    assert map_2d(X, 0).shape == (n, 2)
