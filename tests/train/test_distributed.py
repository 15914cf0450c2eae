"""Data-parallel training (torch.distributed, gloo on CPU): the slicing and loss-scaling rules
(fast, no processes), and 2-process runs equal to 1-process runs with the same global batch (slow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from noisylabels.train.distributed import Distributed, shard_bounds

from tests.helpers import run_cfg

ROOT = Path(__file__).resolve().parents[2]


# -- fast: the rules, without processes ---------------------------------------------------------------
@pytest.mark.parametrize("n,world", [(64, 2), (63, 2), (10, 4), (3, 4), (1, 2), (257, 3)])
def test_shards_tile_the_global_batch_in_order(n, world):
    bounds = [shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, rank order = batch order
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    expected = [len(t) for t in torch.arange(n).tensor_split(world)]
    assert sizes == expected


class _OneRankOf(Distributed):
    """Rank ``rank`` of a pretend world whose all-reduce is the identity (each rank's share is read
    off and summed by the test)."""

    def all_reduce_sum_(self, tensors):
        return None

    @property
    def active(self):
        return True


@pytest.mark.parametrize("n", [8, 7])
def test_per_rank_mean_gradients_weighted_by_slice_sum_to_the_global_batch_mean_gradient(n):
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    full, = torch.autograd.grad(F.cross_entropy(x @ w, y), w)  # the 1-process gradient of the batch mean
    total = torch.zeros_like(w)
    for rank in range(2):
        d = _OneRankOf(rank=rank, world_size=2)
        sl = d.shard(n)
        g, = torch.autograd.grad(F.cross_entropy(x[sl] @ w, y[sl]), w)  # this rank's slice mean
        total += d.reduce_grads([g])[0]
    torch.testing.assert_close(total, full, rtol=1e-6, atol=1e-7)


def test_param_grads_are_scaled_in_place_by_the_slice_fraction():
    d = _OneRankOf(rank=1, world_size=2)
    d.shard(7)  # rank 1 takes 3 of 7
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 7.0)
    d.reduce_param_grads_([p])
    torch.testing.assert_close(p.grad, torch.full((2,), 3.0))


def test_single_process_is_the_identity():
    d = Distributed()
    t = torch.randn(3)
    assert not d.active and d.reduce_grads([t])[0] is t and d.gather_batch(t) is t


class _ThreadRank(Distributed):
    """Rank ``rank`` of a world of threads: ``all_reduce_sum_`` sums every rank's tensors (a barrier
    stands in for the process group), so the merge rule runs as written, without processes."""

    def __init__(self, rank, world, shared):
        super().__init__(rank=rank, world_size=world)
        self.shared = shared

    def all_reduce_sum_(self, tensors):
        box, barrier = self.shared
        box[self.rank] = [t.clone() for t in tensors]
        barrier.wait()
        for i, t in enumerate(tensors):
            t.copy_(sum(box[r][i] for r in range(self.world_size)))
        barrier.wait()


    def gather_batch(self, t):
        box, barrier = self.shared
        box[self.rank] = t.detach().clone()
        barrier.wait()
        out = torch.cat([box[r] for r in range(self.world_size)])
        barrier.wait()
        return out


def _in_threads(fns):
    import threading

    out = [None] * len(fns)

    def call(r):
        out[r] = fns[r]()

    threads = [threading.Thread(target=call, args=(r,)) for r in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


@pytest.mark.parametrize("n", [8, 7])
def test_mixup_in_a_data_parallel_step_is_the_global_batch_mixup_sliced(n):
    """Each rank's mixed rows are the 1-process batch's rows (partners from any rank, the same lam)."""
    from types import SimpleNamespace

    from noisylabels.data.mix import mixup
    from noisylabels.train.context import TrainContext

    x, y = torch.randn(n, 3), torch.randint(0, 4, (n,))
    kw = dict(alpha=4.0, num_classes=4, max_lambda=True)
    one = mixup(x, y, generator=torch.Generator().manual_seed(5), **kw)
    world, shared = 2, ({}, __import__("threading").Barrier(2))
    ranks = [_ThreadRank(r, world, shared) for r in range(world)]
    sls = [d.shard(n) for d in ranks]
    for d in ranks:
        d.in_step = True
    parts = _in_threads([lambda d=d, sl=sl: TrainContext.mixup(SimpleNamespace(dist=d), x[sl], y[sl],
                                                               generator=torch.Generator().manual_seed(5), **kw)
                         for d, sl in zip(ranks, sls)])
    torch.testing.assert_close(torch.cat([p.x for p in parts]), one.x, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([p.targets for p in parts]), one.targets, rtol=0, atol=0)
    assert torch.equal(torch.cat([p.perm for p in parts]), one.perm)
    assert any(bool((p.perm < sl.start).any() or (p.perm >= sl.stop).any()) for p, sl in zip(parts, sls))  # partners cross ranks


@pytest.mark.parametrize("n,plus", [(8, False), (7, False), (9, True)])
def test_coteaching_selection_on_several_processes_is_the_one_process_selection_sliced(n, plus):
    """Co-teaching's small-loss sets of the global batch (Han et al. 2018, Alg. 1 steps 4-5; Co-teaching+'s
    on the disagreement set): each rank keeps its rows of the 1-process selection, by hand here (the
    ceil(R |C|) smallest losses of the candidates, ties by batch position), whatever rank holds them."""
    import math

    from noisylabels.methods.coteaching import exchange_selection

    g = torch.Generator().manual_seed(n)
    l1 = torch.randint(0, 4, (n,), generator=g).float()  # many ties: position breaks them
    l2 = torch.rand(n, generator=g)
    pool = torch.rand(n, generator=g) < 0.7 if plus else None
    rate = 0.6

    def by_hand(losses):
        cand = [i for i in range(n) if pool is None or bool(pool[i])]
        k = math.ceil(rate * len(cand) - 1e-9)
        keep = torch.zeros(n, dtype=torch.bool)
        keep[sorted(cand, key=lambda i: (float(losses[i]), i))[:k]] = True
        return keep

    world, shared = 2, ({}, __import__("threading").Barrier(2))
    ranks = [_ThreadRank(r, world, shared) for r in range(world)]
    sls = [d.shard(n) for d in ranks]
    parts = _in_threads([lambda d=d, sl=sl: exchange_selection(l1[sl], l2[sl], rate, dist=d, candidates=None
                                                               if pool is None else pool[sl])
                         for d, sl in zip(ranks, sls)])
    assert torch.equal(torch.cat([p.keep1 for p in parts]), by_hand(l1))
    assert torch.equal(torch.cat([p.keep2 for p in parts]), by_hand(l2))
    for p in parts:  # the global masks (the mean's count, the epoch's sums) on every rank
        assert torch.equal(p.all1, by_hand(l1)) and torch.equal(p.all2, by_hand(l2))
        assert (p.pool is None) if pool is None else torch.equal(p.pool, pool)
    local = [exchange_selection(l1[sl], l2[sl], rate) for sl in sls]  # each slice on its own: another set
    assert not torch.equal(torch.cat([p.keep1 for p in local]), by_hand(l1)) or not torch.equal(
        torch.cat([p.keep2 for p in local]), by_hand(l2))


def test_per_sample_parameter_grads_are_weighted_by_the_slice_without_an_all_reduce():
    """SOP's u, v: a rank's gradient rows are its slice's (mean over n_r); weighted by n_r / n they are
    the global batch's (mean over n) rows, which the epoch's row merge then spreads."""
    d = _OneRankOf(rank=0, world_size=2)
    d.shard(7)  # rank 0 takes 4 of 7
    u = torch.nn.Parameter(torch.zeros(5, 1))
    u.grad = torch.tensor([[7.0], [0.0], [14.0], [0.0], [0.0]])
    d.scale_param_grads_([u])
    torch.testing.assert_close(u.grad, torch.tensor([[4.0], [0.0], [8.0], [0.0], [0.0]]))


def _merge_in_threads(tables, masks):
    import threading

    world = len(tables)
    shared = ({}, threading.Barrier(world))
    threads = [threading.Thread(target=_ThreadRank(r, world, shared).merge_rows_, args=(tables[r], masks[r]))
               for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_per_sample_rows_are_merged_from_the_rank_that_wrote_them():
    """Each rank wrote its own rows (an EMA update of its slices, as ELR's targets); a row written by
    no rank keeps the common value, even where another rank holds a stale ``inf`` / ``nan`` there."""
    n, k = 6, 3
    start = torch.arange(n * k, dtype=torch.float32).reshape(n, k)
    rows = [torch.tensor([0, 3]), torch.tensor([1, 4])]  # rows 2 and 5: no rank's slices
    tables, masks = [], []
    expected = start.clone()
    for r, idx in enumerate(rows):
        t = start.clone()
        t[idx] = 0.7 * t[idx] + 0.3 * (r + 1)  # what rank r's steps wrote
        expected[idx] = t[idx]
        stale = torch.tensor([5]) if r == 0 else torch.tensor([2])
        t[stale] = float("inf") if r == 0 else float("nan")  # garbage where nobody wrote (must not spread)
        if r == 0:
            t[2] = start[2]
        else:
            t[5] = start[5]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[idx] = True
        tables.append([t]), masks.append(mask)
    # unwritten rows 2 and 5 differ between the ranks here only to show that each rank keeps its own
    _merge_in_threads(tables, masks)
    for r in range(2):
        got = tables[r][0]
        written = torch.cat(rows)
        torch.testing.assert_close(got[written], expected[written], rtol=0, atol=0)
    assert torch.isinf(tables[0][0][5]).all() and torch.isnan(tables[1][0][2]).all()
    assert torch.equal(tables[0][0][2], start[2]) and torch.equal(tables[1][0][5], start[5])


def test_a_row_written_alike_by_every_rank_stays_exact():
    """State every rank computes identically (DivideMix's division at epoch start) merges to itself."""
    t = torch.rand(4, 2) * 1e3
    tables = [[t.clone()], [t.clone()]]
    _merge_in_threads(tables, [torch.ones(4, dtype=torch.bool)] * 2)
    assert torch.equal(tables[0][0], t) and torch.equal(tables[1][0], t)


# -- slow: real process groups ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, args, nprocs: int, tries: int = 3) -> None:
    """``mp.spawn(fn, (port, *args))`` on a free port, again on another one when that port was taken
    between :func:`_free_port` and rank 0's bind (two test sessions at once). Safe to repeat: a run
    binds its store in ``init_distributed``, before it touches its folder."""
    import torch.multiprocessing as mp

    for attempt in range(tries):
        try:
            mp.spawn(fn, args=(_free_port(), *args), nprocs=nprocs, join=True)
            return
        except mp.ProcessRaisedException as exc:
            text = str(exc)
            if attempt + 1 == tries or not ("EADDRINUSE" in text or "ddress already in use" in text):
                raise


def _taken_once(rank: int, port: int, marker: str) -> None:
    if not Path(marker).exists():  # the first attempt: as if another session had bound the port first
        Path(marker).write_text(str(port))
        raise RuntimeError(f"The server socket has failed to listen (port: {port}, name: EADDRINUSE)")


def _always_fails(rank: int, port: int) -> None:
    raise ValueError("not a port problem")


@pytest.mark.slow
def test_spawn_retries_on_a_port_taken_in_between_and_only_then(tmp_path):
    import torch.multiprocessing as mp

    marker = tmp_path / "first-port"
    _spawn(_taken_once, (str(marker),), nprocs=1)
    assert marker.is_file()
    with pytest.raises(mp.ProcessRaisedException, match="not a port problem"):
        _spawn(_always_fails, (), nprocs=1)


def _worker(rank: int, port: int, world: int, cfg: dict, kw: dict) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from noisylabels.train import fit
    from noisylabels.train.distributed import init_distributed

    try:
        fit(cfg, **kw)
    finally:
        init_distributed(torch.device("cpu")).close()


def _fit_parallel(cfg: dict, world: int = 2, **kw) -> None:
    _spawn(_worker, (world, cfg, kw), nprocs=world)


def _final(out: Path) -> dict:
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"ckpt": ckpt, "metrics": metrics}


def _flat_tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat_tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flat_tensors(v, f"{prefix}.{i}")


def max_abs_difference(a: Path, b: Path) -> float:
    """Largest difference between two runs: the model, the method's state (meta-network), its
    per-sample state (e.g. ELR's targets), the per-sample records and every metric."""
    fa, fb = _final(a), _final(b)
    diffs = [0.0]
    assert ("per_sample" in fa["ckpt"]) == ("per_sample" in fb["ckpt"])
    for key in ("model", "method", "records", "per_sample"):
        ta, tb = dict(_flat_tensors(fa["ckpt"].get(key, {}))), dict(_flat_tensors(fb["ckpt"].get(key, {})))
        assert ta.keys() == tb.keys(), key
        for k in ta:
            if ta[k].is_floating_point():
                both = torch.isnan(ta[k]) & torch.isnan(tb[k])
                assert torch.equal(torch.isnan(ta[k]), torch.isnan(tb[k])), k
                diffs.append(float((ta[k] - tb[k]).abs().masked_fill(both, 0).max()) if ta[k].numel() else 0.0)
            else:
                assert torch.equal(ta[k], tb[k]), k
    assert [sorted(r) for r in fa["metrics"]] == [sorted(r) for r in fb["metrics"]]
    for ra, rb in zip(fa["metrics"], fb["metrics"]):
        diffs += [abs(ra[k] - rb[k]) for k in ra if isinstance(ra[k], float) and "detection_" not in k]
        # ranking metrics (detection_*, and the weight's own weight_/alpha_detection_*) jump when
        # round-off swaps two near-tied scores: compared loosely
        assert all(abs(ra[k] - rb[k]) < 1e-3 for k in ra if "detection_" in k), (ra, rb)
    return max(diffs)


QUICK = {"data.train_subset": 300, "train.batch_size": 64, "train.num_threads": 1, "model.name": "mlp"}

#: method -> options: the equality table of issue 24 (ERM, MW-Net exact and delayed, L2RW, NARL, EMLC k = 1)
EQUALITY = {
    "erm": {"method.name": "erm"},
    "mwnet": {"method.name": "mwnet"},
    "mwnet-delayed": {"method.name": "mwnet", "method.delayed": True},
    "mwnet-double-backward": {"method.name": "mwnet", "method.meta_gradient": "double-backward"},
    "l2rw": {"method.name": "l2rw"},
    "narl": {"method.name": "narl", "method.meta_interval": 2},
    "emlc": {"method.name": "emlc", "method.k": 1},
    "elr": {"method.name": "elr"},  # per-sample targets: merged by the loop after each epoch's steps
    "elr-plus": {"method.name": "elr-plus"},  # two tables merged; mixup over the gathered global batch
    # small-loss selection over the gathered global batch (num_gradual 1: epoch 1 forgets tau = 0.4)
    "coteaching": {"method.name": "coteaching", "method.num_gradual": 1},
    "coteaching-plus": {"method.name": "coteaching-plus", "method.num_gradual": 1},
    # per-sample parameters u, v: each rank steps its rows, merged after each epoch's steps
    "sop": {"method.name": "sop", "method.init_std": 1e-3},
    "sop-plus": {"method.name": "sop-plus", "method.init_std": 1e-3, "data.strong_augment": "cutout"},  # global pbar
    # NT-Xent over the gathered global batch (pretrain's fit path; the kNN monitor on rank 0)
    "simclr": {"method.name": "simclr", "method.knn_k": 20,
               "data.strong_augment": {"name": "simclr", "min_scale": 0.3, "hflip": False}},
    # warm-up 1: epoch 1 co-divides and runs MixMatch (global mixup, global L_X / L_U / L_reg sums)
    "dividemix": {"method.name": "dividemix", "method.warmup_epochs": 1},
    # warm-up 1: global means over the selection, priors from the global selection (momentum 0.9, not
    # the paper's 0.9999, so that a prior from the slice shows), mixup over it
    "promix": {"method.name": "promix", "method.warmup_epochs": 1, "method.prior_momentum": 0.9},
    # label guessing by agreement fills the global batch's selection up to 60%, the most confident
    # candidates first (tau 0.5 and lr 0.5: 0-5 samples added per step here, some cut by the room)
    "promix-lga": {"method.name": "promix", "method.warmup_epochs": 1, "method.lga_start_epoch": 1,
                   "method.tau": 0.5, "method.lga_threshold": 0.6, "optim.lr": 0.5},
    # 301 samples -> 271 training, batch 30: each epoch's last batch holds one sample, so process 1's
    # slice is empty (its loss a mean over nothing; no collective may depend on the slice's size)
    "erm-empty-slice": {"method.name": "erm", "data.train_subset": 301, "train.batch_size": 30},
    "coteaching-empty-slice": {"method.name": "coteaching", "method.num_gradual": 1, "data.train_subset": 301,
                               "train.batch_size": 30},
    "l2rw-empty-slice": {"method.name": "l2rw", "data.train_subset": 301, "train.batch_size": 30},
}
TOL = 2e-5  # float32 round-off of a different summation order, over two epochs


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EQUALITY))
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, name):
    over = {**QUICK, **EQUALITY[name]}
    one, two = run_cfg(tmp_path, "one", epochs=2, **over), run_cfg(tmp_path, "two", epochs=2, **over)
    from noisylabels.train import fit

    fit(one)
    _fit_parallel(two)
    diff = max_abs_difference(tmp_path / "one", tmp_path / "two")
    print(f"EQUALITY {name} max_abs_difference {diff:.3g}")
    assert diff < TOL
    assert not any(p.name.startswith("noisylabels-rank") for p in (tmp_path / "two").iterdir())  # rank 1 wrote nothing there


