"""The done marker of a run folder: ``<out>/done.json``.

Rank 0 writes it as the very last step of a run that trained all its epochs, after the model file
and the final ``metrics.json``; a run that goes on training in the folder (more ``epochs``, a fresh
start) removes it first (:func:`reopen`). It records the model file's SHA-1, so a marker whose model file was since
replaced does not count. Fold launchers skip done folds, and distillation takes only done teachers.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from ..core.atomic import atomic_write
from .history import write_metrics

DONE, MODEL_FILE = "done.json", "model.safetensors"


def sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def mark_done(out: Path, epochs: int) -> Path:
    """Write ``<out>/done.json`` for the model file beside it."""
    model = Path(out) / MODEL_FILE
    record = {"model_file": MODEL_FILE, "sha1": sha1(model), "bytes": model.stat().st_size, "epochs": epochs,
              "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    return atomic_write(Path(out) / DONE, json.dumps(record, indent=1))


def reopen(out: Path) -> None:
    """The run in ``out`` trains on: drop its done marker, and a metrics.json that says finished."""
    out = Path(out)
    (out / DONE).unlink(missing_ok=True)
    metrics = read_metrics(out)
    if metrics.get("finished"):
        write_metrics(out, dict(metrics, finished=False))


def not_done_reason(out: Path) -> str | None:
    """None if ``out`` holds a finished run; else why not, in a few words. A run written before
    done markers existed counts as finished when its metrics.json says so."""
    out = Path(out)
    model, marker = out / MODEL_FILE, out / DONE
    if not model.is_file():
        return "missing" if not out.exists() else "unfinished (no model file yet)"
    if not marker.is_file():
        return None if read_metrics(out).get("finished") else "unfinished (no done marker)"
    record = json.loads(marker.read_text())
    if record.get("bytes") != model.stat().st_size or record.get("sha1") != sha1(model):
        return f"inconsistent: {model.name} is not the model file its {DONE} records"
    return None


def read_metrics(out: Path) -> dict:
    path = Path(out) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}
