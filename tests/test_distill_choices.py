"""What distillation decides from out-of-fold data, on data built so that the right answer is known:
the ensemble weights (:func:`fit_weights`), flip TTA and the per-class cleanup thresholds
(:func:`choose_postprocessing`); and the soft-label and OOF caches, which must follow a changed teacher file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.distillation.ensemble import OOFSet, evaluate_mix, fit_weights
from workbench.distillation.postprocessing import choose_postprocessing, describe_postprocessing
from workbench.training.oof import to_uint8


def oofset(masks: list[np.ndarray], plain: dict, flip: dict | None = None) -> OOFSet:
    """An OOF set from class-index masks and float probabilities {group: [(C, H, W), ...]} (stored as
    uint8 like real OOF files); ``flip`` defaults to the plain views."""
    flip = plain if flip is None else flip
    u8 = lambda d: {g: [to_uint8(p) for p in ps] for g, ps in d.items()}  # noqa: E731
    return OOFSet([f"img{i}" for i in range(len(masks))], list(masks), np.stack(masks), u8(plain), u8(flip))


def field(rows: list[tuple[int, list[float]]], width: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mask (H, W) and probabilities (C, H, W) from rows of (true class, probabilities of every pixel)."""
    mask = np.array([[c] * width for c, _ in rows], np.int64)
    probs = np.stack([np.tile(np.asarray(p, np.float32)[:, None], (1, width)) for _, p in rows], axis=1)
    return mask, probs


# --------------------------------------------------------------------------------- fit_weights
# Two kinds of pixels, three classes. Family A is sure of class 1 everywhere. Family B, with flip TTA:
# "type 1" pixels (truth 1) [2/3, 1/3, 0] - its plain view [1/3, 2/3, 0], its mirror [1, 0, 0] -; "type 2"
# pixels (truth 0) [0.55, 0, 0.45] in both views. With TTA, w_A * A + (1 - w_A) * B is right on type 1
# iff w_A > 0.25 and on type 2 iff w_A < 0.355: of the grid, only w_A = 0.3 labels every pixel right.
# Without TTA every w_A < 0.355 would do (0.0 first).
A = {1: [0.0, 1.0, 0.0], 2: [0.0, 1.0, 0.0]}
B_PLAIN = {1: [1 / 3, 2 / 3, 0.0], 2: [0.55, 0.0, 0.45]}
B_FLIP = {1: [1.0, 0.0, 0.0], 2: [0.55, 0.0, 0.45]}
NOISE = {1: [0.0, 0.0, 1.0], 2: [0.0, 0.0, 1.0]}  # always the absent class 2


def weights_problem(groups=("A", "B")) -> OOFSet:
    kinds = [(1, 1), (1, 1), (0, 2), (0, 2)]  # (truth, pixel type) per row
    views = {"A": (A, A), "B": (B_PLAIN, B_FLIP), "N": (NOISE, NOISE)}
    plain, flip, mask = {}, {}, None
    for g in groups:
        mask, p = field([(t, views[g][0][k]) for t, k in kinds])
        _, f = field([(t, views[g][1][k]) for t, k in kinds])
        plain[g], flip[g] = [p, p[:, ::-1].copy()], [f, f[:, ::-1].copy()]
    return oofset([mask, mask[::-1].copy()], plain, flip)


def test_fit_weights_finds_the_only_perfect_mix():
    oofs = weights_problem()
    w = fit_weights(oofs)
    assert w == pytest.approx({"A": 0.3, "B": 0.7})
    assert np.nanmean(evaluate_mix(oofs, w, tta=True, full_res=False)) == 1.0
    for other in (0.2, 0.4):  # the neighbours of the answer are worse
        assert np.nanmean(evaluate_mix(oofs, {"A": other, "B": 1 - other}, tta=True, full_res=False)) < 1.0


def test_fit_weights_over_three_groups_gives_the_useless_one_nothing():
    assert fit_weights(weights_problem(("A", "N", "B"))) == pytest.approx({"A": 0.3, "N": 0.0, "B": 0.7})


