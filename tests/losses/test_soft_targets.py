"""Soft (probability-vector) targets: every loss that defines them reduces to the hard-label loss on
one-hot targets, is linear in the target where the loss is defined per label, has the stated
two-distribution form otherwise, and is differentiable in logits, target and hyperparameters."""

import math

import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.losses import get_loss_fn

DT = torch.float64
K = 4
T = (torch.full((K, K), 0.1, dtype=DT) + 0.6 * torch.eye(K, dtype=DT))
SOFT = {"ce": {}, "mae": {}, "gce": {"q": 0.7}, "sce": {"alpha": 0.3, "beta": 1.0}, "js": {"pi1": 0.4},
        "polysoft": {"lam": 2.0, "d": 3.0}, "bootstrap-soft": {"beta": 0.9}, "bootstrap-hard": {"beta": 0.8},
        "forward": {"T": T}, "focal": {"gamma": 2.0}}
LINEAR = ("ce", "mae", "gce", "forward", "focal")  # defined per label: L(z, q) = sum_c q_c L(z, c)


def _data(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, K, generator=g, dtype=DT) * 2
    q = torch.softmax(torch.randn(n, K, generator=g, dtype=DT) * 2, dim=1)
    y = torch.randint(0, K, (n,), generator=g)
    return z, q, y


@pytest.mark.parametrize("name", sorted(SOFT))
def test_one_hot_soft_target_equals_the_hard_label_loss(name):
    z, _, y = _data()
    f = get_loss_fn(name)
    hard = f(z, y, reduction="none", **SOFT[name])
    soft = f(z, torch.nn.functional.one_hot(y, K).to(DT), reduction="none", **SOFT[name])
    torch.testing.assert_close(soft, hard, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", LINEAR)
def test_per_label_losses_extend_linearly(name):
    z, q, _ = _data(1)
    f = get_loss_fn(name)
    per_class = torch.stack([f(z, torch.full((len(z),), c), reduction="none", **SOFT[name]) for c in range(K)], 1)
    torch.testing.assert_close(f(z, q, reduction="none", **SOFT[name]), (q * per_class).sum(1), rtol=1e-12, atol=1e-13)


def test_distribution_losses_use_the_target_distribution():
    z, q, _ = _data(2)
    p = torch.softmax(z, 1)
    # SCE (Wang et al. 2019): alpha CE(q, p) + beta RCE, RCE = -sum_k p_k log q_k with log 0 := A
    A = math.log(1e-4)
    q0 = q.clone()
    q0[:, 0] = 0.0
    q0 = q0 / q0.sum(1, keepdim=True)
    want = 0.3 * -(q0 * p.log()).sum(1) + -(p * torch.where(q0 > 0, q0.log().clamp_min(A), torch.full_like(q0, A))).sum(1)
    torch.testing.assert_close(get_loss_fn("sce")(z, q0, reduction="none", alpha=0.3, beta=1.0), want)
    # JS: the scaled pi-weighted Jensen-Shannon divergence, zero when the target equals p
    pi = 0.4
    m = pi * q + (1 - pi) * p
    js = (pi * (q * (q / m).log()).sum(1) + (1 - pi) * (p * (p / m).log()).sum(1)) / (-(1 - pi) * math.log(1 - pi))
    torch.testing.assert_close(get_loss_fn("js")(z, q, reduction="none", pi1=pi), js)
    assert float(get_loss_fn("js")(z, p, reduction="none", pi1=pi).abs().max()) < 1e-12


@pytest.mark.parametrize("name", ["ce", "gce", "sce", "js", "focal", "mae", "polysoft"])
def test_soft_targets_are_differentiable_in_logits_and_target(name):
    z, q, _ = _data(3, n=3)
    z.requires_grad_()
    logq = q.log().requires_grad_()
    f = get_loss_fn(name)
    assert torch.autograd.gradcheck(lambda a, b: f(a, torch.softmax(b, 1), reduction="sum", **SOFT[name]), (z, logq))


def test_a_per_sample_hyperparameter_with_soft_targets():
    z, q, _ = _data(4)
    qs = torch.linspace(0.2, 0.9, len(z), dtype=DT)
    one = torch.stack([get_loss_fn("gce")(z[i:i + 1], q[i:i + 1], q=float(qs[i]), reduction="none") for i in range(len(z))])
    torch.testing.assert_close(get_loss_fn("gce")(z, q, q=qs, reduction="none"), one.squeeze(1))


def test_bad_soft_targets_are_one_line_errors():
    z, q, _ = _data(5)
    with pytest.raises(UserError, match="sum to 1"):
        get_loss_fn("ce")(z, q * 2)
    with pytest.raises(UserError, match="non-negative"):
        get_loss_fn("ce")(z, q - 0.5)
    with pytest.raises(UserError, match="shape"):
        get_loss_fn("ce")(z, q[:, :2])
    with pytest.raises(UserError, match="soft"):
        get_loss_fn("truncated-lq")(z, q)