#: train.sync_batchnorm: BatchNorm statistics over the global batch (``resnet8``: BatchNorm after every conv)
SYNC_BN = {"model.name": "resnet8", "train.sync_batchnorm": True, "data.train_subset": 200}
SYNC_BN_EQUALITY = {
    "erm-bn": {"method.name": "erm"},
    "mwnet-bn": {"method.name": "mwnet"},  # graph JVP through the all-reduced statistics
    "mwnet-bn-double-backward": {"method.name": "mwnet", "method.meta_gradient": "double-backward"},
    "mwnet-bn-jvp-func": {"method.name": "mwnet", "method.meta_gradient": "jvp-func"},  # torch.func.jvp
    # SimCLR with BatchNorm in the backbone and the head (ctx.add_module's, converted too), both views in
    # one forward: one epoch (3 steps, the kNN monitor once), because two are chaotic at float32 round-off:
    # one process with GlobalBatchNorm's ops vs 2 processes, or vs one process with native BatchNorm, agree to
    # 1.2e-7 for 3 steps, then one ReLU pre-activation in layer3 (3.6e-7 vs -1.2e-7) flips its gradient
    # on: 7.9e-5 in the backbone's weights (the head, downstream, stays at 1e-7), 1.2e-4 after epoch 2,
    # and one kNN test vote (2.8e-3). The same run with its initial weights perturbed by 1e-7 (6 seeds)
    # ends epoch 2 at 1.8e-6, 2.4e-5, 2.8e-3, 2.8e-3, 5.6e-3, 5e-2 (lr 0.01: 1.9e-5 to 2.8e-3), its
    # weights at 4.5e-7 until one such flip (in epoch 1 for 1 seed of 6, in epoch 2 for 4)
    "simclr-bn": {"method.name": "simclr", "method.head_bn": True, "method.knn_k": 20, "train.epochs": 1,
                  "data.strong_augment": {"name": "simclr", "min_scale": 0.3, "hflip": False}},
}
#: against one process that runs GlobalBatchNorm's own ops (a world of one, ``_fit_one_global``): these
#: methods amplify the round-off between BatchNorm's fused kernel and those ops (1 process, native vs
#: GlobalBatchNorm: EMLC 2.0e-5, Co-teaching 8.1e-3 through its small-loss selection, L2RW 4.7e-4 through
#: its clamp-and-normalise), not the processes'
SYNC_BN_EQUALITY_OWN_OPS = {
    "l2rw-bn": {"method.name": "l2rw"},
    "emlc-bn": {"method.name": "emlc", "method.k": 1},  # the teacher (ctx.build_model) converted too
    "coteaching-bn": {"method.name": "coteaching", "method.num_gradual": 1},  # the peer (add_network) too
}


