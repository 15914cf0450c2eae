"""Forward loss correction with the true or an estimated transition matrix (Patrini et al., CVPR 2017)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..losses import estimate_transition
from ..losses.functional import cross_entropy, forward_loss
from .base import Method, register_method
from .context import MethodContext

__all__ = ["ForwardCorrection"]


@register_method("forward", help="forward loss correction with the true T or an estimated T-hat (Patrini et al.)")
class ForwardCorrection(Method):
    """Forward correction: cross entropy of the noisy label against ``T^T p`` (Patrini et al., Thm. 2).

    ``transition='true'`` uses the matrix the noise simulator drew the labels from ("Forward T"
    in the GCE paper's Table 1); without simulated noise (``noise.type: none``: the labels are
    the data's own, e.g. the user's) that matrix is the identity and the correction would be
    plain CE, so ``true`` is refused there and ``auto`` (the default) estimates T-hat instead:
    ``auto`` = ``true`` with simulated noise, ``estimate`` without. ``transition='estimate'`` ("Forward T-hat") runs two stages
    inside one run, as the paper does with two trainings: plain CE for ``ce_epochs``, then
    T-hat from the anchor-point estimator (Eqs. 13-14, 97th-percentile anchors) on the training
    split, then -- with ``reinit=True`` -- a fresh network, optimiser state and learning-rate
    schedule trained with the corrected loss for the remaining epochs. Model selection (on
    validation) only considers the corrected stage.

    The method defines its own loss (``own_loss``: forward-corrected CE); a ``loss`` config
    section other than ``auto`` is refused.

    Parameters
    ----------
    transition:
        ``'auto'`` (default), ``'true'`` or ``'estimate'``.
    ce_epochs:
        Length of the CE stage for ``'estimate'`` (``None``: half the run).
    percentile:
        Anchor percentile (``None``: plain argmax).
    reinit:
        Retrain from scratch after the estimate (Patrini et al.) instead of fine-tuning.
    """

    own_loss = "forward"
    total_epochs_matter = True

    def __init__(self, *, transition: str = "auto", ce_epochs: int | None = None, percentile: float | None = 97.0,
                 reinit: bool = True) -> None:
        super().__init__()
        if transition not in ("auto", "true", "estimate"):
            raise UserError(f"forward: transition must be 'auto', 'true' or 'estimate', got {transition!r}")
        self.mode = transition
        self._ce_epochs = ce_epochs
        self.percentile = percentile
        self.reinit = bool(reinit)
        self.T: torch.Tensor | None = None

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        simulated = str(ctx.cfg["noise"]["type"]).lower() != "none"
        if self.mode == "true" and not simulated:
            raise UserError("forward: method.transition=true uses the noise simulator's T, but there is no simulated "
                            "noise (noise.type none): T is the identity and the correction plain CE; use "
                            "method.transition=estimate (T-hat from a CE stage, Patrini et al.) or the default auto")
        if self.mode == "auto":
            self.mode = "true" if simulated else "estimate"
        epochs = ctx.epochs
        self.ce_epochs = (self._ce_epochs if self._ce_epochs is not None else epochs // 2) if self.mode == "estimate" else 0
        if self.mode == "estimate" and not 0 < self.ce_epochs < epochs:
            raise UserError(f"forward: ce_epochs must lie in [1, {epochs - 1}] for a {epochs}-epoch run")
        if self.mode == "true":
            self.T = torch.as_tensor(np.asarray(ctx.data.transition), dtype=torch.float32, device=ctx.device)

    def on_epoch_start(self, ctx: MethodContext) -> None:
        if self.mode == "estimate" and ctx.epoch == self.ce_epochs and self.T is None:
            probs = ctx.predict("train").double()
            self.T = estimate_transition(probs, percentile=self.percentile).float().to(ctx.device)
            if self.reinit:
                ctx.reinit_model()
                ctx.restart_schedule(ctx.epoch)
            ctx.reset_model_selection()

    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.T is None:
            return cross_entropy(logits, targets, reduction="none")
        return forward_loss(logits, targets, T=self.T.to(logits.dtype), reduction="none")

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        if self.T is None or ctx.epoch != self.ce_epochs or not getattr(ctx.data, "has_ground_truth", True):
            return {}
        true = torch.as_tensor(np.asarray(ctx.data.transition), dtype=torch.float32)
        return {"transition_error_l1": float((self.T.cpu() - true).abs().sum(1).mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"T": None if self.T is None else self.T.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("T") is not None:
            self.T = state["T"].to(self.ctx.device if self.ctx is not None else "cpu")
