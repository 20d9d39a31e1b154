"""Connected-component cleanup and full-size upsampling + argmax."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.core.schema import DEFAULT_SCHEMA
from workbench.inference.postprocess import cleanup, min_area_by_index, probs_to_labels, suppress_small_components
from workbench.inference.predictor import Predictor


def blob_probs(size=20, num_classes=4):
    """Class 0 everywhere; a 2x2 blob of class 1 whose runner-up is class 2 (not background)."""
    probs = np.full((num_classes, size, size), 0.1 / (num_classes - 1), np.float32)
    probs[0] = 0.9
    probs[:, 5:7, 5:7] = 0.0
    probs[1, 5:7, 5:7] = 0.5
    probs[2, 5:7, 5:7] = 0.3
    probs[0, 5:7, 5:7] = 0.2
    return probs


def test_small_component_goes_to_runner_up_class():
    probs = blob_probs()
    assert (probs.argmax(0) == 1).sum() == 4
    labels = cleanup(probs, {1: 5 / 400})  # 4 pixels < 5 -> dropped
    assert (labels == 1).sum() == 0
    assert (labels[5:7, 5:7] == 2).all()  # runner-up, not background
    assert (labels == 0).sum() == 400 - 4


def test_component_at_threshold_and_unlisted_classes_are_kept():
    probs = blob_probs()
    assert (cleanup(probs, {1: 4 / 400}) == 1).sum() == 4  # not smaller than 4 pixels
    assert (cleanup(probs, {2: 0.5}) == 1).sum() == 4      # class 1 has no threshold
    assert (cleanup(probs, {}) == probs.argmax(0)).all()


def test_pixels_touching_diagonally_form_one_component():
    probs = blob_probs()
    probs[1, 7, 7], probs[0, 7, 7] = 0.95, 0.05  # diagonal neighbour of the blob: 5 pixels, 8-connected
    assert (cleanup(probs, {1: 5 / 400}) == 1).sum() == 5
    assert (cleanup(probs, {1: 5 / 400}, connectivity=4) == 1).sum() == 0


def test_runner_up_speckle_is_cleaned_too():
    """A left-mirror speckle whose runner-up is the right mirror must not stay as a right-mirror speckle."""
    probs = blob_probs()
    labels = cleanup(probs, {1: 5 / 400, 2: 5 / 400})
    assert (labels[5:7, 5:7] == 0).all()  # third choice: background


def test_large_region_of_runner_up_absorbs_pixels():
    probs = blob_probs()
    probs[:, 5:7, 7:12] = 0.0
    probs[2, 5:7, 7:12] = 1.0  # a big class-2 region right next to the blob
    labels = cleanup(probs, {1: 5 / 400, 2: 5 / 400})
    assert (labels[5:7, 5:12] == 2).all()


def test_cleanup_accepts_uint8_and_tensors():
    probs = blob_probs()
    expected = cleanup(probs, {1: 5 / 400})
    assert (cleanup(np.rint(probs * 255).astype(np.uint8), {1: 5 / 400}) == expected).all()
    assert (cleanup(torch.from_numpy(probs), {1: 5 / 400}) == expected).all()
    with pytest.raises(ValueError, match=r"must be \(C, H, W\)"):
        cleanup(probs[0], {1: 0.1})


def test_min_area_by_index_from_metadata():
    names = DEFAULT_SCHEMA.names
    meta = {"enabled": True, "min_area": {"door_handle": 0.001, "rear_fender": 0.01, "front_door": 0}}
    assert min_area_by_index(meta, DEFAULT_SCHEMA) == {names.index("door_handle"): 0.001,
                                                       names.index("rear_fender"): 0.01}
    assert min_area_by_index({**meta, "enabled": False}, DEFAULT_SCHEMA) == {}
    assert min_area_by_index(None, DEFAULT_SCHEMA) == {}
    with pytest.raises(ValueError, match="not in the schema"):
        min_area_by_index({"enabled": True, "min_area": {"spoiler": 0.1}}, DEFAULT_SCHEMA)
    with pytest.raises(ValueError, match="fraction"):
        min_area_by_index({"enabled": True, "min_area": {"door_handle": 5}}, DEFAULT_SCHEMA)


def test_predictor_reads_thresholds_from_the_model_file(tmp_path, tiny_model, model_file):
    handle = DEFAULT_SCHEMA.names.index("door_handle")
    assert Predictor(tiny_model).min_area == {handle: 0.001}
    assert Predictor(tiny_model, cleanup=False).min_area == {}
    assert Predictor(model_file(tmp_path / "plain.safetensors", input_size=32)).min_area == {}  # no "cleanup" key


def test_predictor_merges_the_model_files_exclusive_parts_before_cleanup(tmp_path, model_file):
    """A file whose metadata says a photo shows one of front / rear fender: a map split 6 / 3
    between them comes out of Predictor.cleanup as front fender only; --no-cleanup keeps the split;
    a group naming a class the schema lacks is a clean ModelFileError naming the file."""
    from workbench.exceptions import ModelFileError

    front, rear = DEFAULT_SCHEMA.names.index("front_fender"), DEFAULT_SCHEMA.names.index("rear_fender")
    path = model_file(tmp_path / "ex.safetensors", input_size=32, exclusive=[["front_fender", "rear_fender"]])
    assert Predictor(path).exclusive == [[front, rear]] and Predictor(path, cleanup=False).exclusive == []
    probs = np.full((DEFAULT_SCHEMA.num_classes, 3, 4), 0.02, np.float32)
    probs[0, :, 0] = 0.9
    probs[front, :2, 1:], probs[rear, 2, 1:] = 0.9, 0.9
    assert set(np.unique(Predictor(path).cleanup(probs).argmax(0)[:, 1:])) == {front}
    assert (Predictor(path, cleanup=False).cleanup(probs).argmax(0)[2, 1:] == rear).all()
    bad = model_file(tmp_path / "bad.safetensors", input_size=32, exclusive=[["front_fender", "spoiler"]])
    with pytest.raises(ModelFileError, match="bad.safetensors.*spoiler"):
        Predictor(bad)


def smooth_probs(num_classes, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = F.interpolate(torch.randn(1, num_classes, 4, 5, generator=g) * 4, size=(h, w), mode="bilinear")
    return logits.softmax(1)[0].numpy()


@pytest.mark.parametrize("low,size", [((16, 16), (61, 47)), ((16, 12), (16, 12)), ((16, 16), (7, 9)),
                                      ((16, 16), (1, 1)), ((8, 8), (200, 3))])
def test_probs_to_labels_matches_full_interpolation(low, size):
    probs = smooth_probs(6, *low)
    expected = F.interpolate(torch.from_numpy(probs)[None], size=size, mode="bilinear",
                             align_corners=False)[0].argmax(0).numpy()
    for strip in (1 << 21, 50):  # one strip, and strips of a few rows
        got = probs_to_labels(probs, size, max_strip_pixels=strip)
        assert got.dtype == np.uint8 and got.shape == size
        assert (got == expected).mean() > 0.999  # float rounding may flip an exact tie


def test_suppressed_probabilities_carry_the_cleanup():
    """What the predictor upsamples: probabilities whose argmax is the cleaned label map."""
    probs = smooth_probs(6, 40, 30, seed=3)
    min_area = {c: 0.05 for c in range(6)}
    cleaned = cleanup(probs, min_area)
    assert not (cleaned == probs.argmax(0)).all()  # the case really exercises the cleanup
    suppressed = suppress_small_components(probs, min_area)
    assert (suppressed.argmax(0) == cleaned).all()
    np.testing.assert_allclose(suppressed.sum(0), 1.0, atol=1e-5)
    same = cleaned == probs.argmax(0)
    assert (suppressed[:, same] == probs[:, same]).all()
    # upsampled, the dropped components do not come back
    big = probs_to_labels(suppressed, (400, 300))
    for c in range(6):
        if not (cleaned == c).any():
            assert not (big == c).any()


# ------------------------------------------------- the predictor and inference.py really clean up
class HandlePixels(torch.nn.Module):
    """A per-pixel "model" for the default schema: bright-red pixels are a door handle (0.8) whose
    runner-up is the front door (0.15); every other pixel is background (0.9)."""

    def forward(self, x):
        red = (x[:, 0].float() > 1.0).float()
        p = torch.full((x.shape[0], 6, *x.shape[-2:]), 0.02, device=x.device)
        p[:, 0] = 0.9 * (1 - red) + 0.05 * red
        p[:, 1] = 0.02 * (1 - red) + 0.15 * red
        p[:, 5] = 0.02 * (1 - red) + 0.8 * red
        p[:, 2:5] *= 1 - red[:, None]
        return p.log()


def planted_image():
    """64x64 photo (the model runs at 32x32): a 6x6 px handle speckle (9 model pixels, below the
    threshold of 1 % = 10.24) and a 12x12 px handle (36 model pixels, above it)."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:16, 10:16] = (255, 0, 0)  # small
    image[40:52, 30:42] = (255, 0, 0)  # large
    return image


