"""Training methods, one small module each, all on the shared loop."""

from .base import ERM, METHODS, Method, create_method, list_methods, register_method
from .forward import ForwardCorrection
from .l2b import L2B, L2RW, normalize_weights
from .mwnet import MetaWeightNet, MNWNet, RMNWNet, WeightNet
from .reweighting import ReweightingMethod
from .truncated_lq import TruncatedLq

__all__ = ["ERM", "METHODS", "Method", "create_method", "list_methods", "register_method",
           "ForwardCorrection", "TruncatedLq", "L2B", "L2RW", "normalize_weights", "MetaWeightNet", "MNWNet",
           "RMNWNet", "WeightNet", "ReweightingMethod"]
