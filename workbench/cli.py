"""Shared command-line behaviour: expected errors become one clear message and exit code 2."""

from __future__ import annotations

import functools
import sys

from .config import ConfigError
from .data import DatasetError
from .encoders import EncoderWeightsError
from .modelfile import ModelFileError
from .exceptions import DistillError, TrainingDivergedError

EXPECTED_ERRORS = (ConfigError, DatasetError, EncoderWeightsError, ModelFileError, FileNotFoundError,
                   TrainingDivergedError, DistillError)


def fail_cleanly(main):
    """Run ``main``; an expected error prints ``error: <message>`` to stderr and returns 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except EXPECTED_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted; run the same command again to resume", file=sys.stderr)
            return 130

    return wrapper
