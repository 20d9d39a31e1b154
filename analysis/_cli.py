"""Argument helpers shared by the analysis scripts."""

from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.cli import fail_cleanly  # noqa: E402
from workbench.sources import AnalysisError  # noqa: E402


def main_wrapper(main):
    """Expected problems (missing folders, wrong schema, ...) print one line and exit with 2."""

    @fail_cleanly
    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except AnalysisError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; shows real defaults (not None / False) in the help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


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
    g.add_argument("--folds", type=int, nargs="+", metavar="K", help="only these folds (default: every fold*/oof.json)")
    g.add_argument("--no-tta", action="store_true", help="score the plain prediction instead of flip-TTA")


def progress(description: str):
    """A rich progress wrapper for loops (transient, to stderr)."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)

    def wrap(seq):
        return track(seq, description=description, console=console, transient=True)

    return wrap
