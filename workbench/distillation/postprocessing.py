"""Post-processing chosen on out-of-fold predictions, as nnU-Net decides its own: flip TTA on or
off, each candidate group of mutually exclusive parts (one per photo) kept only where it raises OOF
mIoU, and per class the smallest-component threshold that raises that class's OOF IoU, kept only
where it does. The result goes into the exported model file's ``tta``, ``exclusive`` and
``cleanup`` metadata."""

from __future__ import annotations

import cv2
import numpy as np

from ..core.console import console
from ..models.modelfile import default_postprocessing
from ..evaluation.metrics import confusion_matrix, iou_per_class, mean_iou
from ..inference.postprocess import merge_exclusive, postprocess, suppress_small_components
from .ensemble import OOFSet, evaluate_mix, iou_row, mix

# Candidate minimum component areas, as fractions of the image area (0.01% .. 2%).
CLEANUP_CANDIDATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2)

def masks_holding_two(ds, group: list[int]) -> list[str]:
    """Stems of ``ds``'s masks (at their own resolution) that hold two or more classes of ``group``."""
    return [stem for stem, m in zip(ds.stems, ds.full_masks) if np.count_nonzero(np.isin(group, np.unique(m))) > 1]


def exclusive_candidates(groups: list[list[str]], ds) -> list[list[int]]:
    """The configured groups of mutually exclusive parts (``exclusive_parts``) that can be tried on
    ``ds``: as class indices, skipping (with a note) a group naming a part the schema lacks, and one
    that two of its parts share in some training mask (the rule would be wrong there)."""
    names = list(ds.schema.names)
    out = []
    for group in groups:
        missing = [n for n in group if n not in names]
        if missing:
            console.print(f"exclusive parts {group}: skipped, {ds.data_dir} has no {', '.join(missing)}", markup=False)
            continue
        idx = [names.index(n) for n in dict.fromkeys(group)]
        shared = masks_holding_two(ds, idx)
        if shared:
            console.print(f"exclusive parts {group}: skipped, {len(shared)} training masks hold two of them "
                          f"({', '.join(shared[:5])})", markup=False)
            continue
        out.append(idx)
    return out


def choose_exclusive(probs: list[np.ndarray], masks: np.ndarray, folds: np.ndarray | None,
                     exclusive: list[list[int]], names: tuple[str, ...]):
    """Which candidate groups of mutually exclusive parts to merge (``merge_exclusive``), one after
    the other, each kept if it raises mIoU at the OOF resolution; with ``folds`` (two or more) only
    if it does so cross-fitted: a fold is merged only where merging raises the other folds' mIoU.
    Returns the probabilities after the kept merges, the kept groups, the gains (plain, and
    cross-fitted when ``folds`` is given) and the labels of the groups left out."""
    C = len(names)
    kept, gains, cross_gains, dropped = [], {}, {}, []
    for g in exclusive:
        label = "/".join(names[c] for c in g)
        merged = [merge_exclusive(p, [g]) for p in probs]
        cm0 = np.stack([confusion_matrix(m, p.argmax(0).astype(np.uint8), C) for m, p in zip(masks, probs)])
        cm1 = np.stack([confusion_matrix(m, q.argmax(0).astype(np.uint8), C) if q is not p else c
                        for m, p, q, c in zip(masks, probs, merged, cm0)])  # only split images change
        gains[label] = gain = float(mean_iou(cm1.sum(0)) - mean_iou(cm0.sum(0)))
        if folds is not None:
            cm = cm0.copy()
            for f in np.unique(folds):
                others = folds != f
                if mean_iou(cm1[others].sum(0)) > mean_iou(cm0[others].sum(0)) + 1e-6:
                    cm[folds == f] = cm1[folds == f]
            cross_gains[label] = gain = float(mean_iou(cm.sum(0)) - mean_iou(cm0.sum(0)))
        if gain > 1e-4:
            kept.append(list(g))
            probs = merged
        else:
            dropped.append(label)
    return probs, kept, gains, cross_gains, dropped


