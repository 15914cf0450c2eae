"""SOP and SOP+: sparse over-parameterisation of the label noise (Liu, Zhu, Qu & You, "Robust Training
under Label Noise by Over-parameterization", ICML 2022, arXiv:2202.14026; code: github.com/shengliu66/SOP).

Each training sample i gets its own noise term, over-parameterised by two per-sample parameters and
read as the part of the given one-hot label ``y_i`` the network should not fit:

* [E1] ``s_i = u_i (.) u_i (.) y_i - v_i (.) v_i (.) (1 - y_i)`` (the paper's classification form of
  ``s_i = u_i (.) u_i - v_i (.) v_i``): ``+u_i^2`` on the given label, ``-v_i^2`` on the others,
  each clamped to ``[0, 1]``; ``u_i`` is one number per sample (only the given label's entry of a
  K-vector ``u_i`` is ever used), ``v_i`` a K-vector. The model of the data is ``y_i = f(x_i) + s_i``.
* [E2] initialisation ``u, v ~ N(0, sigma^2)``, ``sigma = 1e-8`` (the paper's and the code's).
* [E3] plain gradient descent with per-variable learning rates (Table A.1's ``alpha_u``, ``alpha_v``;
  the code's ``lr_u``, ``lr_v``; SGD, no momentum, no weight decay, no schedule): the implicit bias
  of ``u^2 - v^2`` from a tiny start towards a sparse ``s`` is the method's regulariser. The rows
  of ``u``, ``v`` outside the batch get no gradient and do not move.
* [E4] the network and ``u_i``: cross-entropy of the noise-corrected prediction,
  ``L_CE = -log phi(p_i + s_i)_{y_i}`` with ``p_i = softmax(f(x_i))``, ``v_i`` held fixed (stop
  gradient) and ``phi`` the code's projection on the simplex (clamp at ``eps = 1e-4``, divide by the
  sum, clamp to ``[eps, 1]``). Without clamps active ``L_CE = -log(p_y + U) + log(1 + U - sum V)``,
  whose logit gradient is CE's, ``p - e_y``, times ``p_y / (p_y + U)``: a sample whose given label
  SOP explains as noise stops pulling the network.
* [E5] ``v_i``: the squared error ``L_MSE = ||yhat_i + s_i - y_i||^2`` with ``yhat_i`` the one-hot
  argmax of the network (no gradient to the network). CE cannot learn ``v_i`` (with a one-hot
  label it reads only the label's entry), MSE can.
* [E6] SOP+ adds ``lambda_C * L_C + lambda_B * L_B`` (``lambda_C = 0.9``, ``lambda_B = 0.1``):
  consistency ``L_C = KL(sg(p_weak) || p_strong)`` between a weakly and a strongly augmented view
  of the same images (one forward of both, the weak view's prediction the target) and class
  balance ``L_B = -(1/K) sum_c log pbar_c``, ``pbar`` the batch mean of the corrected prediction
  ``phi(p + s)`` (KL from the uniform prior up to the constant ``log K``).

Paper and code differ in which loss trains ``u`` (option ``u_loss``): ``'ce'`` (default; the code
released with the paper, Feb-Aug 2022: ``u`` by [E4] only, ``v`` by [E5] only, the two learning rates
realised by weighting [E5]; its author calls that equivalent to the paper's ``alpha_u``, ``alpha_v``,
repository issue 5), ``'ce+mse'`` (the code since Sep 2022, what noisypy and the ReScience tables
ran: ``u`` by both) or ``'mse'`` (the code of Aug 2022: ``u`` by [E5] only). The paper's full text
was not at hand while this was written: the equations are quoted by content ([E1]-[E6] label them
here), not by the paper's numbers.

Limiting case: ``u = v = 0`` is a fixed point (every gradient to them carries a factor ``u`` or
``v``) where ``L_CE`` is CE (up to the clamp at ``eps``) and ``L_MSE = 2 * 1[argmax != y]`` is a
constant with no gradient: SOP with ``init_std = 0`` trains exactly like CE.

Per-sample records: ``s_given`` (``U_i = clamp(u_i^2, 0, 1)``, the noise SOP puts on the given
label) and ``s_norm`` (``||s_i||_1 = U_i + sum_{c != y_i} V_ic``: how far the given label lies
from what SOP lets the network fit). Detection score ``+s_norm``: by [E1]'s sign pattern every entry
of ``s_i`` moves the given one-hot label away from itself, so the run learns magnitudes only, never
a direction, and summing both parts ranks wrong labels first whichever of ``u`` ([E4]) or ``v``
([E5]) carried the noise (Table A.1's ``alpha_u : alpha_v`` runs from 1:1 to 1:1000).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..seeding import derive_seed
from .base import Method, register_method
from .context import MethodContext, StepOutput, batch_total
from .options import choice_option
from .records import Record

__all__ = ["SOP", "SOPPlus", "noise_entries", "corrected_prediction", "sop_mse", "consistency_kl", "class_balance",
           "balance_of_mean", "U_LOSSES", "EPS"]

Tensor = torch.Tensor

#: the clamp of the corrected prediction and of the batch mean (the code's ``eps``)
EPS = 1e-4
#: which loss trains ``u`` (see the module docstring)
U_LOSSES = ("ce", "ce+mse", "mse")


def noise_entries(u: Tensor, v: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
    """[E1] ``(U, V)`` with ``s = U - V``: ``U = clamp(u^2, 0, 1) * y`` on the given label and
    ``V = clamp(v^2, 0, 1) * (1 - y)`` on the others; ``u`` is ``(B, 1)`` (or ``(B, K)``), ``v``
    ``(B, K)``, ``onehot`` ``(B, K)``."""
    return (u * u).clamp(0.0, 1.0) * onehot, (v * v).clamp(0.0, 1.0) * (1.0 - onehot)


def corrected_prediction(p: Tensor, s: Tensor, eps: float = EPS) -> Tensor:
    """``phi(p + s)``: ``p + s`` clamped at ``eps``, divided by its sum, clamped to ``[eps, 1]`` (the
    code's projection of [E4]; the identity on a prediction with every entry at least ``eps``)."""
    q = (p + s).clamp(min=eps)
    q = q / q.sum(dim=1, keepdim=True).clamp(min=eps)
    return q.clamp(eps, 1.0)


def sop_mse(logits: Tensor, U: Tensor, V: Tensor, onehot: Tensor) -> Tensor:
    """[E5] per-sample ``||onehot(argmax logits) + U - V - y||^2`` (summed over classes; no gradient
    to ``logits``)."""
    hard = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).to(U.dtype)
    return ((hard + U - V - onehot) ** 2).sum(dim=1)


