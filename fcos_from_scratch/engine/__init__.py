"""The training engine: optimiser and schedule, checkpoints, the epoch loop,
evaluation, plots and multi-process helpers.

``python -m fcos_from_scratch.train`` is a thin wrapper around :func:`fit`.
"""

from .checkpoint import atomic_save, load_checkpoint, resume_from, training_state
from .evaluate import checkpoint_detections, evaluate_checkpoint, load_model
from .loop import EpochProgress, EpochResult, NonFiniteLossError, evaluate, train_one_epoch
from .optim import LRMultiplier, TimeBudget, build_optimizer, build_scheduler, parameter_groups
from .run_folder import RunFolderError, check_run_folder
from .trainer import FitResult, TrainingInterrupted, fit

__all__ = [
    "EpochProgress",
    "EpochResult",
    "FitResult",
    "LRMultiplier",
    "NonFiniteLossError",
    "RunFolderError",
    "TimeBudget",
    "TrainingInterrupted",
    "atomic_save",
    "build_optimizer",
    "build_scheduler",
    "check_run_folder",
    "checkpoint_detections",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "load_checkpoint",
    "load_model",
    "parameter_groups",
    "resume_from",
    "train_one_epoch",
    "training_state",
]