def choose_postprocessing(oofs: OOFSet, names: tuple[str, ...], group: str, cross_fit: bool = True,
                          exclusive: list[list[int]] = ()) -> dict:
    """Flip TTA on/off, exclusive part groups and per-class cleanup thresholds that raise OOF IoU
    (nnU-Net style: each decided on its own, kept only if it helps). Returns the metadata
    ``tta``/``exclusive``/``cleanup`` parts plus the ablation numbers.

    ``exclusive``: candidate groups of class indices of which a photo shows at most one (checked on
    the training masks by the caller). A group is kept if merging it (``merge_exclusive``) raises
    the OOF mIoU; with two folds or more only if it does so cross-fitted (each fold merged only
    where the other folds gain). The cleanup thresholds are then chosen after the kept merges.

    With ``cross_fit`` and images from two folds or more (``oofs.folds``), a class keeps its cleanup
    only if the rule also pays *cross-fitted*: for each fold, the threshold chosen on the other
    folds is applied to that fold, and the class's IoU over all images so scored must rise. A
    threshold that only fits the images it was chosen on is dropped (the ablation names it). The
    threshold kept is the one chosen on all the images.

    The threshold search runs at the OOF resolution; an image is re-evaluated for (class, threshold)
    only if its prediction has a component of that class smaller than the threshold, otherwise
    cleanup cannot change it."""
    w = {group: 1.0}
    plain = evaluate_mix(oofs, w, tta=False)
    tta = evaluate_mix(oofs, w, tta=True)
    use_tta = bool(np.nanmean(tta) >= np.nanmean(plain))
    C = len(names)
    probs = [mix(oofs, w, use_tta, i) for i in range(len(oofs.stems))]
    folds = np.asarray(oofs.folds) if oofs.folds is not None else np.zeros(len(probs), np.int64)
    fold_ids = np.unique(folds)
    cross = cross_fit and len(fold_ids) > 1
    probs, kept_groups, ex_gains, ex_cross, ex_dropped = choose_exclusive(
        probs, oofs.small_masks, folds if cross else None, exclusive, names)
    labels = [p.argmax(0).astype(np.uint8) for p in probs]
    cms = np.stack([confusion_matrix(m, lab, C) for m, lab in zip(oofs.small_masks, labels)])
    base = cms.sum(0)
    base_iou = iou_per_class(base)
    chosen: dict[str, float] = {}
    gains, cross_gains, dropped = {}, {}, {}
    for c in range(1, C):  # background is what remains, never cleaned on its own
        smallest = []
        for lab in labels:
            n, _, stats, _ = cv2.connectedComponentsWithStats((lab == c).view(np.uint8), connectivity=8)
            smallest.append(stats[1:, cv2.CC_STAT_AREA].min() / lab.size if n > 1 else np.inf)
        smallest = np.array(smallest)
        # per threshold, the change of each image's confusion (only images it can change)
        deltas = {t: {int(i): confusion_matrix(oofs.small_masks[i],
                                               suppress_small_components(probs[i], {c: t}).argmax(0), C) - cms[i]
                      for i in np.flatnonzero(smallest < t)}
                  for t in CLEANUP_CANDIDATES}

        def best(use: np.ndarray) -> tuple[float, float | None]:
            """The threshold that raises class c's IoU most over the images ``use`` selects, and its gain."""
            cm0 = cms[use].sum(0)
            before = iou_per_class(cm0)[c]
            best_gain, best_t = 0.0, None
            for t in CLEANUP_CANDIDATES:
                cm = cm0 + sum((d for i, d in deltas[t].items() if use[i]), np.zeros_like(cm0))
                gain = float(iou_per_class(cm)[c] - before)
                if np.isfinite(gain) and gain > best_gain + 1e-4:
                    best_gain, best_t = gain, t
            return best_gain, best_t

        best_gain, best_t = best(np.ones(len(labels), bool))
        if best_t is None:
            continue
        if cross:
            cm = base.copy()
            for f in fold_ids:
                _, t_f = best(folds != f)
                if t_f is not None:
                    cm += sum((d for i, d in deltas[t_f].items() if folds[i] == f), np.zeros_like(cm))
            cross_gains[names[c]] = float(iou_per_class(cm)[c] - base_iou[c])
            if not cross_gains[names[c]] > 1e-4:
                dropped[names[c]] = best_t
                continue
        chosen[names[c]], gains[names[c]] = best_t, best_gain
    by_index = {names.index(n): t for n, t in chosen.items()}

    after = evaluate_mix(oofs, w, use_tta, post=(lambda p: postprocess(p, kept_groups, by_index))
                         if by_index or kept_groups else None)
    ablation = {"no_tta": iou_row(plain), "tta": iou_row(tta), "chosen_tta_plus_cleanup": iou_row(after),
                "cleanup_gain_per_class_lowres": gains}
    if exclusive:
        ablation |= {"exclusive_gain_lowres": ex_gains, "exclusive_dropped": ex_dropped}
        if cross:
            ablation["exclusive_cross_fitted_gain_lowres"] = ex_cross
    if cross:
        ablation |= {"cleanup_cross_fitted_gain_per_class_lowres": cross_gains,
                     "cleanup_dropped_by_cross_fitting": dropped, "cleanup_folds": [int(f) for f in fold_ids]}
    return {
        "tta": {"hflip": use_tta, "scales": [1.0]},
        "exclusive": [[names[c] for c in g] for g in kept_groups],
        "cleanup": {"enabled": bool(chosen), "min_area": chosen},
        "ablation": ablation,
    }