def test_fit_weights_can_give_one_group_everything():
    """Family A is right everywhere with a thin margin ([0.45, 0.55] on class-1 pixels); B is sure
    and wrong there: any weight on B flips those pixels, so only {A: 1, B: 0} is perfect (the end
    of the grid, where the last weight is exactly 0)."""
    mask, a = field([(1, [0.45, 0.55, 0.0])] * 2 + [(0, [0.9, 0.1, 0.0])] * 2)
    _, b = field([(1, [1.0, 0.0, 0.0])] * 2 + [(0, [1.0, 0.0, 0.0])] * 2)
    assert fit_weights(oofset([mask], {"A": [a], "B": [b]})) == pytest.approx({"A": 1.0, "B": 0.0})
    assert fit_weights(oofset([mask], {"B": [b], "A": [a]})) == pytest.approx({"B": 0.0, "A": 1.0})


def test_fit_weights_of_one_group():
    assert fit_weights(weights_problem(("B",))) == {"B": 1.0}


def test_fit_weights_stays_on_the_simplex():
    """Three groups; a mix of A and B labels every pixel right only if w_A / (w_A + w_B) lies in
    (0.514, 0.550). No grid point with w_A + w_B <= 1 gives such a ratio (0.5 and 5/9 are the nearest),
    but w_A = 0.6, w_B = 0.5 would (mix() divides by the weights' sum). The answer must still be
    weights that sum to 1, not that better-scoring point off the simplex."""
    rows = [(1, [7 / 255, 248 / 255, 0.0])] * 2 + [(0, [23 / 255, 232 / 255, 0.0])] * 2
    mask, a = field(rows)
    _, b = field([(t, [1.0, 0.0, 0.0]) for t, _ in rows])
    _, n = field([(t, NOISE[1]) for t, _ in rows])
    oofs = oofset([mask], {"A": [a], "B": [b], "N": [n]})
    assert np.nanmean(evaluate_mix(oofs, {"A": 0.6, "B": 0.5, "N": 0.0}, tta=True, full_res=False)) == 1.0
    w = fit_weights(oofs)
    assert sum(w.values()) == pytest.approx(1.0) and min(w.values()) >= 0.0
    assert np.nanmean(evaluate_mix(oofs, w, tta=True, full_res=False)) < 1.0


def test_fit_weights_scores_at_the_oof_resolution():
    """Full-size masks that say something else (all background: pure B would be perfect there) must not
    change the answer, which is chosen on the masks at the OOF resolution."""
    oofs = weights_problem()
    oofs.full_masks = [np.zeros_like(m) for m in oofs.full_masks]
    assert np.nanmean(evaluate_mix(oofs, {"A": 0.0, "B": 1.0}, tta=True, full_res=True)) == 1.0
    assert fit_weights(oofs) == pytest.approx({"A": 0.3, "B": 0.7})


# ----------------------------------------------------------------------- choose_postprocessing
NAMES = ("background", "speck", "small")


def blob(probs, mask, y, x, h, w, c, p=0.7, truth=True):
    """Predict class ``c`` with probability ``p`` (runner-up background) on a box; ``truth``: it is real."""
    probs[:, y:y + h, x:x + w] = 0.0
    probs[c, y:y + h, x:x + w] = p
    probs[0, y:y + h, x:x + w] = 1 - p
    if truth:
        mask[y:y + h, x:x + w] = c


