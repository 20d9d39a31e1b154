"""Where a run came from: code version, library versions, hardware, command line and wall time.

:func:`collect` is what every ``metrics.json`` and every model file's metadata records under
``provenance``. Git is asked once per process (the answer is cached), everything else is read
from the running interpreter, so it costs milliseconds; nothing here ever raises: what cannot be
found is ``"unknown"``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

UNKNOWN = "unknown"
REPO = Path(__file__).resolve().parents[2]  # the checkout holding the workbench package
LIBRARIES = {"torch": "torch", "timm": "timm", "segmentation_models_pytorch": "segmentation-models-pytorch"}


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """``{"git_commit": sha, "git_dirty": bool}`` of the checkout the code runs from ("unknown" for
    both outside a git checkout or without git). Dirty: any file differs from the commit, untracked
    files that git does not ignore included."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": UNKNOWN, "git_dirty": UNKNOWN}
    status = _git("status", "--porcelain")
    return {"git_commit": commit, "git_dirty": UNKNOWN if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for key, dist in LIBRARIES.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = UNKNOWN
    return versions


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def hardware(device=None) -> dict:
    """CPU model, its cores and the torch thread count, plus the GPU's name when ``device`` is a
    CUDA device."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["threads"] = torch.get_num_threads()
        if device is not None and torch.device(device).type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        info.setdefault("gpu", UNKNOWN)
    return info


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def collect(device=None, started: float | None = None, earlier: list | None = None) -> dict:
    """The provenance record: git commit and dirtiness, library versions, hardware, the command
    (``sys.argv``, overrides included) and, with ``started`` (a ``time.time()``), the wall time from
    then to now (``started``, ``updated``, ``wall_seconds``). ``earlier``: the records of the
    sessions an interrupted run was trained in before it was resumed (see :func:`earlier_sessions`)."""
    try:
        record = {**code_version(), "versions": library_versions(), "hardware": hardware(device),
                  "command": shlex.join(sys.argv) if sys.argv else UNKNOWN, "updated": now()}
        if started is not None:
            record["started"] = _dt.datetime.fromtimestamp(started).astimezone().isoformat(timespec="seconds")
            record["wall_seconds"] = round(time.time() - started, 1)
        if earlier:
            record["earlier_sessions"] = earlier
        return record
    except Exception as err:  # noqa: BLE001 - provenance must never fail a run
        return {"error": f"{type(err).__name__}: {err}"}


def earlier_sessions(metrics_file: Path) -> list[dict]:
    """The provenance records of every session a resumed run had before (from its metrics.json),
    oldest first; [] when there is none or the file cannot be read."""
    try:
        previous = json.loads(Path(metrics_file).read_text()).get("provenance")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(previous, dict):
        return []
    earlier = previous.pop("earlier_sessions", None)
    return [*(earlier if isinstance(earlier, list) else []), previous]
