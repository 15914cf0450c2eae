"""mixup (Zhang et al. 2018, Eq. 1) against an independent numpy computation, and its options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from noisylabels.data import mixup
from noisylabels.errors import UserError


def _reference(x, y_onehot, *, alpha, seed, per_sample=False, max_lambda=False):
    """The paper's recipe in numpy with the draws re-made from a generator of the same seed."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g).numpy()
    s = int(torch.randint(0, 2**63 - 1, (1,), generator=g))
    lam = np.random.default_rng(s).beta(alpha, alpha, size=len(x) if per_sample else 1)
    if max_lambda:
        lam = np.where(lam < 0.5, 1 - lam, lam)
    lam = np.broadcast_to(lam, (len(x),))
    xm = np.stack([lam[i] * x[i] + (1 - lam[i]) * x[perm[i]] for i in range(len(x))])
    ym = np.stack([lam[i] * y_onehot[i] + (1 - lam[i]) * y_onehot[perm[i]] for i in range(len(x))])
    return xm, ym, lam, perm


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("max_lambda", [False, True])
def test_mixup_is_the_papers_convex_combination(per_sample, max_lambda):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3, 4, 4))
    y = rng.integers(0, 5, 10)
    out = mixup(torch.from_numpy(x), torch.from_numpy(y), alpha=0.75, num_classes=5,
                generator=torch.Generator().manual_seed(3), per_sample=per_sample, max_lambda=max_lambda)
    xm, ym, lam, perm = _reference(x, np.eye(5)[y], alpha=0.75, seed=3, per_sample=per_sample, max_lambda=max_lambda)
    np.testing.assert_array_equal(out.perm.numpy(), perm)
    np.testing.assert_allclose(out.lam.numpy(), lam, rtol=0, atol=0)
    np.testing.assert_allclose(out.x.numpy(), xm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.targets.numpy(), ym, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.targets.sum(1).numpy(), 1.0)
    assert (len(set(out.lam.tolist())) > 1) == per_sample
    if max_lambda:
        assert bool((out.lam >= 0.5).all())


def test_soft_targets_limits_and_distribution():
    g = torch.Generator().manual_seed(0)
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    x = torch.randn(6, 2, dtype=torch.float64)
    same = mixup(x, soft, alpha=0.0, generator=g)  # alpha 0: lam = 1, nothing mixed
    assert torch.equal(same.x, x) and torch.equal(same.targets, soft)
    mixed = mixup(x, soft, alpha=1.0, generator=g)
    want = mixed.lam[:, None] * soft + (1 - mixed.lam[:, None]) * soft[mixed.perm]
    assert float((mixed.targets - want).abs().max()) < 1e-15
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); with max: mean of max(l, 1 - l)
    lam = mixup(torch.zeros(20000, 1), torch.zeros(20000, 2), alpha=0.4, generator=g, per_sample=True).lam
    assert abs(float(lam.mean()) - 0.5) < 0.01 and abs(float(lam.var()) - 1 / (4 * 1.8)) < 0.01
    x32 = torch.randn(4, 3)
    out = mixup(x32, torch.tensor([0, 1, 2, 0]), alpha=1.0, num_classes=3, generator=g)
    assert out.x.dtype == torch.float32 and out.targets.dtype == torch.float32


def test_mixup_bad_inputs():
    g = torch.Generator()
    with pytest.raises(UserError, match="alpha"):
        mixup(torch.zeros(2, 1), torch.zeros(2, 2), alpha=-1.0, generator=g)
    with pytest.raises(UserError, match="num_classes"):
        mixup(torch.zeros(2, 1), torch.tensor([0, 1]), alpha=1.0, generator=g)
    with pytest.raises(UserError, match="lie in"):
        mixup(torch.zeros(2, 1), torch.tensor([0, 3]), alpha=1.0, num_classes=3, generator=g)
    with pytest.raises(UserError, match="2 inputs but 3 targets"):
        mixup(torch.zeros(2, 1), torch.zeros(3, 2), alpha=1.0, generator=g)
