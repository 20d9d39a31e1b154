"""Argument helpers shared by the analysis scripts. Their ``main`` functions are wrapped in
:func:`workbench.core.cli.fail_cleanly` and parse with :func:`parser` (argument errors included,
expected problems print one ``error:`` line and exit with 2)."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.core.cli import ArgumentParser, at_least  # noqa: E402

COUNT, POSITIVE, TILE = at_least(0), at_least(1), at_least(32)  # argparse types of counts and sizes


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; shows real defaults (not None / False) in the help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def parser(prog: str, description: str) -> ArgumentParser:
    """The argument parser of an analysis command (``prog``: how it is run, e.g. python -m analysis.report)."""
    return ArgumentParser(prog=prog, description=description, formatter_class=Formatter)


def add_data_args(p: argparse.ArgumentParser, images_help: str = "folder of the photos (optional; panels show "
                  "a grey stand-in without them)") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--gt", metavar="DIR", help="ground-truth masks (class values); default DATA/masks")
    g.add_argument("--images", metavar="DIR", help=images_help + "; default DATA/images")
    g.add_argument("--data", metavar="DIR", help="dataset folder with images/, masks/ and classes.json")
    g.add_argument("--schema", metavar="PATH", help="classes.json (or a folder holding one); default: the "
                   "dataset's, else the masks folder's parent's, else the five-class default")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training runs (out-of-fold probabilities)")
    g.add_argument("--folds", type=COUNT, nargs="+", metavar="K", help="only these folds (default: every fold*/oof.json)")
    g.add_argument("--no-tta", action="store_true", help="score the plain prediction instead of flip-TTA")


def add_strict_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict", action="store_true", help="stop with an error when some images have no prediction "
                   "or an unreadable one (default: say how many, name them, and score the others)")


def check_coverage(evaluations, strict: bool) -> None:
    """Say what was not scored (missing or unreadable predictions), on stderr; with ``strict``
    missing or unreadable predictions are an :class:`AnalysisError` instead."""
    import sys

    from workbench.exceptions import AnalysisError
    for ev in evaluations:
        message = ev.coverage()
        if message is None:
            continue
        if strict and (ev.missing or ev.unreadable):
            raise AnalysisError(f"{message} (--strict)")
        print(f"warning: {message}", file=sys.stderr)


def progress(description: str):
    """A rich progress wrapper for loops (transient, to stderr)."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)

    def wrap(seq):
        return track(seq, description=description, console=console, transient=True)

    return wrap