def check_planted(mask):
    assert not (mask[:32] == 160).any()  # the speckle is gone ...
    assert (mask[11:15, 11:15] == 32).all() and (mask == 32).sum() == 32  # ... to its runner-up, the front door
    assert (mask[41:51, 31:41] == 160).all() and (mask == 160).sum() == 144  # the large handle stays, whole


@pytest.fixture
def handle_model(tmp_path, model_file, monkeypatch):
    from workbench.inference import predictor as predictor_mod
    from workbench.models.modelfile import read_metadata

    path = model_file(tmp_path / "handles.safetensors", input_size=32,
                      cleanup={"enabled": True, "min_area": {"door_handle": 0.01}})
    monkeypatch.setattr(predictor_mod, "load_model", lambda p, device="cpu": (HandlePixels(), read_metadata(p)))
    return path


def test_predictor_removes_a_planted_speckle_and_keeps_a_large_part(handle_model):
    check_planted(Predictor(handle_model).predict(planted_image()))
    without = Predictor(handle_model, cleanup=False).predict(planted_image())
    assert (without == 160).sum() == 144 + 36  # the speckle is really predicted before cleanup


def test_inference_cli_removes_a_planted_speckle(handle_model, tmp_path):
    import cv2

    from workbench.inference.cli import main as infer

    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "car.png"), planted_image()[..., ::-1])
    assert infer(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--weights",
                  str(handle_model), "--device", "cpu"]) == 0
    check_planted(cv2.imread(str(tmp_path / "out" / "car.png"), cv2.IMREAD_UNCHANGED))
    assert infer(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "raw"), "--weights",
                  str(handle_model), "--device", "cpu", "--no-cleanup"]) == 0
    assert (cv2.imread(str(tmp_path / "raw" / "car.png"), cv2.IMREAD_UNCHANGED) == 160).sum() == 180


