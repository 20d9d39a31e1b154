"""The training-time horizontal flip swaps left/right labels (masks) and channels (soft labels).

A synthetic left/right pattern: left lights only ever on the left half of the picture, right lights
only on the right, a front door at one end (front/rear do not swap). Whatever the augmentation does,
a left light must stay a left light *as seen in the picture*: after a flip it sits on the left again
and is labelled left (the picture's red light, the car's left light, is labelled right once
mirrored) - the labels and the soft-label channels move with the image.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from conftest import TINY_SCHEMA, tiny_overrides
from workbench.core import config
from workbench.core.schema import ClassSchema
from workbench.data.augment import HorizontalFlipSwap, build_train_transform
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.training.array_dataset import ArrayDataset
from workbench.training.trainer import Trainer

SCHEMA = ClassSchema.from_dict(TINY_SCHEMA)  # background, left_light, right_light, front_door, back_door
LEFT, RIGHT, FRONT = 1, 2, 3


def pattern(n: int = 6, size: int = 48, seed: int = 0):
    """Images, masks and one-hot soft labels (N, S, S, C) float32: left light in the left quarter,
    right light in the right quarter, front door at the top, each image with its own colours."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, (n, size, size, 3), dtype=np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    q = size // 4
    for i in range(n):
        y = int(rng.integers(q, size - q - 6))
        masks[i, y:y + 6, 3:q] = LEFT
        masks[i, y:y + 6, size - q:size - 3] = RIGHT
        masks[i, 2:8, 2:size // 2 - 4] = FRONT  # well off-centre: shows whether the picture was mirrored
        images[i][masks[i] == LEFT] = (250, 40, 40)
        images[i][masks[i] == RIGHT] = (40, 40, 250)
        images[i][masks[i] == FRONT] = (40, 200, 40)
    soft = np.eye(SCHEMA.num_classes, dtype=np.float32)[masks]
    return images, masks, soft


def check_orientation(image, mask, soft=None):
    """Left lights on the left half, right lights on the right, labels follow the pixels' colour; soft
    labels (where present) agree with the mask. Returns whether the sample was mirrored."""
    w = mask.shape[1]
    ys, xs = np.nonzero(mask == LEFT)
    assert xs.size and xs.max() < w // 2, "a left light is labelled on the right half"
    ys, xs = np.nonzero(mask == RIGHT)
    assert xs.size and xs.min() >= w // 2, "a right light is labelled on the left half"
    if soft is not None:
        labelled = soft.sum(-1) > 0.5
        assert (soft.argmax(-1)[labelled] == mask[labelled]).all(), "soft-label channels not permuted like the mask"
        assert soft[:, : w // 2, RIGHT].max() < 0.5 and soft[:, w // 2:, LEFT].max() < 0.5
    mirrored = np.nonzero(mask == FRONT)[1].mean() > w / 2
    # the image moved with the mask: the red light (the car's left light) is labelled right once mirrored
    red = image[..., 0].astype(int) - image[..., 2].astype(int)
    assert red[mask == (RIGHT if mirrored else LEFT)].mean() > 30 > -30 > red[mask == (LEFT if mirrored else RIGHT)].mean()
    return mirrored


def test_flip_swap_on_index_masks_and_probability_maps():
    images, masks, soft = pattern(1)
    mask = masks[0].copy()
    mask[0, 0] = 255  # an ignore label stays what it is
    out = A.Compose([HorizontalFlipSwap(SCHEMA.flip_permutation, p=1.0)], additional_targets={"soft": "mask"})(
        image=images[0], mask=mask, soft=soft[0])
    np.testing.assert_array_equal(out["image"], images[0][:, ::-1])
    expected = np.array([0, 2, 1, 3, 4, *range(5, 256)], np.uint8)[mask[:, ::-1]]
    np.testing.assert_array_equal(out["mask"], expected)
    np.testing.assert_array_equal(out["soft"], soft[0][:, ::-1][..., [0, 2, 1, 3, 4]])
    assert out["mask"][0, -1] == 255
    assert check_orientation(out["image"], np.where(out["mask"] == 255, 0, out["mask"]), out["soft"])


@pytest.mark.parametrize("level", ["flip", "standard"])
def test_training_transform_keeps_left_parts_left(level):
    images, masks, soft = pattern()
    data = ArrayDataset(images, masks, build_train_transform(level, SCHEMA.flip_permutation), soft)
    mirrored = []
    for seed in range(6):
        data.transform.set_random_seed(seed)
        for i in range(len(data)):
            item = data[i]
            mirrored.append(check_orientation(item["image"].numpy(), item["mask"].numpy(), item["soft"].numpy()))
    assert 0 < sum(mirrored) < len(mirrored)  # both mirrored and plain samples were checked


def test_valid_marks_the_pixels_that_spatial_augmentation_padded():
    """Online distillation computes its targets after augmentation, so ``valid`` must say where the
    affine padded: exactly where the cached soft labels (one-hot everywhere before) came out zero,
    flips, crops and all."""
    images, masks, soft = pattern()
    data = ArrayDataset(images, masks, build_train_transform("standard", SCHEMA.flip_permutation, crop_size=32), soft,
                        valid=True)
    padded = 0
    for seed in range(6):
        data.transform.set_random_seed(seed)
        for i in range(len(data)):
            item = data[i]
            assert item["valid"].dtype == torch.bool and item["valid"].shape == (32, 32)
            np.testing.assert_array_equal(item["valid"].numpy(), item["soft"].numpy().sum(-1) > 0.5)
            padded += int((~item["valid"]).sum() > 0)
    assert 0 < padded < 36  # some crops reached the padding, some did not
    assert "valid" not in ArrayDataset(images, masks, data.transform, soft)[0]  # only when asked for


def test_trainer_augments_with_the_schema_permutation(tiny_data, tmp_path):
    """The data a :class:`Trainer` feeds to the model (teacher or student, soft labels one-hot of
    the masks): in every flipped sample left and right are swapped in mask and soft labels."""
    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "run", augment="flip"))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    soft = np.eye(ds.schema.num_classes, dtype=np.float32)[ds.masks]
    trainer = Trainer(cfg, ds, train_idx, val_idx, soft=soft)
    trainer.build()
    flipped, total = 0, 0
    for seed in range(4):
        trainer.train_set.transform.set_random_seed(seed)
        for r, i in enumerate(train_idx):
            item = trainer.train_set[r]
            mask, s = item["mask"].numpy(), item["soft"].numpy()
            np.testing.assert_array_equal(s.argmax(-1), mask)
            if np.array_equal(mask, ds.masks[i]):
                continue
            lut = np.asarray(ds.schema.flip_permutation)
            np.testing.assert_array_equal(mask, lut[ds.masks[i][:, ::-1]])  # mirrored and relabelled
            np.testing.assert_array_equal(item["image"].numpy(), ds.images[i][:, ::-1])
            flipped += 1
        total += len(train_idx)
    assert 0 < flipped < total