def cleanup_problem(flip_helps: bool) -> OOFSet:
    """Three 32x32 images. Class "speck": real parts of 36 pixels (first two images, each with a
    one-pixel background hole, a background component that must never be cleaned) and 16 pixels
    (the first), false speckles of 4 px (three on the first image, one alone on the third) and 16 px
    (one, first image). Removing components under 1 % of the image (10.24 px) removes the small
    speckles and raises the class's IoU most; 2 % (20.48 px) also removes the false 16-px one but the
    real 16-px part with it: it helps too, less. Class "small": real 2x2 parts on the first two
    images, predicted right; any threshold that removes them hurts. Flip views: all background (TTA hurts) or, when ``flip_helps``,
    the plain views plus a speck part that the plain view misses (TTA repairs it)."""
    masks, plain, flip = [], [], []
    for i in range(3):
        mask = np.zeros((32, 32), np.int64)
        probs = np.zeros((3, 32, 32), np.float32)
        probs[0] = 1.0
        if i < 2:
            blob(probs, mask, 2, 2, 6, 6, 1)
            probs[:, 4, 4] = (0.6, 0.4, 0.0)  # the hole: truly speck, predicted background
            blob(probs, mask, 2, 20, 2, 2, 2)
            blob(probs, mask, 26, 2, 2, 2, 2)
        else:
            blob(probs, mask, 14, 14, 2, 2, 1, truth=False)  # a lone speckle: the class's only component
        if i == 0:
            blob(probs, mask, 20, 20, 4, 4, 1)
            for y, x in ((12, 12), (12, 26), (28, 14)):
                blob(probs, mask, y, x, 2, 2, 1, truth=False)
            blob(probs, mask, 26, 24, 4, 4, 1, truth=False)
        mirror = probs.copy()
        if flip_helps:
            blob(probs, mask, 12, 2, 6, 6, 1, p=0.4)  # real, but the plain view misses it
            blob(mirror, np.zeros_like(mask), 12, 2, 6, 6, 1, p=1.0)
        else:
            mirror[:] = 0.0
            mirror[0] = 1.0
        masks.append(mask)
        plain.append(probs)
        flip.append(mirror)
    return oofset(masks, {"s": plain}, {"s": flip})


@pytest.mark.parametrize("flip_helps", [False, True])
def test_choose_postprocessing_picks_the_better_settings(flip_helps):
    oofs = cleanup_problem(flip_helps)
    post = choose_postprocessing(oofs, NAMES, "s")
    assert post["tta"] == {"hflip": flip_helps, "scales": [1.0]}
    assert post["cleanup"] == {"enabled": True, "min_area": {"speck": 0.01}}
    ab = post["ablation"]
    better, worse = (ab["tta"], ab["no_tta"]) if flip_helps else (ab["no_tta"], ab["tta"])
    assert better["miou"] > worse["miou"]
    chosen = ab["chosen_tta_plus_cleanup"]
    assert chosen["miou"] > better["miou"]
    assert chosen["iou"][1] > better["iou"][1] and chosen["iou"][2] == better["iou"][2] == 1.0
    views = [p.astype(np.float32) + (f.astype(np.float32) if flip_helps else p.astype(np.float32))
             for p, f in zip(oofs.plain["s"], oofs.flip["s"])]
    assert ab["cleanup_gain_per_class_lowres"] == {"speck": pytest.approx(speck_iou(oofs, views, 0.01)
                                                                          - speck_iou(oofs, views, 0.0))}


def speck_iou(oofs, views, t):
    from workbench.evaluation.metrics import confusion_matrix, iou_per_class
    from workbench.inference.postprocess import cleanup

    cm = sum(confusion_matrix(m, cleanup(p, {1: t} if t else {}), 3) for m, p in zip(oofs.small_masks, views))
    return iou_per_class(cm)[1]


def test_the_larger_threshold_also_helps_but_less():
    """What makes 0.01 the best choice above, not merely one that helps."""
    oofs = cleanup_problem(False)
    views = [p.astype(np.float32) for p in oofs.plain["s"]]
    assert speck_iou(oofs, views, 0.01) > speck_iou(oofs, views, 0.02) > speck_iou(oofs, views, 0.0)


def test_choose_postprocessing_without_anything_to_clean():
    oofs = cleanup_problem(False)  # the second image three times: cleanup cannot help any class
    for i in (0, 2):
        oofs.plain["s"][i] = oofs.plain["s"][1]
        oofs.small_masks[i] = oofs.small_masks[1]
        oofs.full_masks[i] = oofs.full_masks[1]
    post = choose_postprocessing(oofs, NAMES, "s")
    assert post["cleanup"] == {"enabled": False, "min_area": {}}


