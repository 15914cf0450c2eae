"""Tests for noisylabels.losses (fast; float64 wherever numbers are compared)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from noisylabels.errors import UserError
from noisylabels.losses import (
    LOG_1E_4,
    LOSSES,
    Loss,
    bootstrap_hard_loss,
    bootstrap_soft_loss,
    create_loss,
    cross_entropy,
    estimate_transition,
    focal_loss,
    forward_loss,
    gce_loss,
    get_loss_fn,
    js_loss,
    list_losses,
    mae_loss,
    polysoft_loss,
    prune_mask,
    sce_loss,
    truncated_lq_loss,
    truncated_lq_weighted,
)

D = torch.float64
HYP = settings(max_examples=60, deadline=None)
CANONICAL = ["ce", "mae", "gce", "truncated-lq", "sce", "js", "polysoft", "bootstrap-soft",
             "bootstrap-hard", "forward", "focal"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(b: int = 6, k: int = 5, seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    return torch.randn(b, k, generator=g, dtype=D) * scale, torch.randint(0, k, (b,), generator=g)


def _stochastic(k: int, seed: int = 0, diag: float = 0.0) -> torch.Tensor:
    r = torch.rand(k, k, generator=_gen(seed), dtype=D) + 0.05
    r = r / r.sum(1, keepdim=True)
    return diag * torch.eye(k, dtype=D) + (1 - diag) * r


def _all_labels_sum(fn, z: torch.Tensor, **hp) -> torch.Tensor:
    """sum_j L(f(x), j) for every row of z: (B,)."""
    b, k = z.shape
    return sum(fn(z, torch.full((b,), j, dtype=torch.long), reduction="none", **hp) for j in range(k))


logit_rows = st.integers(2, 12).flatmap(
    lambda k: arrays(np.float64, (k,), elements=st.floats(-30, 30, allow_nan=False)))


def _lq(p: float, q: float) -> float:
    return (1 - p**q) / q


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_aliases():
    assert set(CANONICAL) | {"lq", "sl"} == set(list_losses())
    assert set(list_losses(aliases=False)) == set(CANONICAL)
    assert get_loss_fn("lq") is gce_loss and get_loss_fn("SL") is sce_loss
    assert LOSSES.get("gce") is gce_loss
    with pytest.raises(UserError, match="valid names: .*gce"):
        get_loss_fn("nope")


# ----------------------------------------------------------------------------- GCE / MAE


def test_gce_tends_to_ce_as_q_to_0_and_is_one_minus_py_at_q_1():
    g = _gen(1)
    z = torch.rand(64, 10, generator=g, dtype=D) * 2 - 1
    y = torch.randint(0, 10, (64,), generator=g)
    ce = cross_entropy(z, y, reduction="none")
    assert float(ce.max()) < 4.4  # |GCE_q - CE| ~ q CE^2 / 2 < 1e-5 here (CE <= log 10 + 2)
    assert torch.allclose(gce_loss(z, y, q=1e-6, reduction="none"), ce, atol=1e-5, rtol=0)
    # tiny q stays exact (no (1 - p^q)/q cancellation)
    assert torch.allclose(gce_loss(z, y, q=1e-12, reduction="none"), ce, atol=1e-10, rtol=0)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(gce_loss(z, y, q=1.0, reduction="none"), 1 - p_y, atol=1e-14)
    assert torch.allclose(gce_loss(z, y, q=1.0, reduction="none"), mae_loss(z, y, reduction="none") / 2)


@HYP
@given(row=logit_rows)
def test_mae_is_symmetric(row):
    """sum_j ||e_j - p||_1 = 2(K - 1) for any logits."""
    z = torch.as_tensor(row)[None]
    assert float(_all_labels_sum(mae_loss, z)) == pytest.approx(2 * (z.shape[1] - 1), abs=1e-12)


@HYP
@given(row=logit_rows, q=st.floats(0.01, 1.0))
def test_gce_class_sum_bounds_eq7(row, q):
    """GCE paper, Eq. 7: (K - K^(1-q))/q <= sum_j L_q(f(x), e_j) <= (K - 1)/q."""
    z = torch.as_tensor(row)[None]
    k = z.shape[1]
    s = float(_all_labels_sum(gce_loss, z, q=q))
    assert (k - k ** (1 - q)) / q - 1e-9 <= s <= (k - 1) / q + 1e-9


@HYP
@given(row=logit_rows, q=st.floats(0.01, 1.0), kk=st.floats(0.01, 0.99))
def test_truncated_lq_class_sum_bounds(row, q, kk):
    """Bounds on sum_j L_trunc(f(x), e_j) (the truncated analogue of Eq. 7, cf. GCE paper Eq. 10).

    L_trunc(f(x), e_j) = L_q(max(p_j, k)) with L_q(t) = (1 - t^q)/q decreasing and convex.

    Upper: each term is <= L_q(k), and L_trunc <= L_q, so the sum is
    <= min(K L_q(k), (K - 1)/q).

    Lower (derived; the text of Eq. 10 was not retrievable, and its form
    d L_q(k) + (K - d) L_q(1/(K - d)) is what this gives with d = K - m truncated classes):
    let m be the number of classes with p_j > k, so m k < 1. By convexity and monotonicity
    sum_{p_j > k} L_q(p_j) >= m L_q(mean) >= m L_q(1/m) = (m - m^(1-q))/q, and the other
    K - m terms equal L_q(k). Hence
    sum >= min over admissible m of (K - m) L_q(k) + (m - m^(1-q))/q,
    m in {0, ..., K} with m k < 1, and m = 0 only if K k >= 1. The bound is attained.
    """
    z = torch.as_tensor(row)[None]
    k = z.shape[1]
    s = float(_all_labels_sum(truncated_lq_loss, z, q=q, k=kk))
    lqk = _lq(kk, q)
    ms = [m for m in range(k + 1) if m * kk < 1 and (m > 0 or k * kk >= 1)]
    lower = min((k - m) * lqk + (m - m ** (1 - q)) / q for m in ms)
    assert lower - 1e-9 <= s <= min(k * lqk, (k - 1) / q) + 1e-9


def test_truncated_lq_definition_eq9():
    z, y = _data(200, 4, seed=2, scale=2.0)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    q, kk = 0.7, 0.5
    got = truncated_lq_loss(z, y, q=q, k=kk, reduction="none")
    expect = torch.where(p_y <= kk, torch.full_like(p_y, _lq(kk, q)), (1 - p_y**q) / q)
    assert (p_y <= kk).any() and (p_y > kk).any()
    assert torch.allclose(got, expect, atol=1e-13)


def test_truncated_lq_weighted_and_prune_mask():
    z, y = _data(100, 4, seed=3, scale=2.0)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    kk, q = 0.4, 0.7
    w = prune_mask(p_y, kk)
    assert w.dtype == p_y.dtype
    assert torch.equal(w.bool(), p_y > kk)  # keeps exactly the samples with p_y > k
    # boundary: p_y == k is pruned
    assert float(prune_mask(torch.tensor([0.4, 0.4000001], dtype=D), 0.4)[0]) == 0.0
    per = truncated_lq_weighted(z, y, w, q=q, k=kk, reduction="none")
    expect = w * gce_loss(z, y, q=q, reduction="none") - _lq(kk, q) * w
    assert torch.allclose(per, expect, atol=1e-14)
    # Eq. 11 objective, and the pruned weights minimise it over w in {0,1}^n for fixed f
    assert float(per.sum()) <= float(truncated_lq_weighted(z, y, torch.ones_like(w), q=q, k=kk, reduction="sum"))
    assert float(per.sum()) <= 0.0
    # per-sample k
    kv = torch.linspace(0.1, 0.9, 100, dtype=D)
    assert torch.equal(prune_mask(p_y, kv).bool(), p_y > kv)


# ----------------------------------------------------------------------------- SCE


def test_sce_matches_official_form_and_aliases():
    z, y = _data(16, 10, seed=4)
    p = torch.softmax(z, 1)
    onehot = torch.nn.functional.one_hot(y, 10).to(D).clamp(min=1e-4, max=1.0)
    rce = -(p * torch.log(onehot)).sum(1)  # official SCE code, natural log of the clipped one-hot
    ce = cross_entropy(z, y, reduction="none")
    got = sce_loss(z, y, alpha=0.1, beta=1.0, reduction="none")
    assert torch.allclose(got, 0.1 * ce + rce, atol=1e-12)
    assert LOG_1E_4 == pytest.approx(-4 * math.log(10))
    assert torch.allclose(sce_loss(z, y, reduction="none"), got)  # defaults 0.1 / 1.0
    assert torch.allclose(sce_loss(z, y, gamma1=0.1, gamma2=1.0, reduction="none"), got)
    assert torch.allclose(sce_loss(z, y, A=-4.0, alpha=0.0, reduction="none"), 4 * (1 - p.gather(1, y[:, None]).squeeze(1)))
    with pytest.raises(UserError, match="alias"):
        sce_loss(z, y, alpha=0.1, gamma1=0.2)


# ----------------------------------------------------------------------------- JS


def _js_naive(z: torch.Tensor, y: torch.Tensor, pi1: float) -> torch.Tensor:
    p = torch.softmax(z, 1)
    e = torch.nn.functional.one_hot(y, z.shape[1]).to(D)
    m = pi1 * e + (1 - pi1) * p

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log(a) - torch.log(b)), torch.zeros_like(a)).sum(1)

    return (pi1 * kl(e, m) + (1 - pi1) * kl(p, m)) / (-(1 - pi1) * math.log(1 - pi1))


@pytest.mark.parametrize("pi1", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_js_matches_definition(pi1):
    z, y = _data(32, 10, seed=5, scale=3.0)
    assert torch.allclose(js_loss(z, y, pi1=pi1, reduction="none"), _js_naive(z, y, pi1), atol=1e-12, rtol=1e-10)


def test_js_tends_to_ce_as_pi1_to_0():
    """JS(pi1) = CE + O(pi1 / p_y); with p_y >= e^-4 / 10 and pi1 = 1e-8 the gap is < 1e-5."""
    g = _gen(6)
    z = torch.rand(64, 10, generator=g, dtype=D) * 4 - 2
    y = torch.randint(0, 10, (64,), generator=g)
    ce = cross_entropy(z, y, reduction="none")
    assert torch.allclose(js_loss(z, y, pi1=1e-8, reduction="none"), ce, atol=1e-5, rtol=0)
    gap3 = (js_loss(z, y, pi1=1e-3, reduction="none") - ce).abs().max()
    gap5 = (js_loss(z, y, pi1=1e-5, reduction="none") - ce).abs().max()
    assert gap5 < gap3 / 50  # linear convergence in pi1


def test_js_tends_to_half_mae_as_pi1_to_1():
    """With eps = 1 - pi1: JS = (1 - p_y) + [pi1 (1 - p_y) + p_y log p_y] / (-log eps) + O(eps).

    So the limit MAE/2 = 1 - p_y is approached only at rate 1/log(1/eps):
    |JS - MAE/2| <= (1 + 1/e) / (-log eps) (checked at eps = 1e-9, where it is ~0.066), and
    the two-term expansion above is checked to 1e-6.
    """
    z, y = _data(64, 10, seed=7, scale=2.0)
    half_mae = mae_loss(z, y, reduction="none") / 2
    p_y = 1 - half_mae
    for eps in (1e-6, 1e-9):
        pi1 = 1 - eps
        nlog = -math.log1p(-pi1)  # -log(eps) for the eps actually represented
        js = js_loss(z, y, pi1=pi1, reduction="none")
        assert (js - half_mae).abs().max() <= (1 + 1 / math.e) / nlog
        expansion = half_mae + (pi1 * (1 - p_y) + p_y * torch.log(p_y)) / nlog
        assert torch.allclose(js, expansion, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- PolySoft


def test_polysoft_definition():
    z, y = _data(200, 10, seed=8, scale=2.0)
    ce = cross_entropy(z, y, reduction="none")
    lam, d = 2.0, 3.0
    cap = (d - 1) * lam / d
    expect = torch.where(ce < lam, cap * (1 - (1 - ce / lam).clamp(min=0) ** (d / (d - 1))), torch.full_like(ce, cap))
    assert (ce < lam).any() and (ce >= lam).any()
    assert torch.allclose(polysoft_loss(z, y, lam=lam, d=d, reduction="none"), expect, atol=1e-13)


def test_polysoft_default_lambda_trains_from_uniform_predictions():
    """lam <= log K leaves every near-uniform sample on the flat part (no gradient at all); the
    default 2 log K gives dL/dCE = (1 - 1/2)^(1/(d-1)) = 0.5 there (d = 2)."""
    k = 10
    z = torch.zeros(4, k, dtype=torch.float64, requires_grad=True)
    y = torch.arange(4)
    default = polysoft_loss(z, y, reduction="none")
    explicit = polysoft_loss(z, y, lam=2 * math.log(k), d=2.0, reduction="none")
    assert torch.equal(default, explicit)
    (g,) = torch.autograd.grad(default.sum(), z)
    ce_grad = torch.softmax(z, 1) - torch.nn.functional.one_hot(y, k)
    assert torch.allclose(g, 0.5 * ce_grad.detach())
    (g_small,) = torch.autograd.grad(polysoft_loss(z, y, lam=2.0, d=2.0, reduction="sum"), z)
    assert torch.count_nonzero(g_small) == 0


@HYP
@given(row=logit_rows, lam=st.floats(0.05, 20.0), d=st.floats(1.01, 20.0))
def test_polysoft_class_sum_bounds(row, lam, d):
    """Class-sum bounds for PolySoft (NARL-Adjuster, Ding et al.; the text of Lemma 1 was not
    retrievable, so these are derived).

    L(l) is non-decreasing in l = -log p_j and 0 <= L <= c := (d-1) lam / d.
    Sort p_(1) >= ... >= p_(K); then p_(m) <= 1/m, so l_(m) >= log m, and p_(1) >= 1/K, so
    l_(1) <= log K. Hence
        sum_{m=2}^{K} L(log m) <= sum_j L(f(x), j) <= (K - 1) c + L(log K) <= K c.
    """
    z = torch.as_tensor(row)[None]
    k = z.shape[1]
    cap = (d - 1) * lam / d

    def lat(loss_value: float) -> float:
        return cap * (1 - (1 - loss_value / lam) ** (d / (d - 1))) if loss_value < lam else cap

    s = float(_all_labels_sum(polysoft_loss, z, lam=lam, d=d))
    lower = sum(lat(math.log(m)) for m in range(2, k + 1))
    upper = (k - 1) * cap + lat(math.log(k))
    assert lower - 1e-9 <= s <= upper + 1e-9 <= k * cap + 2e-9


# ----------------------------------------------------------------------------- forward / focal / bootstrap


def test_forward_identity_is_ce_and_matches_naive():
    z, y = _data(32, 6, seed=9, scale=3.0)
    eye = torch.eye(6, dtype=D)
    assert torch.allclose(forward_loss(z, y, T=eye, reduction="none"), cross_entropy(z, y, reduction="none"), atol=1e-12)
    t = _stochastic(6, seed=1, diag=0.5)
    naive = -torch.log((torch.softmax(z, 1) @ t).gather(1, y[:, None]).squeeze(1))
    assert torch.allclose(forward_loss(z, y, T=t, reduction="none"), naive, atol=1e-12)
    assert torch.allclose(forward_loss(z, y, T=t.numpy(), reduction="none"), naive, atol=1e-12)
    # stable where p underflows: T = I with the true logit at -1000 gives exactly CE
    z2 = z.clone()
    z2[:, 0] = -1000.0
    y2 = torch.zeros(32, dtype=torch.long)
    assert torch.allclose(forward_loss(z2, y2, T=eye, reduction="none"), cross_entropy(z2, y2, reduction="none"))


def test_focal_matches_definition():
    z, y = _data(32, 6, seed=10, scale=3.0)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(focal_loss(z, y, gamma=0.0), cross_entropy(z, y))
    assert torch.allclose(focal_loss(z, y, gamma=2.0, reduction="none"), -(1 - p_y) ** 2 * torch.log(p_y), atol=1e-12)


def test_bootstrap_values_and_gradient_does_not_flow_through_target():
    z, y = _data(16, 5, seed=11, scale=2.0)
    beta = 0.9
    p = torch.softmax(z, 1)
    e = torch.nn.functional.one_hot(y, 5).to(D)
    e_hat = torch.nn.functional.one_hot(z.argmax(1), 5).to(D)
    logp = torch.log_softmax(z, 1)
    soft_t, hard_t = beta * e + (1 - beta) * p, beta * e + (1 - beta) * e_hat
    assert torch.allclose(bootstrap_soft_loss(z, y, beta=beta, reduction="none"), -(soft_t * logp).sum(1), atol=1e-12)
    assert torch.allclose(bootstrap_hard_loss(z, y, beta=beta, reduction="none"), -(hard_t * logp).sum(1), atol=1e-12)
    for fn, t in ((bootstrap_soft_loss, soft_t), (bootstrap_hard_loss, hard_t)):
        zz = z.clone().requires_grad_()
        fn(zz, y, beta=beta, reduction="sum").backward()
        # d/dz of CE against a constant target t is p - t: the target contributes nothing
        assert torch.allclose(zz.grad, p - t, atol=1e-12)
    # soft: the gradient is beta (p - e_y); the entropy term's own gradient is absent
    zz = z.clone().requires_grad_()
    bootstrap_soft_loss(zz, y, beta=beta, reduction="sum").backward()
    assert torch.allclose(zz.grad, beta * (p - e), atol=1e-12)
    # and it matches finite differences of the frozen-target objective z -> -sum t0 log softmax(z)
    h = 1e-6
    num = torch.zeros_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            dz = torch.zeros_like(z)
            dz[i, j] = h
            num[i, j] = (-(soft_t * torch.log_softmax(z + dz, 1)).sum() + (soft_t * torch.log_softmax(z - dz, 1)).sum()) / (2 * h)
    assert torch.allclose(zz.grad, num, atol=1e-7)


# ----------------------------------------------------------------------------- per-sample hyperparameters and gradients

# (loss name, per-sample hyperparameter values for a batch of 6) -- every loss with hyperparameters
PER_SAMPLE = [
    ("gce", {"q": [0.05, 0.2, 0.4, 0.6, 0.8, 1.0]}),
    ("truncated-lq", {"q": [0.1, 0.3, 0.5, 0.7, 0.9, 1.0], "k": [0.05, 0.2, 0.35, 0.5, 0.65, 0.8]}),
    ("sce", {"alpha": [0.0, 0.1, 0.5, 1.0, 2.0, 6.0], "beta": [1.0, 0.1, 0.0, 2.0, 0.5, 1.0],
             "A": [-9.2, -4.0, -1.0, -2.0, -0.5, -6.0]}),
    ("js", {"pi1": [0.01, 0.1, 0.3, 0.5, 0.7, 0.99]}),
    ("polysoft", {"lam": [0.1, 0.5, 1.0, 2.0, 5.0, 20.0], "d": [1.01, 1.5, 2.0, 3.0, 10.0, 20.0]}),
    ("bootstrap-soft", {"beta": [0.0, 0.2, 0.5, 0.8, 0.95, 1.0]}),
    ("bootstrap-hard", {"beta": [0.0, 0.2, 0.5, 0.8, 0.95, 1.0]}),
    ("focal", {"gamma": [0.0, 0.5, 1.0, 2.0, 3.0, 5.0]}),
]


@pytest.mark.parametrize("name,hp", PER_SAMPLE, ids=[n for n, _ in PER_SAMPLE])
def test_per_sample_hyperparameters_equal_scalar_loop(name, hp):
    fn = get_loss_fn(name)
    z, y = _data(6, 5, seed=12, scale=2.0)
    vec = fn(z, y, reduction="none", **{k: torch.tensor(v, dtype=D) for k, v in hp.items()})
    loop = torch.stack([
        fn(z[i:i + 1], y[i:i + 1], reduction="none", **{k: v[i] for k, v in hp.items()})[0] for i in range(6)
    ])
    assert torch.allclose(vec, loop, atol=1e-13, rtol=1e-12)
    # float32 per-sample tensors broadcast too (cast to the logits' dtype)
    vec32 = fn(z, y, reduction="none", **{k: torch.tensor(v, dtype=torch.float32) for k, v in hp.items()})
    assert vec32.shape == (6,) and torch.allclose(vec32, vec, atol=1e-5)


def _gradcheck_cases():
    """(name, logits, target, hyperparameters) away from kinks, for every loss."""
    g = _gen(13)
    b, k = 4, 5
    z = torch.randn(b, k, generator=g, dtype=D)
    y = torch.randint(0, k, (b,), generator=g)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    ce = -torch.log(p_y)
    # truncated-lq: k = p_y * 0.5 for half the samples (active), p_y * 2 (clamped) otherwise
    k_trunc = torch.where(torch.arange(b) % 2 == 0, p_y * 0.5, (p_y * 2).clamp(max=0.95))
    # polysoft: lam above CE for half the samples, below for the rest (both branches)
    lam = torch.where(torch.arange(b) % 2 == 0, ce * 1.5 + 0.1, ce * 0.5)
    return [
        ("ce", z, y, {}),
        ("mae", z, y, {}),
        ("gce", z, y, {"q": torch.tensor([0.1, 0.4, 0.7, 0.99], dtype=D)}),
        ("truncated-lq", z, y, {"q": torch.tensor([0.2, 0.5, 0.7, 0.9], dtype=D), "k": k_trunc}),
        ("sce", z, y, {"alpha": torch.tensor([0.1, 0.5, 1.0, 6.0], dtype=D), "beta": torch.tensor([1.0, 0.1, 2.0, 0.5], dtype=D),
                       "A": torch.tensor([-9.2, -4.0, -1.0, -2.0], dtype=D)}),
        ("js", z, y, {"pi1": torch.tensor([0.1, 0.3, 0.7, 0.9], dtype=D)}),
        ("polysoft", z, y, {"lam": lam, "d": torch.tensor([1.5, 2.0, 3.0, 10.0], dtype=D)}),
        ("bootstrap-hard", z, y, {"beta": torch.tensor([0.2, 0.5, 0.8, 0.95], dtype=D)}),
        ("bootstrap-soft", z, y, {"beta": torch.tensor([0.2, 0.5, 0.8, 0.95], dtype=D)}),
        ("forward", z, y, {"T": _stochastic(k, seed=3, diag=0.5)}),
        ("focal", z, y, {"gamma": torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=D)}),
    ]


CASES = _gradcheck_cases()


# bootstrap-soft detaches p in its target by design, so its gradient is checked against finite
# differences of the frozen-target objective in test_bootstrap_values_and_gradient_...
LOGIT_CASES = [c for c in CASES if c[0] != "bootstrap-soft"]


@pytest.mark.parametrize("name,z,y,hp", LOGIT_CASES, ids=[c[0] for c in LOGIT_CASES])
def test_gradcheck_logits(name, z, y, hp):
    fn = get_loss_fn(name)
    assert torch.autograd.gradcheck(lambda zz: fn(zz, y, reduction="none", **hp), (z.clone().requires_grad_(),))


@pytest.mark.parametrize("name,z,y,hp", [c for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
def test_gradcheck_hyperparameters(name, z, y, hp):
    fn = get_loss_fn(name)
    keys = list(hp)
    leaves = tuple(hp[k].clone().requires_grad_() for k in keys)

    def f(*vals):
        return fn(z, y, reduction="none", **dict(zip(keys, vals)))

    assert torch.autograd.gradcheck(f, leaves)


def test_gradcheck_truncated_lq_weighted():
    z, y, hp = CASES[3][1], CASES[3][2], CASES[3][3]
    w = torch.tensor([0.9, 0.1, 0.5, 0.99], dtype=D, requires_grad=True)
    args = (z.clone().requires_grad_(), w, hp["q"].clone().requires_grad_(), hp["k"].clone().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda zz, ww, qq, kk: truncated_lq_weighted(zz, y, ww, q=qq, k=kk, reduction="none"), args)


FINITE_HP = {
    "gce": {"q": 0.01}, "truncated-lq": {"q": 0.5, "k": 0.3}, "sce": {"alpha": 0.1, "beta": 1.0, "A": LOG_1E_4},
    "js": {"pi1": 0.5}, "polysoft": {"lam": 2.0, "d": 1.5}, "bootstrap-soft": {"beta": 0.95},
    "bootstrap-hard": {"beta": 0.8}, "focal": {"gamma": 2.0}, "ce": {}, "mae": {}, "forward": {},
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("true_logit", [-50.0, -1000.0, 50.0])
@pytest.mark.parametrize("name", CANONICAL)
def test_gradients_finite_at_extreme_p_y(name, true_logit, dtype):
    """p_y -> 0 (true class at -50 / -1000) and p_y -> 1 (+50): loss and all gradients finite."""
    g = _gen(14)
    z = torch.rand(8, 5, generator=g, dtype=dtype) * 2 - 1
    y = torch.randint(0, 5, (8,), generator=g)
    z[torch.arange(8), y] = true_logit
    z.requires_grad_()
    hp = {k: torch.full((8,), v, dtype=dtype, requires_grad=True) for k, v in FINITE_HP[name].items()}
    if name == "forward":
        hp["T"] = _stochastic(5, seed=4, diag=0.6).to(dtype).requires_grad_()
    loss = get_loss_fn(name)(z, y, reduction="sum", **hp)
    grads = torch.autograd.grad(loss, [z, *hp.values()])
    assert torch.isfinite(loss)
    assert all(bool(torch.isfinite(gr).all()) for gr in grads)


def test_polysoft_gradients_finite_at_the_kink():
    """l == lam exactly (and l/lam rounding to 1): no NaN from 0^a or log 0."""
    z, y = _data(4, 3, seed=15)
    ce = cross_entropy(z, y, reduction="none").detach()
    for lam_v in (ce, ce * (1 + 1e-16), ce * (1 - 1e-16)):
        lam = lam_v.clone().requires_grad_()
        d = torch.full((4,), 1.01, dtype=D, requires_grad=True)
        zz = z.clone().requires_grad_()
        out = polysoft_loss(zz, y, lam=lam, d=d, reduction="sum")
        grads = torch.autograd.grad(out, [zz, lam, d])
        assert all(bool(torch.isfinite(gr).all()) for gr in grads)


# ----------------------------------------------------------------------------- reductions, module


@pytest.mark.parametrize("name", CANONICAL)
def test_reductions(name):
    z, y = _data(7, 4, seed=16)
    fn = get_loss_fn(name)
    hp = {"T": _stochastic(4, diag=0.5)} if name == "forward" else {}
    none = fn(z, y, reduction="none", **hp)
    assert none.shape == (7,)
    assert torch.allclose(fn(z, y, reduction="sum", **hp), none.sum())
    assert torch.allclose(fn(z, y, **hp), none.mean())
    with pytest.raises(UserError, match="reduction"):
        fn(z, y, reduction="avg", **hp)


def test_module_form():
    z, y = _data(6, 5, seed=17)
    m = create_loss("gce", q=0.5)
    assert isinstance(m, Loss) and isinstance(m, torch.nn.Module)
    assert torch.allclose(m(z, y), gce_loss(z, y, q=0.5))
    q = torch.linspace(0.1, 1.0, 6, dtype=D, requires_grad=True)
    out = m(z, y, q=q, reduction="none")  # per-call per-sample override
    assert torch.allclose(out, gce_loss(z, y, q=q, reduction="none"))
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    t = _stochastic(5, diag=0.5)
    fwd = create_loss("forward", T=t, reduction="sum")
    assert "hp_T" in fwd.state_dict()
    assert torch.allclose(fwd(z, y), forward_loss(z, y, T=t, reduction="sum"))
    assert torch.allclose(fwd.float()(z.float(), y), forward_loss(z, y, T=t, reduction="sum").float(), atol=1e-4)
    assert "q=0.5" in repr(m)
    for name in list_losses():
        create_loss(name, **({"T": t} if name == "forward" else {}))(z, y)


# ----------------------------------------------------------------------------- user errors

Z, Y = _data(4, 3, seed=18)


@pytest.mark.parametrize("call,match", [
    (lambda: gce_loss(Z, Y, q=0.0), "q must lie in"),
    (lambda: gce_loss(Z, Y, q=1.5), "q must lie in"),
    (lambda: gce_loss(Z, Y, q=torch.tensor([0.5, 0.0, 0.5, 0.5], dtype=D)), "got 0"),
    (lambda: gce_loss(Z, Y, q=float("nan")), "q must lie in"),
    (lambda: gce_loss(Z, Y, q=torch.full((5,), 0.5)), r"shape \(4,\)"),
    (lambda: gce_loss(Z, Y, q="0.5"), "float or a tensor"),
    (lambda: truncated_lq_loss(Z, Y, k=1.0), "k must lie in"),
    (lambda: truncated_lq_loss(Z, Y, k=0.0), "k must lie in"),
    (lambda: polysoft_loss(Z, Y, d=1.0), "d must lie in"),
    (lambda: polysoft_loss(Z, Y, d=0.5), "d must lie in"),
    (lambda: polysoft_loss(Z, Y, lam=0.0), "lam must lie in"),
    (lambda: js_loss(Z, Y, pi1=0.0), "pi1 must lie in"),
    (lambda: js_loss(Z, Y, pi1=1.0), "pi1 must lie in"),
    (lambda: bootstrap_soft_loss(Z, Y, beta=-0.1), "beta must lie in"),
    (lambda: bootstrap_hard_loss(Z, Y, beta=1.1), "beta must lie in"),
    (lambda: sce_loss(Z, Y, alpha=-1.0), "alpha must lie in"),
    (lambda: sce_loss(Z, Y, A=0.0), "A must lie in"),
    (lambda: focal_loss(Z, Y, gamma=-1.0), "gamma must lie in"),
    (lambda: cross_entropy(Z, torch.tensor([0, 1, 2, 3])), r"labels must lie in \[0, 3\); got label 3"),
    (lambda: cross_entropy(Z, torch.tensor([0, -1, 2, 0])), "got label -1"),
    (lambda: cross_entropy(Z, Y[:3]), "shape"),
    (lambda: cross_entropy(Z, Y.double()), "int64"),
    (lambda: cross_entropy(Z[0], Y[:1]), r"shape \(B, K\)"),
    (lambda: cross_entropy(Z[:, :1], Y * 0), "at least 2 classes"),
    (lambda: forward_loss(Z, Y), "T .* is required"),
    (lambda: forward_loss(Z, Y, T=torch.eye(4)), r"shape \(3, 3\)"),
    (lambda: forward_loss(Z, Y, T=-torch.eye(3)), "non-negative"),
    (lambda: forward_loss(Z, Y, T=torch.ones(3, 3)), "rows of T must sum to 1"),
    (lambda: forward_loss(Z, torch.tensor([0, 1, 2, 2]), T=torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]])),
     "column 2 of T is all zero"),
    (lambda: prune_mask(torch.rand(5), 1.0), "k must lie in"),
    (lambda: truncated_lq_weighted(Z, Y, torch.full((4,), 2.0)), "weights must lie in"),
    (lambda: create_loss("nope"), "unknown loss 'nope'; valid names"),
    (lambda: create_loss("gce", qq=0.5), "no option.*'qq'.*valid options: q"),
    (lambda: create_loss("gce", q=0.0), "q must lie in"),
    (lambda: create_loss("forward"), "T .* is required"),
    (lambda: create_loss("ce", reduction="bad"), "reduction"),
    (lambda: create_loss("gce")(Z, Y, qq=0.1), "no option"),
    (lambda: estimate_transition(torch.rand(5)), "shape"),
    (lambda: estimate_transition(torch.rand(5, 3), percentile=0.0), "percentile"),
    (lambda: estimate_transition(-torch.rand(5, 3)), "non-negative"),
])
def test_user_errors(call, match):
    with pytest.raises(UserError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- transition estimation


def _synthetic_posteriors(t_true: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Noisy posteriors p_clean @ T: half of each class are near-one anchors (distinct values)."""
    k = t_true.shape[0]
    g = _gen(seed)
    rows = []
    for i in range(k):
        n_anchor = n_per_class // 2
        # anchors: p_clean_i = 1 - delta with distinct delta in [1e-7, 1e-6]
        delta = torch.rand(n_anchor, generator=g, dtype=D) * 9e-7 + 1e-7
        a = (delta / (k - 1))[:, None].expand(n_anchor, k).clone()
        a[:, i] = 1 - delta
        # the rest: confidence in [0.3, 0.9], remainder spread at random
        n_rest = n_per_class - n_anchor
        c = torch.rand(n_rest, generator=g, dtype=D) * 0.6 + 0.3
        r = torch.rand(n_rest, k, generator=g, dtype=D)
        r[:, i] = 0
        r = r / r.sum(1, keepdim=True) * (1 - c)[:, None]
        r[:, i] = c
        rows += [a, r]
    clean = torch.cat(rows)
    return clean[torch.randperm(clean.shape[0], generator=g)] @ t_true


