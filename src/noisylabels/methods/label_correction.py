"""Meta label correction: what MLC (Zheng et al., AAAI 2021) and EMLC (Taraday & Baskin, ICCV 2023) share.

A *teacher* (the meta-network, parameters alpha) maps a training sample and its possibly corrupted
label to a soft label ``q_alpha(y | x_i, y~_i)``; the student ``p_w`` trains on the soft-target
cross-entropy (EMLC Eq. 6)::

    L~(w, alpha) = (1/n) sum_i CE(q_alpha(. | x_i, y~_i), p_w(. | x_i)),   CE(q, p) = -sum_c q_c log p_c

and the teacher is learned bilevel on the clean meta set (Eqs. 3-5) through the student's SGD step,
by :class:`~noisylabels.methods.meta.MetaNetMethod` (the teacher output is the loss layer's
meta-parameter function; the engine's JVP identity is Prop. 1 / Cor. 3.1, Eq. 10, exactly).
By default the real step is the virtual step (``delayed=True``): Algorithm 1's order (the student
steps with alpha^(t), then alpha is updated from the clean loss at the student's new weights).

:class:`LabelCorrectionMethod` adds what every label-correction method records:

* the soft label of every training sample's last visit (``q`` by dataset index, on the device);
* per-epoch **label recovery** in ``metrics.jsonl``: the fraction of the epoch's visited training
  samples whose ``argmax q`` equals the clean label (``label_recovery``), split into samples whose
  given label was right (``label_recovery_given_right``, i.e. kept) and wrong
  (``label_recovery_given_wrong``, i.e. repaired) -- EMLC's Fig. 1;
* the record ``q_given`` (the soft label's mass on the given label; detection score ``-q_given``
  unless a subclass declares another, EMLC: ``-gate``);
* the mean meta (clean) loss per epoch (``meta_loss``) and ``meta_loss.png`` over meta steps
  (EMLC's Fig. 5);
* ``corrected_labels.csv`` after training: ``index, given, corrected, confidence`` (argmax and max
  of the last soft label of each training sample; ``path`` when the data came from files);
* the student's accuracy on the clean meta set each epoch (``meta_accuracy``) and, in
  ``summary.json``, the test accuracy at the epoch of the best ``meta_accuracy``
  (``clean_selected_test_accuracy``: the paper's selection on the clean set, optimistic because the
  teacher trains on that set) beside the loop's noisy-validation selection, and the last epoch's
  label recovery.

Choices where the papers are silent: recovery is measured on the soft labels the student actually
trained with in that epoch (train-mode teacher, augmented inputs), not by a separate pass; the
corrected labels are the *last* epoch's (the teacher keeps training after the student's
best-validation epoch).
"""

from __future__ import annotations

import csv
import io
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..eval.plots import Curve
from ..io import atomic_write_text
from ..meta.schedule import DiscountedAccumulation
from .context import MethodContext, data_parallel
from .meta import MetaNetMethod
from .options import int_option
from .records import Record

__all__ = ["upcast", "soft_cross_entropy", "gate_mix", "label_recovery", "summary_from_metrics", "LabelCorrectionMethod",
           "CORRECTED_LABELS_FILE"]

Tensor = torch.Tensor

#: the file the corrected labels go to
CORRECTED_LABELS_FILE = "corrected_labels.csv"


def upcast(t: Tensor) -> Tensor:
    """Half / bfloat16 to float32 (under autocast: a teacher's outputs enter the loss in float32);
    float32 and float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample soft-target cross-entropy ``CE(q, p) = -sum_c q_c log softmax(z)_c`` (EMLC Eq. 6).

    Equals :func:`torch.nn.functional.cross_entropy` for one-hot targets. No input validation (it
    runs inside the meta step; targets come from the teacher).
    """
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


