"""Prediction by several networks at once (two-network methods evaluate their average).

DivideMix (Li et al. 2020, Sec. 3.1 and its test code) and ELR+ (Liu et al. 2020, Sec. 4) predict
with both networks; :class:`Ensemble` is that prediction as one module, so the training loop
validates, selects (``best_model.pt``) and scores with it like with any model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError

__all__ = ["Ensemble", "ENSEMBLE_COMBINE"]

#: how an :class:`Ensemble` combines its members
ENSEMBLE_COMBINE = ("probs", "logits")


class Ensemble(nn.Module):
    """The average prediction of several networks.

    Parameters
    ----------
    members:
        The networks (each maps ``x`` to ``(B, K)`` logits); registered as submodules, so the
        ensemble's ``state_dict`` holds all of them (``members.0.*``, ``members.1.*``, ...).
    combine:
        ``'probs'`` (default): the output is ``log(mean_m softmax(z_m))``, so its softmax is the mean
        of the members' probabilities; ``'logits'``: the mean of the logits (DivideMix's test code
        sums the logits; the arg-max is the same).
    """

    def __init__(self, members: Sequence[nn.Module], *, combine: str = "probs") -> None:
        super().__init__()
        if not members:
            raise UserError("an ensemble needs at least one member")
        if combine not in ENSEMBLE_COMBINE:
            raise UserError(f"ensemble combine must be one of {', '.join(ENSEMBLE_COMBINE)}, got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: Tensor) -> Tensor:
        outs = [m(x).float() for m in self.members]
        if self.combine == "logits":
            return torch.stack(outs).mean(0)
        logp = torch.stack([torch.log_softmax(z, dim=1) for z in outs])
        return torch.logsumexp(logp, dim=0) - torch.log(torch.tensor(float(len(outs)), device=logp.device))
