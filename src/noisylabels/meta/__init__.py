"""The bilevel engine of the meta methods (Meta-Weight-Net, L2RW, L2B, NARL, MLC, EMLC).

What a method uses is exported here:

* :func:`meta_gradient` -- ``dL_meta(theta_hat(phi))/dphi`` through one virtual step of the run's
  SGD (``how``: one of :data:`META_GRADIENTS`), applied with :func:`assign_grads`;
* :func:`per_example_weights` -- the per-example weights of L2RW / L2B;
* the results: :class:`MetaStep` and its kinds :class:`MetaGradientStep`,
  :class:`JVPMetaGradientStep`, :class:`ExampleWeightsStep`;
* for multi-step look-aheads, the two halves of a meta step (:func:`meta_tangent`,
  :func:`batch_contribution`) and :func:`lookahead_contributions` over :class:`StoredStep` s;
* :func:`register_jvp_rule` (a forward-mode rule for a layer the graph walk does not know) and
  :class:`UnsupportedGraph`.

The rest stays in its module:

* :mod:`~noisylabels.meta.results` -- the result kinds (exported here);
* :mod:`~noisylabels.meta.engine` -- the backends (``meta_gradient_jvp``,
  ``meta_gradient_double_backward``, ``per_example_weights_jvp``, ``logits_jvp``, ``functional_jvp``);
* :mod:`~noisylabels.meta.functional` -- forwards at given parameters (BatchNorm statistics untouched);
* :mod:`~noisylabels.meta.virtual_step` -- the virtual step: exactly one ``torch.optim.SGD`` step;
* :mod:`~noisylabels.meta.graph_jvp` -- forward-mode derivatives on a recorded graph (saved primals reused);
* :mod:`~noisylabels.meta.schedule` -- when a meta-network updates and what an update accumulates.
"""

from __future__ import annotations

from .engine import (
    META_GRADIENTS,
    StoredStep,
    assign_grads,
    batch_contribution,
    lookahead_contributions,
    meta_gradient,
    meta_tangent,
    per_example_weights,
)
from .functional import replicated_batch
from .graph_jvp import UnsupportedGraph, register_jvp_rule
from .results import ExampleWeightsStep, JVPMetaGradientStep, MetaGradientStep, MetaStep

__all__ = [
    "META_GRADIENTS",
    "ExampleWeightsStep",
    "JVPMetaGradientStep",
    "MetaGradientStep",
    "MetaStep",
    "StoredStep",
    "UnsupportedGraph",
    "assign_grads",
    "batch_contribution",
    "lookahead_contributions",
    "meta_gradient",
    "meta_tangent",
    "per_example_weights",
    "register_jvp_rule",
    "replicated_batch",
]