def cross_fit_problem() -> OOFSet:
    """Four 32x32 images, two per fold (folds 0, 0, 1, 1), each with a real 6x6 part of both classes
    (3.5 % of the image: no candidate threshold removes it). Class "speck": a false 2x2 speckle on
    one image of each fold, so removing it pays on either fold. Class "small": two false 2x2
    speckles on image 0 (fold 0) and a real 2x2 part on image 2 (fold 1). Pooled, removing small
    components of "small" pays (8 false pixels go, 4 true ones with them); but the threshold chosen
    on fold 0 removes fold 1's real part, and fold 1 chooses none: cross-fitted, it only hurts."""
    masks, probs = [], []
    for i in range(4):
        mask = np.zeros((32, 32), np.int64)
        p = np.zeros((3, 32, 32), np.float32)
        p[0] = 1.0
        blob(p, mask, 2, 2, 6, 6, 1)
        blob(p, mask, 20, 20, 6, 6, 2)
        if i in (0, 2):
            blob(p, mask, 12, 12, 2, 2, 1, truth=False)
        if i == 0:
            blob(p, mask, 28, 2, 2, 2, 2, truth=False)
            blob(p, mask, 2, 28, 2, 2, 2, truth=False)
        if i == 2:
            blob(p, mask, 28, 2, 2, 2, 2)
        masks.append(mask)
        probs.append(p)
    oofs = oofset(masks, {"s": probs})
    oofs.folds = [0, 0, 1, 1]
    return oofs


def test_cleanup_kept_only_where_it_pays_on_held_out_folds():
    oofs = cross_fit_problem()
    naive = choose_postprocessing(oofs, NAMES, "s", cross_fit=False)
    assert naive["cleanup"]["min_area"] == {"speck": 0.01, "small": 0.01}  # chosen on all images, both pay
    post = choose_postprocessing(oofs, NAMES, "s")
    assert post["cleanup"] == {"enabled": True, "min_area": {"speck": 0.01}}
    ab = post["ablation"]
    assert ab["cleanup_dropped_by_cross_fitting"] == {"small": 0.01}
    assert ab["cleanup_folds"] == [0, 1]
    gains = ab["cleanup_cross_fitted_gain_per_class_lowres"]
    assert gains["speck"] > 0 > gains["small"]
    # held out, "small" (148 true pixels) loses fold 1's real 4 and keeps fold 0's 8 false ones
    assert gains["small"] == pytest.approx(144 / (144 + 8 + 4) - 148 / (148 + 8))
    # one fold only: nothing to cross-fit, the choice on all images stands
    oofs.folds = [0, 0, 0, 0]
    assert choose_postprocessing(oofs, NAMES, "s")["cleanup"]["min_area"] == {"speck": 0.01, "small": 0.01}


# ------------------------------------------------------------------- soft-label and OOF caches
@pytest.fixture
def tiny_teacher(tiny_data, tmp_path, model_file):
    from conftest import TINY_SCHEMA
    from workbench.core.schema import ClassSchema
    from workbench.data.dataset import load_dataset
    from workbench.distillation.teachers import Teacher
    from workbench.models.modelfile import read_metadata

    path = model_file(tmp_path / "teacher.safetensors", ClassSchema.from_dict(TINY_SCHEMA), input_size=64,
                      folds_file=str(tmp_path / "folds.json"), recipe={"folds": 3, "seed": 0})
    ds = load_dataset(tiny_data, 64)
    return Teacher("t", "t", 0, tmp_path / "t" / "fold0", path, read_metadata(path)), ds


def retrain(path):
    """The same teacher file, with other weights (as after retraining)."""
    from workbench.models.modelfile import load_model, save_model

    model, meta = load_model(path)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(path, model, meta, dtype=torch.float16)


