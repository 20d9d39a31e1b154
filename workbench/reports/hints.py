"""What to try next: plain-language hints drawn from an evaluation's error statistics. Each hint is
HTML: ``<b>`` marks its key phrase and the class names in it are escaped (a class may be called
``<script>``); :func:`hint_text` turns one into plain text, :mod:`.markdown` into Markdown."""

from __future__ import annotations

import html
import math
import re

import numpy as np

from ..evaluation import error_kinds as E
from ..evaluation.evaluate import Evaluation


def hints(ev: Evaluation) -> list[str]:
    """Plain-language suggestions of what to try next, from the error statistics."""
    out = []
    names = [html.escape(n) for n in ev.schema.names]  # user text inside HTML
    totals = ev.kind_totals().astype(float)
    wrong = totals[1:].sum()
    if wrong == 0:
        return ["No errors at all on these images: nothing to fix here (is the ground truth also the prediction?)."]
    share = {k: totals[k] / wrong for k in E.ERROR_KINDS}
    conf = ev.top_confusions(30)
    conf = [c for c in conf if c[3] >= 0.02]
    orient = [c for c in conf if c[4]]
    if share[E.ORIENTATION] >= 0.08 and orient:
        top = ", ".join(f"{names[i]} → {names[j]} ({100 * s:.0f}% of {names[i]})" for i, j, _, s, _ in orient[:3])
        out.append(f"<b>Orientation mix-ups</b> are {100 * share[E.ORIENTATION]:.0f}% of wrong pixels ({top}). "
                   "Check that flip augmentation relabels left/right pairs (schema flip permutation), use "
                   "orientation-aware flip TTA, and keep enough context in crops to see which side of the car is shown.")
    b_share, b_pix = ev.regions.boundary_error_share, ev.regions.boundary_pixel_share
    if math.isfinite(b_share) and b_share >= 0.5 and b_share >= 2 * b_pix:
        out.append(f"<b>Boundaries</b>: {100 * b_share:.0f}% of wrong pixels lie within {ev.boundary_px} px of a "
                   f"ground-truth edge, a band holding only {100 * b_pix:.0f}% of pixels. Outline quality is the "
                   "lever: higher input resolution, a decoder with high-resolution skips (UNet), a boundary-aware "
                   "loss (Lovász / boundary), or upsampling probabilities before arg-max.")
    elif math.isfinite(b_share) and b_share <= 0.5:
        out.append(f"<b>Interiors</b>: {100 * (1 - b_share):.0f}% of wrong pixels are more than {ev.boundary_px} px "
                   "from any ground-truth edge - whole regions are misread, not just outlines. A stronger encoder, "
                   "more or more varied training data, and longer training help more than boundary tricks.")
    if share[E.MISSED] >= 0.3 and share[E.MISSED] > 1.5 * share[E.FALSE_PART]:
        out.append(f"<b>Missed parts</b> dominate ({100 * share[E.MISSED]:.0f}% of wrong pixels): parts are "
                   "predicted as background. Try Dice/Lovász loss next to cross-entropy, a lower background "
                   "weight, or crops that keep small parts large enough to see.")
    if share[E.FALSE_PART] >= 0.3 and share[E.FALSE_PART] > 1.5 * share[E.MISSED]:
        out.append(f"<b>False parts</b> on background dominate ({100 * share[E.FALSE_PART]:.0f}% of wrong "
                   "pixels): try prediction cleanup (drop small components), more images with cluttered "
                   "background, or hard-negative crops.")
    plain = [c for c in conf if not c[4]]
    bg = E.background_index(ev.schema)
    plain = [c for c in plain if bg not in (c[0], c[1])]
    if share[E.CONFUSION] >= 0.15 and plain:
        top = ", ".join(f"{names[i]} → {names[j]} ({100 * s:.0f}% of {names[i]})" for i, j, _, s, _ in plain[:3])
        out.append(f"<b>Part confusions</b> are {100 * share[E.CONFUSION]:.0f}% of wrong pixels, mostly {top}. "
                   "Look at these pairs in the gallery: if the annotation itself is ambiguous (e.g. trunk vs "
                   "tailgate), consider merging or relabelling; otherwise more examples of those parts help.")
    iou = ev.iou
    gt_share = ev.cm.sum(1) / max(ev.cm.sum(), 1)
    if np.isfinite(iou).any():
        m = float(np.nanmean(iou))
        weak = [i for i in np.argsort(np.where(np.isfinite(iou), iou, 9)) if math.isfinite(iou[i]) and iou[i] < m - 0.15]
        if weak:
            small = [i for i in weak if 0 < gt_share[i] < 0.01]
            desc = ", ".join(f"{names[i]} ({iou[i]:.2f})" for i in weak[:5])
            tip = (" Most are small parts: oversample images that contain them, use class-balanced or Dice loss, "
                   "and a higher input resolution." if len(small) * 2 >= len(weak) else
                   " Look at their confusions in the matrix above to see what they are taken for.")
            out.append(f"<b>Weak classes</b> well below the mean IoU: {desc}.{tip}")
    if ev.flip is not None and math.isfinite(ev.flip.part_score) and ev.flip.part_score < 0.95:
        out.append(f"<b>Flip consistency</b> on parts is only {100 * ev.flip.part_score:.1f}%: the model answers "
                   "differently for a mirrored car. Flip TTA averages the two views; training with relabelled "
                   "flips makes the model itself more consistent.")
    if len(ev.images) >= 10:
        worst = ev.worst(max(1, len(ev.images) // 10))
        m_worst = np.mean([r.miou for r in worst])
        if math.isfinite(ev.mean_image_miou) and ev.mean_image_miou - m_worst > 0.3:
            out.append(f"<b>Outlier images</b>: the worst 10% average an image mIoU of {m_worst:.2f} against "
                       f"{ev.mean_image_miou:.2f} overall. Check the gallery for a common cause (unusual views, "
                       "occlusion, several cars, label errors) before changing the model.")
    return out


def hint_text(hint: str) -> str:
    """A hint as plain text (for the console): no tags, entities back to characters."""
    return html.unescape(re.sub(r"</?b>", "", hint))


def hint_parts(hint: str) -> list[tuple[str, bool]]:
    """A hint as (plain text, bold) pieces, for formats that mark bold their own way."""
    pieces = re.split(r"(<b>.*?</b>)", hint)
    return [(html.unescape(re.sub(r"</?b>", "", p)), p.startswith("<b>")) for p in pieces if p]
