"""Every exception that reaches users. Each is a :class:`WorkbenchError`: the entry points
(``train.py``, ``distill.py``, ``inference.py``, ``python -m workbench.coco``, ``python -m analysis.*``)
print its message as one ``error: ...`` line and exit with status 2 (see
:func:`workbench.core.cli.fail_cleanly`); any other exception is a bug and keeps its traceback.

Messages name the file or setting at fault and, where there is one, the command or option that fixes
it. Each class also derives from the built-in exception it replaces, so ``except ValueError`` and
``except RuntimeError`` keep working.
"""

from __future__ import annotations


class WorkbenchError(Exception):
    """Base of the expected errors: a problem with the user's input, files or settings."""


class UsageError(WorkbenchError):
    """Bad command-line arguments (unknown option, missing value, ...)."""


class ConfigError(WorkbenchError, ValueError):
    """A recipe or ``key=value`` override that cannot be used (unknown key, bad type or value), or a
    run folder whose checkpoint was written with another config."""


class SchemaError(WorkbenchError, ValueError):
    """A class schema (``classes.json`` or model-file metadata) that is malformed or inconsistent."""


class DatasetError(WorkbenchError, ValueError):
    """A dataset that cannot be trained on; ``problems`` lists one line per bad file."""

    def __init__(self, data_dir, problems: list[str]):
        self.problems = problems
        head = f"dataset {data_dir} has {len(problems)} problem(s):"
        super().__init__("\n  - ".join([head, *problems]))


class ImageReadError(WorkbenchError):
    """A file that cannot be decoded as an image or used as a mask; the message says why (callers
    add which file)."""


class CocoError(WorkbenchError, ValueError):
    """A COCO file (or image folder) that cannot be imported; the message names the culprits."""


class EncoderWeightsError(WorkbenchError, RuntimeError):
    """Pretrained encoder weights that are not available offline or do not fit the encoder."""


class ModelFileError(WorkbenchError, RuntimeError):
    """A model file that is missing, not a carparts model file, or inconsistent with its metadata."""


class TrainingDivergedError(WorkbenchError, RuntimeError):
    """The loss or gradients stayed non-finite; nothing non-finite was saved."""


class CheckpointError(WorkbenchError, RuntimeError):
    """A run folder's checkpoint (``last.pt``, ``best_state.pt``) that cannot be read (truncated,
    corrupted, not a checkpoint); the message names the file and how to start over."""


class DistillError(WorkbenchError, RuntimeError):
    """Distillation cannot run: missing teachers, mismatched schemas, folds or resolutions."""


class InferenceError(WorkbenchError):
    """A problem that stops a whole ``inference.py`` run (missing input or weights, unwritable
    output, unavailable device); single unreadable images are reported and skipped instead."""


class LaunchError(WorkbenchError, RuntimeError):
    """Fold jobs that cannot be submitted: the engine is not installed or not reachable (no submitit,
    no SLURM on this machine). A job that fails is reported by the launcher, not raised."""


class AnalysisError(WorkbenchError, ValueError):
    """Inputs that cannot be analysed (no matching files, wrong schema, ...); the message says why."""


class UnreadablePredictionError(AnalysisError):
    """A predicted mask that cannot be decoded: the analysis counts it, reports it and scores the
    other images (``--strict``: an error)."""


# What the entry points report as one line. FileNotFoundError: a path named on the command line.
EXPECTED_ERRORS = (WorkbenchError, FileNotFoundError)
