"""Tests for noisylabels.noise: transition matrices, sampling, instance and open-set noise, io."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisylabels.errors import UserError
from noisylabels.noise import (
    CIFAR100_COARSE,
    NOISE,
    NoiseResult,
    apply_noise,
    cifar100_superclass_groups,
    flip_targets,
    format_matrix,
    instance_flip_probabilities,
    list_noise_types,
    noise_kind,
    open_set,
    read_noisy_labels_csv,
    sample_from_transition,
    transition_matrix,
    write_noisy_labels_csv,
)

ALL_TYPES = {
    "none", "symmetric", "uniform", "pair", "flip", "flip2", "cifar10-asym", "cifar100-next",
    "cifar100-superclass", "fashion-asym", "mnist-asym", "custom", "instance", "open-set",
}


def _balanced(n: int, k: int, seed: int = 0) -> np.ndarray:
    y = np.tile(np.arange(k), n // k)
    return np.random.default_rng(seed).permutation(y).astype(np.int64)


def _random_stochastic(k: int, seed: int, diag: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    off = rng.random((k, k))
    np.fill_diagonal(off, 0.0)
    off = off / off.sum(axis=1, keepdims=True) * (1 - diag)
    return off + diag * np.eye(k)


# (name, num_classes, rate, options)
CASES = [
    ("none", 10, 0.0, {}),
    ("symmetric", 10, 0.4, {}),
    ("symmetric", 10, 0.8, {}),
    ("symmetric", 10, 0.4, {"include_true_class": True}),
    ("uniform", 10, 0.6, {}),
    ("pair", 10, 0.45, {}),
    ("flip", 10, 0.4, {}),
    ("flip2", 10, 0.6, {}),
    ("cifar10-asym", 10, 0.4, {}),
    ("fashion-asym", 10, 0.3, {}),
    ("mnist-asym", 10, 0.4, {}),
    ("cifar100-next", 100, 0.4, {}),
    ("cifar100-superclass", 100, 0.4, {}),
    ("cifar100-superclass", 100, 0.6, {"mode": "uniform"}),
    ("cifar100-superclass", 100, 0.4, {"grouping": "consecutive"}),
    ("custom", 10, 0.0, {"matrix": _random_stochastic(10, 3)}),
]


def test_registry_lists_every_type() -> None:
    assert set(list_noise_types()) == ALL_TYPES
    assert noise_kind("instance") == "instance"
    assert noise_kind("open-set") == "open-set"
    assert noise_kind("pair") == "class-conditional"
    for name in ALL_TYPES:
        assert NOISE.describe(name)


@pytest.mark.parametrize("name,k,rate,opts", CASES, ids=[f"{c[0]}-{c[2]}-{sorted(c[3])}" for c in CASES])
def test_empirical_transition_matches(name: str, k: int, rate: float, opts: dict) -> None:
    n = 50_000
    y = _balanced(n, k)
    res = apply_noise(name, y, num_classes=k, rate=rate, seed=7, **opts)
    T = res.transition
    assert isinstance(res, NoiseResult)
    assert res.noisy_labels.dtype == np.int64 and res.noisy_labels.shape == (n,)
    assert T.dtype == np.float64 and T.shape == (k, k)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    assert T.min() >= 0
    # the clean class is the most likely label of every row
    assert np.all(np.argmax(T, axis=1) == np.arange(k))
    # same matrix as transition_matrix() with the same seed
    np.testing.assert_array_equal(T, transition_matrix(name, num_classes=k, rate=rate, seed=7, **opts))

    emp = res.empirical_transition()
    n_i = np.bincount(y, minlength=k)[:, None]
    tol = 5 * np.sqrt(T * (1 - T) / n_i) + 1e-3
    assert np.all(np.abs(emp - T) <= tol), np.max(np.abs(emp - T) - tol)
    # an impossible transition is never drawn
    assert np.all(emp[T == 0] == 0)

    p_flip = 1 - np.diag(T)[y]
    expected = p_flip.mean()
    assert res.expected_rate() == pytest.approx(expected)
    sd = np.sqrt(np.mean(p_flip * (1 - p_flip)) / n)
    assert abs(res.realized_rate - expected) <= 5 * sd + 1e-3
    assert res.realized_rate == pytest.approx(res.noisy_mask.mean())
    np.testing.assert_array_equal(res.clean_labels, y)


def test_expected_rates_follow_conventions() -> None:
    k, eta = 10, 0.4
    T = transition_matrix("symmetric", num_classes=k, rate=eta)
    np.testing.assert_allclose(T, (1 - eta) * np.eye(k) + eta / (k - 1) * (np.ones((k, k)) - np.eye(k)))
    U = transition_matrix("symmetric", num_classes=k, rate=eta, include_true_class=True)
    np.testing.assert_allclose(U, (1 - eta) * np.eye(k) + eta / k * np.ones((k, k)))
    np.testing.assert_allclose(np.diag(U), 1 - eta + eta / k)
    np.testing.assert_array_equal(U, transition_matrix("uniform", num_classes=k, rate=eta))
    P = transition_matrix("pair", num_classes=k, rate=eta)
    for i in range(k):
        assert P[i, i] == pytest.approx(1 - eta) and P[i, (i + 1) % k] == pytest.approx(eta)
    np.testing.assert_array_equal(
        transition_matrix("cifar100-next", num_classes=100, rate=eta),
        transition_matrix("pair", num_classes=100, rate=eta),
    )
    np.testing.assert_array_equal(transition_matrix("none", num_classes=4, rate=0.3), np.eye(4))


def test_seed_determinism() -> None:
    y = _balanced(5000, 10)
    for name in ("symmetric", "pair", "flip", "flip2", "cifar10-asym"):
        a = apply_noise(name, y, num_classes=10, rate=0.3, seed=1)
        b = apply_noise(name, y, num_classes=10, rate=0.3, seed=1)
        c = apply_noise(name, y, num_classes=10, rate=0.3, seed=2)
        np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)
        np.testing.assert_array_equal(a.transition, b.transition)
        assert not np.array_equal(a.noisy_labels, c.noisy_labels)
    # input not modified
    y0 = y.copy()
    apply_noise("symmetric", y, num_classes=10, rate=0.3, seed=0)
    np.testing.assert_array_equal(y, y0)


@pytest.mark.parametrize("k", [2, 3, 10, 100])
def test_flip_targets_differ_from_class(k: int) -> None:
    for seed in range(5):
        T = transition_matrix("flip", num_classes=k, rate=0.3, seed=seed)
        off = T - np.diag(np.diag(T))
        assert np.all((off > 0).sum(axis=1) == 1)
        t = np.argmax(off, axis=1)
        assert np.all(t != np.arange(k))
        np.testing.assert_array_equal(t, flip_targets(k, seed))
        np.testing.assert_allclose(off[np.arange(k), t], 0.3)
    # the targets depend on the seed
    ts = {tuple(flip_targets(10, s)) for s in range(5)}
    assert len(ts) > 1


@pytest.mark.parametrize("k", [3, 10, 100])
def test_flip2_two_distinct_targets(k: int) -> None:
    for seed in range(5):
        T = transition_matrix("flip2", num_classes=k, rate=0.5, seed=seed)
        off = T - np.diag(np.diag(T))
        assert np.all((off > 0).sum(axis=1) == 2)
        assert np.all(np.diag(off) == 0)
        np.testing.assert_allclose(off[off > 0], 0.25)


def test_cifar10_asym_touches_only_source_classes() -> None:
    y = _balanced(20_000, 10)
    res = apply_noise("cifar10-asym", y, num_classes=10, rate=0.4, seed=0)
    changed = res.noisy_mask
    assert set(np.unique(y[changed])) == {2, 3, 4, 5, 9}
    expected = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    for s, t in expected.items():
        assert set(np.unique(res.noisy_labels[changed & (y == s)])) == {t}
    assert res.realized_rate == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("name,rate,pairs,fixed", [
    ("fashion-asym", 0.3, {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}, (0, 1, 5, 6, 8)),
    ("mnist-asym", 0.4, {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}, (0, 1, 4, 8, 9)),
])
def test_asym_class_maps(name, rate, pairs, fixed) -> None:
    T = transition_matrix(name, num_classes=10, rate=rate)
    for s, t in pairs.items():
        assert T[s, t] == pytest.approx(rate) and T[s, s] == pytest.approx(1 - rate)
    for c in fixed:
        assert T[c, c] == 1.0


def test_cifar100_coarse_table() -> None:
    assert CIFAR100_COARSE.shape == (100,)
    assert np.array_equal(np.bincount(CIFAR100_COARSE), np.full(20, 5))
    # spot checks against the class names (fine and coarse labels are alphabetical)
    assert CIFAR100_COARSE[0] == 4  # apple -> fruit_and_vegetables
    assert CIFAR100_COARSE[1] == 1  # aquarium_fish -> fish
    assert CIFAR100_COARSE[4] == 0  # beaver -> aquatic_mammals
    assert CIFAR100_COARSE[8] == 18  # bicycle -> vehicles_1
    assert CIFAR100_COARSE[99] == 13  # worm -> non-insect_invertebrates
    groups = cifar100_superclass_groups()
    assert len(groups) == 20 and all(len(g) == 5 for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(100))


@pytest.mark.parametrize("mode", ["next", "uniform"])
def test_superclass_noise_stays_within_superclass(mode: str) -> None:
    y = _balanced(50_000, 100)
    res = apply_noise("cifar100-superclass", y, num_classes=100, rate=0.4, seed=3, mode=mode)
    np.testing.assert_array_equal(CIFAR100_COARSE[res.noisy_labels], CIFAR100_COARSE[y])
    T = res.transition
    same = CIFAR100_COARSE[:, None] == CIFAR100_COARSE[None, :]
    assert np.all(T[~same] == 0)
    off = T - np.diag(np.diag(T))
    if mode == "next":
        assert np.all((off > 0).sum(axis=1) == 1)
        for g in cifar100_superclass_groups():
            for a, b in zip(g, np.roll(g, -1)):
                assert T[a, b] == pytest.approx(0.4)
    else:
        assert np.all((off > 0).sum(axis=1) == 4)
        np.testing.assert_allclose(off[off > 0], 0.1)


def test_superclass_consecutive_grouping() -> None:
    T = transition_matrix("cifar100-superclass", num_classes=100, rate=0.3, grouping="consecutive")
    for i in range(100):
        j = 5 * (i // 5) + (i % 5 + 1) % 5
        assert T[i, j] == pytest.approx(0.3)


# --------------------------------------------------------------------------- instance


def _features(n: int = 10_000, d: int = 64, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, k, n)


def test_instance_rate_and_rows() -> None:
    X, y = _features()
    res = apply_noise("instance", y, num_classes=10, rate=0.4, seed=0, features=X)
    assert abs(res.realized_rate - 0.4) <= 0.02
    q, P = instance_flip_probabilities(X, y, num_classes=10, rate=0.4, seed=0)
    assert q.min() >= 0 and q.max() <= 1
    assert abs(q.mean() - 0.4) < 0.01 and abs(q.std() - 0.1) < 0.01
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    # the "flip" part never puts mass on the clean class: P[i, y_i] is exactly 1 - q_i
    np.testing.assert_allclose(P[np.arange(len(y)), y], 1 - q, rtol=0, atol=1e-15)
    # the transition is the per-class mean of the sampled rows
    for c in range(10):
        np.testing.assert_allclose(res.transition[c], P[y == c].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(res.transition.sum(axis=1), 1.0, atol=1e-12)
    # labels are drawn from the rows: noisy labels follow the mean rows within sampling error
    emp = res.empirical_transition()
    n_i = np.bincount(y, minlength=10)[:, None]
    T = res.transition
    assert np.all(np.abs(emp - T) <= 5 * np.sqrt(T * (1 - T) / n_i) + 1e-3)


def test_instance_flip_part_excludes_clean_class() -> None:
    # with q_i = 0.9 exactly, a label is kept only through the 1 - q_i part
    X, y = _features(4000, 16)
    res = apply_noise("instance", y, num_classes=10, rate=0.9, seed=1, features=X, std=0.0)
    _, P = instance_flip_probabilities(X, y, num_classes=10, rate=0.9, seed=1, std=0.0)
    np.testing.assert_allclose(P[np.arange(len(y)), y], 0.1)
    assert abs(res.realized_rate - 0.9) < 0.03


def test_instance_determinism_and_image_features() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(600, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 5, 600)
    a = apply_noise("instance", y, num_classes=5, rate=0.3, seed=4, features=imgs)
    b = apply_noise("instance", y, num_classes=5, rate=0.3, seed=4, features=imgs)
    c = apply_noise("instance", y, num_classes=5, rate=0.3, seed=5, features=imgs)
    np.testing.assert_array_equal(a.noisy_labels, b.noisy_labels)
    np.testing.assert_array_equal(a.transition, b.transition)
    assert not np.array_equal(a.noisy_labels, c.noisy_labels)
    # instance noise depends on the features
    d = apply_noise("instance", y, num_classes=5, rate=0.3, seed=4, features=imgs[::-1].copy())
    assert not np.array_equal(a.transition, d.transition)


def test_instance_errors() -> None:
    X, y = _features(100, 4)
    with pytest.raises(UserError, match="needs features"):
        apply_noise("instance", y, num_classes=10, rate=0.3, seed=0)
    with pytest.raises(UserError, match="one row per label"):
        apply_noise("instance", y, num_classes=10, rate=0.3, seed=0, features=X[:50])
    with pytest.raises(UserError, match="std"):
        apply_noise("instance", y, num_classes=10, rate=0.3, seed=0, features=X, std=-1)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(UserError, match="NaN"):
        apply_noise("instance", y, num_classes=10, rate=0.3, seed=0, features=bad)
    with pytest.raises(UserError, match="no single transition matrix"):
        transition_matrix("instance", num_classes=10, rate=0.3, seed=0)


# --------------------------------------------------------------------------- custom


@pytest.mark.parametrize("fmt", ["npy", "csv", "txt"])
def test_custom_matrix_from_file(tmp_path, fmt: str) -> None:
    M = _random_stochastic(5, 1)
    p = tmp_path / f"T.{fmt}"
    if fmt == "npy":
        np.save(p, M)
    elif fmt == "csv":
        np.savetxt(p, M, delimiter=",", fmt="%.17g")
    else:
        np.savetxt(p, M, fmt="%.17g")
    T = transition_matrix("custom", num_classes=5, rate=0.0, matrix_path=str(p))
    np.testing.assert_allclose(T, M, atol=1e-12)
    res = apply_noise("custom", _balanced(1000, 5), num_classes=5, rate=0.0, seed=0, matrix_path=p)
    np.testing.assert_allclose(res.transition, M, atol=1e-12)


def test_custom_matrix_rejections(tmp_path) -> None:
    y = _balanced(100, 3)
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, np.array([[0.5, 0.5, 0.1], [0, 1, 0], [0, 0, 1]]), delimiter=",")
    with pytest.raises(UserError, match="bad.csv.*sum to 1"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix_path=bad)
    neg = tmp_path / "neg.npy"
    np.save(neg, np.array([[1.2, -0.2, 0], [0, 1, 0], [0, 0, 1]]))
    with pytest.raises(UserError, match="neg.npy.*negative"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix_path=neg)
    with pytest.raises(UserError, match=r"shape \(3, 3\)"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix=np.eye(4))
    with pytest.raises(UserError, match="not found: .*missing.npy"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix_path=tmp_path / "missing.npy")
    junk = tmp_path / "junk.csv"
    junk.write_text("a,b,c\n")
    with pytest.raises(UserError, match="junk.csv"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix_path=junk)
    other = tmp_path / "T.json"
    other.write_text("[]")
    with pytest.raises(UserError, match="T.json.*extension"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix_path=other)
    with pytest.raises(UserError, match="exactly one"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0)
    with pytest.raises(UserError, match="exactly one"):
        apply_noise("custom", y, num_classes=3, rate=0.0, seed=0, matrix=np.eye(3), matrix_path=bad)
    # tolerance 1e-6 on row sums
    near = np.eye(3) + np.array([[5e-7, 0, 0], [0, 0, 0], [0, 0, 0]])
    T = transition_matrix("custom", num_classes=3, rate=0.0, matrix=near)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-15)


def test_sample_from_transition() -> None:
    M = _random_stochastic(4, 2)
    y = _balanced(40_000, 4)
    res = sample_from_transition(y, M, seed=0)
    assert np.all(np.abs(res.empirical_transition() - M) <= 5 * np.sqrt(M * (1 - M) / 10_000) + 1e-3)


# --------------------------------------------------------------------------- open set


def test_open_set_replaces_exact_count() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 128, size=(1000, 4, 4, 3), dtype=np.uint8)
    other = rng.integers(128, 256, size=(300, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 1000)
    for rate in (0.0, 0.123, 0.4):
        x_new, y_new, mask = open_set(x, y, rate=rate, other_images=other, num_classes=10, seed=0)
        assert mask.sum() == round(rate * 1000)
        np.testing.assert_array_equal(y_new, y)
        np.testing.assert_array_equal(x_new[~mask], x[~mask])
        assert np.all(x_new[mask] >= 128)  # every replaced image comes from other_images
        assert x_new.dtype == np.uint8 and x_new.shape == x.shape
    # x is not modified; seeded
    assert x.max() < 128
    a = open_set(x, y, rate=0.4, other_images=other, num_classes=10, seed=1)
    b = open_set(x, y, rate=0.4, other_images=other, num_classes=10, seed=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    # fewer other images than needed -> sampled with replacement
    x_new, _, mask = open_set(x, y, rate=0.5, other_images=other[:10], num_classes=10, seed=0)
    assert mask.sum() == 500


def test_open_set_errors() -> None:
    x = np.zeros((10, 4, 4, 3), dtype=np.uint8)
    y = np.zeros(10, dtype=np.int64)
    with pytest.raises(UserError, match="shape"):
        open_set(x, y, rate=0.2, other_images=np.zeros((5, 4, 4, 1), np.uint8), num_classes=2, seed=0)
    with pytest.raises(UserError, match="dtype"):
        open_set(x, y, rate=0.2, other_images=np.zeros((5, 4, 4, 3), np.float32), num_classes=2, seed=0)
    with pytest.raises(UserError, match="labels"):
        open_set(x, y[:5], rate=0.2, other_images=np.zeros((5, 4, 4, 3), np.uint8), num_classes=2, seed=0)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        open_set(x, y, rate=1.0, other_images=np.zeros((5, 4, 4, 3), np.uint8), num_classes=2, seed=0)
    with pytest.raises(UserError, match="data pipeline"):
        apply_noise("open-set", y, num_classes=2, rate=0.2, seed=0)
    with pytest.raises(UserError, match="data pipeline"):
        transition_matrix("open-set", num_classes=2, rate=0.2)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "name,k,rate,opts",
    [
        ("symmetric", 10, 0.9, {}),  # must be < 9/10
        ("symmetric", 2, 0.5, {}),
        ("pair", 10, 0.5, {}),
        ("flip", 10, 0.5, {}),
        ("flip2", 10, 2 / 3, {}),
        ("cifar10-asym", 10, 0.5, {}),
        ("fashion-asym", 10, 0.6, {}),
        ("cifar100-next", 100, 0.5, {}),
        ("cifar100-superclass", 100, 0.5, {}),
        ("cifar100-superclass", 100, 0.8, {"mode": "uniform"}),
    ],
)
def test_rate_above_type_bound(name: str, k: int, rate: float, opts: dict) -> None:
    with pytest.raises(UserError, match="too high"):
        apply_noise(name, _balanced(100, k), num_classes=k, rate=rate, seed=0, **opts)


def test_rate_just_below_bounds_is_accepted() -> None:
    transition_matrix("symmetric", num_classes=10, rate=0.89)
    transition_matrix("flip2", num_classes=10, rate=0.66)
    transition_matrix("uniform", num_classes=10, rate=0.99)
    transition_matrix("symmetric", num_classes=10, rate=0.99, include_true_class=True)
    transition_matrix("cifar100-superclass", num_classes=100, rate=0.79, mode="uniform")


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "abc", None, True])
def test_rate_out_of_range(rate) -> None:
    with pytest.raises(UserError, match="rate"):
        apply_noise("uniform", _balanced(20, 10), num_classes=10, rate=rate, seed=0)


def test_user_errors() -> None:
    y = _balanced(100, 10)
    with pytest.raises(UserError, match="unknown noise type 'bogus'; valid names: .*symmetric"):
        apply_noise("bogus", y, num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="unknown noise type"):
        transition_matrix("bogus", num_classes=10, rate=0.2)
    with pytest.raises(UserError, match=r"\[0, 10\), found 10"):
        apply_noise("symmetric", np.array([0, 10]), num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="found -1"):
        apply_noise("symmetric", np.array([0, -1]), num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="1-D"):
        apply_noise("symmetric", y.reshape(10, 10), num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="integers"):
        apply_noise("symmetric", np.array([0.5, 1.0]), num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="num_classes must be >= 2"):
        apply_noise("symmetric", np.zeros(5, int), num_classes=1, rate=0.2, seed=0)
    with pytest.raises(UserError, match="at least 3 classes"):
        apply_noise("flip2", np.zeros(5, int), num_classes=2, rate=0.2, seed=0)
    with pytest.raises(UserError, match="defined for 10 classes"):
        apply_noise("cifar10-asym", np.zeros(5, int), num_classes=5, rate=0.2, seed=0)
    with pytest.raises(UserError, match="defined for 100 classes"):
        apply_noise("cifar100-superclass", y, num_classes=10, rate=0.2, seed=0)
    with pytest.raises(UserError, match="no option.*'foo'.*valid options: include_true_class"):
        apply_noise("symmetric", y, num_classes=10, rate=0.2, seed=0, foo=1)
    with pytest.raises(UserError, match="no option.*'rng'"):
        apply_noise("pair", y, num_classes=10, rate=0.2, seed=0, rng=1)
    with pytest.raises(UserError, match="no option.*'foo'.*valid options: std"):
        apply_noise("instance", y, num_classes=10, rate=0.2, seed=0, features=np.ones((100, 2)), foo=1)
    with pytest.raises(UserError, match="include_true_class must be true or false"):
        apply_noise("symmetric", y, num_classes=10, rate=0.2, seed=0, include_true_class="yes")
    with pytest.raises(UserError, match="mode must be"):
        transition_matrix("cifar100-superclass", num_classes=100, rate=0.2, mode="random")
    with pytest.raises(UserError, match="seed"):
        apply_noise("symmetric", y, num_classes=10, rate=0.2, seed=-1)


def test_none_ignores_rate_and_float_integer_labels() -> None:
    y = _balanced(100, 10)
    res = apply_noise("none", y.astype(np.float64), num_classes=10, rate=0.4, seed=0)
    np.testing.assert_array_equal(res.noisy_labels, y)
    assert res.realized_rate == 0.0 and not res.noisy_mask.any()
    empty = apply_noise("symmetric", np.array([], dtype=np.int64), num_classes=3, rate=0.2, seed=0)
    assert empty.noisy_labels.shape == (0,) and empty.realized_rate == 0.0


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["symmetric", "uniform", "pair", "flip", "flip2"]),
    k=st.integers(3, 30),
    frac=st.floats(0.0, 0.99),
    seed=st.integers(0, 2**31),
)
def test_matrices_are_stochastic_and_diagonal_dominant(name: str, k: int, frac: float, seed: int) -> None:
    bound = {"symmetric": (k - 1) / k, "uniform": 1.0, "pair": 0.5, "flip": 0.5, "flip2": 2 / 3}[name]
    rate = frac * bound
    T = transition_matrix(name, num_classes=k, rate=rate, seed=seed)
    np.testing.assert_allclose(T.sum(axis=1), 1.0, atol=1e-12)
    assert T.min() >= 0
    assert np.all(np.diag(T) > T.max(axis=1, where=~np.eye(k, dtype=bool), initial=0.0))
    expected = {"uniform": rate * (k - 1) / k}.get(name, rate)
    assert np.mean(1 - np.diag(T)) == pytest.approx(expected)


# --------------------------------------------------------------------------- io


def test_csv_roundtrip(tmp_path) -> None:
    y = _balanced(200, 10)
    res = apply_noise("pair", y, num_classes=10, rate=0.3, seed=0)
    p = write_noisy_labels_csv(
        tmp_path / "sub" / "labels.csv",
        index=np.arange(200),
        clean=res.clean_labels,
        noisy=res.noisy_labels,
        split="train",
    )
    t = read_noisy_labels_csv(p)
    np.testing.assert_array_equal(t.index, np.arange(200))
    np.testing.assert_array_equal(t.clean, y)
    np.testing.assert_array_equal(t.noisy, res.noisy_labels)
    assert set(t.split.tolist()) == {"train"}
    np.testing.assert_array_equal(t.noisy_mask, res.noisy_mask)
    q = write_noisy_labels_csv(tmp_path / "b.csv", index=[3, 4], clean=[0, 1], noisy=[1, 1])
    t2 = read_noisy_labels_csv(q)
    assert t2.split is None and t2.noisy.tolist() == [1, 1]
    assert q.read_text().splitlines()[0] == "index,clean,noisy"


def test_csv_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_noisy_labels_csv(tmp_path / "nope.csv")
    p = tmp_path / "x.csv"
    p.write_text("index,clean\n0,1\n")
    with pytest.raises(UserError, match="x.csv lacks column"):
        read_noisy_labels_csv(p)
    p.write_text("index,clean,noisy\n0,1,2\n1,1,cat\n")
    with pytest.raises(UserError, match="x.csv line 3: column noisy"):
        read_noisy_labels_csv(p)
    with pytest.raises(UserError, match="expected 2"):
        write_noisy_labels_csv(tmp_path / "y.csv", index=[0, 1], clean=[0], noisy=[0, 1])


def test_format_matrix() -> None:
    T = transition_matrix("cifar10-asym", num_classes=10, rate=0.4)
    s = format_matrix(T, classes=["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    lines = s.splitlines()
    assert len(lines) == 11
    assert "automobile" in lines[0] and lines[1].startswith("airplane")
    assert lines[3].split()[1:3] == ["0.40", "0.00"]  # bird -> airplane
    assert lines[10].split()[1:3] == ["0.00", "0.40"]  # truck -> automobile
    assert format_matrix(np.eye(2)).splitlines()[1].split() == ["0", "1.00", "0.00"]
    with pytest.raises(UserError):
        format_matrix(np.eye(3), classes=["a"])
