"""Folds as independent jobs on an existing engine (submitit: one SLURM job array, or the same jobs
on this machine), behind one function, :func:`run_fold_jobs`:

    python train.py recipe=unet_effnet launcher=slurm folds_to_run=0-4 partition=gpu gpus_per_job=1
    python train.py recipe=unet_effnet launcher=local folds_to_run=0-4     # the same jobs, here

A job is the command a user would type for one fold, ``python train.py <the same arguments> fold=<k>``
without the launcher keys: it trains (or resumes) ``runs/<name>/fold<k>/`` and ends with that
folder's done marker (:mod:`.done`), so it can be re-submitted alone or run by hand. Folds already
done are not submitted again. The launcher waits for every job and reports each one: done, or failed
with its log file and the command that re-runs it; a failing job never stops the others.

Another engine (Ray on Kubernetes, say) is one more entry in :data:`ENGINES`: a function that runs
a list of :class:`FoldJob` and returns one :class:`Outcome` each; the training code does not change.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.table import Table

from ..core import config as config_mod
from ..core.console import console
from ..exceptions import ConfigError, LaunchError
from .done import not_done_reason

LAUNCH_KEYS = ("launcher", "folds_to_run", "partition", "gpus_per_job", "cpus_per_job", "job_minutes",
               "jobs_parallel", "sbatch_options")
TRAIN_PY = Path(__file__).resolve().parents[2] / "train.py"
INSTALL_HINT = "pip install -r requirements-slurm.txt (submitit, an optional dependency)"


@dataclass
class FoldJob:
    fold: int
    command: list[str]   # what the job runs, in the launcher's working directory
    run_dir: Path        # the run folder it writes, ending with its done marker


@dataclass
class Resources:
    """What each job asks of the engine (config keys gpus_per_job, cpus_per_job, job_minutes,
    jobs_parallel, partition, sbatch_options)."""

    name: str = "carparts"
    gpus: int = 0
    cpus: int = 4
    minutes: int = 1440
    parallel: int = 0
    partition: str = ""
    options: dict = field(default_factory=dict)


@dataclass
class Outcome:
    job: FoldJob
    done: bool
    log: Path | None = None   # the job's stderr (train.py's output and error lines)
    reason: str = ""          # why it is not done


# ------------------------------------------------------------------------------- the one function
def run_fold_jobs(jobs: list[FoldJob], engine: str, log_dir: Path, resources: Resources) -> list[Outcome]:
    """Run ``jobs`` on ``engine`` (a key of :data:`ENGINES`), wait for all, one :class:`Outcome` each."""
    if engine not in ENGINES:
        raise ConfigError(f"launcher={engine!r}: choose one of {['none', *ENGINES]}")
    return ENGINES[engine](jobs, Path(log_dir), resources) if jobs else []


def submitit_engine(cluster: str) -> Callable[[list[FoldJob], Path, Resources], list[Outcome]]:
    """An engine on submitit's ``cluster`` ("slurm": all jobs in one job array; "local": subprocesses
    of this machine, ``jobs_parallel`` at a time, one by default)."""

    def run(jobs: list[FoldJob], log_dir: Path, res: Resources) -> list[Outcome]:
        try:
            import submitit
        except ImportError:
            raise LaunchError(f"launcher={cluster} needs submitit: {INSTALL_HINT}") from None
        try:
            executor = submitit.AutoExecutor(folder=log_dir / "%j", cluster=cluster)
        except RuntimeError as err:  # no srun/sbatch here
            raise LaunchError(f"launcher={cluster}: {err} (launcher=local runs the same jobs on this machine)") from None
        executor.update_parameters(name=res.name, timeout_min=res.minutes, gpus_per_node=res.gpus,
                                   cpus_per_task=res.cpus, tasks_per_node=1)
        if cluster == "slurm":
            executor.update_parameters(slurm_partition=res.partition or None,
                                       slurm_array_parallelism=res.parallel or len(jobs),
                                       slurm_additional_parameters=res.options)
        wave = len(jobs) if cluster == "slurm" else max(1, res.parallel)
        outcomes = {}
        for start in range(0, len(jobs), wave):
            group = jobs[start:start + wave]
            try:
                with executor.batch():  # one job array on SLURM
                    handles = [executor.submit(functools.partial(subprocess.run, j.command, cwd=os.getcwd(),
                                                                 check=True)) for j in group]
            except Exception as err:  # noqa: BLE001 - sbatch refused (partition, account, ...): say why, once
                raise LaunchError(f"launcher={cluster}: submitting folds {[j.fold for j in group]} failed: "
                                  f"{last_line(err)}") from err
            by_id = {}
            for job, handle in zip(group, handles):
                by_id[handle.job_id] = job
                console.print(f"fold {job.fold}: job {handle.job_id} -> {job.run_dir}  (log {handle.paths.stderr})",
                              markup=False, highlight=False, soft_wrap=True)
            poll = 1 if cluster == "local" else 30
            for handle in submitit.helpers.as_completed(handles, poll_frequency=poll):
                job = by_id[handle.job_id]
                error = handle.exception()
                outcomes[job.fold] = outcome_of(job, Path(handle.paths.stderr), error)
                console.print(f"fold {job.fold}: " + ("done" if outcomes[job.fold].done else
                              f"FAILED: {outcomes[job.fold].reason}"), markup=False, highlight=False, soft_wrap=True)
        return [outcomes[j.fold] for j in jobs]

    return run


ENGINES: dict[str, Callable[[list[FoldJob], Path, Resources], list[Outcome]]] = {
    "local": submitit_engine("local"),
    "slurm": submitit_engine("slurm"),
}


def outcome_of(job: FoldJob, log: Path, error: BaseException | None) -> Outcome:
    """Done only when the job succeeded *and* left a done marker that matches its model file."""
    if error is None:
        reason = not_done_reason(job.run_dir)
        return Outcome(job, reason is None, log, f"exited normally but the run is {reason}" if reason else "")
    return Outcome(job, False, log, failure_line(log, error))


def failure_line(log: Path, error: BaseException) -> str:
    """The job's own ``error: ...`` line if it printed one, else its exit status or the engine's message."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    if errors:
        return errors[-1]
    status = re.search(r"non-zero exit status (-?\d+)", str(error))
    if status:
        return f"exit status {status.group(1)}"
    return last_line(error)


