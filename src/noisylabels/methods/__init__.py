"""Training methods, one small module each, all on the shared loop."""

from .base import ERM, METHODS, Method, create_method, list_methods, register_method
from .forward import ForwardCorrection
from .truncated_lq import TruncatedLq

__all__ = ["ERM", "METHODS", "Method", "create_method", "list_methods", "register_method",
           "ForwardCorrection", "TruncatedLq"]
