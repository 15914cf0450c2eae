"""The bilevel engine of the meta methods (Meta-Weight-Net, L2RW, L2B).

* :mod:`~noisylabels.meta.functional` -- forwards at given parameters (BatchNorm statistics untouched).
* :mod:`~noisylabels.meta.virtual_step` -- the virtual step: exactly one ``torch.optim.SGD`` step.
* :mod:`~noisylabels.meta.graph_jvp` -- forward-mode derivatives on a recorded graph (saved primals reused).
* :mod:`~noisylabels.meta.engine` -- meta-gradients ``dL_meta(theta_hat(phi))/dphi`` and per-example
  weights by one forward-mode (JVP) pass, plus the double-backward reference path; the two halves
  of a meta step (:func:`meta_tangent`, :func:`batch_contribution`) for multi-step look-aheads.
"""

from __future__ import annotations

from .engine import (
    JVP_BACKENDS,
    META_GRADIENTS,
    MetaStep,
    StoredStep,
    assign_grads,
    batch_contribution,
    functional_jvp,
    logits_jvp,
    lookahead_contributions,
    meta_gradient,
    meta_gradient_double_backward,
    meta_gradient_jvp,
    meta_tangent,
    per_example_weights,
    per_example_weights_jvp,
)
from .functional import functional_logits, params_and_buffers
from .graph_jvp import JVP_RULES, UnsupportedGraph, graph_jvp, register_jvp_rule, supports_graph
from .virtual_step import (
    SGDHyperparams,
    VirtualStep,
    optimizer_virtual_step,
    sgd_direction_scale,
    sgd_hyperparams,
    sgd_virtual_step,
)

__all__ = [
    "JVP_BACKENDS",
    "JVP_RULES",
    "META_GRADIENTS",
    "MetaStep",
    "SGDHyperparams",
    "StoredStep",
    "VirtualStep",
    "assign_grads",
    "batch_contribution",
    "functional_jvp",
    "functional_logits",
    "graph_jvp",
    "logits_jvp",
    "lookahead_contributions",
    "meta_gradient",
    "meta_gradient_double_backward",
    "meta_gradient_jvp",
    "meta_tangent",
    "optimizer_virtual_step",
    "params_and_buffers",
    "per_example_weights",
    "per_example_weights_jvp",
    "register_jvp_rule",
    "sgd_direction_scale",
    "sgd_hyperparams",
    "sgd_virtual_step",
    "supports_graph",
    "UnsupportedGraph",
]