def _worker_one_global(rank: int, port: int, cfg: dict) -> None:
    """One process whose BatchNorm layers are GlobalBatchNorm over a gloo group of one."""
    import torch.distributed as dist

    import noisylabels.train.loop as loop
    from noisylabels.train import fit
    from noisylabels.train.distributed import Distributed

    class _WorldOfOne(Distributed):
        @property
        def active(self):
            return True

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    loop.init_distributed = lambda device: _WorldOfOne(rank=0, world_size=1)
    try:
        fit(cfg)
    finally:
        dist.destroy_process_group()


def _fit_one_global(cfg: dict) -> None:
    _spawn(_worker_one_global, (cfg,), nprocs=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SYNC_BN_EQUALITY_OWN_OPS))
def test_sync_batchnorm_two_processes_equal_one_with_the_same_ops(tmp_path, name):
    _sync_bn_equality(tmp_path, f"{name} (one process with GlobalBatchNorm's ops)", SYNC_BN_EQUALITY_OWN_OPS[name],
                      one_process=_fit_one_global)
# not a row: L2RW's clamp-and-normalise amplifies round-off (2 processes vs 1: 4.7e-4 after two epochs,
# and as much between BatchNorm's fused kernel and GlobalBatchNorm's ops on ONE process)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SYNC_BN_EQUALITY))
def test_sync_batchnorm_two_processes_equal_one(tmp_path, name):
    from noisylabels.train import fit

    _sync_bn_equality(tmp_path, name, SYNC_BN_EQUALITY[name], one_process=fit)