def test_a_changed_teacher_file_changes_the_soft_label_cache(tiny_teacher, tmp_path):
    from workbench.distillation.soft_labels import cache_key, soft_labels

    teacher, ds = tiny_teacher
    idx = np.arange(len(ds))
    key = cache_key([teacher], {"t fold0": 1.0}, ds, idx)
    assert cache_key([teacher], {"t fold0": 1.0}, ds, idx) == key  # deterministic
    assert cache_key([teacher], {"t fold0": 1.0}, ds, idx[:-1]) != key  # other images
    assert cache_key([teacher], {"t fold0": 0.5}, ds, idx) != key  # other weights
    first = soft_labels([teacher], {"t": 1.0}, ds, idx, tmp_path / "cache", "cpu")
    again = soft_labels([teacher], {"t": 1.0}, ds, idx, tmp_path / "cache", "cpu")
    assert np.array_equal(first.log_probs, again.log_probs)
    assert len(list((tmp_path / "cache").glob("soft_*.npy"))) == 1  # reused

    teacher.model_file.touch()  # a new time stamp is not a new teacher
    assert cache_key([teacher], {"t fold0": 1.0}, ds, idx) == key
    retrain(teacher.model_file)
    assert cache_key([teacher], {"t fold0": 1.0}, ds, idx) != key
    rebuilt = soft_labels([teacher], {"t": 1.0}, ds, idx, tmp_path / "cache", "cpu")
    assert len(list((tmp_path / "cache").glob("soft_*.npy"))) == 2
    assert not np.array_equal(rebuilt.log_probs, first.log_probs)


def test_a_changed_teacher_file_rebuilds_its_oof_predictions(tiny_teacher, monkeypatch):
    from workbench.distillation import teachers as teachers_mod
    from workbench.training.oof import load_oof, oof_model_sha1, save_oof

    teacher, ds = tiny_teacher
    builds = []
    real = teachers_mod.predict_arrays
    monkeypatch.setattr(teachers_mod, "predict_arrays", lambda *a, **k: builds.append(1) or real(*a, **k))
    teachers_mod.ensure_oof(teacher, ds, str(ds.data_dir), "cpu")
    first = np.array(load_oof(teacher.run_dir).probs)
    assert oof_model_sha1(teacher.run_dir) == teachers_mod.file_digest(teacher.model_file)
    teachers_mod.ensure_oof(teacher, ds, str(ds.data_dir), "cpu")
    assert len(builds) == 1  # up to date: kept

    retrain(teacher.model_file)
    teachers_mod.ensure_oof(teacher, ds, str(ds.data_dir), "cpu")
    assert len(builds) == 2
    assert not np.array_equal(np.array(load_oof(teacher.run_dir).probs), first)
    assert oof_model_sha1(teacher.run_dir) == teachers_mod.file_digest(teacher.model_file)

    oof = load_oof(teacher.run_dir)  # OOF files a training run wrote itself (no digest) belong to its model
    save_oof(teacher.run_dir, oof.stems, oof.schema, oof.image_size, oof.fold, np.array(oof.probs),
             np.array(oof.probs_flip))
    retrain(teacher.model_file)
    teachers_mod.ensure_oof(teacher, ds, str(ds.data_dir), "cpu")
    assert len(builds) == 2


# ------------------------------------------------------------------------ online soft labels
def test_online_targets_are_the_cached_soft_labels_on_an_unaugmented_image(tiny_teacher, tmp_path):
    """``kd_targets: online`` runs the teachers through the same ensemble function as the cache: on
    the clean images both give the same probabilities (the cache rounds them to float16 logs)."""
    from workbench.distillation.online_teacher import OnlineTeacher
    from workbench.distillation.soft_labels import soft_labels

    teacher, ds = tiny_teacher
    idx = np.array([0, 3, 5])
    cached = soft_labels([teacher], {"t": 1.0}, ds, idx, tmp_path / "cache", "cpu")
    online = OnlineTeacher([teacher], {"t": 1.0}, ds, "cpu")
    probs = online(torch.from_numpy(ds.images[idx]))
    assert probs.shape == (3, ds.schema.num_classes, 64, 64) and probs.dtype == torch.float32
    assert not probs.requires_grad and not probs.is_inference()  # usable inside the student's loss graph
    for row, i in enumerate(idx):
        np.testing.assert_allclose(probs[row].permute(1, 2, 0).numpy(), cached[i], atol=2e-3)
    np.testing.assert_allclose(online.preview(ds, idx)[5], cached[5], atol=2e-3)
    assert online.teachers == cached.teachers


