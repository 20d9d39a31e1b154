"""From class probabilities to the final label map.

- :func:`cleanup`: connected-component cleanup. Per class with a threshold, 8-connected components
  smaller than ``min_area`` (a fraction of the image area) are dropped and each of their pixels goes
  to the best *other* class of the probability map at that pixel (the runner-up, not blindly
  background). If the runner-up pixels form, in turn, an isolated component below its class's
  threshold (a left-mirror speckle whose runner-up is the right mirror, say), the next best class is
  taken, up to ``max_passes`` times. Distillation calls it on out-of-fold probability maps to choose
  the thresholds.
- :func:`suppress_small_components`: the same decision expressed on the probability map (the dropped
  classes get probability 0 where they were dropped), so inference can clean at the model's output
  resolution - where the thresholds were chosen - and then upsample.
- :func:`probs_to_labels`: the one way from probabilities to labels - bilinear upsampling of
  low-resolution probabilities to the full image size followed by argmax, in horizontal strips, so a
  12000x9000 picture never needs a full-size float (C, H, W) array. Equal to
  ``F.interpolate(probs, size, mode="bilinear").argmax(1)`` up to float rounding. Inference, the
  validation and OOF scores of training and distillation, and the analysis all label this way.

- :func:`merge_exclusive`: parts that never share an image (a car has a trunk or a tailgate, never
  both): where the argmax splits such a group, the whole group goes to the member with the most
  pixels. Applied before the cleanup; the groups live in the metadata as ``"exclusive": [[class
  name, ...], ...]`` (:func:`exclusive_by_index`), chosen on OOF predictions like the thresholds.

Thresholds live in the model file's metadata ``"cleanup": {"enabled": true, "min_area":
{"<class name>": fraction}}``; :func:`min_area_by_index` turns them into ``{class index: fraction}``.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.schema import ClassSchema


def bilinear_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weight ``w1`` of each output position for bilinear resizing
    ``n_in`` -> ``n_out`` samples (half-pixel centres, ``align_corners=False``, as torch and OpenCV):
    ``out[k] = (1 - w1[k]) * src[i0[k]] + w1[k] * src[i1[k]]``."""
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def probs_to_labels(probs, size: tuple[int, int], max_strip_pixels: int = 1 << 21) -> np.ndarray:
    """Argmax over classes of ``probs`` (C, h, w) bilinearly resized to ``size`` = (H, W); uint8 (H, W).

    ``probs`` (numpy or CPU tensor) must be class probabilities summing to at least 1 over C (e.g.
    softmax, or a sum of such): a class whose probability stays below 1/C everywhere in a strip
    cannot win there and is skipped. Memory: a few
    ``max_strip_pixels`` float32 buffers, whatever the image size. Ties go to the lower index.
    """
    probs = np.ascontiguousarray(probs, dtype=np.float32)
    num_classes, h, _ = probs.shape
    height, width = size
    labels = np.empty((height, width), np.uint8)
    i0, i1, wy = bilinear_index(h, height)
    bound = (1.0 - 1e-4) / num_classes
    rows = max(1, min(height, max_strip_pixels // width))
    best = np.empty((rows, width), np.float32)
    cand = np.empty((rows, width), np.float32)
    wins = np.empty((rows, width), bool)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        n = y1 - y0
        a = wy[y0:y1, None]
        strip = probs[:, i0[y0:y1]] * (1.0 - a) + probs[:, i1[y0:y1]] * a  # (C, n, w): rows resized
        active = np.flatnonzero(strip.reshape(num_classes, -1).max(1) >= bound)
        if active.size == 0:  # not probabilities after all: consider every class
            active = np.arange(num_classes)
        out = labels[y0:y1]
        out.fill(active[0])
        if active.size == 1:
            continue
        b = cv2.resize(strip[active[0]], (width, n), dst=best[:n], interpolation=cv2.INTER_LINEAR)
        for c in active[1:]:
            p = cv2.resize(strip[c], (width, n), dst=cand[:n], interpolation=cv2.INTER_LINEAR)
            w = np.greater(p, b, out=wins[:n])
            np.maximum(b, p, out=b)
            np.copyto(out, np.uint8(c), where=w)
    return labels


def min_area_by_index(cleanup_meta: dict | None, schema: ClassSchema) -> dict[int, float]:
    """``{class index: minimum component area as a fraction of the image}`` from the metadata entry
    ``{"enabled": bool, "min_area": {class name: fraction}}``; empty when cleanup is disabled."""
    if not cleanup_meta or not cleanup_meta.get("enabled", False):
        return {}
    min_area = cleanup_meta.get("min_area") or {}
    if not isinstance(min_area, dict):
        raise ValueError(f"cleanup min_area must map class names to fractions, got {min_area!r}")
    index = {name: i for i, name in enumerate(schema.names)}
    unknown = sorted(set(min_area) - set(index))
    if unknown:
        raise ValueError(f"cleanup thresholds name classes not in the schema: {unknown}")
    out = {}
    for name, fraction in min_area.items():
        if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"cleanup min_area of {name!r} must be a fraction of the image area in [0, 1], "
                             f"got {fraction!r}")
        if fraction > 0:
            out[index[name]] = float(fraction)
    return out


def exclusive_by_index(exclusive_meta: list | None, schema: ClassSchema) -> list[list[int]]:
    """Groups of class indices from the metadata entry ``[[class name, ...], ...]`` (empty if absent)."""
    if not exclusive_meta:
        return []
    if not isinstance(exclusive_meta, list):
        raise ValueError(f"exclusive must be a list of groups of class names, got {exclusive_meta!r}")
    index = {name: i for i, name in enumerate(schema.names)}
    groups = []
    for group in exclusive_meta:
        if not isinstance(group, list) or len(set(map(str, group))) < 2:
            raise ValueError(f"an exclusive group lists two or more class names, got {group!r}")
        unknown = sorted(set(map(str, group)) - set(index))
        if unknown:
            raise ValueError(f"exclusive group {group} names classes not in the schema: {unknown}")
        groups.append([index[name] for name in group])
    return groups


def small_components(labels: np.ndarray, min_pixels: dict[int, float], connectivity: int = 8) -> np.ndarray:
    """Bool (H, W): pixels of components of class c with fewer than ``min_pixels[c]`` pixels."""
    drop = np.zeros(labels.shape, bool)
    for c, limit in min_pixels.items():
        mask = labels == c
        rows = np.flatnonzero(mask.any(1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(mask.any(0))
        box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        n, cc, stats, _ = cv2.connectedComponentsWithStats(
            np.ascontiguousarray(mask[box]).view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
        small = stats[:, cv2.CC_STAT_AREA] < limit
        small[0] = False  # label 0 is everything that is not class c
        if small.any():
            drop[box] |= small[cc]
    return drop


def _isolated_small(labels: np.ndarray, ys: np.ndarray, xs: np.ndarray, min_pixels: dict[int, float],
                    connectivity: int) -> np.ndarray:
    """Bool (N,): reassigned pixels (ys, xs) whose class now forms a component made only of
    reassigned pixels and smaller than that class's limit. (A component that touches a pixel that
    kept its class is part of a big component: small ones were all removed in the first pass.)"""
    height, width = labels.shape
    top, left = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 1, 0)
    region = labels[top:min(int(ys.max()) + 2, height), left:min(int(xs.max()) + 2, width)]
    ry, rx = ys - top, xs - left
    moved = np.zeros(region.shape, bool)
    moved[ry, rx] = True
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT if connectivity == 8 else cv2.MORPH_CROSS, (3, 3))
    result = np.zeros(ys.size, bool)
    for c in np.unique(region[ry, rx]):
        if int(c) not in min_pixels:
            continue
        is_c = region == c
        n, cc = cv2.connectedComponents((is_c & moved).view(np.uint8), connectivity=connectivity,
                                        ltype=cv2.CV_32S)
        ids = cc[ry, rx]  # component of each reassigned pixel (0: it is not of class c)
        area = np.bincount(ids, minlength=n)
        near_kept = cv2.dilate((is_c & ~moved).view(np.uint8), kernel) > 0
        attached = np.zeros(n, bool)
        attached[cc[near_kept]] = True
        small = (area < min_pixels[int(c)]) & ~attached
        small[0] = False
        result |= small[ids]
    return result


def cleanup(probs, min_area_by_index: dict[int, float], connectivity: int = 8, max_passes: int = 3) -> np.ndarray:
    """Argmax of ``probs`` (C, H, W) followed by connected-component cleanup; uint8 (H, W) class indices.

    probs: numpy array or CPU tensor, float or uint8 (probabilities x 255, as in OOF files).
    min_area_by_index: {class index: fraction of H*W}; components of that class with fewer pixels
        are dropped. Classes not listed are never cleaned (but can receive pixels).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (C, H, W), got shape {probs.shape}")
    labels = probs.argmax(0).astype(np.uint8)
    area = labels.size
    min_pixels = {int(c): f * area for c, f in min_area_by_index.items() if f * area > 1}
    if not min_pixels:
        return labels
    ys, xs = np.nonzero(small_components(labels, min_pixels, connectivity))
    if ys.size == 0:
        return labels
    p = probs[:, ys, xs].astype(np.float32)  # (C, N), our copy: banned classes get -inf
    todo = np.arange(ys.size)
    for step in range(max_passes):
        ty, tx = ys[todo], xs[todo]
        p[labels[ty, tx], todo] = -np.inf  # never give a pixel back to a class it was dropped from
        q = p[:, todo]
        best = q.argmax(0)
        ok = np.isfinite(q[best, np.arange(todo.size)])
        labels[ty[ok], tx[ok]] = best[ok]
        if step == max_passes - 1:
            break
        todo = np.flatnonzero(_isolated_small(labels, ys, xs, min_pixels, connectivity))
        if todo.size == 0:
            break
    return labels


def suppress_small_components(probs: np.ndarray, min_area_by_index: dict[int, float], connectivity: int = 8,
                              max_passes: int = 3) -> np.ndarray:
    """float32 copy of ``probs`` (C, H, W) whose argmax is ``cleanup(probs, ...)``: where cleanup moved a
    pixel to another class, every class more probable than the new one (the dropped ones) gets 0 and
    the pixel's probabilities are renormalised to sum 1. Upsampling the result gives smooth
    full-size borders around the cleaned regions."""
    probs = np.array(probs, dtype=np.float32)
    labels = probs.argmax(0)
    cleaned = cleanup(probs, min_area_by_index, connectivity, max_passes)
    ys, xs = np.nonzero(cleaned != labels)
    if ys.size:
        p = probs[:, ys, xs]
        keep = p[cleaned[ys, xs], np.arange(ys.size)]
        p[p >= keep] = 0.0
        p[cleaned[ys, xs], np.arange(ys.size)] = keep
        probs[:, ys, xs] = p / np.maximum(p.sum(0, keepdims=True), 1e-12)
    return probs


def merge_exclusive(probs: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Probabilities (C, H, W) with each group of mutually exclusive classes made consistent.

    A group lists class indices of which one image shows at most one (tailgate and trunk: the
    training masks never hold both). Where the argmax labels pixels with two or more of a group,
    the group's probabilities are summed into the member with the most such pixels and the others
    get 0, so every pixel of the group keeps its total probability and goes to that one class.
    Returns a float32 copy if a group was split, else ``probs`` itself."""
    probs = np.asarray(probs)
    labels = probs.argmax(0)
    out = None
    for group in groups:
        counts = np.array([np.count_nonzero(labels == c) for c in group])
        if np.count_nonzero(counts) < 2:
            continue
        if out is None:
            out = np.array(probs, dtype=np.float32)
        keep = group[int(counts.argmax())]
        for c in group:
            if c != keep:
                out[keep] += out[c]
                out[c] = 0.0
    return probs if out is None else out


def postprocess(probs: np.ndarray, exclusive: list[list[int]], min_area_by_index: dict[int, float]) -> np.ndarray:
    """A model file's post-processing of (C, H, W) probabilities at the model's output resolution:
    its exclusive part groups (:func:`merge_exclusive`), then its component cleanup
    (:func:`suppress_small_components`). Returns ``probs`` itself when neither applies. Inference,
    the choice on OOF predictions and the held-out ablation all call this one function."""
    if exclusive:
        probs = merge_exclusive(probs, exclusive)
    return suppress_small_components(probs, min_area_by_index) if min_area_by_index else probs
