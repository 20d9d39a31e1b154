"""Training stage: the loop phase by phase (trainer), checkpoints and resuming (checkpoint), what a
run records (history), the in-RAM training set (array_dataset), losses (losses), out-of-fold
probability files (oof), the done marker (done), one run over several processes (distributed) and
folds as cluster jobs (launch)."""

from .trainer import Trainer, fit

__all__ = ["Trainer", "fit"]