def loader_batches(data, seed: int, workers: int):
    """Every sample of one epoch as the trainer's loader yields it (one image per batch, in order)."""
    from workbench.training.array_dataset import seed_worker
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, generator=generator,
                                         num_workers=workers, worker_init_fn=seed_worker if workers else None)
    return [b["mask"][0].numpy() for b in loader]


def test_loader_workers_augment_differently_and_repeat_per_seed():
    """workers=N: each DataLoader process draws its own augmentation stream (forked workers would
    otherwise all copy the parent's and repeat one another's crops), and the same loader seed gives
    the same epoch again (a resumed epoch repeats), while a new seed gives a new one."""
    images, masks, _ = pattern(n=8)
    images, masks = np.repeat(images[:1], 8, 0), np.repeat(masks[:1], 8, 0)  # 8 copies of one picture
    data = ArrayDataset(images, masks, build_train_transform("standard", SCHEMA.flip_permutation, crop_size=32))
    first = loader_batches(data, seed=3, workers=2)
    # worker 0 yields samples 0, 2, 4, ... and worker 1 samples 1, 3, 5, ...: their n-th samples differ
    assert any(not np.array_equal(first[i], first[i + 1]) for i in range(0, 8, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, loader_batches(data, seed=3, workers=2)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, loader_batches(data, seed=4, workers=2)))
