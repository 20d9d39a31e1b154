"""Typed values from YAML, JSON and the command line: the one set of rules the config
(:mod:`workbench.core.config`) and the model-file metadata (:mod:`workbench.models.metadata`) are
checked with.

A :class:`Field` says what a value must be; :meth:`Field.convert` returns it in its proper type or
raises :class:`ValueError` with the reason (callers add which setting or file it came from):

- numbers in any spelling YAML or JSON may give them: ``1e-4`` (a string to YAML 1.1), ``1E3``,
  ``.5``, ``10``; an integer field takes ``1e1`` but not ``2.5``; NaN and infinities are refused;
- booleans only as booleans (``true``/``false``; the string ``"false"`` is an error, not true);
- strings as strings (a number where a name is expected is written back as text);
- lists of items of one field (a single value where a list is expected becomes a one-item list);
- ranges (``lo``/``above``/``hi``), a required ``multiple`` and a fixed set of ``choices``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    kind: type                       # bool, int, float, str or list
    lo: float | None = None          # smallest allowed number (list: smallest length)
    above: float | None = None       # numbers must be greater than this (e.g. 0 for a learning rate)
    hi: float | None = None          # largest allowed number (list: largest length)
    choices: tuple = ()              # allowed values, if only some are
    item: "Field | None" = None      # the field of each list item
    multiple: int | None = None      # integers: must be a multiple of this (0 always allowed)
    scalar_to_list: bool = True      # lists: accept one value as a one-item list

    def convert(self, value: Any) -> Any:
        """``value`` as this field's type, or :class:`ValueError` saying what was expected."""
        if self.kind is list:
            return self._list(value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if self.kind in (int, float):
            value = _number(value, self.kind)
        elif self.kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError("expected a text value")
            value = str(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"choose one of {sorted(self.choices)}")
        if self.lo is not None and value < self.lo:
            raise ValueError(f"must be at least {_fmt(self.lo)}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"must be greater than {_fmt(self.above)}")
        if self.hi is not None and value > self.hi:
            raise ValueError(f"must be at most {_fmt(self.hi)}")
        if self.multiple and value % self.multiple:
            raise ValueError(f"must be a multiple of {self.multiple}")
        return value

    def _list(self, value: Any) -> list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            if not self.scalar_to_list or isinstance(value, dict):
                raise ValueError("expected a list")
            value = [value]
        if self.lo is not None and len(value) < self.lo:
            raise ValueError(f"expected at least {int(self.lo)} item(s), got {len(value)}")
        if self.hi is not None and len(value) > self.hi:
            raise ValueError(f"expected at most {int(self.hi)} item(s), got {len(value)}")
        if self.item is None:
            return value
        out = []
        for i, v in enumerate(value):
            try:
                out.append(self.item.convert(v))
            except ValueError as err:
                raise ValueError(f"item {i + 1} ({v!r}): {err}") from None
        return out


def _number(value: Any, kind: type) -> int | float:
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or isinstance(value, (dict, list)) or value is None:
        raise ValueError(f"expected {what}")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if kind is int and value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"expected {what}") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"expected {what}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected {what}, not {value}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected {what}")
            value = int(value)
        return value
    return float(value)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def check_fields(values: dict, fields: dict[str, Field], where: str = "") -> dict:
    """``values`` with every key of ``fields`` that is present converted; raises :class:`ValueError`
    ``"<where><key>=<value>: <reason>"`` for the first that does not fit. Other keys pass unchanged."""
    out = dict(values)
    for key, field in fields.items():
        if key in out:
            try:
                out[key] = field.convert(out[key])
            except ValueError as err:
                raise ValueError(f"{where}{key}={out[key]!r}: {err}") from None
    return out
