"""The schema of a model file's metadata: what each entry inference, distillation and analysis use
must hold, with types and ranges (:mod:`workbench.core.typed`), so that a damaged or hand-edited
file (``input_size: 100000``, ``cleanup: "on"``, ``enabled: "false"``) is one clear
:class:`ModelFileError` when it is read, never a traceback or a 30 GB allocation later.

Entries not listed (provenance, metrics, teachers, the recipe, ...) are kept as they are.
"""

from __future__ import annotations

from ..core.limits import INPUT_MULTIPLE, MAX_INPUT_SIZE
from ..core.schema import ClassSchema
from ..core.typed import Field, check_fields
from ..exceptions import ModelFileError, SchemaError

REQUIRED = ("arch", "encoder", "schema", "input_size", "normalization")

_SIDE = Field(int, lo=INPUT_MULTIPLE, hi=MAX_INPUT_SIZE, multiple=INPUT_MULTIPLE)
FIELDS: dict[str, Field] = {
    "input_size": Field(list, lo=2, hi=2, item=_SIDE, scalar_to_list=False),
    "decoder_channels": Field(list, hi=8, item=Field(int, lo=1, hi=4096), scalar_to_list=False),
    "head_scale": Field(int, choices=(1, 2, 4)),
    "resize": Field(str, choices=("squash",)),
    "fold": Field(int, lo=-1),
    "weights_dtype": Field(str, choices=("float16", "float32", "bfloat16")),
}
NORMALIZATION: dict[str, Field] = {
    "mean": Field(list, lo=3, hi=3, item=Field(float, lo=-1000, hi=1000), scalar_to_list=False),
    "std": Field(list, lo=3, hi=3, item=Field(float, above=0, hi=1000), scalar_to_list=False),
    "name": Field(str),
}
TTA: dict[str, Field] = {
    "hflip": Field(bool),
    "scales": Field(list, lo=1, hi=8, item=Field(float, above=0, hi=4), scalar_to_list=False),
}
CLEANUP: dict[str, Field] = {"enabled": Field(bool)}
MIN_AREA = Field(float, lo=0, hi=1)


def validate_metadata(meta: dict, where: str) -> dict:
    """``meta`` with every entry of the schema checked and converted (numbers as numbers, booleans
    as booleans); :class:`ModelFileError` naming ``where`` (the file) and the entry otherwise."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ModelFileError(f"{where}: metadata lacks {missing}")
    try:
        for key in ("arch", "encoder"):
            if not isinstance(meta[key], str) or not meta[key]:
                raise ValueError(f"{key}={meta[key]!r}: expected a name")
        out = check_fields(meta, FIELDS)
        schema = ClassSchema.from_dict(_mapping(meta, "schema"))
        out["normalization"] = _section(meta, "normalization", NORMALIZATION, required=("mean", "std"))
        if meta.get("tta") is not None:
            out["tta"] = _section(meta, "tta", TTA)
        if meta.get("cleanup") is not None:
            cleanup = _section(meta, "cleanup", CLEANUP)
            min_area = cleanup.get("min_area") or {}
            if not isinstance(min_area, dict):
                raise ValueError(f"cleanup.min_area={min_area!r}: expected {{class name: fraction of the image}}")
            unknown = sorted(set(min_area) - set(schema.names))
            if unknown:
                raise ValueError(f"cleanup.min_area names classes not in the schema: {unknown}")
            cleanup["min_area"] = check_fields(min_area, dict.fromkeys(min_area, MIN_AREA), "cleanup.min_area.")
            out["cleanup"] = cleanup
    except (ValueError, SchemaError) as err:
        raise ModelFileError(f"{where}: invalid model metadata: {err}") from None
    return out


def _mapping(meta: dict, key: str) -> dict:
    value = meta[key]
    if not isinstance(value, dict):
        raise ValueError(f"{key}={value!r}: expected a mapping")
    return value


def _section(meta: dict, key: str, fields: dict[str, Field], required: tuple[str, ...] = ()) -> dict:
    value = _mapping(meta, key)
    missing = [k for k in required if k not in value]
    if missing:
        raise ValueError(f"{key} lacks {missing}")
    return check_fields(value, fields, f"{key}.")