def last_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# ------------------------------------------------------------------------------ train.py's side
def parse_folds(spec: list, k: int) -> list[int]:
    """``[0, 2, 4]``, ``["0-4"]`` or ``["1-2", 4]`` -> sorted distinct folds, each checked against k."""
    folds = set()
    for item in spec:
        text = str(item).strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo > hi:
                raise ConfigError(f"folds_to_run: empty range {text!r}")
            folds.update(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", text):
            folds.add(int(text))
        else:
            raise ConfigError(f"folds_to_run: {text!r} is neither a fold number nor a range like 0-4")
    bad = sorted(f for f in folds if f >= k)
    if bad:
        raise ConfigError(f"folds_to_run: folds {bad} do not exist with folds={k} (valid: 0..{k - 1})")
    return sorted(folds)


def arg_key(arg: str) -> str:
    return arg.partition("=")[0].lstrip("-").strip()


def fold_jobs(cfg: dict, argv: list[str]) -> list[FoldJob]:
    """One job per fold of ``folds_to_run`` (or of ``fold``): the same arguments without the launcher
    keys, plus ``fold=<k>``; every job's config is resolved (and so checked) before anything is sent."""
    base = [a for a in argv if arg_key(a) not in (*LAUNCH_KEYS, "fold")]
    folds = parse_folds(cfg["folds_to_run"], cfg["folds"]) if cfg["folds_to_run"] else [cfg["fold"]]
    gpus = cfg["gpus_per_job"]
    prefix = [sys.executable, str(TRAIN_PY)] if gpus <= 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", str(TRAIN_PY)]
    jobs = []
    for fold in folds:
        args = [*base, f"fold={fold}"]
        jobs.append(FoldJob(fold, [*prefix, *args], Path(config_mod.resolve(args)["out"])))
    dirs = [j.run_dir.resolve() for j in jobs]
    if len(set(dirs)) < len(dirs):
        raise ConfigError(f"out={cfg['out']} would be the run folder of every fold: drop out=... (each fold then "
                          "writes runs/<name>/fold<k>) or run the folds one by one")
    return jobs


def resources(cfg: dict) -> Resources:
    options = {}
    for item in cfg["sbatch_options"]:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"sbatch_options: {item!r} is not key=value (e.g. account=foo)")
        options[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return Resources(cfg["name"], cfg["gpus_per_job"], cfg["cpus_per_job"], cfg["job_minutes"],
                     cfg["jobs_parallel"], cfg["partition"], options)


def launch(cfg: dict, argv: list[str]) -> int:
    """``train.py ... launcher=local|slurm``: send the folds not yet done as jobs, wait, report.
    Returns 0 when every fold is done, 1 when some failed (the others are kept)."""
    jobs, res = fold_jobs(cfg, argv), resources(cfg)
    todo = []
    for job in jobs:
        if not_done_reason(job.run_dir) is None:
            console.print(f"fold {job.fold}: already done ({job.run_dir}), not submitted", markup=False)
        else:
            todo.append(job)
    log_dir = jobs[0].run_dir.parent / "jobs"
    console.print(f"{len(todo)} job(s) on {cfg['launcher']}, logs in {log_dir}", markup=False)
    outcomes = run_fold_jobs(todo, cfg["launcher"], log_dir, res)
    console.print(report_table(jobs, outcomes))
    failed = [o for o in outcomes if not o.done]
    for o in failed:
        console.print(f"fold {o.job.fold} failed: {o.reason}\n  log: {o.log}\n  re-run it alone: "
                      f"{shlex.join(o.job.command)}", markup=False, highlight=False, soft_wrap=True)
    return 1 if failed else 0


def report_table(jobs: list[FoldJob], outcomes: list[Outcome]) -> Table:
    by_fold = {o.job.fold: o for o in outcomes}
    table = Table(title="fold jobs")
    for col in ("fold", "state", "run folder", "log"):
        table.add_column(col)
    for job in jobs:
        o = by_fold.get(job.fold)
        state = "done (before)" if o is None else "done" if o.done else "[red]failed[/red]"
        table.add_row(str(job.fold), state, str(job.run_dir), "" if o is None else str(o.log))
    return table
