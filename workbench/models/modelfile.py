"""Model files: safetensors weights plus JSON metadata, loaded without pickle.

The metadata holds everything needed to use the model with no other file: architecture, encoder,
class schema, input size, normalisation, TTA and cleanup settings, provenance and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..core import provenance
from ..core.atomic import atomic_write
from ..core.schema import ClassSchema
from ..data.preprocess import normalization_meta
from ..exceptions import ModelFileError
from .build import build_model
from .deep_supervision import drop_training_only
from .metadata import REQUIRED, validate_metadata

META_KEY = "carparts"


def default_postprocessing() -> dict:
    """A new model file's post-processing until one is chosen on OOF predictions: flip TTA on at one
    scale, no exclusive part groups, no cleanup (a fresh copy each call)."""
    return {"tta": {"hflip": True, "scales": [1.0]}, "exclusive": [], "cleanup": {"enabled": False, "min_area": {}}}


def model_metadata(cfg: dict, schema: ClassSchema) -> dict:
    """The metadata a training run writes for its model: what inference needs (architecture,
    encoder, schema, input size, normalisation, TTA and cleanup settings) and where it came from."""
    return {
        "arch": cfg["arch"], "encoder": cfg["encoder"], "decoder_channels": list(cfg.get("decoder_channels") or []),
        "head_scale": int(cfg.get("head_scale", 1)),
        "schema": schema.to_dict(),
        "input_size": [cfg["image_size"], cfg["image_size"]],
        "normalization": normalization_meta(cfg["normalization"]), "resize": "squash",
        **{k: v for k, v in default_postprocessing().items() if k != "exclusive"},
        "name": cfg["name"], "family": cfg["family"], "fold": cfg["fold"], "recipe": cfg,
    }


def network_differences(meta: dict, theirs: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The entries in which two model files' metadata describe different networks or classes
    (architecture, encoder, input size, decoder, head, schema), less those in ``ignore``."""
    def key(m: dict) -> dict:
        return {"arch": str(m["arch"]).lower(), "encoder": m["encoder"], "input_size": list(m["input_size"]),
                "decoder_channels": list(m.get("decoder_channels") or []), "head_scale": m.get("head_scale", 1),
                "schema": m["schema"]}
    ours, other = key(meta), key(theirs)
    return [k for k in ours if k not in ignore and ours[k] != other[k]]


def norm_statistics(model: torch.nn.Module) -> set[str]:
    """The state-dict names of ``model``'s BatchNorm running means and variances."""
    return {f"{name}.{buf}" if name else buf for name, m in model.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for buf in ("running_mean", "running_var") if getattr(m, buf, None) is not None}


def save_model(path: str | Path, model: torch.nn.Module, meta: dict, dtype: torch.dtype | None = None) -> int:
    """Write ``model``'s weights and ``meta`` to ``path``; returns the file size in bytes. Metadata
    without ``provenance`` gets this process's (:func:`workbench.core.provenance.collect`).

    ``dtype`` narrows the floating-point weights (float16, bfloat16); BatchNorm running statistics
    stay float32, as mixed precision keeps normalisation in float32: a variance can exceed float16's
    range (65504) where no weight does (the 64-epoch final model's largest is 7.5e4)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    state, keep_fp32 = {}, norm_statistics(model)
    for k, v in drop_training_only(model.state_dict()).items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point() and k not in keep_fp32:
            v = v.to(dtype)
        state[k] = v.contiguous()
    bad = non_finite(state)
    if bad:
        raise ModelFileError(f"refusing to write {path}: weights are not finite (NaN or infinity) in {bad}")
    meta = dict(meta, weights_dtype=str(dtype or "float32").replace("torch.", ""))
    meta.setdefault("provenance", provenance.collect())
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)}))
    return Path(path).stat().st_size


def update_metadata(path: str | Path, changes: dict) -> dict:
    """Rewrite ``path`` with ``changes`` merged into its metadata (validated first), its tensors as
    they are (bytes and dtypes unchanged) and any other safetensors metadata entry kept; atomic, so a
    failure leaves the old file; a symbolic link's target is the file rewritten. Returns the new
    metadata."""
    path = Path(path).resolve()
    meta = validate_metadata(dict(read_metadata(path), **changes), str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            entries = dict(f.metadata() or {})
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{path}: unreadable weights: {err}") from err
    entries[META_KEY] = json.dumps(meta)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=entries))
    return meta


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable safetensors model file: {err}") from err
    if raw is None:
        raise ModelFileError(f"{path} has no '{META_KEY}' metadata: not a carparts model file")
    try:
        meta = json.loads(raw)
    except ValueError as err:
        raise ModelFileError(f"{path}: invalid model metadata: {err}") from err
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: invalid model metadata: expected a JSON object")
    return validate_metadata(meta, str(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model described by the file's metadata and load its weights (float32, eval mode)."""
    meta = read_metadata(path)
    try:
        schema = ClassSchema.from_dict(meta["schema"])
        model = build_model(meta["arch"], meta["encoder"], schema.num_classes, encoder_weights=None,
                            decoder_channels=meta.get("decoder_channels") or None,
                            head_scale=meta.get("head_scale", 1))
    except (ValueError, KeyError, TypeError) as err:  # bad schema, unknown architecture or encoder
        raise ModelFileError(f"{path}: invalid model metadata: {err}") from err
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{path}: weights do not match {meta['arch']}/{meta['encoder']}: {err}") from err
    return model.to(device).eval(), meta


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors, floating point ones as float32; :class:`ModelFileError` if they are
    unreadable or not finite."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{path}: unreadable weights: {err}") from err
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    bad = non_finite(state)
    if bad:
        raise ModelFileError(f"{path}: weights are not finite (NaN or infinity) in {bad}: the model diverged "
                             "in training; retrain it with a lower lr=")
    return state


def non_finite(state: dict[str, torch.Tensor], show: int = 3) -> str:
    """The names of the (first ``show``) tensors of ``state`` holding NaN or infinity, as one
    string; empty when every weight is finite."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return ", ".join(bad[:show]) + (f" and {len(bad) - show} more" if len(bad) > show else "")
