"""EMLC: Enhanced Meta Label Correction (Taraday & Baskin, ICCV 2023).

The teacher (Sec. 3.3) has its **own** feature extractor and classifier (from the model registry;
default the student's architecture), giving features ``h_i`` and an initial prediction
``y_hat_i = softmax(classifier(h_i))``; a label embedding ``emb(y~_i)`` (dim 128) concatenated with
``h_i`` goes through an MLP (128 hidden, ReLU, one output) and a sigmoid: the gate ``w_i``. The soft
label is ``q_i = w_i onehot(y~_i) + (1 - w_i) y_hat_i`` (:func:`~noisylabels.methods.label_correction.gate_mix`).

* Student loss, Eq. 6: soft-target CE on the noisy batch
  (:class:`~noisylabels.methods.label_correction.LabelCorrectionMethod`).
* Teacher loss, Eq. 12: ``L_CE`` (the teacher classifier's CE on the clean batch) + ``L_BCE`` (the
  gate on the clean batch with half of it corrupted, target 1 = label unchanged;
  :func:`corrupt_half`) + ``L_META``; the first two are :meth:`EMLC.meta_net_loss`, the meta term is
  the engine's meta-gradient, all summed into one update of two optimisers (backbone + classifier,
  embedding + gate MLP).
* k = 1 (Prop. 1 / Cor. 3.1, Eq. 10): exact, through the run's real SGD step (momentum and weight
  decay included), by the engine's JVP identity: with the teacher output as the loss layer's
  meta-parameter function the engine computes ``(1/n) sum_i (J_w z_i . t)^T J_alpha q_i``, which is
  Eq. 10's ``J_w log p_i`` product because ``sum_c q_c = 1`` (tests check both).
* k > 1 (Algorithm 1, Eq. 11 by FPMG, Algorithm 2): the teacher is fixed for k student steps and
  updated when ``t mod k = k - 1`` by the discounted sum over the k stored steps
  (:func:`noisylabels.meta.lookahead_contributions`). The paper's discount ``gamma = 1 - eta``
  assumes plain SGD; here each step's discount is derived for the student's actual torch SGD
  (momentum buffer, dampening, Nesterov, weight decay, each step's lr;
  :func:`noisylabels.meta.virtual_step.lookahead_weights`), so that FPMG equals the exact unrolled
  gradient when ``H_ww = I`` (momentum 0.9 makes ``gamma^j`` 56% off at k = 4 even then).
  **An approximation** still: it drops the student's Hessian ``H_ww`` (its curvature), and holds
  the weights and momentum buffer at the window's start constant in alpha.

Choices where the paper is silent (or only the public code ``MitchellKT/Enhanced-Meta-Label-Correction``
at commit 4ef6fe0 speaks):

* Optimisers: both SGD, lr 0.02, no momentum, **no weight decay** (the code's ``Trainer`` builds
  ``SGD(params, lr=meta_lr)``; the reading notes' "wd 5e-4" is not in that code); constant lr (the
  code's MultiStepLR milestone 20 is never reached in 15 epochs).
* The gate's BCE corrupts every second sample of the clean batch (the code's ``[::2]``), exactly
  ``n // 2`` of them; ``adversarial`` (default) = the teacher's top-1 class if it is not the label,
  else its top-2 (chosen from the detached teacher logits); ``random`` = a uniform class, which may
  equal the label (target then 1, as the code). The code at that commit passes
  ``injection_mode='none'`` for CIFAR; the paper's Eq. 12 has the term, so it is on here.
* The teacher forwards the noisy and the clean batch separately (the code concatenates them: one
  BatchNorm batch); the teacher is in train mode throughout.
* k-step: the student steps as the batches arrive (Algorithm 1 as written); the code collects k
  batches and splits them later, and averages the meta term over all k n samples (1/k of Eq. 11's
  ``1/n`` per step); Eq. 11 is followed. The teacher's forward on each stored batch runs again at the
  window's end (its BatchNorm statistics see those batches twice).
* The code's extra CE on half of each clean batch in the student loss (``mix_g``) is the option
  ``clean_in_student`` (off by default: Eq. 6 has no such term; when on, the teacher's losses use
  only the other half of the clean batch).
* Strong augmentation of the clean batch (the paper's AutoAugment) is **off**: torchvision is not
  available and AutoAugment's PIL operations (shear, posterize, solarize, equalize, ...) would need
  a batched tensor re-implementation whose fidelity could not be checked here; the clean batch gets
  the run's ordinary training augmentation.
* Selection: the loop selects the student on the (noisy) validation split; the paper selects on
  the clean set (suites report both).

Detection (``suspects.csv``, ``detection_auroc``) ranks by minus the teacher classifier's
probability of the given label (record ``teacher_p_given``), not by the gate. The teacher's
classifier is trained by CE on the clean set only (never on the given training labels), so this
is an out-of-sample confidence whose direction is fixed; the gate's is not. Measured on CIFAR-10
with CIFAR-10N human labels (issue 20, ``benchmarks/realnoise_findings.md``; ResNet-8 teacher from
scratch, defaults): the gate ranked the wrong labels *inversely* (AUROC 0.48 -> 0.42 over 3
epochs) while ``teacher_p_given`` ranked them the right way (0.57 -> 0.65), and the gate was
anti-correlated with ``teacher_p_given`` (Spearman -0.22 to -0.37). Cause: the adversarial L_BCE
corrupts a clean label to the teacher's strongest wrong class, so every target-0 label is one the
teacher favours (its top-1 or top-2), while a weak teacher (31% accurate on the clean set after 3
epochs) gives the true label little mass; the gate learns "the teacher likes this label -> it is
fake". The corruption is informative only once the teacher ranks the true class first on most
samples (the paper's teacher starts from a SimCLR backbone: ``teacher_init``).

When not to use it: with a teacher trained from scratch at a small budget EMLC is below CE (issue
20: 4 points at 15 epochs; 2.7-3.2 points at 3 epochs with teacher lr 0.02, 0.1 or random
corruption alike: the teacher's lr is not the cause; 2.2 of those points are the 1000 images the
meta set takes from a 4000-image subset, CE on the remaining 2700 being 0.5-1.0 above EMLC). Its gate stays near 1/2 and separates
nothing, no wrong label is recovered (argmax ``q`` = the given label: ``label_recovery_given_wrong``
0), and the student trains on the given label smoothed halfway toward a weak teacher's
prediction. Use it with a pre-trained ``teacher_init`` (the paper's SimCLR backbone), or prefer CE.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..models import check_features, feature_dim, load_init_checkpoint, logits_and_features
from .base import register_method
from .context import MethodContext
from .label_correction import LabelCorrectionMethod, gate_mix, upcast
from .options import choice_option, int_option, positive_option
from .records import Record

__all__ = ["Teacher", "corrupt_half", "EMLC", "CORRUPTIONS"]

#: the gate's label-corruption strategies (``none``: no BCE term)
CORRUPTIONS = ("adversarial", "random", "none")


class Teacher(nn.Module):
    """EMLC's teacher (Sec. 3.3): own backbone + classifier, label embedding, gate MLP.

    Parameters
    ----------
    backbone:
        A registry :class:`~noisylabels.models.Classifier` (``features`` + ``classifier``).
    num_classes:
        K.
    embedding_dim, hidden:
        Label embedding size and the gate MLP's hidden width (128, 128).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, embedding_dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Embedding(num_classes, embedding_dim)
        self.gate_mlp = nn.Sequential(nn.Linear(feature_dim(backbone) + embedding_dim, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(teacher logits, features h)`` (h not detached: every loss reaches the backbone)."""
        return logits_and_features(self.backbone, x)

    def gate(self, h: Tensor, labels: Tensor) -> Tensor:
        """``w = sigmoid(MLP([h; emb(y~)]))``, shape ``(B,)``."""
        return torch.sigmoid(self.gate_mlp(torch.cat([h, self.embedding(labels).to(h.dtype)], dim=1))).squeeze(1)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(q, gate, teacher logits)`` for inputs ``x`` with given labels."""
        logits, h = self.encode(x)
        w = self.gate(h, labels)
        return gate_mix(w, labels, F.softmax(upcast(logits), dim=1)), w, logits


def corrupt_half(labels: Tensor, logits: Tensor | None = None, *, mode: str, num_classes: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """The clean batch with every second sample (``n // 2`` of them) relabelled (EMLC Sec. 3.4, L_BCE).

    Parameters
    ----------
    labels:
        The clean labels ``(n,)``.
    logits:
        The teacher's logits on the batch (``adversarial`` only; detached inside).
    mode:
        ``'adversarial'``: the teacher's strongest wrong class (top-1 unless it is the label, then
        top-2), so a corrupted label never equals the true one; ``'random'``: uniform over the
        classes (may equal the true label).
    generator:
        For ``random`` (on the labels' device).
    """
    out = labels.clone()
    n = len(labels)
    pos = torch.arange(0, 2 * (n // 2), 2, device=labels.device)
    if mode == "adversarial":
        if logits is None:
            raise UserError("corrupt_half: adversarial corruption needs the teacher's logits")
        top2 = logits.detach().topk(2, dim=1).indices
        adv = torch.where(top2[:, 0] != labels, top2[:, 0], top2[:, 1])
        out[pos] = adv[pos]
    elif mode == "random":
        out[pos] = torch.randint(0, num_classes, (len(pos),), device=labels.device, generator=generator)
    else:
        raise UserError(f"corruption must be one of adversarial, random; got {mode!r}")
    return out


@register_method("emlc", help="Enhanced Meta Label Correction: own-backbone teacher with a gate, exact k=1 and "
                              "FPMG k-step meta-gradients (Taraday & Baskin 2023)")
class EMLC(LabelCorrectionMethod):
    """EMLC (module docstring for the paper's parts and every choice made here).

    Parameters
    ----------
    k:
        Look-ahead steps (Algorithm 1): 1 = exact one-step meta-gradient (Eq. 10); k > 1 = Eq. 11 by
        FPMG, teacher updated once every k student steps (the base's option, ``k_step = 'window'``).
    teacher_model:
        Registry name of the teacher's backbone; ``None``: the student's architecture and options.
    teacher_init, teacher_init_exclude:
        A state-dict file the teacher's backbone starts from (loaded with ``weights_only=True``;
        missing file, missing / unexpected keys and shape mismatches are one-line errors), and key
        prefixes left at their fresh initialisation (e.g. ``[classifier]``).
    label_embedding_dim, gate_hidden:
        Label embedding size (:class:`~noisylabels.methods.label_correction.LabelCorrectionMethod`) and
        the gate MLP's hidden width: 128 and 128 (the code).
    corruption:
        ``'adversarial'`` (default), ``'random'`` or ``'none'`` (no ``L_BCE``).
    supervised_weight, bce_weight:
        Weights of ``L_CE`` and ``L_BCE`` in Eq. 12 (1 and 1: the paper's unweighted sum).
    meta_lr, meta_momentum, meta_weight_decay:
        Both teacher optimisers (SGD 0.02, no momentum, no weight decay).
    gate_lr:
        The embedding + gate optimiser's lr (default: ``meta_lr``, as the code).
    **options:
        As :class:`~noisylabels.methods.label_correction.LabelCorrectionMethod` (``meta_batch_size``:
        the clean batch, default the training batch size as the code's 128 + 128).
    """

    records = (Record("q_given"), Record("gate"), Record("teacher_p_given"))
    #: suspicion = minus the teacher classifier's probability of the given label (module docstring)
    detection = ("teacher_p_given", -1.0)
    default_meta_optimizer = {"name": "sgd", "weight_decay": 0.0, "momentum": 0.0, "nesterov": False}

    def __init__(self, *, teacher_model: str | None = None, teacher_init: str | None = None,
                 teacher_init_exclude: list[str] | None = None, gate_hidden: int = 128, corruption: str = "adversarial",
                 supervised_weight: float = 1.0, bce_weight: float = 1.0, meta_lr: float = 0.02,
                 gate_lr: float | None = None, **options: Any) -> None:
        if options.get("meta_optimizer", "sgd") != "sgd":
            raise UserError("emlc: the teacher's optimisers are SGD (meta_optimizer: sgd)")
        self.teacher_model, self.teacher_init, self.teacher_init_exclude = teacher_model, teacher_init, teacher_init_exclude
        self.gate_hidden = int_option("emlc", "gate_hidden", gate_hidden, 1)
        self.corruption = choice_option("emlc", "corruption", corruption, CORRUPTIONS)
        self.supervised_weight, self.bce_weight = float(supervised_weight), float(bce_weight)
        self.gate_lr = None if gate_lr is None else positive_option("emlc", "gate_lr", gate_lr)
        super().__init__(meta_lr=meta_lr, **options)

    # -- the teacher ---------------------------------------------------------------------------------
    def build_teacher(self, ctx: MethodContext) -> nn.Module:
        backbone = check_features(ctx.build_model(self.teacher_model), what="emlc: the teacher's model")
        return Teacher(backbone, ctx.data.num_classes, embedding_dim=self.embedding_dim, hidden=self.gate_hidden)

    def init_meta_net(self, ctx: MethodContext) -> None:
        if self.teacher_init is not None:
            load_init_checkpoint(self.meta_net.backbone, self.teacher_init, exclude=self.teacher_init_exclude or (),
                                 what="method.teacher_init")

    def meta_optimizer_parts(self) -> list[tuple[list[Tensor], float]]:
        t, lr = self.meta_net, self._opt_cfg[1]  # SGD both (meta_optimizer: sgd)
        return [(list(t.backbone.parameters()), lr),
                ([*t.embedding.parameters(), *t.gate_mlp.parameters()], self.gate_lr or lr)]

    def soft_labels(self, z: Tensor, y: Tensor, *, x: Tensor, index: Tensor) -> Tensor:
        q, w, logits = self.meta_net(x, y)
        p_given = F.softmax(upcast(logits.detach()), dim=1).gather(1, y[:, None]).squeeze(1)
        self._extra_notes = {"gate": w, "teacher_p_given": p_given}
        return q

    # -- Eq. 12's supervised terms ---------------------------------------------------------------------
    def meta_net_loss(self, ctx: MethodContext, mb: Any) -> Tensor:
        """``L_CE + L_BCE`` of Eq. 12 on the clean batch (the meta term is the meta-gradient)."""
        logits, h = self.meta_net.encode(mb.x)
        loss = self.supervised_weight * F.cross_entropy(upcast(logits), mb.y)
        if self.corruption != "none" and self.bce_weight:
            gen = torch.Generator(device=mb.y.device).manual_seed(ctx.seed * 1_000_003 + ctx.step) \
                if self.corruption == "random" else None
            fake = corrupt_half(mb.y, logits, mode=self.corruption, num_classes=ctx.data.num_classes, generator=gen)
            target = (fake == mb.y).float()
            w = upcast(self.meta_net.gate(h, fake)).clamp(0.0, 1.0)
            loss = loss + self.bce_weight * F.binary_cross_entropy(w, target)
        return loss
