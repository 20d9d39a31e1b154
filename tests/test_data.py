"""Dataset validation: one clear report naming every bad file, one test per kind of problem."""

import json

import cv2
import numpy as np
import pytest

from workbench.data.dataset import load_dataset
from workbench.data.folds import get_folds, make_folds, split_for
from workbench.exceptions import ConfigError, DatasetError


def problems_of(path):
    with pytest.raises(DatasetError) as err:
        load_dataset(path, 32)
    return err.value.problems, str(err.value)


def test_valid_tiny_dataset_loads(tiny_data):
    ds = load_dataset(tiny_data, 32)
    assert ds.images.shape == (12, 32, 32, 3) and ds.masks.shape == (12, 32, 32)
    assert ds.full_masks[0].shape == (48, 56) and ds.masks.max() <= 4


def test_image_without_mask(tiny_data):
    (tiny_data / "masks" / "img03.png").unlink()
    problems, text = problems_of(tiny_data)
    assert any("img03.jpg" in p and "without mask" in p for p in problems)


def test_mask_without_image(tiny_data):
    (tiny_data / "images" / "img04.jpg").unlink()
    problems, _ = problems_of(tiny_data)
    assert any("img04.png" in p and "mask without image" in p for p in problems)


def test_size_mismatch(tiny_data):
    cv2.imwrite(str(tiny_data / "masks" / "img05.png"), np.zeros((10, 10), np.uint8))
    problems, _ = problems_of(tiny_data)
    assert any("img05.png" in p and "differs" in p for p in problems)


def test_mask_values_not_in_schema(tiny_data):
    m = cv2.imread(str(tiny_data / "masks" / "img06.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 77
    cv2.imwrite(str(tiny_data / "masks" / "img06.png"), m)
    problems, _ = problems_of(tiny_data)
    assert any("img06.png" in p and "77" in p for p in problems)


def test_unreadable_image(tiny_data):
    (tiny_data / "images" / "img07.jpg").write_bytes(b"not a jpeg at all")
    problems, _ = problems_of(tiny_data)
    assert any("img07.jpg" in p and "unreadable" in p for p in problems)


def test_non_image_file(tiny_data):
    (tiny_data / "images" / "notes.txt").write_text("hello")
    (tiny_data / "masks" / "notes.png").write_bytes(cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1])
    problems, _ = problems_of(tiny_data)
    assert any("notes.txt" in p and "not an image" in p for p in problems)


def test_multichannel_mask(tiny_data):
    cv2.imwrite(str(tiny_data / "masks" / "img08.png"), np.zeros((48, 56, 3), np.uint8))
    problems, _ = problems_of(tiny_data)
    assert any("img08.png" in p and "channels" in p for p in problems)


def test_all_problems_reported_together(tiny_data):
    (tiny_data / "masks" / "img03.png").unlink()
    cv2.imwrite(str(tiny_data / "masks" / "img08.png"), np.zeros((48, 56, 3), np.uint8))
    problems, text = problems_of(tiny_data)
    assert len(problems) == 2 and "2 problem(s)" in text


def test_folds_are_deterministic_stratified_and_written_once(tiny_data, tmp_path):
    ds = load_dataset(tiny_data, 32)
    a = make_folds(ds.stems, ds.masks, 5, k=3, seed=0)
    b = make_folds(ds.stems, ds.masks, 5, k=3, seed=0)
    assert a == b and sorted(set(a.values())) == [0, 1, 2]
    path = tmp_path / "folds.json"
    first = get_folds(path, ds.stems, ds.masks, 5, 3, 0)
    assert path.exists() and get_folds(path, ds.stems, ds.masks, 5, 3, 0) == first
    with pytest.raises(ValueError, match="another dataset"):
        get_folds(path, ds.stems[:-1], ds.masks[:-1], 5, 3, 0)


def test_folds_seed_keeps_the_split_of_another_seed(tiny_data, tmp_path, monkeypatch):
    """A replicate (seed=1) with folds_seed=0 holds out the same images as the seed-0 run, from the same
    default folds file, which a new machine rebuilds from folds_seed rather than from seed."""
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(tiny_data, 32)
    cfg = {"data": str(tiny_data), "folds": 3, "fold": 0, "folds_file": "", "seed": 0}
    _, val0, path0 = split_for(cfg, ds)
    _, val1, path1 = split_for(dict(cfg, seed=1), ds)
    assert path1 != path0 and path1.name.endswith("-k3-s1.json")
    assert sorted(val1) != sorted(val0)  # seed alone also draws the split
    path0.unlink()  # a new machine: the replicate rebuilds the seed-0 file
    _, val_rep, path_rep = split_for(dict(cfg, seed=1, folds_seed=0), ds)
    assert path_rep == path0 and sorted(val_rep) == sorted(val0)
    # a config that names the seed-0 file (a replicate or a published teacher) rebuilds it from seed 0, the
    # seed its name says, not from the run's own seed
    path0.unlink()
    _, val_named, _ = split_for(dict(cfg, seed=1, folds_file=str(path0)), ds)
    assert sorted(val_named) == sorted(val0) and json.loads(path0.read_text())["seed"] == 0
    with pytest.raises(ConfigError, match="split of seed 0, but folds_seed=1"):
        split_for(dict(cfg, folds_seed=1, folds_file=str(path0)), ds)


def test_dsmlr_folds_spread_every_class(dsmlr):
    from workbench.core.schema import load_schema
    schema = load_schema(dsmlr)
    stems = sorted(p.stem for p in (dsmlr / "masks").glob("*.png"))
    masks = [schema.value_to_index[cv2.imread(str(dsmlr / "masks" / f"{s}.png"), cv2.IMREAD_UNCHANGED)[::8, ::8]]
             for s in stems]
    folds = make_folds(stems, masks, schema.num_classes, k=5, seed=0)
    for c in range(schema.num_classes):
        with_c = {folds[s] for s, m in zip(stems, masks) if (m == c).any()}
        count = sum((m == c).any() for m in masks)
        if count >= 5:
            assert with_c == set(range(5)), f"class {schema.names[c]} missing from a fold"