def unchosen_postprocessing() -> dict:
    """What a model file gets when distill.py is told not to choose (``postprocess=false``, e.g. on a
    GPU lent for minutes, where the choice would run on the CPU): a new model's defaults (flip TTA
    on, no exclusive groups, no cleanup) and no ablation. ``distill.py --postprocess FILE RUN...``
    chooses later, on OOF runs of the file's recipe."""
    return {**default_postprocessing(), "ablation": {}}


def describe_postprocessing(post: dict, chosen_on: str) -> str:
    """One paragraph for the console and the OOF report: what was chosen, on what, what it scores,
    and which cleanup thresholds cross-fitting left out."""
    ab = post["ablation"]
    if not ab:
        return ("Post-processing not chosen (postprocess=false): flip TTA on, no cleanup. Choose it on OOF "
                "runs of this recipe with: python distill.py --postprocess MODEL_FILE RUN [RUN ...]")
    exclusive = "; exclusive parts " + (", ".join("/".join(g) for g in post["exclusive"]) or "none") \
        if "exclusive_gain_lowres" in ab else ""
    text = (f"Post-processing chosen on the OOF predictions of {chosen_on}: flip TTA "
            f"{'on' if post['tta']['hflip'] else 'off'}{exclusive}; cleanup {post['cleanup']['min_area'] or 'none'}. "
            f"mIoU without TTA {ab['no_tta']['miou'] * 100:.2f}, flip TTA {ab['tta']['miou'] * 100:.2f}, chosen "
            f"{ab['chosen_tta_plus_cleanup']['miou'] * 100:.2f} (at the masks' resolution, on the images it was "
            "chosen on).")
    if ab.get("exclusive_dropped"):
        text += f"\nExclusive part groups left out (they did not raise OOF mIoU): {ab['exclusive_dropped']}."
    if ab.get("cleanup_dropped_by_cross_fitting"):
        text += ("\nCleanup left out because it did not pay cross-fitted (chosen on the other folds, scored on "
                 f"each of folds {ab['cleanup_folds']}): {ab['cleanup_dropped_by_cross_fitting']}.")
    return text