def gate_mix(gate: Tensor, labels: Tensor, prediction: Tensor) -> Tensor:
    """EMLC's soft label (Sec. 3.3): ``q_i = w_i onehot(y~_i) + (1 - w_i) y_hat_i``.

    ``gate`` (B,) in [0, 1], ``labels`` (B,) the given labels, ``prediction`` (B, K) a distribution;
    the result is on the simplex; ``w -> 1`` gives the given label, ``w -> 0`` the teacher's prediction.
    """
    onehot = F.one_hot(labels, prediction.shape[1]).to(prediction.dtype)
    w = gate.reshape(-1, 1).to(prediction.dtype)
    return w * onehot + (1.0 - w) * prediction


class LabelCorrectionMethod(MetaNetMethod):
    """Base of the meta label-correction methods: soft labels from a teacher, soft-target CE.

    Subclasses implement :meth:`build_teacher` (the meta-network, built once the run is known) and
    :meth:`soft_labels` (the teacher output with its graph to alpha); they may note more records
    (EMLC's ``gate``) by passing them to :meth:`soft_labels`'s ``self.note`` through ``extra``.

    Parameters
    ----------
    k:
        The k-step look-ahead both papers have (``1``: the exact one-step meta-gradient). What
        ``k > 1`` means is the subclass's :attr:`k_step`: ``'window'`` (EMLC's Algorithm 1: the
        teacher held for k steps, then Eq. 11 by FPMG, :class:`~noisylabels.meta.schedule.LookaheadWindow`)
        or ``'discounted'`` (MLC's ``gradient_steps``: a meta-gradient every step, their discounted
        sum applied every k-th, :class:`~noisylabels.meta.schedule.DiscountedAccumulation`). Both
        need a JVP ``meta_gradient``.
    label_embedding_dim:
        Size of the teacher's embedding of the given label (MLC's LCN and EMLC's gate both embed
        it; 128 in both codes).
    delayed:
        Default ``True``: the real student step is the virtual step (Algorithm 1's order, MLC's and
        EMLC's code).
    clean_in_student:
        The public codes' option (MLC's default ``hmlc_K_mix``, EMLC's ``mix_g``; not in EMLC's
        Eq. 6): half of each clean batch joins the student's training batch with its hard labels
        (one forward, the mean over all rows), the other half is the meta batch of the
        meta-gradient (and of EMLC's teacher losses). Needs a meta step at every step (k = 1 for
        EMLC, ``meta_interval = 1``). Default off.
    **options:
        As :class:`~noisylabels.methods.meta.MetaNetMethod`.
    """

    own_loss = "soft-ce"
    records: tuple[Record, ...] = (Record("q_given"),)
    detection = ("q_given", -1.0)
    #: what ``k > 1`` means: ``'window'`` (EMLC's FPMG look-ahead) or ``'discounted'`` (MLC's k-step)
    k_step: ClassVar[str] = "window"

    def __init__(self, *, k: int = 1, label_embedding_dim: int = 128, delayed: bool = True,
                 clean_in_student: bool = False, **options: Any) -> None:
        name = type(self).__name__.lower()
        if "lookahead" in options:
            raise UserError(f"{name}: set the look-ahead with method.k ({name}'s own k-step), not lookahead")
        self.k = int_option(name, "k", k, 1)
        self.embedding_dim = int_option(name, "label_embedding_dim", label_embedding_dim, 1)
        if self.k_step == "discounted":
            if self.k > 1 and options.get("meta_gradient", "jvp") == "double-backward":
                raise UserError(f"{name}: k > 1 needs meta_gradient jvp or jvp-func")
            super().__init__(delayed=delayed, **options)
        else:
            super().__init__(delayed=delayed, lookahead=self.k, **options)
        self._extra_notes: dict[str, Tensor] = {}
        self.clean_in_student = bool(clean_in_student)
        if self.clean_in_student and not self.schedule.meta_every_step:
            raise UserError(f"{type(self).__name__}: clean_in_student needs a meta step at every step "
                            f"(k = 1, meta_interval = 1)")
        self._mixed: tuple[Tensor, int] | None = None
        if self.k > 1 and self.k_step == "discounted":  # a meta-gradient every step, the discounted sum every k-th
            self.schedule = DiscountedAccumulation(self.k)

    def training_batch(self, ctx: MethodContext, x: Tensor, y: Tensor, index: Tensor,
                       mb: Any) -> tuple[Tensor, Tensor, Tensor, Any]:
        if not self.clean_in_student or len(mb.y) < 2:
            return x, y, index, mb
        if data_parallel(ctx) is not None:
            raise UserError(f"{type(self).__name__}: clean_in_student is not supported in a data-parallel run "
                            f"(every process draws the whole meta batch); set clean_in_student=false or use one process")
        h = len(mb.y) // 2
        xs = torch.cat([x, mb.x[:h].to(x.dtype)])
        self._mixed = (xs, len(y))
        return (xs, torch.cat([y, mb.y[:h]]), torch.cat([index, mb.index[:h]]),
                type(mb)(mb.x[h:], mb.y[h:], mb.index[h:]))

    # -- the paper's part ----------------------------------------------------------------------------
    def build_meta_net(self) -> nn.Module | None:
        return None  # built in setup: the teacher depends on the run (classes, student features)

    def build_teacher(self, ctx: MethodContext) -> nn.Module:
        """The teacher (its parameters are alpha)."""
        raise NotImplementedError

    def soft_labels(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        """``q_alpha(. | x_i, y~_i)``, shape ``(B, K)``, rows on the simplex, with the graph to alpha.
        Extra per-sample values to record go into ``self._extra_notes``."""
        raise NotImplementedError

    # -- the loss layer (Eq. 6) -----------------------------------------------------------------------
    def loss_layer(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        """``CE(q_alpha(. | x_i, y~_i), p_w(. | x_i))`` per sample (EMLC Eq. 6); rows of a clean half
        (``clean_in_student``) have their one-hot label as the target."""
        self._extra_notes = {}
        n = self._mixed[1] if self._mixed is not None and x is self._mixed[0] else len(y)
        q = self.soft_labels(z[:n], y[:n], x=x[:n], index=index[:n])
        self.note(q=q, q_given=q.gather(1, y[:n, None]).squeeze(1), **self._extra_notes)
        if n < len(y):
            q = torch.cat([q.to(z.dtype), F.one_hot(y[n:], z.shape[1]).to(z.dtype)])
        return soft_cross_entropy(z, q.to(z.dtype))

    # -- set-up and records ---------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        if self.meta_net is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                self.meta_net = self.build_teacher(ctx)
        super().setup(ctx)
        n, k = len(ctx.data.labels), ctx.data.num_classes
        self.q_table = torch.zeros(n, k, device=ctx.device)
        self.q_seen = torch.zeros(n, dtype=torch.bool, device=ctx.device)
        self._epoch_meta: list[Tensor] = []
        self.meta_loss_history: list[float] = []

    def record(self, index: Tensor, **values: Tensor | float) -> None:
        q = values.pop("q", None)
        if isinstance(q, torch.Tensor):
            self.q_table[index] = q.detach().to(self.q_table.dtype)
            self.q_seen[index] = True
        if values:
            super().record(index, **values)

    def on_epoch_start(self, ctx: MethodContext) -> None:
        self.q_seen.zero_()
        self._epoch_meta = []
        self.meta_net.train()

    def after_meta_step(self, ctx: MethodContext, res: Any) -> None:
        self._epoch_meta.append(res.meta_loss.detach().float().reshape(()))

    def on_epoch_end(self, ctx: MethodContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dp = data_parallel(ctx)
        if dp is not None:  # each sample was seen by one process this epoch: take its row from there
            self.q_seen.copy_(dp.merge_rows_([self.q_table], self.q_seen))
        if self._epoch_meta:
            losses = torch.stack(self._epoch_meta).cpu().tolist()
            self.meta_loss_history.extend(float(v) for v in losses)
            out["meta_loss"] = float(np.mean(losses))
        if getattr(ctx.data, "has_ground_truth", True):  # the user's own labels: recovery is unknown
            out.update(label_recovery(self.q_table, self.q_seen, ctx.data.splits["train"], given=ctx.data.labels,
                                      clean=ctx.data.clean_labels))
        meta = ctx.data.splits.get("meta")
        if meta is not None and len(meta):
            probs = ctx.predict(meta)
            out["meta_accuracy"] = float((probs.argmax(1) == ctx.data.labels[meta].to(probs.device)).float().mean())
        return out

    def finalize(self, ctx: MethodContext) -> dict[str, Any]:
        out = summary_from_metrics(ctx.recorder.path("metrics.jsonl"))
        self.write_corrected_labels(ctx)
        return out

    def curves(self, ctx: MethodContext) -> list[Curve]:
        """The clean (meta) loss at the student's new weights over the meta steps (EMLC's Fig. 5)."""
        if not self.meta_loss_history:
            return []
        steps = np.arange(1, len(self.meta_loss_history) + 1)
        return [Curve("meta_loss", steps, np.asarray(self.meta_loss_history), "meta step", "L_clean(w^(t+1))",
                      title=f"{ctx.cfg['method']['name']}: clean (meta) loss at the student's new weights")]

    def write_corrected_labels(self, ctx: MethodContext) -> None:
        """``corrected_labels.csv``: each training sample's last soft label as a label and confidence."""
        train = ctx.data.splits["train"].to(self.q_table.device)
        seen = self.q_seen[train] | (self.q_table[train].sum(1) > 0)
        idx = train[seen]
        if len(idx) == 0:
            return
        q = self.q_table[idx].cpu()
        conf, corrected = q.max(1)
        given = ctx.data.labels[idx.cpu()]
        paths = getattr(ctx.data, "paths", None)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["index", "given", "corrected", "confidence"] + (["path"] if paths is not None else []))
        for i, g, c, p in zip(idx.cpu().tolist(), given.tolist(), corrected.tolist(), conf.tolist()):
            w.writerow([i, g, c, f"{p:.6g}"] + ([paths[i]] if paths is not None else []))
        atomic_write_text(ctx.recorder.path(CORRECTED_LABELS_FILE), buf.getvalue())

    # -- resume: tensors only -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out.update(q_table=self.q_table, q_seen=self.q_seen,
                   meta_loss_history=torch.tensor(self.meta_loss_history, dtype=torch.float64))
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "q_table" in state:
            self.q_table.copy_(state["q_table"])
            self.q_seen.copy_(state["q_seen"])
            self.meta_loss_history = [float(v) for v in state["meta_loss_history"].tolist()]


def summary_from_metrics(path: Any) -> dict[str, Any]:
    """Summary values from ``metrics.jsonl``: test accuracy at the best clean meta-set accuracy (ties:
    the earlier epoch) and the last epoch's label recovery."""
    import json
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return {}
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    out: dict[str, Any] = {}
    scored = [r for r in rows if r.get("meta_accuracy") is not None and r.get("test_accuracy") is not None]
    if scored:
        best = max(scored, key=lambda r: (r["meta_accuracy"], -r["epoch"]))
        out.update(clean_selected_test_accuracy=best["test_accuracy"], clean_selected_epoch=best["epoch"],
                   clean_selected_meta_accuracy=best["meta_accuracy"])
    if rows:
        for key in ("label_recovery", "label_recovery_given_right", "label_recovery_given_wrong"):
            if key in rows[-1]:
                out[key] = rows[-1][key]
    return out


def label_recovery(q: Tensor, seen: Tensor, train: Tensor, *, given: Tensor, clean: Tensor) -> dict[str, float]:
    """EMLC Fig. 1's label recovery over the visited training samples: ``argmax q == clean label``,
    overall and split by whether the given label was right or wrong (``None`` where a part is empty)."""
    train = train.to(q.device)
    idx = train[seen[train]]
    if len(idx) == 0:
        return {}
    hit = (q[idx].argmax(1).cpu() == clean[idx.cpu()])
    right = given[idx.cpu()] == clean[idx.cpu()]

    def frac(mask: Tensor) -> float | None:
        return float(hit[mask].float().mean()) if bool(mask.any()) else None

    return {"label_recovery": float(hit.float().mean()), "label_recovery_given_right": frac(right),
            "label_recovery_given_wrong": frac(~right)}
