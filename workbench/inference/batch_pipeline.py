"""The batch pipeline of ``inference.py``: decode (background threads) -> batched forward ->
cleanup -> upsample + argmax -> encode and write (background threads).

Decoding and writing overlap with the model; reads are prefetched a few batches ahead and pending
writes are bounded (full-size masks can be 100 MB each). A file that fails at any step is reported
with the reason and skipped; the others go on.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from rich.progress import Progress

from ..data.imageio import read_image, write_mask
from ..exceptions import ImageReadError
from .jobs import Job
from .predictor import Predictor

STAGES = ("decode", "model", "cleanup", "upsample+argmax", "encode+write")


@dataclass
class RunStats:
    written: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0                                             # wall time, model loading excluded
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    load_seconds: float = 0.0                                        # model loading


@dataclass
class Decoded:
    job: Job
    small: np.ndarray        # the image at the model's input size
    size: tuple[int, int]    # (height, width) of the mask to write


class BatchPipeline:
    """Runs ``predictor`` over jobs; counts go to ``stats``, progress and skip messages to ``progress``."""

    def __init__(self, predictor: Predictor, batch_size: int, workers: int, progress: Progress, stats: RunStats):
        self.predictor, self.batch_size, self.workers = predictor, batch_size, workers
        self.progress, self.stats = progress, stats
        self.writer_count = max(1, workers // 2)
        self.prefetch = batch_size + 2 * workers
        self.task = None
        self.reads: deque[tuple[Job, Future]] = deque()
        self.writes: deque[tuple[Job, Future]] = deque()
        self.writers: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------ the stages
    def load(self, job: Job) -> tuple[np.ndarray, tuple[int, int], float]:
        t0 = time.perf_counter()
        decoded = read_image(job.src, self.predictor.input_size)
        return self.predictor.prepare(decoded.image), decoded.size, time.perf_counter() - t0

    def save(self, job: Job, labels: np.ndarray) -> float:
        t0 = time.perf_counter()
        write_mask(job.dst, self.predictor.to_values(labels))
        return time.perf_counter() - t0

    def run_batch(self, batch: list[Decoded]) -> None:
        times = self.stats.stage_seconds
        t0 = time.perf_counter()
        try:
            probs = self.predictor.forward(np.stack([d.small for d in batch]))
        except Exception as err:  # noqa: BLE001  (one bad batch must not stop the run)
            for d in batch:
                self.fail(d.job, f"model failed on its batch: {type(err).__name__}: {err}")
            return
        times["model"] += time.perf_counter() - t0
        for d, p in zip(batch, probs):
            try:
                t0 = time.perf_counter()
                p = self.predictor.cleanup(p)
                t1 = time.perf_counter()
                labels = self.predictor.to_labels(p, d.size)
                times["cleanup"] += t1 - t0
                times["upsample+argmax"] += time.perf_counter() - t1
            except Exception as err:  # noqa: BLE001
                self.fail(d.job, f"post-processing failed: {type(err).__name__}: {err}")
                continue
            self.writes.append((d.job, self.writers.submit(self.save, d.job, labels)))
            while len(self.writes) > 2 * self.writer_count or (self.writes and self.writes[0][1].done()):
                self.finish_write(*self.writes.popleft())

    # --------------------------------------------------------------------------- bookkeeping
    def fail(self, job: Job, reason: str) -> None:
        self.stats.failures.append((str(job.src), reason))
        self.progress.console.print(f"skipped {job.src}: {reason}", markup=False, highlight=False, soft_wrap=True)
        self.progress.advance(self.task)

    def finish_read(self, job: Job, future: Future) -> Decoded | None:
        try:
            small, size, seconds = future.result()
        except ImageReadError as err:
            self.fail(job, str(err))
        except OSError as err:
            self.fail(job, f"cannot read file ({err.strerror or err})")
        except Exception as err:  # noqa: BLE001
            self.fail(job, f"cannot decode: {type(err).__name__}: {err}")
        else:
            self.stats.stage_seconds["decode"] += seconds
            return Decoded(job, small, size)
        return None

    def finish_write(self, job: Job, future: Future) -> None:
        try:
            self.stats.stage_seconds["encode+write"] += future.result()
            self.stats.written += 1
            self.progress.advance(self.task)
        except OSError as err:
            self.fail(job, f"cannot write {job.dst}: {err.strerror or err}")
        except Exception as err:  # noqa: BLE001  (one bad file must not stop the run)
            self.fail(job, f"cannot write {job.dst}: {type(err).__name__}: {err}")

    # ---------------------------------------------------------------------------------- run
    def run(self, jobs: list[Job]) -> None:
        self.task = self.progress.add_task("predicting", total=len(jobs))
        todo = iter(jobs)
        batch: list[Decoded] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as readers, \
                ThreadPoolExecutor(self.writer_count, thread_name_prefix="write") as self.writers:
            try:
                while True:
                    while len(self.reads) < self.prefetch and (job := next(todo, None)) is not None:
                        self.reads.append((job, readers.submit(self.load, job)))
                    if not self.reads:
                        break
                    decoded = self.finish_read(*self.reads.popleft())
                    if decoded is not None:
                        batch.append(decoded)
                    if len(batch) == self.batch_size or (batch and not self.reads):
                        self.run_batch(batch)
                        batch = []
                while self.writes:
                    self.finish_write(*self.writes.popleft())
            except BaseException:
                for _, f in list(self.reads) + list(self.writes):
                    f.cancel()
                raise