# ------------------------------------------ corner cases found by mutation testing (docs/testing.md)
@pytest.mark.parametrize("n_in,n_out", [(16, 61), (16, 7), (5, 5), (8, 200), (1, 3), (3, 1), (2, 9)])
def test_bilinear_index_matches_torch(n_in, n_out):
    from workbench.inference.postprocess import bilinear_index

    src = torch.randn(n_in, generator=torch.Generator().manual_seed(n_in * 100 + n_out))
    i0, i1, w = bilinear_index(n_in, n_out)
    ours = (1 - w) * src.numpy()[i0] + w * src.numpy()[i1]
    ref = F.interpolate(src.view(1, 1, n_in), size=n_out, mode="linear", align_corners=False).view(-1).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_probs_to_labels_strips_with_one_class_and_non_probabilities():
    probs = smooth_probs(3, 8, 8, seed=5)
    probs[:, :4] = 0.0
    probs[0, :4] = 1.0  # the top strips hold background only: they are filled and the others still computed
    expected = F.interpolate(torch.from_numpy(probs)[None], size=(16, 16), mode="bilinear",
                             align_corners=False)[0].argmax(0).numpy()
    assert (probs_to_labels(probs, (16, 16), max_strip_pixels=32) == expected).all()
    logits = np.log(smooth_probs(4, 6, 6, seed=6)) - 3.0  # not probabilities: every class is considered
    expected = F.interpolate(torch.from_numpy(logits)[None], size=(13, 11), mode="bilinear",
                             align_corners=False)[0].argmax(0).numpy()
    assert (probs_to_labels(logits, (13, 11)) == expected).mean() > 0.99


