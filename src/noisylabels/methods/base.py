"""The method interface every training method implements, and the method registry.

A method plugs into the one training loop (:func:`noisylabels.train.fit`) through a few hooks;
it sees the run only through :class:`~noisylabels.methods.context.MethodContext`:

* :meth:`Method.per_sample_loss` -- ``(logits, targets, indices) -> (B,)`` losses
  (``reduction='none'``). Plain robust-loss methods only override this.
* :meth:`Method.train_step` -- one optimisation step on a batch, returning a
  :class:`~noisylabels.methods.context.StepOutput` (logits and loss; the loop counts accuracy
  and averages the loss). The default is a plain step on :meth:`per_sample_loss`; meta methods
  build on :class:`~noisylabels.methods.meta.MetaNetMethod` instead of overriding it.
* :meth:`Method.on_epoch_start` / :meth:`Method.on_epoch_end` -- schedules such as pruning
  (truncated Lq) or a CE stage followed by a corrected stage (forward T-hat).
* :attr:`Method.records` -- named per-sample quantities (:class:`~noisylabels.methods.records.Record`)
  the method adds with :meth:`Method.record`; the base keeps their per-epoch history, writes
  ``sample_records.npz``, checkpoints them, plots them on clean vs corrupted samples, and, for the
  record named by :attr:`Method.detection`, scores noisy-label detection per epoch and ranks
  ``suspects.csv``.
* :attr:`Method.own_loss` -- ``None`` if the method trains on the configured ``loss`` section
  (``ctx.loss_fn``), else the name of the loss it defines itself; a run that sets a contradicting
  ``loss.name`` is refused (:func:`check_loss_section`).
* :meth:`Method.curves` -- what the method learned (a weight function, a hyperparameter against
  the margin, per-sample weights) as named ``(x, y)`` series; the base plots each (``<name>.png``).
* :meth:`Method.state_dict` / :meth:`Method.load_state_dict` -- everything needed to resume exactly
  (tensors and plain containers only: checkpoints load with ``weights_only=True``).

What several-network, multi-view and per-sample-state methods (Co-teaching, ELR+, DivideMix, SOP+)
get from the base instead of writing it themselves:

* :attr:`Method.networks` -- networks trained beside ``ctx.model`` (:class:`NetworkSpec`; a name is a
  trainable one): built like the run's model from their own seeds in :meth:`Method.setup`, with
  their own optimiser and learning-rate schedule; the loop steps the schedules, checkpoints and
  restores them. ``self.net(name)`` is the :class:`~noisylabels.methods.context.Network`.
* :meth:`Method.eval_model` -- the module the loop validates, tests, selects (``best_model.pt``) and
  scores with (default ``ctx.model``; e.g. an :class:`~noisylabels.models.Ensemble` of both networks);
  :meth:`Method.report_models` -- further modules whose validation and test accuracy the loop writes
  beside it each epoch (e.g. each network of a pair on its own, as Co-teaching's papers evaluate).
* :attr:`Method.views` -- the augmented views of each training batch (``'weak'``: the run's crop and
  flip; ``'strong'``: weak then ``data.strong_augment``); with more than one, ``train_step`` receives
  a tuple of tensors, one per view, in this order (``data.views`` may change their kinds).
* :meth:`Method.per_sample` -- a tensor of per-sample state over the training pool (ELR's targets,
  SOP's u and v), on the device, checkpointed and restored in place by the loop.
* :meth:`Method.epoch_batches` -- a method that draws its epoch's batches itself (DivideMix's
  labelled and unlabelled sets) returns them here; default: the loop's shuffled training batches.

Self-supervised methods (:attr:`Method.self_supervised`, e.g. SimCLR; ``noisylabels pretrain``)
train no classifier: the loop monitors a weighted kNN classifier on :meth:`Method.eval_model`'s
features instead of its logits (:attr:`Method.knn_k`, :attr:`Method.knn_temperature`), keeps the last
epoch (selection-free), scores no sample, writes ``backbone.pt`` (the model without its classifier)
and runs on data without labels; their steps return ``StepOutput(logits=None, ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import UserError
from ..eval.plots import Curve
from ..registry import Registry, call_with_options
from .context import MethodContext, Network, NetworkSpec, StepOutput, data_parallel, is_noisy_train
from .records import RECORDS_FILE, Record, SampleRecords

#: the view kinds a method may ask for (``Method.views``, ``data.views``)
VIEW_KINDS = ("weak", "strong", "none")

__all__ = ["Method", "ERM", "VIEW_KINDS", "METHODS", "register_method", "create_method", "list_methods", "check_loss_section"]

METHODS: Registry = Registry("method")


def register_method(name: str, *, help: str | None = None):
    """Class decorator registering a :class:`Method` subclass under ``name``."""
    return METHODS.register(name, help=help)


class Method:
    """Base class: a plain step on the configured loss (ERM).

    Subclasses take their options as keyword-only ``__init__`` arguments (they come from the
    ``method`` config section).
    """

    #: the method needs a meta set (``data.meta_size > 0``; ``auto`` then gives it one)
    needs_meta_set: ClassVar[bool] = False
    #: the kind of meta set the method is defined with (``'clean'``, ``'noisy'``, or ``None``: either);
    #: a preset defined by its meta set selects it (``data.meta_set: auto``)
    meta_set_kind: ClassVar[str | None] = None
    #: ``None``: trains on the configured ``loss`` section; else the name of its own loss
    own_loss: ClassVar[str | None] = None
    #: named per-sample records (see :mod:`noisylabels.methods.records`)
    records: ClassVar[tuple[Record, ...]] = ()
    #: ``(record, sign)``: suspicion = ``sign * record`` (e.g. ``('weight', -1)``); ``None``: 1 - p(label)
    detection: ClassVar[tuple[str, float] | None] = None
    #: the method plans stages over the run's total epochs (a resumed run may not be given more)
    total_epochs_matter: ClassVar[bool] = False
    #: the augmented views of each training batch, in order (``'weak'``, ``'strong'``, ``'none'``)
    views: ClassVar[tuple[str, ...]] = ("weak",)
    #: networks trained beside ``ctx.model`` (a name: a trainable :class:`NetworkSpec`)
    networks: ClassVar[tuple[NetworkSpec | str, ...]] = ()
    #: the method learns features without labels and trains no classifier (``noisylabels pretrain``):
    #: kNN monitor, no selection (the last epoch), no sample scores, ``backbone.pt``; data may lack labels
    self_supervised: ClassVar[bool] = False
    #: the kNN monitor of a self-supervised method (Wu et al. 2018): neighbours (0: no monitor) and
    #: temperature of the similarity weights
    knn_k: int = 200
    knn_temperature: float = 0.1
    #: why the method refuses a data-parallel run (one line), or ``None``: it equals one process there
    #: (the loop also refuses ``per_sample`` parameters; plain ``per_sample`` tables it merges over
    #: processes after each epoch's steps, each row from the process whose batch slice held it)
    data_parallel_refusal: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.ctx: MethodContext | None = None
        self.sample_records: SampleRecords | None = None
        self._per_sample: dict[str, torch.Tensor] = {}

    @classmethod
    def network_specs(cls) -> tuple[NetworkSpec, ...]:
        """:attr:`networks` as :class:`NetworkSpec` s."""
        return tuple(s if isinstance(s, NetworkSpec) else NetworkSpec(str(s)) for s in cls.networks)

    @classmethod
    def loss_name(cls, options: Mapping[str, Any]) -> str | None:
        """The loss the method defines itself, given its options (default :attr:`own_loss`);
        ``None``: it trains on the configured ``loss`` section."""
        return cls.own_loss

    # -- set-up ---------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        """Called once before training (and before a checkpoint is restored)."""
        self.ctx = ctx
        if self.records:
            self.sample_records = SampleRecords([r.name for r in self.records], num_samples=len(ctx.data.labels),
                                                train_index=ctx.data.splits["train"], device=ctx.device)
        for spec in self.network_specs():
            ctx.add_network(spec)

    def net(self, name: str) -> Network:
        """A network declared in :attr:`networks` (built in :meth:`setup`)."""
        assert self.ctx is not None
        return self.ctx.networks[name]

    def eval_model(self, ctx: MethodContext) -> torch.nn.Module:
        """The module the loop validates, tests, selects (``best_model.pt``) and scores every sample
        with; its softmax is the prediction (default: ``ctx.model``)."""
        return ctx.model

    def report_models(self, ctx: MethodContext) -> dict[str, torch.nn.Module]:
        """Further modules the loop evaluates each epoch beside :meth:`eval_model`, by name: their
        accuracy and loss go into ``metrics.jsonl`` as ``val_accuracy_<name>``, ``test_accuracy_<name>``
        (and ``val_loss_<name>``, ``test_loss_<name>``); nothing is selected or scored with them
        (default: none)."""
        return {}

    def check_config(self, cfg: Mapping[str, Any]) -> None:
        """Check the method's options against the rest of a resolved run config (e.g. an option that
        needs simulated noise); called before any data are loaded (:func:`noisylabels.train.check_names`).
        Raise a one-line :class:`~noisylabels.errors.UserError`; default: nothing to check."""

    def per_sample(self, name: str, *, shape: tuple[int, ...] = (), fill: float = 0.0,
                   dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> torch.Tensor:
        """A per-sample state tensor ``(N_pool, *shape)`` filled with ``fill`` on the run's device (call in
        :meth:`setup`); rows are dataset indices. The loop checkpoints it and restores it in place, so an
        optimiser over it (``requires_grad=True``: per-sample parameters, e.g. SOP's u and v) stays valid.
        On several processes a step may write only its batch's rows: the loop merges a table (not a
        parameter) after each epoch's steps, each row from the process whose slice held it."""
        assert self.ctx is not None, "per_sample is called in setup"
        if name in self._per_sample:
            raise ValueError(f"per-sample state {name!r} declared twice")
        t = torch.full((len(self.ctx.data.labels), *shape), float(fill), dtype=dtype, device=self.ctx.device)
        t.requires_grad_(requires_grad)
        self._per_sample[name] = t
        return t

    def epoch_batches(self, ctx: MethodContext, generator: torch.Generator) -> Any:
        """The epoch's training batches, if the method draws them itself (objects with ``x``, ``y``,
        ``index``; ``x`` may be a tuple of views), from ``generator`` alone (seeded by ``(seed, epoch)``:
        resume stays exact); ``None`` (default): the loop's shuffled batches of the training split with
        the method's :attr:`views`. A sized iterable may hold any number of batches: the learning-rate
        schedules then advance by the epoch's fraction per batch and end the epoch where
        ``ctx.steps_per_epoch`` loop batches would (an unsized one: one schedule step per batch)."""
        return None

    # -- the loss hook ----------------------------------------------------------------------------
    def per_sample_loss(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss, shape ``(B,)``; the default is the configured loss."""
        assert self.ctx is not None
        return self.ctx.loss_fn(logits, targets, reduction="none")

    # -- one step ---------------------------------------------------------------------------------
    def train_step(self, ctx: MethodContext, x: Any, y: torch.Tensor, index: torch.Tensor) -> StepOutput:
        """One optimisation step (default: the mean of :meth:`per_sample_loss`).

        ``x`` is the batch's inputs ``(B, C, H, W)``, or, for a method with several :attr:`views`, a
        tuple with one such tensor per view in the declared order; ``y`` the given labels, ``index`` the
        dataset indices."""
        return self.plain_step(ctx, x, y, index)

    def plain_step(self, ctx: MethodContext, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
                   loss_fn: Any = None) -> StepOutput:
        """A plain step on the mean per-sample loss (``loss_fn(z, y)``, default :meth:`per_sample_loss`);
        records each record's ``plain_value`` (e.g. weight 1 during a CE warm-up)."""
        z = ctx.model(x)
        losses = self.per_sample_loss(z, y, index) if loss_fn is None else loss_fn(z, y)
        loss = losses.mean()
        ctx.backward_and_step(loss)
        plain = {r.name: r.plain_value for r in self.records if r.plain_value is not None}
        if plain:
            self.record(index, **plain)
        return StepOutput(logits=z.detach(), loss=loss.detach())

    # -- records ------------------------------------------------------------------------------------
    def record(self, index: torch.Tensor, **values: torch.Tensor | float) -> None:
        """Add the values a batch was trained with to the named records (by dataset index)."""
        if self.sample_records is None:
            raise UserError(f"{type(self).__name__} records {', '.join(values)} but declares no records")
        self.sample_records.add(index, values)

    def selected_record(self, name: str) -> np.ndarray | None:
        """A record at the best-validation epoch (else the last recorded one)."""
        if self.sample_records is None or self.ctx is None:
            return None
        return self.sample_records.at(name, self.ctx.best.get("epoch"))

    # -- epoch hooks --------------------------------------------------------------------------------
    def on_epoch_start(self, ctx: MethodContext) -> None:
        """Called before each epoch's first step (``ctx.epoch`` is the epoch about to run)."""

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        """Called after each epoch's last step; returned values go into ``metrics.jsonl``."""
        return {}

    def finalize(self, ctx: MethodContext) -> dict[str, Any]:
        """Called once after training with the selected model loaded; returned values go into
        ``summary.json`` (plots: declare :meth:`curves`)."""
        return {}

    def curves(self, ctx: MethodContext) -> Sequence[Curve]:
        """What the method learned, as named ``(x, y)`` series (:class:`~noisylabels.eval.plots.Curve`)
        at the end of training (e.g. MW-Net's weight function, NARL's ``q(margin)``, L2B's
        ``(alpha, beta)`` per sample at the selected epoch); :meth:`finish` plots each as ``<name>.png``."""
        return ()

    # -- what the loop calls (subclasses override the hooks above, not these) -----------------------
    def start_epoch(self, ctx: MethodContext) -> None:
        if self.sample_records is not None:
            self.sample_records.start_epoch()
        self.on_epoch_start(ctx)

    def end_epoch(self, ctx: MethodContext) -> dict[str, Any]:
        """The epoch's records (``sample_records.npz``, per-record means on clean / corrupted samples,
        detection AUROC/AP of the declared score), then :meth:`on_epoch_end`."""
        out: dict[str, Any] = {}
        if self.sample_records is not None:
            dp = data_parallel(ctx)
            if dp is not None:  # each process recorded its slices: the sums and counts of all of them
                dp.all_reduce_sum_(self.sample_records.sums_and_counts())
            means = self.sample_records.end_epoch(ctx.epoch)
            if means:
                self.sample_records.save_npz(ctx.recorder.path(RECORDS_FILE))
                noisy = is_noisy_train(ctx.data)
                if noisy is not None:  # without ground truth there is nothing to score the records against
                    out.update(_record_metrics(means, noisy, self.detection))
        out.update(self.on_epoch_end(ctx) or {})
        return out

    def finish(self, ctx: MethodContext) -> dict[str, Any]:
        """Histograms of every record at the selected epoch, then :meth:`finalize`, then a plot of
        each of the method's :meth:`curves`."""
        from ..eval.plots import plot_curve, plot_weight_histograms

        if self.sample_records is not None:
            for r in self.records:
                values = self.selected_record(r.name)
                if values is not None:
                    plot_weight_histograms(values, is_noisy_train(ctx.data), ctx.recorder.path(f"{r.name}_hist.png"),
                                           title=f"{ctx.cfg['method']['name']}: {r.name} at the selected epoch")
        out = self.finalize(ctx) or {}
        for curve in self.curves(ctx):
            plot_curve(curve, ctx.recorder.path(f"{curve.name}.png"), is_noisy=is_noisy_train(ctx.data))
        return out

    def records_state_dict(self) -> dict[str, Any]:
        """Checkpoint state of the records (tensors only)."""
        return self.sample_records.state_dict() if self.sample_records is not None else {}

    def load_records_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.sample_records is not None:
            self.sample_records.load_state_dict(state)

    def per_sample_tensors(self) -> dict[str, torch.Tensor]:
        """The :meth:`per_sample` tensors themselves, by name (not copies)."""
        return dict(self._per_sample)

    def per_sample_state_dict(self) -> dict[str, torch.Tensor]:
        """Checkpoint state of :meth:`per_sample` tensors (detached copies)."""
        return {k: v.detach().clone() for k, v in self._per_sample.items()}

    def load_per_sample_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`per_sample` tensors in place (every declared one must be in ``state``)."""
        missing = sorted(set(self._per_sample) - set(state))
        if missing:
            raise UserError(f"the checkpoint has no per-sample state {', '.join(missing)} of method "
                            f"{type(self).__name__}: it was written by another method or version")
        with torch.no_grad():
            for k, t in self._per_sample.items():
                if tuple(state[k].shape) != tuple(t.shape):
                    raise UserError(f"per-sample state {k!r} in the checkpoint has shape {tuple(state[k].shape)}, "
                                    f"the run needs {tuple(t.shape)}")
                t.copy_(state[k].to(t.device, t.dtype))

    # -- detection --------------------------------------------------------------------------------
    def sample_scores(self, ctx: MethodContext, probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mislabeling scores (higher = more suspicious) on the training split.

        The declared :attr:`detection` record at the best-validation epoch, times its sign (samples
        never visited rank as least suspicious); without one, ``1 - p(label)`` under the selected
        model (``probs``: its softmax outputs on the training split, no augmentation).
        """
        self._score_from_record = False
        if self.detection is not None:
            name, sign = self.detection
            values = self.selected_record(name)
            if values is not None:
                s = sign * values.astype(np.float64)
                s = np.where(np.isfinite(s), s, np.nanmin(s) if np.isfinite(s).any() else 0.0)
                self._score_from_record = True
                return torch.from_numpy(s)
        return 1.0 - probs.gather(1, labels[:, None]).squeeze(1)

    @property
    def score_name(self) -> str:
        """What the last :meth:`sample_scores` returned (the ``score`` column of ``suspects.csv``)."""
        if self.detection is None or not getattr(self, "_score_from_record", False):
            return "1 - p(given label) under the selected model"
        name, sign = self.detection
        return f"{'-' if sign < 0 else ''}{name} at the selected epoch"

    @property
    def score_column(self) -> str:
        """The header of that column: ``score_1_minus_p_given``, ``score_neg_weight``, ..."""
        if self.detection is None or not getattr(self, "_score_from_record", False):
            return "score_1_minus_p_given"
        name, sign = self.detection
        return f"score_{'neg_' if sign < 0 else ''}{name}"

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _record_metrics(means: Mapping[str, np.ndarray], noisy: np.ndarray,
                    detection: tuple[str, float] | None) -> dict[str, Any]:
    from ..eval.metrics import detection_metrics

    out: dict[str, Any] = {}
    if detection is not None and detection[0] in means:
        score = detection[1] * means[detection[0]]
        seen = np.isfinite(score)
        out.update(detection_metrics(score[seen], noisy[seen]))
    for name, mean in means.items():
        out[f"mean_{name}_clean"] = float(np.nanmean(mean[~noisy])) if (~noisy).any() else None
        out[f"mean_{name}_noisy"] = float(np.nanmean(mean[noisy])) if noisy.any() else None
    return out


def create_method(name: str, **options: Any) -> Method:
    """Instantiate a registered method with its keyword options."""
    cls = METHODS.get(name)
    try:
        return call_with_options("method", name, cls, **options)
    except UserError:
        raise
    except (TypeError, ValueError, RuntimeError, OverflowError, ZeroDivisionError) as err:
        # a value of the right type the constructor cannot use (hidden=-1 for a layer's width, ...)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())[:160]
        raise UserError(f"method {name!r}: invalid option value ({given}): {first}") from None


def list_methods() -> list[str]:
    return METHODS.names()


def check_loss_section(method: Method | type[Method], name: str, loss_cfg: Mapping[str, Any],
                       options: Mapping[str, Any] | None = None) -> str:
    """The loss a run trains on; refuses a ``loss`` section that contradicts the method's own loss.

    Parameters
    ----------
    method, name:
        The method and its registered name.
    loss_cfg:
        The config's ``loss`` section (``name: auto`` = the method's own loss, or CE for methods
        that train on the configured loss).
    options:
        The method's options (a method's own loss may depend on them, e.g. NARL's family).

    Returns
    -------
    str
        The effective loss name (recorded in ``config.yaml`` and ``summary.json``).
    """
    given = str(loss_cfg.get("name", "auto")).lower()
    extra = sorted(k for k in loss_cfg if k != "name")
    own = method.loss_name({k: v for k, v in (options or {}).items() if k != "name"})
    if own is None:
        return "ce" if given == "auto" else given
    if given not in ("auto", own) or extra:
        what = f"loss.name={given}" if given not in ("auto", own) else f"loss options {', '.join(extra)}"
        raise UserError(f"method {name!r} trains on its own loss ({own}; set it with the method's options, see "
                        f"`noisylabels methods`): {what} would be ignored; remove it or use --method erm")
    return own


@register_method("erm", help="empirical risk minimisation with the configured loss (CE, GCE, ...)")
class ERM(Method):
    """Empirical risk minimisation: the mean of the configured per-sample loss."""
