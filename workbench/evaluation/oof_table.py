"""Per-image confusion matrices of a model on its scored images: the small table that outlives a
machine.

Out-of-fold probabilities are hundreds of MB per fold and stay in ``runs/``; a new machine loses
them and, with them, every pooled comparison (paired bootstrap over the images of several folds)
that needs the runs. The per-image confusion matrices are all such a comparison needs: about 22 kB
per fold (80 images, 19 classes, plain and flip-TTA), small enough to commit beside the run's
``metrics.json`` (``docs/results/``). ``python -m analysis.oof_table`` writes one,
``python -m analysis.bootstrap`` reads them (several per side pool folds).

File format: an ``.npz`` without pickled objects holding ``stems`` (N,), ``classes`` (C,) names,
``values`` (C,) mask values, ``confusion`` (N, C, C) int64 of the scored prediction (flip TTA for
an OOF source unless asked otherwise), ``tta`` (1 flip TTA, 0 plain, -1 predicted masks) and, for an
OOF source, ``confusion_plain`` (N, C, C) without TTA; rows are ground truth, columns prediction, as :func:`~workbench.evaluation.metrics.confusion_matrix`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write
from ..exceptions import AnalysisError
from .metrics import confusion_matrix

KEYS = ("stems", "classes", "values", "confusion")


@dataclass
class OOFTable:
    stems: list[str]
    classes: list[str]
    values: list[int]
    confusion: np.ndarray                 # (N, C, C) of the scored prediction
    confusion_plain: np.ndarray | None    # (N, C, C) without TTA, when the source had both
    tta: bool | None                      # whether ``confusion`` is flip-TTA; None: predicted masks (no choice)

    @property
    def prediction(self) -> str:
        """What ``confusion`` scores, in words."""
        return {True: "flip TTA", False: "plain"}.get(self.tta, "predicted masks")

    def pick(self, tta: bool = True) -> np.ndarray:
        """The per-image confusions with (``tta``) or without flip TTA."""
        if self.tta is None or tta == self.tta:
            return self.confusion
        if not tta and self.confusion_plain is not None:
            return self.confusion_plain
        raise AnalysisError("this table holds only " + ("flip-TTA" if self.tta else "plain") + " predictions")


def score_source(source, stems: list[str] | None = None, progress=lambda seq: seq) -> OOFTable:
    """Per-image confusions of an analysis source (:mod:`workbench.evaluation.sources`) on ``stems``
    (default: all of the source's)."""
    stems = list(source.stems if stems is None else stems)
    C = source.schema.num_classes
    scored, plain = [], []
    for stem in progress(stems):
        item = source.get(stem)
        scored.append(confusion_matrix(item.gt, item.pred, C))
        if item.pred_plain is not None:
            plain.append(confusion_matrix(item.gt, item.pred_plain, C))
    tta = getattr(source, "tta", None)  # an OOF source scores flip TTA or not; predicted masks have no choice
    return OOFTable(stems, list(source.schema.names), list(source.schema.values), _stack(scored, C),
                    _stack(plain, C) if len(plain) == len(stems) and tta else None, tta)


def _stack(cms: list[np.ndarray], C: int) -> np.ndarray:
    return np.stack(cms).astype(np.int64) if cms else np.zeros((0, C, C), np.int64)


def save_table(path: str | Path, table: OOFTable) -> Path:
    arrays = {"stems": np.array(table.stems, dtype=str), "classes": np.array(table.classes, dtype=str),
              "values": np.array(table.values, dtype=np.int64), "confusion": table.confusion,
              "tta": np.array(-1 if table.tta is None else int(table.tta), dtype=np.int8)}
    if table.confusion_plain is not None:
        arrays["confusion_plain"] = table.confusion_plain
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def load_table(path: str | Path) -> OOFTable:
    """Read a table written by :func:`save_table`; a clear :class:`AnalysisError` naming the file
    when it is not one."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise AnalysisError(f"{path}: cannot read an OOF table ({err})") from err
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise AnalysisError(f"{path}: not an OOF table (no {', '.join(missing)})")
    cms, n, c = d["confusion"], len(d["stems"]), len(d["classes"])
    plain = d.get("confusion_plain")
    for name, arr in (("confusion", cms), ("confusion_plain", plain)):
        if arr is not None and arr.shape != (n, c, c):
            raise AnalysisError(f"{path}: {name} has shape {arr.shape}, expected {(n, c, c)}")
    return OOFTable([str(s) for s in d["stems"]], [str(s) for s in d["classes"]], [int(v) for v in d["values"]],
                    cms.astype(np.int64), None if plain is None else plain.astype(np.int64),
                    {-1: None, 0: False, 1: True}.get(int(d.get("tta", -1)), None))


def pool_tables(paths: list[str | Path], tta: bool = True) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """(class names, class values, {stem: confusion}) of several tables (e.g. the folds of one model),
    which must share the class schema and not score an image twice."""
    names, values, by_stem = None, None, {}
    for path in paths:
        t = load_table(path)
        if names is None:
            names, values = t.classes, t.values
        elif (t.classes, t.values) != (names, values):
            raise AnalysisError(f"{path}: its classes differ from {paths[0]}'s")
        twice = sorted(set(t.stems) & set(by_stem))
        if twice:
            raise AnalysisError(f"{path}: images {twice[:3]} are already scored by another table of the same side")
        by_stem.update(zip(t.stems, t.pick(tta)))
    return names, values, by_stem