def test_min_area_by_index_edge_cases():
    handle = DEFAULT_SCHEMA.names.index("door_handle")
    assert min_area_by_index({"min_area": {"door_handle": 0.01}}, DEFAULT_SCHEMA) == {}  # not enabled
    assert min_area_by_index({"enabled": True, "min_area": {"door_handle": 1.0}}, DEFAULT_SCHEMA) == {handle: 1.0}
    with pytest.raises(ValueError, match="fraction"):
        min_area_by_index({"enabled": True, "min_area": {"door_handle": 1.5}}, DEFAULT_SCHEMA)
    with pytest.raises(ValueError, match="must map class names to fractions"):
        min_area_by_index({"enabled": True, "min_area": [0.01]}, DEFAULT_SCHEMA)


def speckle_field(size=20, num_classes=4):
    probs = np.zeros((num_classes, size, size), np.float32)
    probs[0] = 1.0
    return probs


def paint(probs, box, c, p=0.7):
    probs[(slice(None), *box)] = 0.0
    probs[(c, *box)] = p
    probs[(0, *box)] = 1 - p


def test_cleanup_finds_speckles_anywhere_and_for_every_listed_class():
    probs = speckle_field()
    paint(probs, np.s_[16:18, 2:4], 1)       # off the diagonal: its rows are not its columns
    paint(probs, np.s_[0:6, 0:20], 2, 0.9)   # a large class-2 region ...
    paint(probs, np.s_[15:17, 15:17], 2)     # ... and a class-2 speckle: their box covers ...
    paint(probs, np.s_[8:10, 8:10], 1)       # ... this class-1 speckle
    paint(probs, np.s_[12, 3], 3)            # a one-pixel class-3 speckle, limit 1.5 px
    for order in ({3: 1.5 / 400, 1: 5 / 400, 2: 5 / 400}, {2: 5 / 400, 1: 5 / 400, 3: 1.5 / 400}):
        labels = cleanup(probs, order)
        assert not (labels == 1).any() and not (labels == 3).any(), order
        assert (labels == 2).sum() == 6 * 20  # the large region stays
    absent_first = {3: 0.5, 1: 5 / 400}  # a class absent from the map must not stop the others
    probs[3] = 0.0
    assert not (cleanup(probs, absent_first) == 1).any()


@pytest.mark.parametrize("connectivity,expected", [(8, 2), (4, 0)])
def test_runner_up_touching_a_kept_region_diagonally(connectivity, expected):
    """The speckle's runner-up is class 2, whose large region touches the speckle only at a corner:
    8-connected, the pixels join that region and stay class 2; 4-connected they form a class-2 speckle
    of their own and go on to background."""
    probs = blob_probs()
    probs[:, 7:13, 7:13] = 0.0
    probs[2, 7:13, 7:13] = 1.0
    labels = cleanup(probs, {1: 5 / 400, 2: 5 / 400}, connectivity=connectivity)
    assert (labels[5:7, 5:7] == expected).all()
    assert (labels[7:13, 7:13] == 2).all()


def test_cleanup_takes_up_to_three_passes():
    """Runner-up and third choice are speckles of cleaned classes too: the fourth, background, wins."""
    probs = blob_probs()
    probs[:, 5:7, 5:7] = np.array([0.1, 0.4, 0.3, 0.2], np.float32)[:, None, None]
    limits = {1: 5 / 400, 2: 5 / 400, 3: 5 / 400}
    assert (cleanup(probs, limits)[5:7, 5:7] == 0).all()
    assert (cleanup(probs, limits, max_passes=2)[5:7, 5:7] == 3).all()


