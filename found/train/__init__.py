"""Self-training of the FOUND head (``found train``): the authors' schedule, resumable and watchable.

* :class:`TrainConfig` — hyper-parameters (defaults = the authors' DUTS-TR config);
* :func:`train_step` — one iteration as a function (losses, pseudo-labels, AdamW step);
* :func:`train` — the whole loop with checkpoints, logs, sample grids and evaluation hook.
"""
from .config import TrainConfig
from .loop import TrainResult, make_optimizer, train, unnormalize
from .step import StepResult, extract_features, step_loss, train_step

__all__ = ["TrainConfig", "TrainResult", "StepResult", "extract_features", "make_optimizer", "step_loss", "train", "train_step", "unnormalize"]
