"""Training stage: the loop phase by phase (trainer), checkpoints and resuming (checkpoint), what a
run records (history), the in-RAM training set (array_dataset), losses (losses) and out-of-fold
probability files (oof)."""

from .trainer import Trainer, fit

__all__ = ["Trainer", "fit"]