def test_reassigned_speckles_of_several_classes():
    """Three speckles move to three different runner-up classes in the first pass: to class 1 (not
    cleaned: it stays), to class 2 and to class 4 (both cleaned, and isolated: they go on to
    background). Each class's second-pass decision must leave the others' alone."""
    probs = np.zeros((6, 20, 20), np.float32)
    probs[0] = 1.0
    for box, first, second in ((np.s_[3:5, 3:5], 3, 1), (np.s_[3:5, 12:14], 4, 2), (np.s_[12:14, 3:5], 5, 4)):
        probs[(slice(None), *box)] = 0.0
        probs[(first, *box)], probs[(second, *box)], probs[(0, *box)] = 0.5, 0.3, 0.2
    for passes in (3, 2):  # with two passes, both second-pass decisions are made in the same (last) pass
        labels = cleanup(probs, {c: 5 / 400 for c in (2, 3, 4, 5)}, max_passes=passes)
        assert (labels[3:5, 3:5] == 1).all() and (labels[3:5, 12:14] == 0).all(), passes
        assert (labels[12:14, 3:5] == 0).all(), passes


def test_probs_to_labels_tie_at_one_over_c():
    """Class 0 never rises above 1/C = 0.5 but ties class 1 at one pixel: it is not skipped as a class
    that cannot win, and the tie goes to the lower index."""
    probs = np.array([[[0.5, 0.1]], [[0.5, 0.9]]], np.float32)  # (2, 1, 2)
    assert probs_to_labels(probs, (1, 2)).tolist() == [[0, 1]]


def test_runner_up_speckle_in_the_image_corner():
    """The second pass looks at a window around the reassigned pixels, clipped at the image border."""
    probs = blob_probs()
    probs[:, :2, :2] = probs[:, 5:7, 5:7]  # a second speckle, in the top-left corner
    labels = cleanup(probs, {1: 5 / 400, 2: 5 / 400})
    assert (labels[:2, :2] == 0).all() and (labels[5:7, 5:7] == 0).all()


def test_runner_up_region_one_pixel_away_is_not_attached():
    """Large class-2 regions one background pixel away (left, right, above, below) do not make the
    speckle's runner-up pixels part of them: they are an isolated class-2 speckle and go on. (A second
    speckle in each far corner makes the second pass look at the whole image, regions included.)"""
    probs = blob_probs()  # the speckle is at rows 5-6, columns 5-6
    for box in (np.s_[5:7, 0:4], np.s_[5:7, 8:12], np.s_[0:4, 5:7], np.s_[8:12, 5:7]):
        probs[(slice(None), *box)] = 0.0
        probs[(2, *box)] = 1.0
    paint(probs, np.s_[0:2, 0:2], 1)
    paint(probs, np.s_[18:20, 18:20], 1)
    labels = cleanup(probs, {1: 5 / 400, 2: 5 / 400})
    assert (labels[5:7, 5:7] == 0).all() and not (labels == 1).any()
    assert (labels == 2).sum() == 4 * 8


@pytest.mark.parametrize("connectivity,expected", [(8, 2), (4, 0)])
def test_second_pass_uses_the_connectivity(connectivity, expected):
    """Two one-pixel class-1 speckles touching at a corner go to their runner-up, class 2 (limit 1.5
    pixels): 8-connected those two pixels are one component of 2 pixels and stay; 4-connected they
    are two of 1 pixel and go on to background."""
    probs = speckle_field()
    probs[:, 5, 5] = probs[:, 6, 6] = (0.2, 0.5, 0.3, 0.0)
    labels = cleanup(probs, {1: 5 / 400, 2: 1.5 / 400}, connectivity=connectivity)
    assert labels[5, 5] == labels[6, 6] == expected


def test_runner_up_component_of_exactly_the_limit_stays():
    """The second pass drops components with *fewer* pixels than the limit, like the first."""
    labels = cleanup(blob_probs(), {1: 5 / 400, 2: 4 / 400})
    assert (labels[5:7, 5:7] == 2).all()


def test_a_one_pixel_runner_up_speckle_goes_on():
    """A single reassigned pixel left for the second pass is still moved on (to background)."""
    probs = speckle_field()
    probs[:, 12, 12] = (0.2, 0.5, 0.3, 0.0)
    assert cleanup(probs, {1: 5 / 400, 2: 1.5 / 400})[12, 12] == 0


