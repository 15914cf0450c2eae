"""The shared training loop, optimisers, schedules and run records."""

from ..seeding import derive_seed, seed_everything
from .loop import TrainContext, build_context, evaluate, fit, predict_proba, resolve_method_defaults
from .optim import build_optimizer, build_scheduler, lr_factor
from .prepare import RunData, prepare_data
from .records import RunRecorder, read_metrics

__all__ = ["TrainContext", "build_context", "evaluate", "fit", "predict_proba", "seed_everything", "resolve_method_defaults",
           "build_optimizer",
           "build_scheduler", "lr_factor", "RunData", "derive_seed", "prepare_data", "RunRecorder", "read_metrics"]
