"""NARL's transfer (T-*, Ding et al. Sec. 3.3.2, Algorithms 1 and 2): adjuster files and ``t-narl``.

Meta-training (Algorithm 1 in a multi-task setting, :func:`noisylabels.train.transfer.meta_train_adjuster`,
``noisylabels narl-train``) trains one A-* adjuster (:class:`~noisylabels.methods.narl.NARL`) on
several noisy tasks -- the paper's grid is :func:`default_tasks` -- and keeps snapshots of it after
the epochs :func:`snapshot_epochs` (``T/3``, ``2T/3``, ``T``); :func:`save_adjuster` writes them into
one file. Meta-test (Algorithm 2, :class:`TransferNARL`, ``--method t-narl
--set method.adjuster=FILE``) trains a new classifier on the robust loss with the frozen adjuster
(:func:`load_adjuster`), snapshot ``k`` in the ``k``-th part of the run, without a meta set. The
margin, the families, the adjuster and the loss layer are A-*'s (:mod:`noisylabels.methods.narl`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..eval.plots import Curve
from ..io import atomic_torch_save, load_torch_file
from ..losses import LOG_1E_4
from .base import Method, register_method
from .context import MethodContext
from .narl import FAMILIES, NARL, Adjuster, RobustLoss, adjuster_curves, margin

__all__ = ["ADJUSTER_FORMAT", "save_adjuster", "load_adjuster", "TransferNARL", "snapshot_epochs", "default_tasks",
           "ASYMMETRIC_MAPS"]

#: the class-dependent ("asymmetric") map used for each dataset's default tasks
ASYMMETRIC_MAPS = {"cifar10": "cifar10-asym", "mnist": "mnist-asym", "fashion-mnist": "fashion-asym",
                   "cifar100": "cifar100-superclass"}


def default_tasks(dataset: str) -> list[str]:
    """The paper's task grid for a dataset (``TYPE:RATE``): symmetric, the dataset's class-dependent
    map and instance noise at 20/40/60% (the class maps only below 50%, where they keep the true
    class most likely)."""
    asym = ASYMMETRIC_MAPS.get(dataset, "pair")
    return ([f"symmetric:{r}" for r in (0.2, 0.4, 0.6)] + [f"{asym}:{r}" for r in (0.2, 0.4)]
            + [f"instance:{r}" for r in (0.2, 0.4, 0.6)])


def snapshot_epochs(epochs: int, count: int = 3) -> list[int]:
    """Epoch counts after which a snapshot is taken: ``round(k T / count)``, k = 1..count (distinct;
    the paper's ``theta^(T/3)``, ``theta^(2T/3)``, ``theta^(T)`` for ``count = 3``)."""
    return sorted({max(1, round(k * epochs / count)) for k in range(1, count + 1)})


#: the ``format`` field of an adjuster file
ADJUSTER_FORMAT = "noisylabels-narl-adjuster"


def save_adjuster(path: str | Path, *, family: str, adjuster: Adjuster, snapshots: Sequence[Mapping[str, Tensor]],
                  snapshot_epochs: Sequence[int], tasks: Sequence[str] = ()) -> None:
    """Write an adjuster file: tensors and plain containers only (``torch.load(weights_only=True)``).

    ``snapshots`` are ``state_dict``s of the adjuster, e.g. at T/3, 2T/3 and T of meta-training
    (Sec. 3.3.2: the k-th is used in the k-th part of a transfer run).
    """
    state = {
        "format": ADJUSTER_FORMAT, "version": 1, "family": str(family), "hidden": int(adjuster.fc1.out_features),
        "num_hparams": int(adjuster.fc2.out_features), "hparams": list(FAMILIES[str(family).lower()].hparams),
        "snapshots": [{k: v.detach().cpu().clone() for k, v in s.items()} for s in snapshots],
        "snapshot_epochs": [int(e) for e in snapshot_epochs], "tasks": [str(t) for t in tasks],
    }
    atomic_torch_save(state, path)


def load_adjuster(path: str | Path) -> tuple[dict[str, Any], list[Adjuster]]:
    """Read and check an adjuster file; returns its metadata and one :class:`Adjuster` per snapshot."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"adjuster file not found: {p}")
    state = load_torch_file(p, what="adjuster file", expected="adjuster file (write one with `noisylabels narl-train`)")
    if not isinstance(state, dict) or state.get("format") != ADJUSTER_FORMAT:
        raise UserError(f"{p} is not a noisylabels NARL adjuster file (write one with `noisylabels narl-train`)")
    fam = FAMILIES.get(str(state.get("family")).lower())
    if fam is None:
        raise UserError(f"{p}: unknown loss family {state.get('family')!r} (valid: {', '.join(FAMILIES)}); write the "
                        "file with `noisylabels narl-train`")
    n = int(state.get("num_hparams", -1))
    if n != len(fam.hparams) or not state.get("snapshots"):
        raise UserError(f"{p}: {n} hyperparameters for the {state['family']} family (expects {len(fam.hparams)}), "
                        f"{len(state.get('snapshots') or [])} snapshots")
    nets = []
    for k, sd in enumerate(state["snapshots"]):
        net = Adjuster(n, hidden=int(state["hidden"]), scale=fam.scale, low=fam.low, high=fam.high)
        try:
            net.load_state_dict(sd)
        except (RuntimeError, KeyError) as exc:
            raise UserError(f"{p}: snapshot {k} does not fit the adjuster ({str(exc).splitlines()[0][:120]})") from None
        nets.append(net.requires_grad_(False).eval())
    return state, nets


@register_method("t-narl", help="T-*: a classifier trained with a frozen, transferred NARL-Adjuster (no meta set)")
class TransferNARL(Method):
    """Algorithm 2 (meta-test): the new classifier trains on ``L_robust(.; h(m; theta^(k)))`` (Eq. 13)
    with the adjuster frozen and no meta data; snapshot ``k`` of the file is used in the ``k``-th
    equal part of the run (with the usual three snapshots: T/3, 2T/3 and T of meta-training in the
    first, second and last third, the paper's "dynamically adopt specific ones along different range
    of classifier training stage").

    Parameters
    ----------
    adjuster:
        Path of the adjuster file (``noisylabels narl-train --adjuster-out FILE``).
    loss:
        The family; ``None``: the file's (a different one is refused).
    rce_A:
        As :class:`NARL`.
    """

    own_loss = "t-narl"
    detection = NARL.detection  # minus the margin, as A-*
    total_epochs_matter = True

    def __init__(self, *, adjuster: str | None = None, loss: str | None = None, rce_A: float = LOG_1E_4) -> None:
        super().__init__()
        if not adjuster:
            raise UserError("t-narl needs an adjuster file: --set method.adjuster=FILE (from `noisylabels narl-train`)")
        self.info, self.snapshots = load_adjuster(adjuster)
        if loss is not None and str(loss).lower() != self.info["family"]:
            raise UserError(f"t-narl: {adjuster} holds a {self.info['family']} adjuster, not {loss}")
        self.robust = RobustLoss(self.info["family"], rce_A=rce_A)
        self.records = self.robust.records
        self.active = 0

    @classmethod
    def loss_name(cls, options: Mapping[str, Any]) -> str:
        family = options.get("loss")
        if family is None and isinstance(options.get("adjuster"), str) and options["adjuster"]:
            try:
                family = load_adjuster(options["adjuster"])[0]["family"]
            except UserError:
                family = None  # the method itself reports the bad file
        return "t-" + str(family or "narl").lower()

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        for net in self.snapshots:
            net.to(ctx.device)

    def snapshot_for_epoch(self, epoch: int, epochs: int) -> int:
        """The snapshot used in ``epoch``: equal parts of the run, one per snapshot."""
        return min(len(self.snapshots) - 1, epoch * len(self.snapshots) // max(1, epochs))

    def on_epoch_start(self, ctx: MethodContext) -> None:
        self.active = self.snapshot_for_epoch(ctx.epoch, ctx.epochs)

    def per_sample_loss(self, logits: Tensor, targets: Tensor, indices: Tensor) -> Tensor:
        m = margin(logits, targets)
        with torch.no_grad():
            lam = self.snapshots[self.active](m)
        self.record(indices, margin=m, **{n: lam[:, k] for k, n in enumerate(self.robust.family.hparams)})
        return self.robust.losses(logits, targets, lam)

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        return {"adjuster_snapshot": self.active}

    def curves(self, ctx: MethodContext) -> list[Curve]:
        return adjuster_curves(self.snapshots[-1], self.robust.family, f"T-{self.info['family'].upper()} (last snapshot)")
