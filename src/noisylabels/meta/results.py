"""What the engine's functions return (:mod:`noisylabels.meta.engine`): one result kind per producer.

:class:`MetaStep` holds what every function fills; :class:`MetaGradientStep` (the meta-gradient
functions) adds the meta-gradient and the training gradient, :class:`JVPMetaGradientStep` (the JVP
path) the tangent and scale it was built from, and :class:`ExampleWeightsStep`
(:func:`~noisylabels.meta.per_example_weights`) the raw weights. All are keyword-only dataclasses of
tensors (nothing is synchronised to the host), so no field is ``None`` for another producer's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MetaStep", "MetaGradientStep", "JVPMetaGradientStep", "ExampleWeightsStep"]

Tensor = torch.Tensor


@dataclass(kw_only=True)
class MetaStep:
    """What every engine function returns (tensors only; nothing is synchronised to the host); each
    function returns the subclass with the fields it fills: :class:`MetaGradientStep` (the
    meta-gradient functions; :class:`JVPMetaGradientStep` from the JVP path) or
    :class:`ExampleWeightsStep` (:func:`~noisylabels.meta.per_example_weights`).

    Attributes
    ----------
    meta_loss:
        ``L_meta(theta_hat)``, 0-dim, detached.
    train_logits:
        ``z = f(x; theta)``; with ``reuse_forward=True`` it keeps its graph to the model's
        parameters (for the real step), otherwise detached.
    train_losses:
        The per-sample training losses at ``theta`` (``(n,)``, or ``(n, k)`` for per-example
        weights with ``k`` loss columns), detached.
    """

    meta_loss: Tensor
    train_logits: Tensor
    train_losses: Tensor


@dataclass(kw_only=True)
class MetaGradientStep(MetaStep):
    """A meta-gradient step (:func:`~noisylabels.meta.meta_gradient`, :func:`~noisylabels.meta.engine.meta_gradient_double_backward`).

    Attributes
    ----------
    meta_grads:
        ``dL_meta(theta_hat(phi))/dphi``, one tensor per entry of ``phi`` (zeros where phi does
        not reach the meta loss). Not applied: see :func:`~noisylabels.meta.assign_grads`.
    train_grads:
        ``grad_theta L_train(theta, phi)`` at the *pre-update* phi, by parameter name (the
        gradient the virtual step used; ``None`` entries for parameters it does not reach). A
        "delayed" real step (MLC's approximation) applies it instead of a new backward.
    """

    meta_grads: list[Tensor]
    train_grads: dict[str, Tensor | None]


@dataclass(kw_only=True)
class JVPMetaGradientStep(MetaGradientStep):
    """A meta-gradient step by the JVP path (:func:`~noisylabels.meta.engine.meta_gradient_jvp`), with what it was built from.

    Attributes
    ----------
    tangent, scale:
        The tangent ``t_p = s_p v_p`` at ``theta_hat`` (:func:`~noisylabels.meta.meta_tangent`) and the
        per-parameter scale ``s_p = lr_p c_p`` it was built with; a k-step look-ahead reuses them
        for its stored steps (:func:`~noisylabels.meta.lookahead_contributions`), MLC's k-step discount reads ``v = t / s``.
    """

    tangent: dict[str, Tensor]
    scale: dict[str, float]


@dataclass(kw_only=True)
class ExampleWeightsStep(MetaStep):
    """Per-example weights (:func:`~noisylabels.meta.per_example_weights`).

    Attributes
    ----------
    weights:
        Raw per-example weights ``w_i = -dL_meta/d eps_i`` at ``eps = 0`` (shape of ``train_losses``).
    """

    weights: Tensor
