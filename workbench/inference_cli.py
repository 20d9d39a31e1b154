"""Command line of ``inference.py``: a folder of images in, a folder of PNG masks out.

    python3 inference.py --input path/to/test_images --output path/to/predictions

For every file in ``--input`` a single-channel 8-bit PNG with the same stem is written to
``--output`` (created if missing), with the size of the image as displayed (EXIF orientation
applied) and the pixel values of the model's class schema. Inputs are never modified.

Policies:

- only the top level of ``--input`` is read; with ``--recursive`` sub-folders are too, and their
  structure is mirrored in ``--output`` (``in/a/b.jpg`` -> ``out/a/b.png``). Hidden files and
  folders (name starting with ".") are ignored. ``--input`` may also be a single image file.
- a file that cannot be decoded (truncated, empty, not an image, ...) is reported with its name and
  the reason and skipped; the others are still written. So is a file whose mask would overwrite an
  input file or another file's mask (``car.jpg`` and ``car.png`` both give ``car.png``).
- exit status: 0 all masks written; 1 some files failed (listed at the end); 2 nothing could be
  done (missing or empty input folder, unwritable output folder, missing or corrupt weights, bad
  option); 130 interrupted.

Speed: images are decoded (large JPEGs at reduced size) and masks encoded in background threads
while the model runs batches in ``torch.inference_mode`` with channels-last tensors; cleanup works
at the model's resolution, upsampling to full size and argmax in strips (see
:mod:`workbench.postprocess`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .imageio import ImageReadError, read_image, write_mask
from .modelfile import ModelFileError
from .predictor import Predictor
from .runtime import resolve_device

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "student.safetensors"
EXIT_OK, EXIT_FILES_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
STAGES = ("decode", "model", "cleanup", "upsample+argmax", "encode+write")


class CliError(Exception):
    """A problem that stops the whole run; the message is shown to the user as is."""


@dataclass
class Job:
    src: Path   # input file (as given on the command line, joined with its relative path)
    dst: Path   # output PNG


@dataclass
class RunStats:
    written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0                                             # wall time, model loading excluded
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    load_seconds: float = 0.0                                        # model loading


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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
    p.add_argument("--no-tta", action="store_true",
                   help="single forward pass: no horizontal-flip test-time augmentation, no extra scales")
    p.add_argument("--scales", type=float, nargs="+", metavar="S",
                   help="TTA scales, overriding the model file's (e.g. --scales 1.0 1.25)")
    p.add_argument("--no-cleanup", action="store_true", help="skip the connected-component cleanup")
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=positive_int, help="images per forward pass (default: 4 on CPU, 16 on GPU)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for the model (default: all usable cores)")
    p.add_argument("--workers", type=positive_int,
                   help="background threads decoding images (default: half the cores, 1 to 4)")
    p.add_argument("--benchmark", action="store_true",
                   help="print where the time goes (decode, model, cleanup, upsample+argmax, encode+write)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def list_inputs(root: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    """Relative paths of the non-hidden files under ``root`` (top level only unless ``recursive``),
    sorted; the folder ``exclude`` (the output folder, if it lies inside) is not entered."""
    if not recursive:
        return sorted(Path(p.name) for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    found = []
    for folder, dirs, files in os.walk(root, onerror=_raise):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (exclude is None or (here / d).resolve() != exclude))
        found += [(here / f).relative_to(root) for f in files if not f.startswith(".") and (here / f).is_file()]
    return sorted(found)


def _raise(err: OSError) -> None:
    raise err


def plan_jobs(input_path: Path, output: Path, recursive: bool) -> tuple[list[Job], list[tuple[str, str]]]:
    """Input files and their output paths, plus (file, reason) of those that must be skipped because
    their mask would overwrite an input file or another file's mask."""
    if not input_path.exists():
        raise CliError(f"input folder not found: {input_path}")
    if input_path.is_file():
        root, rels = input_path.parent, [Path(input_path.name)]
    elif input_path.is_dir():
        root = input_path
        try:
            rels = list_inputs(root, recursive, exclude=output.resolve())
        except OSError as err:
            raise CliError(f"cannot read input folder {input_path}: {err.strerror or err}") from err
        if not rels:
            subfolders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
            hint = f" (it has {len(subfolders)} sub-folder(s): add --recursive to read them)" \
                if subfolders and not recursive else ""
            raise CliError(f"no image files in input folder {input_path}{hint}")
    else:
        raise CliError(f"input is neither a folder nor a file: {input_path}")

    inputs = {(root / rel).resolve() for rel in rels}
    jobs, skipped, taken = [], [], {}
    for rel in rels:
        src, dst = root / rel, output / rel.parent / (rel.stem + ".png")
        key = dst.resolve()
        if key in inputs:
            skipped.append((str(src), f"its mask {dst} would overwrite an input file; use another --output folder"))
        elif key in taken:
            skipped.append((str(src), f"its mask {dst} would overwrite the mask of {taken[key]} (same stem)"))
        else:
            taken[key] = src
            jobs.append(Job(src, dst))
    return jobs, skipped


def prepare_output(output: Path) -> None:
    """Create ``output`` and check that files can be written in it."""
    if output.exists() and not output.is_dir():
        raise CliError(f"output folder {output} exists and is not a folder")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create output folder {output}: {err.strerror or err}") from err
    try:
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-test-"):
            pass
    except OSError as err:
        raise CliError(f"output folder {output} is not writable: {err.strerror or err}") from err


