"""Command line of ``inference.py``: a folder of images in, a folder of PNG masks out.

    python3 inference.py --input path/to/test_images --output path/to/predictions

For every file in ``--input`` a single-channel 8-bit PNG with the same stem is written to
``--output`` (created if missing), with the size of the image as displayed (EXIF orientation
applied) and the pixel values of the model's class schema. Inputs are never modified.

Which files are read and where their masks go: :mod:`workbench.inference.jobs`. A file that cannot
be decoded (truncated, empty, not an image, ...) is reported with its name and the reason and
skipped; the others are still written.

- exit status: 0 all masks written; 1 some files failed (listed at the end); 2 nothing could be
  done (missing or empty input folder, unwritable output folder, missing or corrupt weights, bad
  option); 130 interrupted.

Speed: images are decoded (large JPEGs at reduced size) and masks encoded in background threads
while the model runs batches in ``torch.inference_mode`` with channels-last tensors
(:mod:`workbench.inference.batch_pipeline`); cleanup works at the model's resolution, upsampling to
full size and argmax in strips (:mod:`workbench.inference.postprocess`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..core.cli import ArgumentParser, at_least, fail_cleanly
from ..core.runtime import resolve_device
from ..exceptions import InferenceError, ModelFileError
from .batch_pipeline import STAGES, BatchPipeline, RunStats
from .jobs import plan_jobs, prepare_output
from .predictor import Predictor

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "student.safetensors"
EXIT_OK, EXIT_FILES_FAILED = 0, 1  # 2: nothing done (fail_cleanly), 130: interrupted
POSITIVE = at_least(1)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shard_spec(text: str) -> tuple[int, int]:
    """``i/n`` -> (i, n), 0 <= i < n."""
    i, sep, n = text.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise argparse.ArgumentTypeError(f"expected i/n with 0 <= i < n (e.g. 0/4), got {text}")
    return int(i), int(n)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="inference.py",
        description="Predict car-part segmentation masks (single-channel 8-bit PNG, same stem and size as "
                    "each input image, pixel values of the model's class schema).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="EXIF orientation is applied: masks have the size of the image as displayed.\n"
               "Only the top level of --input is read unless --recursive (sub-folders are then mirrored\n"
               "in --output); hidden files are ignored. Unreadable files are reported and skipped.\n"
               "Exit status: 0 all written, 1 some files failed, 2 nothing done (bad input, output or\n"
               "weights), 130 interrupted.")
    p.add_argument("--input", required=True, type=Path, help="folder of images (or one image file)")
    p.add_argument("--output", required=True, type=Path, help="folder for the masks; created if missing")
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                   help="model file (default: the shipped student, weights/student.safetensors)")
    p.add_argument("--recursive", action="store_true",
                   help="also read sub-folders of --input, mirroring their structure in --output")
    p.add_argument("--shard", type=shard_spec, default=(0, 1), metavar="I/N",
                   help="only the I-th (from 0) of N parts of the sorted input files, so that N jobs "
                        "(I = 0..N-1) write disjoint masks into the same --output")
    p.add_argument("--no-tta", action="store_true",
                   help="single forward pass: no horizontal-flip test-time augmentation, no extra scales")
    p.add_argument("--scales", type=float, nargs="+", metavar="S",
                   help="TTA scales, overriding the model file's (e.g. --scales 1.0 1.25)")
    p.add_argument("--no-cleanup", action="store_true", help="skip the model file's post-processing (exclusive parts, "
                   "connected-component cleanup); flip TTA stays")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=POSITIVE, help="images per forward pass (default: 4 on CPU, 16 on GPU)")
    p.add_argument("--threads", type=POSITIVE, help="CPU threads for the model (default: all usable cores)")
    p.add_argument("--workers", type=POSITIVE,
                   help="background threads decoding images (default: half the cores, 1 to 4)")
    p.add_argument("--benchmark", action="store_true",
                   help="print where the time goes (decode, model, cleanup, upsample+argmax, encode+write)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def print_summary(stats: RunStats, output: Path, benchmark: bool, out=None) -> None:
    out = out or sys.stdout
    if stats.failures:
        print(f"{len(stats.failures)} file(s) failed and were skipped:", file=sys.stderr)
        for name, reason in stats.failures:
            print(f"  {name}: {reason}", file=sys.stderr)
        sys.stderr.flush()
    n = stats.written
    if benchmark and n:
        print(f"time split over {n} images (decode and encode+write run in background threads, "
              f"overlapped with the model; model loading {stats.load_seconds:.2f} s not included):", file=out)
        for stage in STAGES:
            s = stats.stage_seconds[stage]
            print(f"  {stage:<16} {s:8.2f} s  {1000 * s / n:8.1f} ms/image", file=out)
        print(f"  {'wall':<16} {stats.seconds:8.2f} s  {1000 * stats.seconds / n:8.1f} ms/image", file=out)
    speed = f", {n / stats.seconds:.2f} images/s, {1000 * stats.seconds / n:.0f} ms per image" if n else ""
    failed = f", {len(stats.failures)} failed" if stats.failures else ""
    print(f"done: {n} mask(s) written to {output}{failed} in {stats.seconds:.1f} s{speed}", file=out, flush=True)


def run(args: argparse.Namespace, console: Console | None = None) -> RunStats:
    """Everything ``main`` does after parsing; raises :class:`InferenceError` (or a
    :class:`ConfigError` for the device) for fatal problems."""
    jobs, skipped = plan_jobs(args.input, args.output, args.recursive, args.shard)
    device = resolve_device(args.device)
    cpus = usable_cpus()
    threads = args.threads or cpus
    workers = args.workers or max(1, min(4, cpus // 2))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    if not args.weights.is_file():
        hint = " (pass --weights path/to/model.safetensors)" if args.weights == DEFAULT_WEIGHTS else ""
        raise InferenceError(f"weights file not found: {args.weights}{hint}")
    t0 = time.perf_counter()
    try:
        predictor = Predictor(args.weights, device, tta=not args.no_tta, scales=args.scales,
                              cleanup=not args.no_cleanup)
    except ModelFileError as err:
        raise InferenceError(f"cannot load weights: {err}") from err
    stats = RunStats(load_seconds=time.perf_counter() - t0)
    prepare_output(args.output, jobs)

    console = console or Console(stderr=True)
    for name, reason in skipped:
        stats.failures.append((name, reason))
        console.print(f"skipped {name}: {reason}", markup=False, highlight=False, soft_wrap=True)
    batch_size = args.batch_size or (16 if device.type == "cuda" else 4)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    t0 = time.perf_counter()
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        BatchPipeline(predictor, batch_size, workers, progress, stats).run(jobs)
    stats.seconds = time.perf_counter() - t0
    return stats


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we report decode errors ourselves
    stats = run(args)
    print_summary(stats, args.output, args.benchmark)
    return EXIT_FILES_FAILED if stats.failures else EXIT_OK