def consistency_kl(weak_logits: Tensor, strong_logits: Tensor) -> Tensor:
    """[E6] per-sample ``KL(sg(softmax(weak)) || softmax(strong))``: the strong view is pulled
    towards the weak view's prediction, which is a fixed target."""
    target = torch.softmax(weak_logits.detach(), dim=1)
    return (target * (target.clamp_min(1e-30).log() - torch.log_softmax(strong_logits, dim=1))).sum(dim=1)


def class_balance(prediction: Tensor, eps: float = EPS) -> Tensor:
    """[E6] ``-(1/K) sum_c log clamp(mean_b prediction_bc, eps, 1)`` (a scalar)."""
    return balance_of_mean(prediction.mean(dim=0), eps)


def balance_of_mean(mean: Tensor, eps: float = EPS) -> Tensor:
    """[E6] ``-(1/K) sum_c log clamp(pbar_c, eps, 1)`` of the batch-mean prediction ``pbar`` (``(K,)``;
    :func:`class_balance` of a batch, or its global mean over several processes' slices)."""
    return -mean.clamp(eps, 1.0).log().mean()


def _non_negative(name: str, method: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise UserError(f"{method}: {name} must be a finite number >= 0, got {value!r}")
    return v


@register_method("sop", help="sparse over-parameterised per-sample noise s_i = u_i^2 y_i - v_i^2 (1 - y_i) "
                             "(Liu et al., ICML 2022)")
class SOP(Method):
    """SOP: the network and per-sample noise ``s_i = u_i^2 y_i - v_i^2 (1 - y_i)`` trained together
    (module docstring: [E1]-[E5]); the network alone predicts (validation, test, scores). Records
    ``s_given`` and ``s_norm`` per sample; detection ranks by ``s_norm`` (module docstring).

    Per-dataset settings (Table A.1 / the official configs): CIFAR-10 ``lr_u = lr_v = 10``;
    CIFAR-100 ``lr_u = 1, lr_v = 10`` (40% asymmetric: ``lr_v = 100``, ``lr_u = 1`` in the paper,
    0.1 in the code); Clothing-1M ``0.1``, ``1``; always ``init_std = 1e-8``; the network: SGD lr 0.02, momentum 0.9, weight decay 5e-4,
    batch 128, 120 epochs with steps at 40 and 80 (SOP+: 300 epochs, cosine to 2e-4).

    Several processes (data-parallel): each process steps its slice's rows of ``u``, ``v`` with its
    gradient weighted by ``n_r / n`` (plain SGD: no other row moves) and the loop merges the rows after
    each epoch's steps; SOP+'s ``pbar`` is the global batch's mean.

    Parameters
    ----------
    lr_u, lr_v:
        Learning rates of ``u`` and ``v`` ([E3]; plain SGD on the batch-mean loss, fixed over the
        run). Default 10 and 10 (CIFAR-10).
    init_std:
        Standard deviation of the zero-mean normal ``u`` and ``v`` start from ([E2]; 1e-8). 0 starts
        at the fixed point ``u = v = 0``: the run is CE.
    u_loss:
        Which loss trains ``u``: ``'ce'`` (default, [E4] only), ``'ce+mse'`` (the official code since
        Sep 2022: [E4] and [E5]) or ``'mse'`` ([E5] only); see the module docstring.
    """

    own_loss = "sop"
    #: the registered name (in messages)
    method_name = "sop"
    records = (Record("s_given"), Record("s_norm"))
    detection = ("s_norm", 1.0)

    def __init__(self, *, lr_u: float = 10.0, lr_v: float = 10.0, init_std: float = 1e-8,
                 u_loss: str = "ce") -> None:
        super().__init__()
        name = self.method_name
        self.lr_u = _non_negative("lr_u", name, lr_u)
        self.lr_v = _non_negative("lr_v", name, lr_v)
        self.init_std = _non_negative("init_std", name, init_std)
        if self.init_std > 1.0:
            raise UserError(f"{name}: init_std must be at most 1 (u^2, v^2 are clamped to [0, 1]), got {init_std!r}")
        self.u_loss = choice_option(name, "u_loss", u_loss, U_LOSSES)
        self.uv_optimizer: torch.optim.SGD | None = None

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        k = ctx.data.num_classes
        self.u = self.per_sample("u", shape=(1,), requires_grad=True)
        self.v = self.per_sample("v", shape=(k,), requires_grad=True)
        gen = torch.Generator().manual_seed(derive_seed(ctx.seed, "sop-uv"))
        with torch.no_grad():
            self.u.copy_(torch.randn(self.u.shape, generator=gen) * self.init_std)
            self.v.copy_(torch.randn(self.v.shape, generator=gen) * self.init_std)
        self.uv_optimizer = torch.optim.SGD([{"params": [self.u], "lr": self.lr_u},
                                             {"params": [self.v], "lr": self.lr_v}], lr=self.lr_u,
                                            momentum=0.0, weight_decay=0.0)

    # -- the loss ---------------------------------------------------------------------------------
    def loss_terms(self, logits: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """The batch means of [E4] (``ce``: ``-log phi(p + U - sg(V))_y``) and [E5] (``mse``) with the
        detaches ``u_loss`` names, the corrected prediction ``phi(p + U - sg(V))`` (``prediction``, for
        SOP+'s balance term) and the per-sample sums of ``U`` and ``V`` (``noise``, ``(2, B)``, detached)."""
        z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 under autocast, float64 kept
        onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
        U, V = noise_entries(self.u[index], self.v[index], onehot)
        U_ce = U.detach() if self.u_loss == "mse" else U
        U_mse = U.detach() if self.u_loss == "ce" else U
        prediction = corrected_prediction(torch.softmax(z, dim=1), U_ce - V.detach())
        ce = -(onehot * prediction.log()).sum(dim=1)
        mse = sop_mse(z, U_mse, V, onehot)
        return {"ce": ce.mean(), "mse": mse.mean(), "prediction": prediction,
                "noise": torch.stack([U.detach().sum(1), V.detach().sum(1)])}

    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        z = ctx.model(x)
        terms = self.loss_terms(z, y, index)
        loss = terms["ce"] + terms["mse"]
        return self._step(ctx, z, loss, index, terms)

    def _step(self, ctx: MethodContext, z: Tensor, loss: Tensor, index: Tensor, terms: dict[str, Tensor]) -> StepOutput:
        assert self.uv_optimizer is not None
        ctx.backward_and_step(loss, also=(self.uv_optimizer,))
        self.note_noise(index, terms)
        return StepOutput(logits=z.detach(), loss=loss.detach())

    def note_noise(self, index: Tensor, terms: dict[str, Tensor]) -> None:
        """Record ``s_given`` (``U_i``) and ``s_norm`` (``||s_i||_1``) of the values the step used."""
        u_part, v_part = terms["noise"]
        self.record(index, s_given=u_part, s_norm=u_part + v_part)

    # -- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The ``u``, ``v`` optimiser (``u`` and ``v`` themselves are per-sample state)."""
        return {"uv_optimizer": self.uv_optimizer.state_dict() if self.uv_optimizer is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.uv_optimizer is not None and state.get("uv_optimizer"):
            self.uv_optimizer.load_state_dict(state["uv_optimizer"])


@register_method("sop-plus", help="SOP+: SOP with weak/strong-view consistency and class balance (Liu et al., "
                                  "ICML 2022)")
class SOPPlus(SOP):
    """SOP+ ([E6]): SOP on the weak view, plus ``consistency * KL(sg(p_weak) || p_strong)`` and
    ``balance * L_B``; both views go through the network in one forward (the code's: batch-norm
    statistics over both), the weak view's logits are the step's.

    Parameters
    ----------
    consistency:
        ``lambda_C`` (0.9, the paper's CIFAR setting); 0 drops the term.
    balance:
        ``lambda_B`` (0.1); 0 drops the term.
    **options:
        As :class:`SOP`.
    """

    method_name = "sop-plus"
    views = ("weak", "strong")

    def __init__(self, *, consistency: float = 0.9, balance: float = 0.1, lr_u: float = 10.0, lr_v: float = 10.0,
                 init_std: float = 1e-8, u_loss: str = "ce") -> None:
        super().__init__(lr_u=lr_u, lr_v=lr_v, init_std=init_std, u_loss=u_loss)
        self.consistency = _non_negative("consistency", self.method_name, consistency)
        self.balance = _non_negative("balance", self.method_name, balance)

    def train_step(self, ctx: MethodContext, x: Any, y: Tensor, index: Tensor) -> StepOutput:
        weak, strong = x
        z_all = ctx.model(torch.cat([weak, strong]))
        z, z_strong = z_all[:len(y)], z_all[len(y):]
        terms = self.loss_terms(z, y, index)
        loss = terms["ce"] + terms["mse"]
        if self.consistency > 0:
            loss = loss + self.consistency * consistency_kl(z.float(), z_strong.float()).mean()
        if self.balance > 0:  # pbar over the global batch on several processes (batch_total)
            total, count = batch_total(ctx, terms["prediction"], dim=0)
            loss = loss + self.balance * balance_of_mean(total / count)
        return self._step(ctx, z, loss, index, terms)
