"""Class schemas: names, pixel values, and what a horizontal flip does to each class.

A dataset either carries a ``classes.json`` beside its folders::

    {"classes": [{"name": "background", "value": 0}, ...],
     "hflip_pairs": [["front_left_door", "front_right_door"], ...]}

or uses the five-class default of the original assignment, where a horizontal flip maps every class
to itself (a mirrored car still has its front door at its front).

Models work with class *indices* 0..C-1 (channel order); masks on disk hold class *values*.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..exceptions import SchemaError

SCHEMA_FILE = "classes.json"


@dataclass(frozen=True)
class ClassSchema:
    names: tuple[str, ...]
    values: tuple[int, ...]
    hflip_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self):
        if len(self.names) != len(self.values) or not self.names:
            raise SchemaError("schema needs one value per class name and at least one class")
        if len(set(self.names)) != len(self.names):
            raise SchemaError(f"duplicate class names in schema: {self.names}")
        if len(set(self.values)) != len(self.values):
            raise SchemaError(f"duplicate class values in schema: {self.values}")
        bad = [v for v in self.values if not 0 <= v <= 255]
        if bad:
            raise SchemaError(f"class values must fit in an 8-bit mask, got {bad}")
        seen: set[str] = set()
        for a, b in self.hflip_pairs:
            for n in (a, b):
                if n not in self.names:
                    raise SchemaError(f"hflip_pairs names unknown class {n!r}")
                if n in seen:
                    raise SchemaError(f"class {n!r} appears in more than one hflip pair")
                seen.add(n)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """perm[i] = index of the class that class i becomes in the mirrored image.

        It is an involution (perm[perm] == identity). Use it both ways: to relabel a flipped mask
        (``perm[mask]``) and to reorder the channels of a flipped prediction (``probs[perm]``).
        """
        perm = np.arange(self.num_classes)
        index = {n: i for i, n in enumerate(self.names)}
        for a, b in self.hflip_pairs:
            perm[index[a]], perm[index[b]] = index[b], index[a]
        return perm

    @property
    def value_to_index(self) -> np.ndarray:
        """256-entry lookup table: mask value -> class index, 255 for values not in the schema."""
        lut = np.full(256, 255, dtype=np.uint8)
        lut[list(self.values)] = np.arange(self.num_classes, dtype=np.uint8)
        return lut

    @property
    def index_to_value(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.uint8)

    def to_indices(self, mask: np.ndarray, strict: bool = False) -> np.ndarray:
        """Mask of class values -> uint8 class indices, 255 where a value is not in the schema.
        ``strict``: raise :class:`SchemaError` naming the unknown values instead."""
        idx = self.value_to_index[mask]
        if strict and (idx == 255).any():
            bad = sorted(int(v) for v in np.unique(mask[idx == 255]))
            raise SchemaError(f"mask values {bad[:10]} are not in the schema "
                              f"{dict(zip(self.values, self.names))}")
        return idx

    def orientation_pairs(self) -> list[tuple[int, int]]:
        """Index pairs of classes that differ only by orientation: left/right (the flip pairs) and
        front/rear (names that match after swapping front<->back/rear). Used to colour orientation
        confusions in error maps."""
        index = {n: i for i, n in enumerate(self.names)}
        pairs = {tuple(sorted((index[a], index[b]))) for a, b in self.hflip_pairs}
        swaps = [("front", "back"), ("front", "rear")]
        for n in self.names:
            for a, b in swaps:
                if a in n:
                    other = n.replace(a, b)
                    if other in index:
                        pairs.add(tuple(sorted((index[n], index[other]))))
        return sorted(pairs)

    def to_dict(self) -> dict:
        return {
            "classes": [{"name": n, "value": v} for n, v in zip(self.names, self.values)],
            "hflip_pairs": [list(p) for p in self.hflip_pairs],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ClassSchema":
        try:
            classes = d["classes"]
            names = tuple(str(c["name"]) for c in classes)
            values = tuple(int(c["value"]) for c in classes)
            pairs = tuple((str(a), str(b)) for a, b in d.get("hflip_pairs", []))
        except (KeyError, TypeError, ValueError) as err:
            raise SchemaError(f"malformed class schema ({err!r}); expected "
                             '{"classes": [{"name": ..., "value": ...}], "hflip_pairs": [[a, b]]}') from err
        return cls(names, values, pairs)


DEFAULT_SCHEMA = ClassSchema(
    names=("background", "front_door", "rear_door", "front_fender", "rear_fender", "door_handle"),
    values=(0, 32, 64, 96, 128, 160),
    hflip_pairs=(),
)


def load_schema(data_dir: str | Path) -> ClassSchema:
    """The schema of a dataset folder: its classes.json, or the five-class default."""
    path = Path(data_dir) / SCHEMA_FILE
    if not path.exists():
        return DEFAULT_SCHEMA
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SchemaError(f"{path}: cannot read class schema: {err}") from err
    try:
        return ClassSchema.from_dict(d)
    except SchemaError as err:
        raise SchemaError(f"{path}: {err}") from err