@pytest.mark.parametrize("percentile", [97.0, None])
def test_estimate_transition_recovers_known_T(percentile):
    k = 5
    t_true = _stochastic(k, seed=5, diag=0.6)  # T_ii >= 0.6 > 0.4 >= T_ji: anchors top each column
    probs = _synthetic_posteriors(t_true, 400, seed=6)
    t_hat = estimate_transition(probs, percentile=percentile)
    assert t_hat.shape == (k, k)
    assert torch.allclose(t_hat, t_true, atol=1e-5)
    assert torch.allclose(estimate_transition(probs.numpy(), percentile=percentile), t_true, atol=1e-5)


def test_estimate_transition_follows_official_filter_rule():
    """Official rule (NoiseEstimator.fit): thr = np.percentile(col, 97, interpolation='higher');
    entries >= thr are zeroed and the anchor is the argmax of the rest."""
    rng = np.random.default_rng(0)
    for n in (7, 100, 333):
        eta = rng.dirichlet(np.ones(4) * 0.5, size=n)
        expect = np.empty((4, 4))
        for i in range(4):
            col = eta[:, i].copy()
            thr = np.percentile(col, 97, method="higher")
            col[col >= thr] = 0.0
            expect[i] = eta[np.argmax(col)]
        expect /= expect.sum(1, keepdims=True)
        got = estimate_transition(torch.as_tensor(eta))
        assert np.allclose(got.numpy(), expect, atol=1e-12)
        plain = estimate_transition(torch.as_tensor(eta), percentile=None)
        assert np.allclose(plain.numpy(), eta[eta.argmax(0)], atol=1e-12)
