"""Model files: safetensors weights plus JSON metadata, loaded without pickle.

The metadata holds everything needed to use the model with no other file: architecture, encoder,
class schema, input size, normalisation, TTA and cleanup settings, provenance and metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .models import build_model
from .schema import ClassSchema

META_KEY = "carparts"
REQUIRED = ("arch", "encoder", "schema", "input_size", "normalization")


class ModelFileError(RuntimeError):
    pass


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path`` so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(path: str | Path, model: torch.nn.Module, meta: dict, dtype: torch.dtype | None = None) -> int:
    """Write ``model``'s weights and ``meta`` to ``path``; returns the file size in bytes."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous()
    meta = dict(meta, weights_dtype=str(dtype or "float32").replace("torch.", ""))
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)}))
    return Path(path).stat().st_size


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable safetensors model file: {err}") from err
    if raw is None:
        raise ModelFileError(f"{path} has no '{META_KEY}' metadata: not a carparts model file")
    meta = json.loads(raw)
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ModelFileError(f"{path}: metadata lacks {missing}")
    return meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model described by the file's metadata and load its weights (float32, eval mode)."""
    meta = read_metadata(path)
    schema = ClassSchema.from_dict(meta["schema"])
    model = build_model(meta["arch"], meta["encoder"], schema.num_classes, encoder_weights=None,
                        decoder_channels=meta.get("decoder_channels") or None)
    try:
        state = load_file(str(path))
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ModelFileError(f"{path}: weights do not match {meta['arch']}/{meta['encoder']}: {err}") from err
    return model.to(device).eval(), meta