def _sync_bn_equality(tmp_path, label: str, row: dict, *, one_process) -> None:
    """A row's 2-epoch run with ``train.sync_batchnorm`` on 2 processes against ``one_process``
    (the running buffers included: they are model state)."""
    over = {**QUICK, **SYNC_BN, **row}
    one, two = run_cfg(tmp_path, "one", epochs=2, **over), run_cfg(tmp_path, "two", epochs=2, **over)
    one_process(one)
    _fit_parallel(two)
    diff = max_abs_difference(tmp_path / "one", tmp_path / "two")
    print(f"EQUALITY {label} max_abs_difference {diff:.3g}")
    assert diff < TOL


@pytest.mark.slow
def test_a_resumed_sync_batchnorm_run_equals_an_uninterrupted_one(tmp_path):
    """The running buffers (the global statistics') go through rank 0's checkpoint under BatchNorm's keys."""
    over = {**QUICK, **SYNC_BN, "method.name": "mwnet"}
    full, part = run_cfg(tmp_path, "full", epochs=2, **over), run_cfg(tmp_path, "part", epochs=2, **over)
    _fit_parallel(full)
    _fit_parallel(part, stop_after=1)
    _fit_parallel(part, resume=True)
    assert max_abs_difference(tmp_path / "full", tmp_path / "part") == 0.0
    keys = set(_final(tmp_path / "full")["ckpt"]["model"])
    assert {"bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"} <= keys


