r"""BatchNorm over the global batch of a data-parallel run (``train.sync_batchnorm``).

In a data-parallel run (:mod:`.distributed`) each process forwards its slice of the global batch.
A plain BatchNorm layer normalises with its slice's statistics, so N processes differ from one
process on a model with BatchNorm. With ``train.sync_batchnorm: true`` every BatchNorm layer of
the run's networks becomes a :class:`GlobalBatchNorm` (the module's class is swapped in place:
same parameters, buffers, state-dict keys and hooks), whose training-mode forward inside a
training step normalises with the statistics of the *global* batch (Ioffe & Szegedy 2015,
Algorithm 1, over the union of every process's slice) and updates the running buffers with them,
as the 1-process run does.

Why not ``torch.nn.SyncBatchNorm``: torch 2.13's refuses CPU tensors (gloo), and its
``autograd.Function`` has neither a forward-mode rule nor a second derivative, which the meta
engine needs (graph JVP, ``torch.func.jvp``, double backward).

The statistics, per channel ``c``, with ``n_r`` values on process ``r`` (batch times spatial
positions) and ``N = sum_r n_r``:

* each process: ``m_r = mean(x_r)``, ``q_r = sum (x_r - m_r)^2`` (exact two-pass, float32);
* ``mean = sum_r n_r m_r / N`` (one all-reduce);
* ``var = (sum_r q_r + n_r (m_r - mean)^2) / N`` (one all-reduce; Chan et al. 1979's pairwise
  combination, no ``E[x^2] - E[x]^2`` cancellation), ``y = (x - mean) / sqrt(var + eps) * gamma + beta``;
* running buffers: ``mean`` and the unbiased ``var * N / (N - 1)``, the momentum as BatchNorm's.

Every operation is an ordinary differentiable torch op except the all-reduce,
:class:`~.distributed.GlobalSum` (also ``Distributed.batch_sum``'s): its forward sums over processes; its backward is the all-reduce of ``(n_r / n) * grad`` divided by
``n_r / n`` (``1 / N`` for both after ``Distributed.replicate_loss``; so :meth:`~.distributed.Distributed.reduce_grads`' weighting gives the global batch's
gradient; written with the autograd-aware all-reduce, so a second derivative works: the engine's
double-backward path); its forward-mode rule is the all-reduce of the tangent (the JVP of a global
sum is the sum of the local JVPs), for :func:`torch.func.jvp` (``jvp`` staticmethod) and for the
graph walk (:func:`noisylabels.meta.register_jvp_rule`, with rules for the few elementwise nodes
this forward records that the walk lacked).

When the layer synchronises: in training mode, inside a training step (``Distributed.in_step``),
outside :func:`noisylabels.meta.replicated_batch` (the meta engine's forwards of the meta batch,
which every process draws whole: its own statistics are the global ones, no collectives needed).
Eval mode, a single process, forwards outside a step: BatchNorm's own forward. Every process runs
the same forwards in a step, so the all-reduces pair up.

Accuracy: equal to one process to float32 round-off (the 2-process tests in
``tests/train/test_distributed.py``); BatchNorm's fused kernel and these ops differ by round-off
only, which a method that thresholds and renormalises (L2RW) amplifies as it does any round-off;
so does a ReLU whose pre-activation lies within round-off of 0 (its gradient switches on or off:
SimCLR with ``head_bn``, one such unit in a ResNet-8 moves the weights by 1e-4 after 4 steps, as a
1e-7 perturbation of the initial weights does; the ``simclr-bn`` row's comment).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..meta.functional import in_replicated_batch
from ..meta.graph_jvp import register_jvp_rule
from . import distributed as _dist
from .distributed import Distributed, global_sum

__all__ = ["GlobalBatchNorm", "convert_global_batchnorm", "has_batchnorm", "sync_batchnorm"]

Tensor = torch.Tensor
_BN = nn.modules.batchnorm._BatchNorm


@register_jvp_rule("RsqrtBackward0")
def _rsqrt_rule(node: Any, tin: Any) -> Tensor | None:
    """``d x^(-1/2) = -1/2 x^(-3/2) dx = -1/2 y^3 dx``."""
    if tin[0] is None:
        return None
    y = node._saved_result
    return tin[0] * (y * y * y) * -0.5


@register_jvp_rule("MulBackward1")
def _mul_scalar_rule(node: Any, tin: Any) -> Tensor | None:
    """``d(a * c) = da * c`` (``c`` a Python number)."""
    return None if tin[0] is None else tin[0] * node._saved_other


@register_jvp_rule("AddBackward1", "SubBackward1")
def _add_scalar_rule(node: Any, tin: Any) -> Tensor | None:
    """``d(a + c) = da`` (``c`` a Python number; ``c - a`` is ``RsubBackward1``, not this)."""
    return tin[0]


@register_jvp_rule("ExpandBackward0")
def _expand_rule(node: Any, tin: Any) -> Tensor | None:
    if tin[0] is None:
        return None
    return tin[0].expand(torch.Size(node._input_metadata[0].shape))


class GlobalBatchNorm(_BN):
    """A BatchNorm layer whose training statistics are the global batch's (module docstring).

    Not built directly: :func:`convert_global_batchnorm` swaps the class of a model's
    ``BatchNorm1d/2d/3d`` layers to the matching subclass, keeping everything else. The run's
    :class:`~.distributed.Distributed` is held by a weak reference (not in the state dict; a
    ``copy.deepcopy`` of the model shares it, so its ``in_step`` stays the loop's).
    """

    _sync_ref: Any = None

    @property
    def sync(self) -> Distributed | None:
        return None if self._sync_ref is None else self._sync_ref()

    def forward(self, input: Tensor) -> Tensor:  # type: ignore[override]
        d = self.sync
        if not (self.training and d is not None and d.active and d.in_step) or in_replicated_batch():
            return super().forward(input)
        self._check_input_dim(input)
        return _global_batch_norm(self, input, d)


def _global_batch_norm(bn: _BN, x: Tensor, d: Distributed) -> Tensor:
    c = x.shape[1]
    dims = [0, *range(2, x.ndim)]
    shape = (1, c) + (1,) * (x.ndim - 2)
    xs = x if x.dtype in (torch.float32, torch.float64) else x.float()  # statistics in float32 at least
    n_r = xs.numel() // max(c, 1)
    # the global count (no gradient; a tensor: no host synchronisation)
    n = _dist._all_reduce_sum(torch.full((), float(n_r), dtype=xs.dtype, device=x.device))
    mean_r = xs.mean(dims)
    xc = xs - mean_r.view(shape)
    sq_r = (xc * xc).sum(dims)
    mean = global_sum(mean_r * (n_r / n), d)
    dev = mean_r - mean
    var = global_sum(sq_r + dev * dev * float(n_r), d) / n
    invstd = (var + bn.eps).rsqrt()
    if bn.training and bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)  # type: ignore[union-attr, operator]
            if bn.momentum is None:  # cumulative moving average, as BatchNorm
                f = 1.0 / float(bn.num_batches_tracked)  # type: ignore[arg-type]
            else:
                f = float(bn.momentum)
            bn.running_mean.mul_(1 - f).add_(mean.detach().to(bn.running_mean.dtype), alpha=f)
            unbiased = var.detach() * (n / (n - 1).clamp_min(1))
            bn.running_var.mul_(1 - f).add_(unbiased.to(bn.running_var.dtype), alpha=f)
    scale = invstd if bn.weight is None else invstd * bn.weight
    y = (xs - mean.view(shape)) * scale.view(shape)
    if bn.bias is not None:
        y = y + bn.bias.view(shape)
    return y if y.dtype == x.dtype else y.to(x.dtype)


_SUBCLASSES: dict[type, type] = {}


def _global_class(cls: type) -> type:
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Global{cls.__name__}", (GlobalBatchNorm, cls), {"__module__": __name__})
    return _SUBCLASSES[cls]


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` holds a BatchNorm layer (any ``_BatchNorm``)."""
    return any(isinstance(m, _BN) for m in module.modules())


def convert_global_batchnorm(module: nn.Module, dist: Distributed) -> int:
    """Make every BatchNorm layer of ``module`` a :class:`GlobalBatchNorm` over ``dist``'s processes.

    In place (the class is swapped: parameters, buffers, state-dict keys, optimisers holding the
    parameters and hooks stay); ``nn.BatchNorm1d/2d/3d`` and their subclasses keep their
    ``isinstance``. Returns the number of BatchNorm layers (already converted ones count too).
    """
    n = 0
    for m in module.modules():
        if isinstance(m, _BN):
            if not isinstance(m, GlobalBatchNorm):
                m.__class__ = _global_class(type(m))
            m._sync_ref = weakref.ref(dist)  # type: ignore[union-attr]
            n += 1
    return n


def sync_batchnorm(cfg: Mapping[str, Any], dist: Distributed, module: nn.Module) -> nn.Module:
    """``module`` with :func:`convert_global_batchnorm` applied when the run asks for it
    (``train.sync_batchnorm``) and has several processes; else unchanged (one process: BatchNorm's
    own statistics are already the global batch's)."""
    if cfg["train"].get("sync_batchnorm") and dist.active:
        convert_global_batchnorm(module, dist)
    return module
