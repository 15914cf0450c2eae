"""The shared training loop, optimisers, schedules and run records."""

from .loop import TrainContext, build_context, evaluate, fit, predict_proba, seed_everything
from .optim import build_optimizer, build_scheduler, lr_factor
from .prepare import RunData, derive_seed, prepare_data
from .records import RunRecorder

__all__ = ["TrainContext", "build_context", "evaluate", "fit", "predict_proba", "seed_everything", "build_optimizer",
           "build_scheduler", "lr_factor", "RunData", "derive_seed", "prepare_data", "RunRecorder"]