def predict_all(predictor: Predictor, jobs: list[Job], batch_size: int, workers: int,
                progress: Progress, stats: RunStats) -> None:
    """Decode (background threads) -> batched forward -> cleanup -> upsample+argmax -> write (background)."""
    times = stats.stage_seconds
    task = progress.add_task("predicting", total=len(jobs))

    def fail(job: Job, reason: str) -> None:
        stats.failures.append((str(job.src), reason))
        progress.console.print(f"skipped {job.src}: {reason}", markup=False, highlight=False, soft_wrap=True)
        progress.advance(task)

    def load(job: Job):
        t0 = time.perf_counter()
        decoded = read_image(job.src, predictor.input_size)
        return predictor.prepare(decoded.image), decoded.size, time.perf_counter() - t0

    def save(job: Job, labels: np.ndarray) -> float:
        t0 = time.perf_counter()
        write_mask(job.dst, predictor.to_values(labels))
        return time.perf_counter() - t0

    def finish_write(job: Job, future) -> None:
        try:
            times["encode+write"] += future.result()
            stats.written += 1
            progress.advance(task)
        except OSError as err:
            fail(job, f"cannot write {job.dst}: {err.strerror or err}")
        except Exception as err:  # noqa: BLE001  (one bad file must not stop the run)
            fail(job, f"cannot write {job.dst}: {type(err).__name__}: {err}")

    def run_batch(batch: list) -> None:
        t0 = time.perf_counter()
        try:
            probs = predictor.forward(np.stack([small for _, small, _ in batch]))
        except Exception as err:  # noqa: BLE001
            for job, _, _ in batch:
                fail(job, f"model failed on its batch: {type(err).__name__}: {err}")
            return
        times["model"] += time.perf_counter() - t0
        for (job, _, size), p in zip(batch, probs):
            try:
                t0 = time.perf_counter()
                p = predictor.cleanup(p)
                t1 = time.perf_counter()
                labels = predictor.upsample_argmax(p, size)
                times["cleanup"] += t1 - t0
                times["upsample+argmax"] += time.perf_counter() - t1
            except Exception as err:  # noqa: BLE001
                fail(job, f"post-processing failed: {type(err).__name__}: {err}")
                continue
            writes.append((job, writers.submit(save, job, labels)))
            while len(writes) > 2 * writer_count or (writes and writes[0][1].done()):
                finish_write(*writes.popleft())  # bounded: full-size masks can be 100 MB each

    writer_count = max(1, workers // 2)
    prefetch = batch_size + 2 * workers
    todo = iter(jobs)
    reads: deque = deque()
    writes: deque = deque()
    batch: list = []
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as readers, \
            ThreadPoolExecutor(writer_count, thread_name_prefix="write") as writers:
        try:
            while True:
                while len(reads) < prefetch and (job := next(todo, None)) is not None:
                    reads.append((job, readers.submit(load, job)))
                if not reads:
                    break
                job, future = reads.popleft()
                try:
                    small, size, seconds = future.result()
                    times["decode"] += seconds
                    batch.append((job, small, size))
                except ImageReadError as err:
                    fail(job, str(err))
                except OSError as err:
                    fail(job, f"cannot read file ({err.strerror or err})")
                except Exception as err:  # noqa: BLE001
                    fail(job, f"cannot decode: {type(err).__name__}: {err}")
                if len(batch) == batch_size or (batch and not reads):
                    run_batch(batch)
                    batch = []
            while writes:
                finish_write(*writes.popleft())
        except BaseException:
            for _, f in list(reads) + list(writes):
                f.cancel()
            raise


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
    """Everything ``main`` does after parsing; raises :class:`CliError` for fatal problems."""
    jobs, skipped = plan_jobs(args.input, args.output, args.recursive)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        raise CliError(str(err)) from err
    cpus = usable_cpus()
    threads = args.threads or cpus
    workers = args.workers or max(1, min(4, cpus // 2))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    if not args.weights.is_file():
        raise CliError(f"weights file not found: {args.weights}"
                       + (" (pass --weights path/to/model.safetensors)" if args.weights == DEFAULT_WEIGHTS else ""))
    t0 = time.perf_counter()
    try:
        predictor = Predictor(args.weights, device, tta=not args.no_tta, scales=args.scales,
                              cleanup=not args.no_cleanup)
    except ModelFileError as err:
        raise CliError(f"cannot load weights: {err}") from err
    stats = RunStats(load_seconds=time.perf_counter() - t0)
    prepare_output(args.output)

    console = console or Console(stderr=True)
    for name, reason in skipped:
        stats.failures.append((name, reason))
        console.print(f"skipped {name}: {reason}", markup=False, highlight=False, soft_wrap=True)
    batch_size = args.batch_size or (16 if device.type == "cuda" else 4)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    t0 = time.perf_counter()
    with Progress(*columns, console=console, disable=args.quiet) as progress:
        predict_all(predictor, jobs, batch_size, workers, progress, stats)
    stats.seconds = time.perf_counter() - t0
    return stats


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we report decode errors ourselves
    try:
        stats = run(args)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_summary(stats, args.output, args.benchmark)
    return EXIT_FILES_FAILED if stats.failures else EXIT_OK
