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
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["params_and_buffers", "functional_logits"]


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
