"""What every entry point shares: an expected error (:data:`workbench.exceptions.EXPECTED_ERRORS`)
prints one ``error: <message>`` line to stderr and exits with status 2, bad command-line arguments
included; an interruption exits with 130; ``--help`` prints the usage and exits with 0; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import sys

from ..exceptions import EXPECTED_ERRORS, UsageError

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130


def fail_cleanly(main=None, *, interrupted: str = "interrupted"):
    """Decorator for an entry point's ``main``: expected errors become one ``error:`` line and exit
    status 2, Ctrl-C prints ``interrupted`` (e.g. "...; run the same command again to resume") and
    returns 130. Use as ``@fail_cleanly`` or ``@fail_cleanly(interrupted="...")``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except EXPECTED_ERRORS as err:
                print(f"error: {err}", file=sys.stderr)
                return EXIT_ERROR
            except KeyboardInterrupt:
                print(interrupted, file=sys.stderr)
                return EXIT_INTERRUPTED

        return wrapper

    return decorate(main) if main is not None else decorate


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors raise :class:`UsageError` (reported by
    :func:`fail_cleanly` as one ``error:`` line, exit status 2) instead of printing the usage."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def at_least(minimum: int):
    """An argparse ``type``: an integer no smaller than ``minimum`` (``--worst -3`` is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"  # how argparse names the type in its messages
    return parse


def wants_help(argv: list[str]) -> bool:
    """True when a ``key=value`` command line (train.py, distill.py) asks for ``-h``/``--help``."""
    return any(a in ("-h", "--help") for a in argv)
