"""``train.sync_batchnorm``: BatchNorm over the global batch (:mod:`noisylabels.train.syncbn`), fast.

Two ranks are two threads whose all-reduce is a barrier and a sum (the forward statistics, the
running buffers and the graph-JVP rule, without processes), compared with ``nn.BatchNorm2d`` on the
whole batch (Ioffe & Szegedy 2015, Algorithm 1: the batch mean and biased variance normalise; the
running variance takes the unbiased one). Gradients and second derivatives use the autograd-aware
all-reduce: a 1-process gloo group (its all-reduce is the identity), against ``nn.BatchNorm2d``.
The 2-process runs are in ``test_distributed.py`` (slow)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn

import noisylabels.train.distributed as distributed
from noisylabels.errors import UserError
from noisylabels.meta.functional import functional_logits, replicated_batch
from noisylabels.meta.graph_jvp import graph_jvp
from noisylabels.train.distributed import Distributed
from noisylabels.train.syncbn import GlobalBatchNorm, convert_global_batchnorm


class _Rank(Distributed):
    """A rank of a pretend world (``active`` whatever the world size), inside a training step."""

    @property
    def active(self):
        return True


def _net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    with torch.no_grad():  # not the identity affine map, and running buffers away from (0, 1)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


def _batch(n=7):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 6, 6, generator=g) * 2 + 1.5  # a mean far from 0: a cancellation would show


def _two_thread_ranks(monkeypatch, fn, n):
    """Run ``fn(net, rank_distributed, slice)`` on two threads, each with its own converted copy of
    :func:`_net`; ``syncbn``'s all-reduce sums over the threads. Returns the two results and nets."""
    box, barrier = {}, threading.Barrier(2)

    def all_reduce(t):
        me = threading.get_ident()
        box[me] = t.detach().clone()
        barrier.wait()
        out = sum(box.values())
        barrier.wait()
        return out

    monkeypatch.setattr(distributed, "_all_reduce_sum", all_reduce)
    out, nets = [None, None], []
    for r in range(2):  # built here: _net seeds the global RNG, which the threads share
        d = _Rank(rank=r, world_size=2)
        d.in_step = True
        net = _net()
        convert_global_batchnorm(net, d)
        nets.append((net, d))

    def run(r):
        net, d = nets[r]
        out[r] = fn(net, d, d.shard(n))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, nets


@pytest.mark.parametrize("n", [8, 7])  # 7: slices of 4 and 3
def test_two_ranks_normalise_with_the_global_batch_and_update_running_buffers_with_it(monkeypatch, n):
    x = _batch(n)
    ref = _net()
    z_ref = ref(x)  # nn.BatchNorm2d on the whole batch, train mode

    def step(net, d, sl):
        return net(x[sl]).detach()

    out, nets = _two_thread_ranks(monkeypatch, step, n)
    torch.testing.assert_close(torch.cat(out), z_ref.detach(), rtol=1e-5, atol=1e-5)
    for net, _ in nets:
        bn, rb = net[1], ref[1]
        torch.testing.assert_close(bn.running_mean, rb.running_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bn.running_var, rb.running_var, rtol=1e-6, atol=1e-6)  # unbiased, global N
        assert int(bn.num_batches_tracked) == int(rb.num_batches_tracked) == 1
    # the batch statistics themselves, from the definition (per channel over N, H, W)
    h = ref[0](x).detach()
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
    ref2 = _net()
    torch.testing.assert_close(ref2[1].running_mean * 0.9 + 0.1 * mean, nets[0][0][1].running_mean, rtol=1e-6,
                               atol=1e-6)
    m = h.numel() / h.shape[1]
    torch.testing.assert_close(ref2[1].running_var * 0.9 + 0.1 * var * m / (m - 1), nets[1][0][1].running_var,
                               rtol=1e-5, atol=1e-6)


def test_graph_jvp_through_the_global_statistics_is_the_whole_batch_jvp(monkeypatch):
    """The rule: the tangent of a global sum is the all-reduce of the local tangents; so each rank's
    graph walk gives its rows of ``J z . t`` of one process on the whole batch (torch.func.jvp)."""
    n = 8
    x = _batch(n)
    ref = _net()
    names = [k for k, _ in ref.named_parameters()]
    g = torch.Generator().manual_seed(3)
    tangent = {k: torch.randn(p.shape, generator=g) for k, p in ref.named_parameters()}
    bufs = {k: b.clone() for k, b in ref.named_buffers()}
    _, u_ref = torch.func.jvp(lambda *ps: functional_logits(ref, dict(zip(names, ps)), bufs, x),
                              tuple(p.detach() for p in ref.parameters()), tuple(tangent[k] for k in names))

    def step(net, d, sl):
        z = net(x[sl])
        params = dict(net.named_parameters())
        return graph_jvp(z, {params[k]: t for k, t in tangent.items()})

    out, _ = _two_thread_ranks(monkeypatch, step, n)
    torch.testing.assert_close(torch.cat(out), u_ref, rtol=1e-4, atol=1e-5)