def test_default_is_three_passes():
    """Four cleaned classes in a row of preferences: three passes (the default of cleanup and of
    suppress_small_components) end on the fourth choice, a fourth pass on background."""
    probs = speckle_field(num_classes=5)
    probs[:, 5:7, 5:7] = np.array([0.05, 0.35, 0.25, 0.2, 0.15], np.float32)[:, None, None]
    limits = {c: 5 / 400 for c in (1, 2, 3, 4)}
    for passes, expected in ((None, 4), (2, 3), (4, 0)):
        kw = {} if passes is None else {"max_passes": passes}
        assert (cleanup(probs, limits, **kw)[5:7, 5:7] == expected).all(), passes
        assert (suppress_small_components(probs, limits, **kw).argmax(0)[5:7, 5:7] == expected).all(), passes


def test_a_pixel_dropped_from_every_class_keeps_its_last_class():
    """Two classes, both cleaned, every component too small: the first pass swaps the classes, the
    second finds no class the pixels were not dropped from and leaves them as they are."""
    probs = np.array([[[0.9, 0.9], [0.9, 0.2]], [[0.1, 0.1], [0.1, 0.8]]], np.float32)
    assert cleanup(probs, {0: 0.9, 1: 0.9}).tolist() == [[1, 1], [1, 0]]


@pytest.mark.parametrize("connectivity", [8, 4])
def test_suppressed_probabilities_follow_connectivity_passes_and_ties(connectivity):
    """suppress_small_components passes connectivity and max_passes on to cleanup, returns float32
    whatever the input, and zeroes a dropped class that ties with the new one (else the argmax, which
    breaks ties to the lower index, would give the pixel back to it)."""
    probs = blob_probs()
    probs[:, 7:13, 7:13] = 0.0
    probs[2, 7:13, 7:13] = 1.0  # touches the speckle at a corner (see the test above)
    limits = {1: 5 / 400, 2: 5 / 400}
    expected = cleanup(probs, limits, connectivity=connectivity)
    got = suppress_small_components(probs.astype(np.float64), limits, connectivity=connectivity)
    assert got.dtype == np.float32 and (got.argmax(0) == expected).all()
    tie = blob_probs()
    tie[1, 5:7, 5:7] = tie[2, 5:7, 5:7] = 0.4  # class 1 wins the tie, then is dropped: class 2
    assert (cleanup(tie, {1: 5 / 400})[5:7, 5:7] == 2).all()
    assert (suppress_small_components(tie, {1: 5 / 400}).argmax(0)[5:7, 5:7] == 2).all()


def test_merge_exclusive_gives_a_split_group_to_its_larger_member():
    """Classes 1 and 2 never share an image: a region labelled 6 pixels class 1 and 3 pixels class 2
    becomes class 1 everywhere, each pixel keeping the group's total probability; class 3 is left
    alone, and an image where the group is not split is returned as it is."""
    from workbench.inference.postprocess import merge_exclusive

    probs = np.zeros((4, 3, 4), np.float32)
    probs[0] = 1.0
    probs[:, :, 1:4] = 0.0
    probs[1, :2, 1:4], probs[2, :2, 1:4] = 0.6, 0.1     # 6 pixels of class 1
    probs[2, 2, 1:4], probs[3, 2, 1:4] = 0.5, 0.4       # 3 pixels of class 2, runner-up class 3
    probs[0, :, 1:4] = 1.0 - probs[1:, :, 1:4].sum(0)
    merged = merge_exclusive(probs, [[1, 2]])
    assert merged is not probs and (merged[2] == 0).all()
    np.testing.assert_allclose(merged[1], probs[1] + probs[2])
    np.testing.assert_allclose(merged.sum(0), probs.sum(0))
    labels = merged.argmax(0)
    assert (labels[:, 1:4] == 1).all() and (labels[:, 0] == 0).all()
    assert merge_exclusive(merged, [[1, 2]]) is merged            # no longer split
    assert merge_exclusive(probs, [[1, 3]]) is probs              # class 3 is never the argmax
    tie = merge_exclusive(probs, [[2, 1]])                        # order does not decide, pixel counts do
    np.testing.assert_allclose(tie, merged)
