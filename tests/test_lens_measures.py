"""SemanticLens measures: batched clarity / polysemanticity / similarity / redundancy against direct computations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unitlens.lens.unit_measures import (
    clarity,
    init_centers,
    measures_table,
    polysemanticity,
    redundancy,
    similarity,
    theta_from_examples,
    two_means,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_clarity(X: np.ndarray) -> float:
    """Eq. (6) literally: mean cosine over ordered pairs i != j."""
    n = len(X)
    cos = [X[i] @ X[j] / np.linalg.norm(X[i]) / np.linalg.norm(X[j])
           for i, j in itertools.product(range(n), repeat=2) if i != j]
    return float(np.mean(cos))


def _structured(n_one: int, n_two: int, m: int = 30, dim: int = 64, noise: float = 0.5, seed: int = 0):
    """Units with examples from one concept, then units with examples from two unrelated concepts."""
    g = torch.Generator().manual_seed(seed)
    concepts = F.normalize(torch.randn(2 * (n_one + n_two), dim, generator=g, dtype=torch.float64), dim=-1)
    units = []
    for u in range(n_one + n_two):
        a, b = concepts[2 * u], concepts[2 * u + 1]
        n_b = 0 if u < n_one else 8 + (u % 3) * 3  # 8, 11 or 14 of the m examples from the second concept
        centre = torch.cat([a.expand(m - n_b, dim), b.expand(n_b, dim)])
        units.append(centre + noise * torch.randn(m, dim, generator=g, dtype=torch.float64) / dim ** 0.5)
    return F.normalize(torch.stack(units), dim=-1), concepts


def test_clarity_matches_brute_force_mean_pairwise_cosine():
    E = _rand(6, 11, 16)  # not normalised: clarity normalises each example first, as eq. (6) does
    got = clarity(E).numpy()
    want = np.array([_brute_clarity(e) for e in E.numpy()])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_clarity_with_mask_uses_only_valid_examples():
    E = _rand(4, 9, 8, seed=1)
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[1, 5:] = False  # 5 examples
    mask[2, [0, 3, 7]] = False  # 6 examples, holes anywhere
    mask[3, 1:] = False  # a single example: undefined
    E_pad = E.clone()
    E_pad[~mask] = 1e3  # whatever sits in masked slots must not matter
    got = clarity(E_pad, mask).numpy()
    for u in range(3):
        assert got[u] == pytest.approx(_brute_clarity(E[u][mask[u]].numpy()), abs=1e-12)
    assert np.isnan(got[3])


def test_similarity_and_redundancy_match_direct_computation():
    a, b = _rand(13, 10, seed=2), _rand(5, 10, seed=3)
    an, bn = a.numpy(), b.numpy()
    want = (an @ bn.T) / np.linalg.norm(an, axis=1)[:, None] / np.linalg.norm(bn, axis=1)[None]
    np.testing.assert_allclose(similarity(a, b).numpy(), want, atol=1e-12)

    S = (an @ an.T) / np.outer(np.linalg.norm(an, axis=1), np.linalg.norm(an, axis=1))
    np.fill_diagonal(S, -np.inf)
    for block in (4096, 3):  # one block, and several row blocks
        red = redundancy(a, block=block)
        np.testing.assert_allclose(red.max_similarity.numpy(), S.max(1), atol=1e-12)
        np.testing.assert_array_equal(red.partner.numpy(), S.argmax(1))
        assert float(red.redundancy) == pytest.approx(S.max(1).mean(), abs=1e-12)
    assert (red.partner.numpy() != np.arange(13)).all()


def test_polysemanticity_high_for_two_groups_low_for_one():
    E, concepts = _structured(n_one=6, n_two=6)
    poly = polysemanticity(E).numpy()
    one, two = poly[:6], poly[6:]
    assert one.max() < 0.3 and two.min() > 0.7
    assert two.min() - one.max() > 0.5
    # two groups recovered: 1 - cos of the cluster means ~ 1 - cos of the two concept directions
    expected = 1 - (concepts[12::2] * concepts[13::2]).sum(-1).numpy()  # units 6..11: concepts 2u, 2u + 1
    np.testing.assert_allclose(two, expected, atol=0.1)
    # and clarity orders the other way
    c = clarity(E).numpy()
    assert c[:6].min() > c[6:].max()


def test_two_means_equals_sklearn_lloyd_from_the_same_init():
    KMeans = pytest.importorskip("sklearn.cluster").KMeans
    E = F.normalize(_rand(5, 20, 12, seed=4), dim=-1)
    E[:2, :8] += 0.8 * F.normalize(_rand(2, 1, 12, seed=5), dim=-1)  # some structure in two units
    mask = torch.ones(5, 20, dtype=torch.bool)
    mask[4, 13:] = False
    for n_init in (1, 5):
        km = two_means(E, mask, n_init=n_init, seed=3)
        for u in range(5):
            valid = mask[u].numpy()
            X = E[u].numpy()
            ref = KMeans(n_clusters=2, init=X[km.init[u].numpy()], n_init=1, algorithm="lloyd", tol=0,
                         max_iter=300).fit(X[valid])
            np.testing.assert_array_equal(km.labels[u].numpy()[valid], ref.labels_)
            assert (km.labels[u].numpy()[~valid] == -1).all()
            np.testing.assert_allclose(km.centers[u].numpy(), ref.cluster_centers_, atol=1e-10)
            assert float(km.inertia[u]) == pytest.approx(ref.inertia_, abs=1e-10)
            c0, c1 = ref.cluster_centers_
            assert float(km.cosine[u]) == pytest.approx(c0 @ c1 / np.linalg.norm(c0) / np.linalg.norm(c1), abs=1e-10)
    # more restarts never end at a worse partition (restart 0 is the same farthest-point init)
    assert (two_means(E, mask, n_init=8).inertia <= two_means(E, mask, n_init=1).inertia + 1e-12).all()


def test_init_farthest_point_and_seeded_kmeanspp():
    E = F.normalize(_rand(3, 15, 6, seed=6), dim=-1)
    idx = init_centers(E, n_init=4, seed=0)
    assert idx.shape == (3, 4, 2)
    X = E.numpy()
    for u in range(3):
        d_mean = ((X[u] - X[u].mean(0)) ** 2).sum(1)
        first = d_mean.argmax()
        second = ((X[u] - X[u][first]) ** 2).sum(1).argmax()
        assert idx[u, 0].tolist() == [first, second]
    assert (idx[..., 0] != idx[..., 1]).all()  # k-means++ never re-picks a point at distance 0


def test_deterministic_for_a_seed():
    E, _ = _structured(n_one=5, n_two=5, noise=2.0, seed=7)  # noisy: local optima, so the init matters
    p0, p0b = polysemanticity(E, seed=0), polysemanticity(E, seed=0)
    assert torch.equal(p0, p0b)
    assert torch.equal(two_means(E, seed=0).labels, two_means(E, seed=0).labels)
    assert not torch.equal(init_centers(E, seed=0), init_centers(E, seed=1))


def test_outlier_cluster_uses_reference_fallback():
    g = torch.Generator().manual_seed(8)
    c = F.normalize(torch.randn(32, generator=g, dtype=torch.float64), dim=0)
    X = c + 0.05 * torch.randn(25, 32, generator=g, dtype=torch.float64)
    X[17] = -3 * c  # one outlier: 2-means isolates it
    X = F.normalize(X, dim=-1)[None]
    assert two_means(X).counts.amin() == 1
    mean = F.normalize(X[0].mean(0), dim=0)
    want = 1 - float((X[0, :10] @ mean).mean())  # 1 - mean cos(mean, v_i) over the first 10 examples
    assert float(polysemanticity(X)[0]) == pytest.approx(want, abs=1e-12)
    rest = F.normalize(X[0][torch.arange(25) != 17].mean(0), dim=0)
    raw = 1 - float(rest @ X[0, 17])  # without the fallback: 1 - cos(outlier, mean of the rest), ~2
    assert float(polysemanticity(X, min_cluster=0)[0]) == pytest.approx(raw, abs=1e-12)


def test_masked_units_polysemanticity():
    E, _ = _structured(n_one=2, n_two=2)
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[2, 20:] = False  # the two-concept unit keeps examples of both concepts in its first 20
    mask[3, 1:] = False
    E_pad = E.clone()
    E_pad[~mask] = 0.0
    got = polysemanticity(E_pad, mask)
    assert float(got[2]) == pytest.approx(float(polysemanticity(E[2:3, :20])[0]), abs=1e-12)
    assert float(got[0]) == pytest.approx(float(polysemanticity(E[:1])[0]), abs=1e-12)
    assert torch.isnan(got[3])


def test_agrees_with_semanticlens_reference():
    scores = pytest.importorskip("semanticlens.scores")
    E, _ = _structured(n_one=4, n_two=4, noise=0.3, seed=9)
    theta = theta_from_examples(E)
    assert torch.allclose(clarity(E), scores.clarity_score(E), atol=1e-12)
    assert float(redundancy(theta).redundancy) == pytest.approx(float(scores.redundancy_score(theta)), abs=1e-12)
    ours, ref = polysemanticity(E), scores.polysemanticity_score(E).double()
    # two clear clusters: both k-means reach the same partition, so the scores coincide; one noisy cluster has
    # many near-equal 2-means optima (the inits differ), but both scores are low
    assert torch.allclose(ours[4:], ref[4:], atol=1e-8)
    assert (ours[:4] < 0.05).all() and (ref[:4] < 0.05).all() and (ours[4:] > 0.7).all()


def test_measures_table():
    E, _ = _structured(n_one=3, n_two=3)
    mask = torch.ones(6, 30, dtype=torch.bool)
    mask[1, 25:] = False
    names = [f"u{i}" for i in range(6)]
    df = measures_table(E, mask=mask, units=names)
    assert list(df.columns) == ["unit", "n_examples", "clarity", "polysemanticity", "max_similarity", "partner"]
    assert df["n_examples"].tolist() == [30, 25, 30, 30, 30, 30]
    np.testing.assert_allclose(df["clarity"], clarity(E, mask).numpy())
    np.testing.assert_allclose(df["polysemanticity"], polysemanticity(E, mask).numpy())
    red = redundancy(theta_from_examples(E, mask))
    assert df.attrs["redundancy"] == pytest.approx(df["max_similarity"].mean())
    assert df["partner"].tolist() == [names[i] for i in red.partner.tolist()]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    E, _ = _structured(n_one=4, n_two=4)
    E = E.float()
    for fn in (clarity, polysemanticity):
        got = fn(E.cuda())
        assert got.is_cuda
        assert torch.allclose(got.cpu(), fn(E), atol=1e-4)
    red = redundancy(theta_from_examples(E).cuda())
    assert torch.equal(red.partner.cpu(), redundancy(theta_from_examples(E)).partner)
