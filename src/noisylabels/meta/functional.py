"""Functional forwards of a model at given parameters (virtual, meta and JVP forwards).

The bilevel methods evaluate the network at parameters other than its own (``theta_hat``) and
push tangents through it (forward-mode AD). :func:`functional_logits` does this with
:func:`torch.func.functional_call`.

BatchNorm: these forwards use the model's current mode. In train mode BatchNorm normalises with
the statistics *of the batch being forwarded* (as the real step does) and updates running
statistics in place; here the update hits **clones** of the buffers made inside the call, so the
model's ``running_mean`` / ``running_var`` / ``num_batches_tracked`` are never changed by a
virtual, meta or JVP forward (torch.func also refuses in-place updates of captured buffers, which
is a second reason for the clones).

Data-parallel runs: every process draws the whole meta batch (it is not split), so a layer that
computes batch statistics over every process's slice (``train.sync_batchnorm``) need not do so on
it: the engine forwards the meta batch inside :func:`replicated_batch`, which such a layer reads
(:func:`in_replicated_batch`) to use its own statistics without collectives. (Combining N equal
batches would give the same statistics, and the same gradients through the ``n_r / n``-weighted
all-reduce, at the price of the collectives: with the block removed, MW-Net stayed equal to one process.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

__all__ = ["params_and_buffers", "functional_logits", "replicated_batch", "in_replicated_batch"]

_REPLICATED = [0]


@contextmanager
def replicated_batch() -> Iterator[None]:
    """Inside the block the batches forwarded are the same on every process of a data-parallel run
    (the meta batch): batch statistics are this process's own (:func:`in_replicated_batch`)."""
    _REPLICATED[0] += 1
    try:
        yield
    finally:
        _REPLICATED[0] -= 1


def in_replicated_batch() -> bool:
    """Whether a :func:`replicated_batch` block is open."""
    return _REPLICATED[0] > 0


def params_and_buffers(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(name -> parameter, name -> buffer)`` of ``model`` (the module's own tensors, not copies)."""
    return dict(model.named_parameters()), dict(model.named_buffers())


def functional_logits(model: torch.nn.Module, params: Mapping[str, torch.Tensor],
                      buffers: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``f(x; params)``: the model's forward with ``params`` in place of its parameters.

    Parameters
    ----------
    model:
        The network (its mode, train or eval, decides how BatchNorm and dropout behave).
    params:
        ``name -> tensor`` for every parameter of ``model`` (e.g. ``theta_hat``).
    buffers:
        ``name -> buffer`` (from :func:`params_and_buffers`); the forward runs on clones, so
        in-place BatchNorm running-statistic updates never reach the model.
    x:
        Input batch.

    Returns
    -------
    torch.Tensor
        The logits.
    """
    bufs = {k: b.clone() for k, b in buffers.items()}
    return torch.func.functional_call(model, (dict(params), bufs), (x,))