def lid_problem(splits: list[tuple[int, int]], folds: list[int] | None = None) -> OOFSet:
    """One 16x16 image per split (true class, pixels predicted as the *other* lid class): an 8x8
    lid that is "tailgate" (1) or "trunk" (2), never both, predicted right except for the first
    ``n`` pixels of the lid, which are called the other lid class."""
    masks, probs = [], []
    for truth, n in splits:
        mask = np.zeros((16, 16), np.int64)
        p = np.zeros((3, 16, 16), np.float32)
        p[0] = 1.0
        blob(p, mask, 4, 4, 8, 8, truth, p=0.8)
        ys, xs = np.nonzero(mask == truth)
        p[truth, ys[:n], xs[:n]], p[3 - truth, ys[:n], xs[:n]] = 0.1, 0.7
        masks.append(mask)
        probs.append(p)
    oofs = oofset(masks, {"s": probs})
    oofs.folds = folds
    return oofs


LIDS = ("background", "tailgate", "trunk")


def test_an_exclusive_group_is_kept_where_merging_it_pays():
    """Both lids split 40/24 the right way round: merging gives every pixel to the right lid."""
    post = choose_postprocessing(lid_problem([(1, 24), (2, 24)]), LIDS, "s", exclusive=[[1, 2]])
    assert post["exclusive"] == [["tailgate", "trunk"]]
    ab = post["ablation"]
    assert ab["exclusive_gain_lowres"]["tailgate/trunk"] > 0 and ab["exclusive_dropped"] == []
    assert ab["chosen_tta_plus_cleanup"]["miou"] == pytest.approx(1.0)
    assert ab["tta"]["miou"] < 0.9
    assert "exclusive parts tailgate/trunk" in describe_postprocessing(post, "s")


def test_an_exclusive_group_that_costs_is_left_out():
    """The lids split 24/40: the larger part is the wrong one, merging would lose the right pixels."""
    post = choose_postprocessing(lid_problem([(1, 40), (2, 40)]), LIDS, "s", exclusive=[[1, 2]])
    assert post["exclusive"] == [] and post["ablation"]["exclusive_dropped"] == ["tailgate/trunk"]
    assert post["ablation"]["exclusive_gain_lowres"]["tailgate/trunk"] < 0
    assert "exclusive_gain_lowres" not in choose_postprocessing(lid_problem([(1, 40)]), LIDS, "s")["ablation"]


def test_an_exclusive_group_must_pay_cross_fitted():
    """Fold 0's lids split the right way round (merging gains), fold 1's one the wrong way: pooled
    the merge still pays, but fold 1, merged because fold 0 gains, loses: cross-fitted it is left out."""
    oofs = lid_problem([(1, 24), (2, 24), (1, 36), (2, 0)], folds=[0, 0, 1, 1])
    post = choose_postprocessing(oofs, LIDS, "s", exclusive=[[1, 2]])
    ab = post["ablation"]
    assert ab["exclusive_gain_lowres"]["tailgate/trunk"] > 0 > ab["exclusive_cross_fitted_gain_lowres"]["tailgate/trunk"]
    assert post["exclusive"] == []


def test_exclusive_candidates_skip_groups_the_data_contradicts(capsys):
    """A group naming a part the schema lacks, or two parts that share a training mask, is not tried."""
    from types import SimpleNamespace

    from workbench.core.schema import ClassSchema
    from workbench.distillation.postprocessing import exclusive_candidates

    schema = ClassSchema(names=("background", "tailgate", "trunk", "wheel"), values=(0, 1, 2, 3), hflip_pairs=())
    masks = [np.array([[0, 1], [3, 3]]), np.array([[0, 2], [2, 3]])]
    ds = SimpleNamespace(schema=schema, stems=["a", "b"], full_masks=masks, data_dir="toy")
    assert exclusive_candidates([["tailgate", "trunk"]], ds) == [[1, 2]]
    assert exclusive_candidates([["trunk", "wheel"], ["hood", "trunk"]], ds) == []
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "1 training masks hold two of them (b)" in out and "toy has no hood" in out
