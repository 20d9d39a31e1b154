"""Exceptions that reach users as one ``error:`` line (see :mod:`workbench.cli`)."""


class TrainingDivergedError(RuntimeError):
    """The loss or gradients stayed non-finite; nothing non-finite was saved."""


class DistillError(RuntimeError):
    """Distillation cannot run: missing teachers, mismatched schemas, folds or resolutions."""
