"""Co-teaching (Han et al., NeurIPS 2018) and Co-teaching+ (Yu et al., ICML 2019): two networks that
train each other on the small-loss samples of every mini-batch.

The pure parts are functions: :func:`coteaching_remember_rate` (R(T)), :func:`coteaching_plus_remember_rate`
(lambda(e)), :func:`small_loss_selection` (the argmin over sets of at least R |D| samples) and
:func:`disagreement` (Co-teaching+'s prediction disagreement set). The methods are two small
:class:`~noisylabels.methods.base.Method` s on the shared loop: the second network is the base's
``networks = ("peer",)`` (its own optimiser, schedule, checkpoint and exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import UserError
from ..models import Ensemble
from .base import Method, register_method
from .context import DistributedView, MethodContext, StepOutput, batch_total, data_parallel, is_noisy_train
from .records import Record

__all__ = ["CoTeaching", "CoTeachingPlus", "coteaching_remember_rate", "coteaching_plus_remember_rate",
           "small_loss_selection", "disagreement", "exchange_selection", "Selection", "FORGET_RATE_WORDS", "SCHEDULES",
           "PREDICTIONS"]

#: words ``forget_rate`` takes besides a number
FORGET_RATE_WORDS = ("noise-rate", "estimate")
#: ``schedule``: the papers' rate and count, or the official code's
SCHEDULES = ("paper", "code")
#: ``predict``: what the loop validates, selects and scores with
PREDICTIONS = ("first", "ensemble")


def coteaching_remember_rate(epoch: int, *, tau: float, num_gradual: int = 10, schedule: str = "paper") -> float:
    """R(T), the fraction of each mini-batch a network keeps (Co-teaching, Algorithm 1, step 8).

    ``R(T) = 1 - min(T / T_k * tau, tau)``. Algorithm 1 trains epoch ``T`` (1-based) with the R it
    computed at the end of epoch ``T - 1``, starting from R = 1; so the loop's 0-based ``epoch`` e
    uses ``R(e)``: all samples at e = 0, ``1 - tau`` from e = T_k on.

    ``schedule='code'``: the official code's ``rate_schedule`` (``np.linspace(0, tau, T_k)`` over its
    epochs 0..T_k-1, then tau; its first training epoch is its epoch 1): forget rate
    ``min((e + 1) tau / (T_k - 1), tau)``, reaching tau one epoch before T_k and never keeping all.

    Parameters
    ----------
    epoch:
        The 0-based epoch about to run.
    tau:
        The forget rate in [0, 1] (the papers' tau, set to the noise rate).
    num_gradual:
        T_k >= 1, the epochs over which the forget rate ramps up (10 in the paper).
    schedule:
        ``'paper'`` or ``'code'``.
    """
    if epoch < 0 or num_gradual < 1:
        raise ValueError(f"epoch must be >= 0 and num_gradual >= 1, got {epoch}, {num_gradual}")
    if schedule == "paper":
        return 1.0 - min(epoch / num_gradual * tau, tau)
    if schedule == "code":
        return 1.0 - (tau if num_gradual == 1 else min((epoch + 1) * tau / (num_gradual - 1), tau))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def coteaching_plus_remember_rate(epoch: int, *, tau: float, num_gradual: int = 10, epochs: int,
                                  schedule: str = "paper") -> float:
    """lambda(e), the fraction of the disagreement set a network keeps (Co-teaching+, Algorithm 1, step 9).

    ``lambda(e) = 1 - min(e tau / E_k, (1 + (e - E_k) / (E_max - E_k)) tau)``: the forget rate ramps
    to tau over E_k epochs like Co-teaching's, then keeps growing linearly towards 2 tau at E_max (the
    run's epochs), clipped to [0, 1]. Epoch e (0-based) uses lambda(e) as in
    :func:`coteaching_remember_rate`; with ``E_max <= E_k`` the second term never binds.
    ``schedule='code'``: the official code's ``fr_type='type_1'``, Co-teaching's code schedule (its
    ``type_2``, the paper's growth to 2 tau, is commented out there).
    """
    if schedule == "code":
        return coteaching_remember_rate(epoch, tau=tau, num_gradual=num_gradual, schedule="code")
    if schedule != "paper":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if epoch < 0 or num_gradual < 1:
        raise ValueError(f"epoch must be >= 0 and num_gradual >= 1, got {epoch}, {num_gradual}")
    forget = epoch * tau / num_gradual
    if epochs > num_gradual:
        forget = min(forget, (1.0 + (epoch - num_gradual) / (epochs - num_gradual)) * tau)
    return 1.0 - min(max(forget, 0.0), 1.0)


def small_loss_selection(losses: torch.Tensor, rate: float, *, candidates: torch.Tensor | None = None,
                         schedule: str = "paper") -> torch.Tensor:
    """The small-loss set ``argmin_{D' in C, |D'| >= R |C|} loss(D')`` as a boolean mask over the batch.

    Co-teaching's steps 4-5 (and Co-teaching+'s 5-6 on the disagreement set ``C``): the
    ``ceil(R |C|)`` samples of ``C`` with the smallest loss (the smallest set the constraint admits;
    ties broken by position). ``schedule='code'``: ``int(R |C|)`` samples, as the official code.

    Parameters
    ----------
    losses:
        ``(B,)`` per-sample losses of one network (detached).
    rate:
        R in [0, 1].
    candidates:
        ``(B,)`` bool mask of the samples to choose from (default: all).
    """
    mask = torch.ones_like(losses, dtype=torch.bool) if candidates is None else candidates
    n = losses.numel() if candidates is None else int(mask.sum())  # no host sync for plain Co-teaching
    k = math.ceil(rate * n - 1e-9) if schedule == "paper" else int(rate * n + 1e-9)
    out = torch.zeros_like(mask)
    if k <= 0:
        return out
    inf = torch.full_like(losses, float("inf"))
    order = torch.argsort(torch.where(mask, losses, inf), stable=True)
    out[order[:k]] = True
    return out


def disagreement(logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """Co-teaching+'s prediction disagreement (Eq. 1, step 4): ``argmax z1 != argmax z2`` per sample."""
    return logits_1.argmax(1) != logits_2.argmax(1)


class Selection(NamedTuple):
    """Both networks' small-loss selections of one step (:func:`exchange_selection`).

    ``keep1``, ``keep2``: ``D_f``, ``D_g`` on this process's rows; ``all1``, ``all2``: on the whole
    (global) batch; ``pool``: the global candidate mask (``None``: the whole batch)."""

    keep1: torch.Tensor
    keep2: torch.Tensor
    all1: torch.Tensor
    all2: torch.Tensor
    pool: torch.Tensor | None


def exchange_selection(l1: torch.Tensor, l2: torch.Tensor, rate: float, *, candidates: torch.Tensor | None = None,
                       schedule: str = "paper", dist: DistributedView | None = None) -> Selection:
    """Each network's small-loss set of the batch (:func:`small_loss_selection`), over the *global* batch
    on several processes.

    One process: the selections of ``l1`` and ``l2`` (detached ``(B,)`` losses of f and g) among
    ``candidates``. Data-parallel (``dist``, in a step on this process's slice): the two losses and
    the candidate mask are gathered in the global batch's order (one ``all_gather``), selected there
    with the same rule and tie-breaking (position in the batch) as one process, and this process's
    rows are kept: the 1-process selection, sliced.
    """
    if dist is None:
        keep1 = small_loss_selection(l1, rate, candidates=candidates, schedule=schedule)
        keep2 = small_loss_selection(l2, rate, candidates=candidates, schedule=schedule)
        return Selection(keep1, keep2, keep1, keep2, candidates)
    cols = [l1, l2] if candidates is None else [l1, l2, candidates.to(l1.dtype)]
    whole = dist.gather_batch(torch.stack(cols, dim=1))
    pool = None if candidates is None else whole[:, 2] > 0.5
    all1 = small_loss_selection(whole[:, 0], rate, candidates=pool, schedule=schedule)
    all2 = small_loss_selection(whole[:, 1], rate, candidates=pool, schedule=schedule)
    sl = dist.local_slice
    return Selection(all1[sl], all2[sl], all1, all2, pool)


def _check_options(name: str, *, forget_rate: Any, num_gradual: Any, schedule: Any, predict: Any,
                   estimate_folds: Any, estimate_epochs: Any) -> None:
    if isinstance(forget_rate, str):
        if forget_rate not in FORGET_RATE_WORDS:
            raise UserError(f"{name}: forget_rate must be a number in [0, 1) or one of "
                            f"{', '.join(FORGET_RATE_WORDS)}; got {forget_rate!r}")
    elif not (isinstance(forget_rate, (int, float)) and not isinstance(forget_rate, bool)
              and 0.0 <= float(forget_rate) < 1.0):
        raise UserError(f"{name}: forget_rate must be a number in [0, 1) or one of {', '.join(FORGET_RATE_WORDS)}; "
                        f"got {forget_rate!r}")
    if not isinstance(num_gradual, int) or isinstance(num_gradual, bool) or num_gradual < 1:
        raise UserError(f"{name}: num_gradual must be an integer >= 1, got {num_gradual!r}")
    if schedule not in SCHEDULES:
        raise UserError(f"{name}: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if predict not in PREDICTIONS:
        raise UserError(f"{name}: predict must be one of {', '.join(PREDICTIONS)}, got {predict!r}")
    if not isinstance(estimate_folds, int) or isinstance(estimate_folds, bool) or estimate_folds < 2:
        raise UserError(f"{name}: estimate_folds must be an integer >= 2, got {estimate_folds!r}")
    if estimate_epochs is not None and (not isinstance(estimate_epochs, int) or isinstance(estimate_epochs, bool)
                                        or estimate_epochs < 1):
        raise UserError(f"{name}: estimate_epochs must be a positive integer or null, got {estimate_epochs!r}")


@register_method("coteaching", help="Co-teaching: two networks train each other on their small-loss samples (Han et al.)")
class CoTeaching(Method):
    """Co-teaching (Han et al., NeurIPS 2018, Algorithm 1): networks f (the run's model) and g (``peer``).

    Every mini-batch D (step 3), each network ranks it by its own per-sample loss (the configured
    ``loss`` section; the paper's is CE) and keeps its ``R(T)`` fraction of small-loss samples
    (steps 4-5: ``D_f``, ``D_g``, :func:`small_loss_selection`); f is updated on the mean loss over
    ``D_g`` and g on ``D_f`` (steps 6-7: the exchange); R(T) = 1 - min(T / T_k * tau, tau) after each
    epoch (step 8, :func:`coteaching_remember_rate`). Both networks see the same augmented batch in
    train mode, each with its own optimiser and schedule (the run's ``optim`` section). The paper
    trains with Adam (lr 0.001, momentum 0.9), batch 128, 200 epochs, the learning rate decayed
    linearly to zero from epoch 80; the official code also sets Adam's beta1 to 0.1 from then on
    (``optim.schedule: linear-decay``, ``optim.decay_start``, ``optim.decay_beta1: 0.1``).

    Test-time prediction: both papers' official code evaluates each network on its own (it logs
    ``test_acc1`` and ``test_acc2``) and neither averages them. ``predict='first'`` (default): the
    loop validates, selects and scores with f alone and reports g's accuracies beside it
    (``val_accuracy_net2``, ``test_accuracy_net2`` in ``metrics.jsonl``); ``'ensemble'``: the mean of
    both networks' probabilities (:class:`~noisylabels.models.Ensemble`, the choice of the noisypy
    reproduction, which averages logits), each network reported (``..._net1``, ``..._net2``).

    Records: ``loss``, the mean of the two networks' training losses of the given label (the
    small-loss criterion itself, continuous; the detection score, higher = more suspicious: a
    larger loss is a lower probability of the given label whatever the run learned), and
    ``selected``, the fraction of the two networks whose update set held the sample (per-epoch
    mean: 1 = picked by both peers). ``metrics.jsonl`` gives the epoch's ``forget_rate`` (1 - R),
    ``tau`` and, with ground truth, ``selection_precision`` (the clean fraction of what was trained
    on: the official code's "pure ratio") and ``selection_recall`` (the fraction of clean samples
    trained on).

    Several processes (data-parallel): the selection is the 1-process selection of the global batch
    (:func:`exchange_selection`) and each network's loss the mean over the global selection.

    Parameters
    ----------
    forget_rate:
        tau, the final fraction of each batch left out. A number in [0, 1) (the paper: the noise
        rate); ``'noise-rate'`` (default): the configured ``noise.rate`` of simulated noise (the
        paper's protocol, tau = epsilon known; refused without simulated noise); ``'estimate'``:
        confident learning's noise rate (:func:`noisylabels.detect.estimate_noise`) from a
        cross-fitted CE warm-up, resolved before training by
        :func:`noisylabels.detect.resolve_forget_rate` (``noisylabels train`` does it; from Python
        pass ``resolve=noisylabels.detect.resolve_forget_rate`` to :func:`noisylabels.train.fit`).
        The run's ``config.yaml`` and ``summary.json`` (``tau``) hold the number used.
    num_gradual:
        T_k, the epochs of the linear ramp of the forget rate (paper: 10).
    schedule:
        ``'paper'`` (default): R(T) as Algorithm 1 (all samples in the first epoch) and
        ``ceil(R |D|)`` samples kept; ``'code'``: the official code's ``np.linspace`` ramp and
        ``int(R |D|)``.
    predict:
        ``'first'`` (default) or ``'ensemble'`` (see above).
    estimate_folds:
        Folds of the cross-fitted warm-up of ``forget_rate='estimate'`` (default 2).
    estimate_epochs:
        Epochs of each warm-up fold (default ``None``: half the run's epochs, at least 1).
    """

    networks = ("peer",)
    records = (Record("loss"), Record("selected"))
    detection = ("loss", 1.0)

    def __init__(self, *, forget_rate: float | str = "noise-rate", num_gradual: int = 10, schedule: str = "paper",
                 predict: str = "first", estimate_folds: int = 2, estimate_epochs: int | None = None) -> None:
        super().__init__()
        _check_options(self._name(), forget_rate=forget_rate, num_gradual=num_gradual, schedule=schedule,
                       predict=predict, estimate_folds=estimate_folds, estimate_epochs=estimate_epochs)
        self.forget_rate = forget_rate
        self.num_gradual, self.schedule, self.predict = num_gradual, schedule, predict
        self.estimate_folds, self.estimate_epochs = estimate_folds, estimate_epochs
        self.tau: float | None = None if isinstance(forget_rate, str) else float(forget_rate)
        self._sums: dict[str, Any] = {}

    @classmethod
    def _name(cls) -> str:
        return "coteaching-plus" if issubclass(cls, CoTeachingPlus) else "coteaching"

    # -- set-up ---------------------------------------------------------------------------------
    def check_config(self, cfg: Mapping[str, Any]) -> None:
        if self.forget_rate == "noise-rate" and str(cfg["noise"]["type"]).lower() == "none":
            raise UserError(f"{self._name()}: method.forget_rate=noise-rate (the default) takes the simulated noise "
                            f"rate, but noise.type is none: give the rate you expect (method.forget_rate=0.2) or "
                            f"method.forget_rate=estimate (a cross-fitted warm-up estimates it)")

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.check_config(ctx.cfg)
        if self.forget_rate == "estimate":
            raise UserError(f"{self._name()}: method.forget_rate=estimate is resolved before training by a cross-fitted "
                            f"warm-up: `noisylabels train` does it; from Python call noisylabels.train.fit(cfg, "
                            f"resolve=noisylabels.detect.resolve_forget_rate)")
        if self.forget_rate == "noise-rate":
            self.tau = float(ctx.cfg["noise"]["rate"])
            if not 0.0 <= self.tau < 1.0:
                raise UserError(f"{self._name()}: the noise rate {self.tau} is no forget rate in [0, 1); "
                                f"give method.forget_rate")

    # -- the schedule -------------------------------------------------------------------------------
    def remember_rate(self, epoch: int) -> float:
        """R(T) of the 0-based ``epoch`` (:func:`coteaching_remember_rate`)."""
        assert self.tau is not None
        return coteaching_remember_rate(epoch, tau=self.tau, num_gradual=self.num_gradual, schedule=self.schedule)

    def candidates(self, ctx: MethodContext, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor | None:
        """The samples the small-loss selection chooses from (``None``: the whole batch)."""
        return None

    # -- one step ---------------------------------------------------------------------------------
    def train_step(self, ctx: MethodContext, x: Any, y: torch.Tensor, index: torch.Tensor) -> StepOutput:
        peer = self.net("peer")
        z1, z2 = ctx.model(x), peer.model(x)
        l1, l2 = self.per_sample_loss(z1, y, index), self.per_sample_loss(z2, y, index)
        dp = data_parallel(ctx)  # several processes: the selection of the global batch, sliced
        sel = exchange_selection(l1.detach(), l2.detach(), self.remember_rate(ctx.epoch),
                                 candidates=self.candidates(ctx, z1.detach(), z2.detach()), schedule=self.schedule,
                                 dist=dp)  # D_f (keep1), D_g (keep2)
        all1, all2 = (None, None) if dp is None else (sel.all1, sel.all2)
        loss1 = self.exchange_update(ctx, l1, sel.keep2, net=None, selected=all2)  # f on its peer's selection D_g
        loss2 = self.exchange_update(ctx, l2, sel.keep1, net=peer, selected=all1)  # g on D_f
        self.record(index, loss=(l1.detach() + l2.detach()) / 2,
                    selected=(sel.keep1.float() + sel.keep2.float()) / 2)
        n = len(y) if dp is None else dp.n_global  # every process adds the global batch's sums (rank 0 reports)
        self._add(pool=n if sel.pool is None else sel.pool.sum(), seen=n, loss_net2=loss2.detach() * n)
        return StepOutput(logits=z1.detach(), loss=loss1.detach())

    def _add(self, **values: Any) -> None:
        """Epoch sums on the device (no host synchronisation per step)."""
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v

    def _sum(self, key: str) -> float:
        return float(self._sums.get(key, 0.0))

    @staticmethod
    def exchange_update(ctx: MethodContext, losses: torch.Tensor, keep: torch.Tensor, *, net: Any,
                        selected: torch.Tensor | None = None) -> torch.Tensor:
        """One network's step on the mean loss over ``keep`` (its peer's selection); no step on an
        empty selection (nothing to learn from: the paper's update over an empty set).

        ``selected``: the selection on the whole global batch (``keep`` is this process's rows of it);
        on several processes the mean is over the global selection: this slice's selected losses summed
        over every process (:func:`~noisylabels.methods.context.batch_total`, whose backward keeps the
        ``n_r / n`` weighting of the all-reduced gradient exact) over the global count."""
        # the path follows ``selected`` (every process alike), never the slice's size: a process may
        # hold the whole global batch while another holds none (an epoch's last batch)
        if not bool((keep if selected is None else selected).any()):
            return losses.new_zeros(())
        if selected is None:
            loss = losses[keep].mean()
        else:
            total, _ = batch_total(ctx, torch.where(keep, losses, torch.zeros_like(losses)))
            loss = total / selected.sum()
        ctx.backward_and_step(loss, net=net)
        return loss

    # -- evaluation -------------------------------------------------------------------------------
    def eval_model(self, ctx: MethodContext) -> torch.nn.Module:
        if self.predict == "ensemble":
            return Ensemble([ctx.model, self.net("peer").model])
        return ctx.model

    def report_models(self, ctx: MethodContext) -> dict[str, torch.nn.Module]:
        peer = {"net2": self.net("peer").model}
        return {"net1": ctx.model, **peer} if self.predict == "ensemble" else peer

    # -- epoch records ------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: MethodContext) -> None:
        self._sums = {}

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        seen = max(self._sum("seen"), 1.0)
        out: dict[str, Any] = {"tau": self.tau, "forget_rate": 1.0 - self.remember_rate(ctx.epoch),
                               "train_loss_net2": self._sum("loss_net2") / seen}
        noisy = is_noisy_train(ctx.data)
        assert self.sample_records is not None
        sel = self.sample_records.history["selected"].get(ctx.epoch)
        if noisy is not None and sel is not None:
            s = np.nan_to_num(sel.astype(np.float64))
            clean = ~noisy
            out["selection_precision"] = float((s * clean).sum() / s.sum()) if s.sum() > 0 else None
            out["selection_recall"] = float((s * clean).sum() / clean.sum()) if clean.any() else None
        return out

    def finalize(self, ctx: MethodContext) -> dict[str, Any]:
        return {"tau": self.tau}


@register_method("coteaching-plus",
                 help="Co-teaching+: Co-teaching on the samples the two networks disagree on (Yu et al.)")
class CoTeachingPlus(CoTeaching):
    """Co-teaching+ (Yu et al., ICML 2019, Algorithm 1): Co-teaching's exchange restricted to the
    prediction disagreement set.

    Every mini-batch, step 4 keeps the samples on which the two networks' predictions (arg-max of
    the logits) differ (:func:`disagreement`, Eq. 1); steps 5-6: each network keeps the
    ``ceil(lambda(e) |D'|)`` small-loss samples *of that set* (:func:`small_loss_selection`); steps 7-8:
    each is updated on its peer's selection (no update when the selection is empty); step 9:
    lambda(e) = 1 - min(e tau / E_k, (1 + (e - E_k)/(E_max - E_k)) tau)
    (:func:`coteaching_plus_remember_rate`; E_k = ``num_gradual``, E_max the run's epochs).
    During the first ``init_epochs`` epochs the step is plain Co-teaching on the whole batch with
    the same rate (the official code's ``init_epoch``; Algorithm 1 starts with disagreement). The
    official code differs in ways not offered: it feeds softmax outputs into ``cross_entropy`` on the
    disagreement set, and with an empty disagreement set trains on the whole batch while
    ``epoch * batch_index < 5000``.

    ``metrics.jsonl`` adds ``disagreement_fraction`` (the fraction of the epoch's samples in the
    disagreement set); the records and the detection score are Co-teaching's (``loss`` is recorded
    for every sample, in the disagreement set or not).

    Parameters
    ----------
    init_epochs:
        Epochs of plain Co-teaching before the disagreement (default 0, Algorithm 1). The official
        code's ``init_epoch`` (MNIST 0, CIFAR-10 20, CIFAR-100 5, NEWS 0, Tiny-ImageNet 100) is one
        more: its loop trains epochs 1, 2, ... and uses plain Co-teaching while ``epoch < init_epoch``,
        so its CIFAR-10 setting is ``init_epochs=19`` here.
    forget_rate, num_gradual, schedule, predict, estimate_folds, estimate_epochs:
        As :class:`CoTeaching`; ``schedule='code'`` uses Co-teaching's code schedule (the official
        code's ``fr_type='type_1'``) instead of lambda(e), and ``int(lambda |D'|)``.
    """

    total_epochs_matter = True  # lambda(e) grows towards 2 tau at the run's last epoch

    def __init__(self, *, init_epochs: int = 0, forget_rate: float | str = "noise-rate", num_gradual: int = 10,
                 schedule: str = "paper", predict: str = "first", estimate_folds: int = 2,
                 estimate_epochs: int | None = None) -> None:
        super().__init__(forget_rate=forget_rate, num_gradual=num_gradual, schedule=schedule, predict=predict,
                         estimate_folds=estimate_folds, estimate_epochs=estimate_epochs)
        if not isinstance(init_epochs, int) or isinstance(init_epochs, bool) or init_epochs < 0:
            raise UserError(f"coteaching-plus: init_epochs must be an integer >= 0, got {init_epochs!r}")
        self.init_epochs = init_epochs

    def remember_rate(self, epoch: int) -> float:
        """lambda(e) of the 0-based ``epoch`` (:func:`coteaching_plus_remember_rate`)."""
        assert self.tau is not None and self.ctx is not None
        return coteaching_plus_remember_rate(epoch, tau=self.tau, num_gradual=self.num_gradual,
                                             epochs=self.ctx.epochs, schedule=self.schedule)

    def candidates(self, ctx: MethodContext, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor | None:
        return None if ctx.epoch < self.init_epochs else disagreement(z1, z2)

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        out = super().on_epoch_end(ctx)
        out["disagreement_fraction"] = self._sum("pool") / max(self._sum("seen"), 1.0)
        return out
