"""The teachers' out-of-fold (OOF) evaluation: per-class IoU of every teacher fold, every family
(its folds' OOF predictions together), the probability-mean ensemble and an ensemble with family
weights fitted on OOF data, with and without flip TTA; the students and baselines scored beside them;
and the choice of which families may teach (:func:`select_families`). :func:`mix_table` keeps an
ensemble's per-image confusions as an OOF table, so its lead over a single model can be bootstrapped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from ..data import Dataset
from ..reports.format import md_text
from ..exceptions import DistillError
from ..evaluation.metrics import confusion_from_probs as evaluate_probs
from ..evaluation.metrics import confusion_matrix, iou_per_class
from ..evaluation.oof_table import OOFTable
from ..training.oof import OOF, load_oof
from .teachers import Teacher

@dataclass
class OOFSet:
    """OOF probabilities of several models (keyed by name), aligned on the same images."""
    stems: list[str]
    full_masks: list[np.ndarray]
    small_masks: np.ndarray           # masks at the OOF resolution, for fast threshold search
    plain: dict[str, list[np.ndarray]]  # name -> per image uint8 (C, S, S)
    flip: dict[str, list[np.ndarray]]
    folds: list[int] | None = None      # held-out fold of each image (of the first group's runs), if known


def gather_oof(groups: dict[str, list[Path]], ds: Dataset) -> OOFSet:
    """For each group (family) the OOF of its fold runs, restricted to images every group has."""
    per_group, fold_of = {}, {}
    for g, runs in groups.items():
        entries = {}
        for run in runs:
            oof: OOF = load_oof(run)
            for i, stem in enumerate(oof.stems):
                entries[stem] = (oof.probs[i], oof.probs_flip[i])
                if not per_group:
                    fold_of[stem] = oof.fold
        per_group[g] = entries
    common = sorted(set.intersection(*(set(e) for e in per_group.values())))
    index = {s: i for i, s in enumerate(ds.stems)}
    missing = [s for s in common if s not in index]
    if missing:
        raise DistillError(f"OOF images {missing[:5]} are not in the dataset {ds.data_dir}")
    return OOFSet(common, [ds.full_masks[index[s]] for s in common], ds.masks[[index[s] for s in common]],
                  {g: [e[s][0] for s in common] for g, e in per_group.items()},
                  {g: [e[s][1] for s in common] for g, e in per_group.items()},
                  [fold_of[s] for s in common])


def mix(oofs: OOFSet, weights: dict[str, float], tta: bool, i: int) -> np.ndarray:
    """float32 (C, S, S) weighted mean of the groups' probabilities of image i."""
    total = sum(weights.values())
    p = 0.0
    for g, w in weights.items():
        if w == 0:
            continue
        q = oofs.plain[g][i].astype(np.float32)
        if tta:
            q = 0.5 * (q + oofs.flip[g][i].astype(np.float32))
        p = p + (w / total / 255.0) * q
    return p


def mix_confusions(oofs: OOFSet, weights: dict[str, float], tta: bool, full_res: bool = True,
                   post=None) -> np.ndarray:
    """Per-image confusion matrices (N, C, C) of a weighted mix; at the masks' resolution, or at the
    OOF resolution (fast). ``post(probs) -> probs`` is an optional post-processing at the OOF
    resolution, applied before upsampling exactly as the inference ``Predictor`` applies the cleanup."""
    C = next(iter(oofs.plain.values()))[0].shape[0]
    cms = np.zeros((len(oofs.stems), C, C), dtype=np.int64)
    for i in range(len(oofs.stems)):
        p = mix(oofs, weights, tta, i)
        if post is not None:
            p = post(p)
        if full_res:
            cms[i] = evaluate_probs(p[None], [oofs.full_masks[i]], C)
        else:
            cms[i] = confusion_matrix(oofs.small_masks[i], p.argmax(0), C)
    return cms


def evaluate_mix(oofs: OOFSet, weights: dict[str, float], tta: bool, full_res: bool = True,
                 post=None) -> np.ndarray:
    """Per-class IoU (dataset-level) of a weighted mix; see :func:`mix_confusions`."""
    return iou_per_class(mix_confusions(oofs, weights, tta, full_res, post).sum(0))


def mix_table(oofs: OOFSet, weights: dict[str, float], ds: Dataset) -> OOFTable:
    """The per-image confusions of a weighted mix, with and without flip TTA, as an OOF table
    (:mod:`workbench.evaluation.oof_table`)."""
    return OOFTable(list(oofs.stems), list(ds.schema.names), list(ds.schema.values),
                    mix_confusions(oofs, weights, True), mix_confusions(oofs, weights, False), True)


def table_row(table: OOFTable, kind: str, **extra) -> dict:
    """A report row (per-class IoU with and without flip TTA) from an OOF table."""
    return {"kind": kind, "images": len(table.stems), **extra,
            "plain": iou_row(iou_per_class(table.confusion_plain.sum(0))),
            "tta": iou_row(iou_per_class(table.confusion.sum(0)))}