def test_eval_mode_a_replicated_batch_and_forwards_outside_a_step_use_batchnorms_own(monkeypatch):
    def no_collective(t):
        raise AssertionError("an all-reduce")

    monkeypatch.setattr(distributed, "_all_reduce_sum", no_collective)
    d = _Rank(rank=0, world_size=2)
    d.shard(8)
    net, ref = _net(), _net()
    convert_global_batchnorm(net, d)
    x = _batch(8)
    d.in_step = False
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)  # outside a training step
    d.in_step = True
    with replicated_batch():  # the meta batch: every rank has all of it
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    net.eval(), ref.eval()
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)


def test_conversion_keeps_parameters_buffers_keys_and_isinstance():
    net = _net()
    before = {k: v for k, v in net.state_dict().items()}
    params = list(net.parameters())
    d = _Rank(rank=0, world_size=2)
    assert convert_global_batchnorm(net, d) == 1
    assert isinstance(net[1], GlobalBatchNorm) and isinstance(net[1], nn.BatchNorm2d)
    assert list(net.state_dict()) == list(before) and all(a is b for a, b in zip(net.parameters(), params))
    assert net[1].sync is d and copy.deepcopy(net)[1].sync is d  # a copy follows the loop's in_step
    fresh = _net(seed=5)
    fresh.load_state_dict(net.state_dict())  # a checkpoint loads into the plain model and back
    net.load_state_dict(fresh.state_dict())


@pytest.fixture
def one_process_group():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_gradients_second_derivatives_and_torch_func_jvp_equal_batchnorms(one_process_group):
    """Through the autograd-aware all-reduce (a 1-process group), against nn.BatchNorm2d: the
    gradient, a second derivative (the engine's double-backward path) and torch.func.jvp
    (``GlobalSum.jvp``: the engine's fallback)."""
    x = _batch(8)
    ref, net = _net(), _net()
    d = _Rank(rank=0, world_size=1)
    d.shard(8)
    d.in_step = True
    convert_global_batchnorm(net, d)
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    grads = []
    for model in (ref, net):
        p = list(model.parameters())
        g = torch.autograd.grad((model(x) * w).square().sum(), p, create_graph=True)
        hv = torch.autograd.grad(sum((gi * gi).sum() for gi in g), p)
        grads.append((g, hv))
    for a, b in zip(grads[0][0] + grads[0][1], grads[1][0] + grads[1][1]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    names = [k for k, _ in net.named_parameters()]
    tangent = tuple(torch.randn_like(p) for p in net.parameters())
    us = []
    for model in (ref, net):
        bufs = dict(model.named_buffers())
        us.append(torch.func.jvp(lambda *ps: functional_logits(model, dict(zip(names, ps)), bufs, x),
                                 tuple(p.detach() for p in model.parameters()), tangent)[1])
    torch.testing.assert_close(us[1], us[0], rtol=1e-4, atol=1e-5)


def test_sync_batchnorm_must_be_a_bool():
    from noisylabels.config import resolve_config

    with pytest.raises(UserError, match="train.sync_batchnorm must be true or false"):
        resolve_config(overrides={"train.sync_batchnorm": "yes"})


def test_data_parallel_checks(tmp_path):
    """Meta methods on BatchNorm without the option are refused naming it; with it they run; without
    BatchNorm the option warns; with train.compile it is refused."""
    from noisylabels.train.loop import build_context, check_data_parallel
    from tests.helpers import run_cfg

    over = {"data.train_subset": 100, "train.batch_size": 32, "method.name": "mwnet", "model.name": "resnet8"}
    ctx = build_context(run_cfg(tmp_path, "bn", epochs=1, **over))
    ctx.dist = _Rank(rank=0, world_size=2)
    with pytest.raises(UserError, match="needs train.sync_batchnorm=true"):
        check_data_parallel(ctx)
    ctx.cfg["train"]["sync_batchnorm"] = True
    check_data_parallel(ctx)
    ctx.cfg["train"]["compile"] = True
    with pytest.raises(UserError, match="train.compile"):
        check_data_parallel(ctx)
    plain = build_context(run_cfg(tmp_path, "mlp", epochs=1, **{**over, "model.name": "mlp",
                                                                "train.sync_batchnorm": True}))
    plain.dist = _Rank(rank=0, world_size=2)
    with pytest.warns(UserWarning, match="has no BatchNorm layer"):
        check_data_parallel(plain)
