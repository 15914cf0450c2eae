"""Training methods, one small module each, all on the shared loop.

A method sees the run only through :class:`~noisylabels.methods.context.MethodContext` (this
package never imports the training loop or the data loaders). Meta methods build on
:class:`~noisylabels.methods.meta.MetaNetMethod` (a meta-network at the loss layer) or
:class:`~noisylabels.methods.meta.ExampleWeightingMethod` (per-step example weights).
"""

from .base import ERM, METHODS, Method, check_loss_section, create_method, list_methods, register_method
from .context import MetaBatch, MethodContext, StepOutput
from .coteaching import CoTeaching, CoTeachingPlus
from .dividemix import DivideMix
from .elr import ELR, elr_regularizer, target_probs, temporal_ensemble
from .elr_plus import ELRPlus
from .emlc import EMLC, Teacher, corrupt_half
from .forward import ForwardCorrection
from .l2b import L2B
from .l2rw import L2RW, normalize_weights
from .label_correction import LabelCorrectionMethod, gate_mix, soft_cross_entropy
from .meta import ExampleWeightingMethod, MetaMethod, MetaNetMethod, meta_loss_fn
from .mlc import MLC, LabelCorrectionNet
from .mwnet import MetaWeightNet, MNWNet, RMNWNet, WeightNet
from .narl import NARL, Adjuster, margin
from .promix import ProMix
from .narl_transfer import TransferNARL, load_adjuster, save_adjuster
from .records import Record, SampleRecords
from .sop import SOP, SOPPlus
from .truncated_lq import TruncatedLq

__all__ = ["ERM", "METHODS", "Method", "check_loss_section", "create_method", "list_methods", "register_method",
           "MetaBatch", "MethodContext", "StepOutput", "CoTeaching", "CoTeachingPlus", "DivideMix", "ELR", "ELRPlus", "elr_regularizer", "target_probs", "temporal_ensemble", "EMLC", "Teacher", "corrupt_half", "ForwardCorrection", "L2B", "L2RW",
           "normalize_weights",
           "LabelCorrectionMethod", "gate_mix", "soft_cross_entropy", "MLC", "LabelCorrectionNet",
           "ExampleWeightingMethod", "MetaMethod", "MetaNetMethod", "meta_loss_fn", "MetaWeightNet", "MNWNet",
           "RMNWNet", "WeightNet", "NARL", "Adjuster", "TransferNARL", "load_adjuster", "margin",
           "save_adjuster", "ProMix", "Record", "SampleRecords", "SOP", "SOPPlus", "TruncatedLq"]