def fit_weights(oofs: OOFSet, step: float = 0.1) -> dict[str, float]:
    """Grid search of ensemble weights on the simplex (OOF resolution, with TTA)."""
    groups = list(oofs.plain)
    if len(groups) == 1:
        return {groups[0]: 1.0}
    grid = np.round(np.arange(0, 1 + 1e-9, step), 3)
    best, best_w = -1.0, None
    for ws in itertools.product(grid, repeat=len(groups) - 1):
        last = 1 - sum(ws)
        if last < -1e-9:
            continue
        w = dict(zip(groups, [*ws, max(0.0, last)]))
        score = np.nanmean(evaluate_mix(oofs, w, tta=True, full_res=False))
        if score > best:
            best, best_w = score, w
    return best_w


def iou_row(iou: np.ndarray) -> dict:
    return {"miou": float(np.nanmean(iou)), "iou": [None if not np.isfinite(v) else float(v) for v in iou]}


def oof_report(teachers: list[Teacher], ds: Dataset) -> tuple[dict, OOFSet, dict, OOFTable]:
    """Rows: each teacher fold, each family, the probability-mean ensemble and the OOF-fitted
    weighted ensemble; each with per-class IoU with and without flip TTA. Also returns the aligned
    OOF set of the families, the fitted weights and the probability-mean ensemble's OOF table."""
    rows = {}
    for t in teachers:  # each teacher on its own held-out fold
        add_rows(rows, ds, {t.label: [t.run_dir]}, "teacher")
    families: dict[str, list[Path]] = {}
    for t in teachers:
        families.setdefault(t.family, []).append(t.run_dir)
    oofs = gather_oof(families, ds)
    for fam in families:
        rows[f"family {fam}"] = table_row(mix_table(oofs, {fam: 1}, ds), "family")
    equal = {f: 1.0 for f in families}
    mean = mix_table(oofs, equal, ds)
    rows["ensemble (mean)"] = table_row(mean, "ensemble", weights=equal)
    fitted = fit_weights(oofs)
    if len(families) > 1:
        rows["ensemble (OOF-fitted weights)"] = table_row(mix_table(oofs, fitted, ds), "ensemble", weights=fitted)
    return rows, oofs, fitted, mean


def add_rows(rows: dict, ds: Dataset, named_runs: dict[str, list[Path]], kind: str) -> dict:
    """Add one row per name, scoring the OOF predictions of its fold runs (student, baselines)."""
    for name, runs in named_runs.items():
        rows[name] = table_row(mix_table(gather_oof({name: runs}, ds), {name: 1}, ds), kind)
    return rows


def report_table(rows: dict, names: tuple[str, ...]) -> Table:
    table = Table(title="out-of-fold IoU (%) with flip TTA; bottom rows: mIoU without / with TTA")
    table.add_column("class")
    for r in rows:
        table.add_column(Text(r.replace(" (", "\n(")), justify="right")
    for c, n in enumerate(names):
        table.add_row(Text(n), *[f"{v * 100:.1f}" if (v := rows[r]["tta"]["iou"][c]) is not None else "-" for r in rows])
    table.add_row("[b]mIoU, no TTA[/b]", *[f"{rows[r]['plain']['miou'] * 100:.2f}" for r in rows])
    table.add_row("[b]mIoU, flip TTA[/b]", *[f"[b]{rows[r]['tta']['miou'] * 100:.2f}[/b]" for r in rows])
    table.add_row("images", *[str(rows[r]["images"]) for r in rows])
    return table


def report_markdown(rows: dict, names: tuple[str, ...]) -> str:
    head = "| class | " + " | ".join(md_text(r) for r in rows) + " |\n|---|" + "---:|" * len(rows) + "\n"
    body = ""
    for c, n in enumerate(names):
        body += f"| {md_text(n)} | " + " | ".join(
            f"{v * 100:.1f}" if (v := rows[r]["tta"]["iou"][c]) is not None else "-" for r in rows) + " |\n"
    body += "| **mIoU, no TTA** | " + " | ".join(f"{rows[r]['plain']['miou'] * 100:.2f}" for r in rows) + " |\n"
    body += "| **mIoU, flip TTA** | " + " | ".join(f"**{rows[r]['tta']['miou'] * 100:.2f}**" for r in rows) + " |\n"
    body += "| images | " + " | ".join(str(rows[r]["images"]) for r in rows) + " |\n"
    return head + body




def select_families(rows: dict, max_gap: float) -> tuple[dict[str, float], list[str]]:
    """Families allowed to teach: those whose OOF mIoU (flip TTA) is within ``max_gap`` of the best
    family's. Returns equal weights over them and one line per family left out, saying why."""
    fams = {name.removeprefix("family "): r["tta"]["miou"] for name, r in rows.items() if r["kind"] == "family"}
    best = max(fams.values())
    kept = {f: 1.0 for f, m in fams.items() if m >= best - max_gap}
    dropped = [f"family {f} left out of the soft labels: OOF mIoU {m * 100:.2f} is more than "
               f"{max_gap * 100:.1f} points below the best family ({best * 100:.2f})"
               for f, m in fams.items() if f not in kept]
    return kept, dropped
