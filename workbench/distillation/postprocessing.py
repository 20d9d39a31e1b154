"""Post-processing chosen on out-of-fold predictions, as nnU-Net decides its own: flip TTA on or
off, and per class the smallest-component threshold that raises that class's OOF IoU, kept only
where it does. The result goes into the exported model file's ``tta`` and ``cleanup`` metadata."""

from __future__ import annotations

import cv2
import numpy as np

from ..evaluation.metrics import confusion_matrix, iou_per_class
from ..inference.postprocess import suppress_small_components
from .ensemble import OOFSet, evaluate_mix, iou_row, mix

# Candidate minimum component areas, as fractions of the image area (0.01% .. 2%).
CLEANUP_CANDIDATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2)

def choose_postprocessing(oofs: OOFSet, names: tuple[str, ...], group: str) -> dict:
    """Flip TTA on/off and per-class cleanup thresholds that raise OOF IoU (nnU-Net style: each
    class decided on its own, kept only if it helps). Returns the metadata ``tta``/``cleanup`` parts
    plus the ablation numbers.

    The threshold search runs at the OOF resolution; an image is re-evaluated for (class, threshold)
    only if its prediction has a component of that class smaller than the threshold, otherwise
    cleanup cannot change it."""
    w = {group: 1.0}
    plain = evaluate_mix(oofs, w, tta=False)
    tta = evaluate_mix(oofs, w, tta=True)
    use_tta = bool(np.nanmean(tta) >= np.nanmean(plain))
    C = len(names)
    probs = [mix(oofs, w, use_tta, i) for i in range(len(oofs.stems))]
    labels = [p.argmax(0).astype(np.uint8) for p in probs]
    cms = [confusion_matrix(m, lab, C) for m, lab in zip(oofs.small_masks, labels)]
    base = np.sum(cms, axis=0)
    base_iou = iou_per_class(base)
    chosen: dict[str, float] = {}
    gains = {}
    for c in range(1, C):  # background is what remains, never cleaned on its own
        smallest = []
        for lab in labels:
            n, _, stats, _ = cv2.connectedComponentsWithStats((lab == c).view(np.uint8), connectivity=8)
            smallest.append(stats[1:, cv2.CC_STAT_AREA].min() / lab.size if n > 1 else np.inf)
        best_gain, best_t = 0.0, None
        for t in CLEANUP_CANDIDATES:
            cm = base.copy()
            for i in np.flatnonzero(np.array(smallest) < t):
                cleaned = suppress_small_components(probs[i], {c: t}).argmax(0)
                cm += confusion_matrix(oofs.small_masks[i], cleaned, C) - cms[i]
            gain = float(iou_per_class(cm)[c] - base_iou[c])
            if np.isfinite(gain) and gain > best_gain + 1e-4:
                best_gain, best_t = gain, t
        if best_t is not None:
            chosen[names[c]], gains[names[c]] = best_t, best_gain
    by_index = {names.index(n): t for n, t in chosen.items()}
    after = evaluate_mix(oofs, w, use_tta, post=(lambda p: suppress_small_components(p, by_index)) if by_index else None)
    return {
        "tta": {"hflip": use_tta, "scales": [1.0]},
        "cleanup": {"enabled": bool(chosen), "min_area": chosen},
        "ablation": {"no_tta": iou_row(plain), "tta": iou_row(tta),
                     "chosen_tta_plus_cleanup": iou_row(after), "cleanup_gain_per_class_lowres": gains},
    }