@pytest.mark.slow
def test_without_sync_batchnorm_two_processes_differ_from_one(tmp_path):
    """The control: per-process BatchNorm statistics (the default) give another run (so the test above can fail)."""
    over = {**QUICK, **SYNC_BN, "train.sync_batchnorm": False, "method.name": "erm"}
    one, two = run_cfg(tmp_path, "one", epochs=2, **over), run_cfg(tmp_path, "two", epochs=2, **over)
    from noisylabels.train import fit

    fit(one)
    _fit_parallel(two)
    diff = max_abs_difference(tmp_path / "one", tmp_path / "two")
    print(f"EQUALITY erm-bn without sync max_abs_difference {diff:.3g}")
    assert diff > 100 * TOL


@pytest.mark.slow
def test_a_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path):
    over = {**QUICK, "method.name": "mwnet"}
    full, part = run_cfg(tmp_path, "full", epochs=3, **over), run_cfg(tmp_path, "part", epochs=3, **over)
    _fit_parallel(full)
    _fit_parallel(part, stop_after=1)
    assert len(_final(tmp_path / "part")["metrics"]) == 1
    _fit_parallel(part, resume=True)
    assert max_abs_difference(tmp_path / "full", tmp_path / "part") == 0.0
    assert len(_final(tmp_path / "part")["ckpt"]["rank_rng"]) == 2


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


