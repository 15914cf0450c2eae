"""Data-parallel steps whose loss is the global batch's on every process (SimCLR's NT-Xent over
gathered projections, DivideMix's MixMatch over the gathered batch): the 1-process loss and
gradient, checked without processes (ranks are threads; the 2-process runs are the slow equality
table in ``test_distributed.py``)."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from noisylabels.data.mix import mixup
from noisylabels.methods.dividemix import (global_mixmatch_losses, mixmatch_batch, mixmatch_losses_from_sums,
                                           mixmatch_sums)
from noisylabels.methods.simclr import global_contrastive_logits
from noisylabels.losses.contrastive import nt_xent_from_logits
from noisylabels.train.context import TrainContext
from noisylabels.train.distributed import Distributed

from tests.train.test_distributed import _in_threads, _ThreadRank


class _Rank(_ThreadRank):
    """A thread rank whose gather takes the global size (every rank's part, rank order)."""

    def gather_batch(self, t, n=None):
        return super().gather_batch(t)


def _ranks(world: int) -> list[_Rank]:
    shared = ({}, threading.Barrier(world))
    return [_Rank(r, world, shared) for r in range(world)]


def test_rows_and_the_replicated_loss_weight():
    d = Distributed(rank=1, world_size=2)
    d.shard(7)
    assert d.local_fraction == 3 / 7 and d.rows(5) == slice(3, 5) and d.rows(1) == slice(1, 1)
    d.replicate_loss()
    assert d.local_fraction == 0.5 and d.local_slice == slice(4, 7)  # the step's slice is unchanged
    d.shard(8)  # the next step
    assert d.local_fraction == 0.5 and not d.replicated


def _nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR Eq. 1 averaged over the 2N anchors, term by term (float64)."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        den = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(z[i] @ z[pos] / tau) / den)
    return total / n2


@pytest.mark.parametrize("n", [8, 7])
def test_nt_xent_over_gathered_projections_is_the_one_process_loss_and_gradient(n):
    """Each rank projects its slice; its loss is the global batch's (negatives from every rank), and
    its gradient weighted by the all-reduce's ``local_fraction`` sums to the 1-process gradient."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(n, 4, requires_grad=True), torch.randn(n, 4, requires_grad=True)
    expected = _nt_xent_by_hand(z1, z2, 0.5)
    g1, g2 = torch.autograd.grad(expected, [z1, z2])
    ranks = _ranks(2)
    sls = [d.shard(n) for d in ranks]

    def rank_step(d, sl):
        d.in_step = True
        a, b = z1.detach()[sl].clone().requires_grad_(), z2.detach()[sl].clone().requires_grad_()
        loss = nt_xent_from_logits(*global_contrastive_logits(SimpleNamespace(dist=d), a, b, temperature=0.5))
        ga, gb = torch.autograd.grad(loss, [a, b])
        return loss.detach(), ga * d.local_fraction, gb * d.local_fraction  # what the all-reduce adds up

    out = _in_threads([lambda d=d, sl=sl: rank_step(d, sl) for d, sl in zip(ranks, sls)])
    for loss, _, _ in out:
        assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-5)
    torch.testing.assert_close(torch.cat([o[1] for o in out]), g1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.cat([o[2] for o in out]), g2, rtol=1e-4, atol=1e-6)


def test_mixmatch_sums_of_a_batchs_parts_give_eqs_9_to_11_of_the_whole():
    torch.manual_seed(1)
    z, t = torch.randn(9, 3, dtype=torch.float64), torch.softmax(torch.randn(9, 3, dtype=torch.float64), 1)
    p = torch.softmax(z, 1)
    lab = [0, 1, 2, 5]  # labelled rows of the whole batch: two parts of (labelled, unlabelled) rows
    parts = [([0, 1, 2], [3, 4]), ([5], [6, 7, 8])]
    sums = sum(mixmatch_sums(torch.cat([z[a], z[b]]), torch.cat([t[a], t[b]]), num_labelled=len(a)) for a, b in parts)
    lx, lu, lreg = mixmatch_losses_from_sums(sums, num_labelled=4, num_unlabelled=5, lu_reduction="mean")
    unl = [3, 4, 6, 7, 8]
    exp_lx = -sum(float(t[i, c]) * math.log(float(p[i, c])) for i in lab for c in range(3)) / 4
    exp_lu = sum((float(p[i, c]) - float(t[i, c])) ** 2 for i in unl for c in range(3)) / (5 * 3)
    pm = p.mean(0)
    exp_reg = sum(math.log((1 / 3) / float(pm[c])) for c in range(3)) / 3
    assert (float(lx), float(lu), float(lreg)) == pytest.approx((exp_lx, exp_lu, exp_reg), rel=1e-5)  # float32 sums


def _mixmatch_expected(net, x, u, tx, tu, gen_seed):
    """One process: the whole batch mixed (``data.mixup``), Eqs. 9-11 written out, and the gradient."""
    inputs, targets = torch.cat([*x, *u]), torch.cat([tx, tx, tu, tu])
    m = mixup(inputs, targets, alpha=4.0, generator=torch.Generator().manual_seed(gen_seed), max_lambda=True)
    logp = F.log_softmax(net(m.x), 1)
    nl = 2 * len(tx)
    lx = -(m.targets[:nl] * logp[:nl]).sum() / nl
    lu = ((logp[nl:].exp() - m.targets[nl:]) ** 2).sum() / (len(logp) - nl)
    c = logp.shape[1]
    lreg = sum(math.log(1 / c) - torch.log(logp.exp().mean(0)[k]) for k in range(c)) / c
    loss = lx + 0.3 * lu + lreg
    return loss.detach(), torch.autograd.grad(loss, list(net.parameters()))


@pytest.mark.parametrize("n_x,n_u", [(8, 6), (7, 5)])
def test_a_data_parallel_mixmatch_step_has_the_one_process_loss_and_gradient(n_x, n_u):
    """Labelled and unlabelled slices of other sizes, gathered and mixed with the 1-process pairs and
    ``lam`` (partners on the other rank), means over the global batch (``L_reg``'s mean prediction
    too): every rank's loss is the 1-process one, and the weighted gradients add up to its gradient."""
    torch.manual_seed(2)
    net = torch.nn.Linear(5, 3)
    x = (torch.randn(n_x, 5), torch.randn(n_x, 5))
    u = (torch.randn(n_u, 5), torch.randn(n_u, 5))
    tx, tu = torch.softmax(torch.randn(n_x, 3), 1), torch.softmax(torch.randn(n_u, 3), 1)
    loss1, grads1 = _mixmatch_expected(net, x, u, tx, tu, 11)
    ranks = _ranks(2)

    def rank_step(d):
        lab = d.shard(n_x)
        unl = d.rows(n_u)
        d.in_step = True
        inputs, targets, mine = mixmatch_batch(d, [v[lab] for v in x], [v[unl] for v in u], tx[lab], tu[unl],
                                               n_unlabelled=n_u)
        m = TrainContext.mixup(SimpleNamespace(dist=d), inputs, targets, alpha=4.0,
                               generator=torch.Generator().manual_seed(11), max_lambda=True)
        local = [p.detach().clone().requires_grad_() for p in net.parameters()]
        logits = torch.func.functional_call(net, dict(zip(["weight", "bias"], local)), (m.x[mine],))
        lx, lu, lreg = global_mixmatch_losses(d, logits, m.targets[mine], num_labelled=2 * (lab.stop - lab.start),
                                              n_labelled=2 * n_x, n_unlabelled=2 * n_u)
        loss = lx + 0.3 * lu + lreg
        grads = torch.autograd.grad(loss, local)
        return loss.detach(), [g * d.local_fraction for g in grads], m.perm

    out = _in_threads([lambda d=d: rank_step(d) for d in ranks])
    for loss, _, perm in out:
        assert float(loss) == pytest.approx(float(loss1), rel=1e-5)
    for k, g in enumerate(grads1):
        torch.testing.assert_close(out[0][1][k] + out[1][1][k], g, rtol=1e-4, atol=1e-6)
    perm, lab0 = out[0][2], ranks[0].rows(n_x)
    rows0 = torch.cat([torch.arange(lab0.start, lab0.stop), n_x + torch.arange(lab0.start, lab0.stop)])
    assert not torch.isin(perm[rows0], rows0).all()  # rank 0's labelled rows have partners it does not hold