@pytest.mark.slow
def test_killing_one_rank_then_resuming_equals_an_uninterrupted_run(tmp_path):
    """``noisylabels train --nproc 2``; SIGKILL rank 1 after the first checkpoint; ``--resume``."""
    args = ["--method", "erm", "--epochs", "4", "--set", "data.train_subset=300", "--set", "train.batch_size=64",
            "--set", "train.num_threads=1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "noisylabels", "train"]
    subprocess.run(cli + ["--nproc", "2", "--out", str(tmp_path / "full"), *args], check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen(cli + ["--nproc", "2", "--out", str(tmp_path / "cut"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ckpt = tmp_path / "cut" / "checkpoint.pt"
        deadline = time.monotonic() + 120
        while not ckpt.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ckpt.is_file(), "no checkpoint before the deadline"
        launcher = _children(proc.pid)  # torchrun's agent, then its workers
        workers = [w for a in launcher for w in _children(a)] or launcher
        assert len(workers) >= 2
        os.kill(sorted(workers)[-1], 9)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = len(_final(tmp_path / "cut")["metrics"])
    assert 1 <= done < 4
    res = subprocess.run(cli + ["--nproc", "2", "--out", str(tmp_path / "cut"), "--resume", *args], env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert max_abs_difference(tmp_path / "full", tmp_path / "cut") == 0.0


@pytest.mark.slow
def test_another_world_size_is_refused_unless_allowed(tmp_path):
    over = {**QUICK, "method.name": "erm"}
    cfg = run_cfg(tmp_path, "run", epochs=2, **over)
    from noisylabels.train import fit

    fit(cfg, stop_after=1)
    with pytest.raises(Exception, match="written by 1"):  # a UserError on every rank (the spawn error quotes it)
        _fit_parallel(cfg, resume=True)
    _fit_parallel(cfg, resume=True, allow_other_world_size=True)
    assert len(_final(tmp_path / "run")["metrics"]) == 2


@pytest.mark.slow
def test_odd_global_batch_unsynchronised_methods_and_batchnorm_meta_methods_are_refused(tmp_path):
    with pytest.raises(Exception, match="divisible"):
        _fit_parallel(run_cfg(tmp_path, "odd", epochs=1, **{**QUICK, "train.batch_size": 63}))
    with pytest.raises(Exception, match="BatchNorm"):
        _fit_parallel(run_cfg(tmp_path, "bn", epochs=1, **{**QUICK, "method.name": "mwnet", "model.name": "resnet8"}))
    with pytest.raises(Exception, match="multi-step look-ahead"):
        _fit_parallel(run_cfg(tmp_path, "emlc3", epochs=1, **{**QUICK, "method.name": "emlc", "method.k": 3}))



@pytest.mark.parametrize("flags,message", [
    (["--nproc", "2", "--batch-size", "63"], "must be divisible by --nproc 2"),
    (["--nproc", "2", "--folds", "3"], "--folds on several processes"),
    (["--nproc", "0"], "--nproc must be >= 1"),
])
def test_nproc_refusals_come_before_any_process_starts(tmp_path, capsys, flags, message):
    from noisylabels.cli import main

    assert main(["train", "--out", str(tmp_path / "run"), "--epochs", "1", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
