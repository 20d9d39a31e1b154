"""Orientation-aware flip TTA: the permutation comes from the model file's schema and is right, in every
caller (predictor, OOF export, rebuilt teacher OOF, soft labels, flip consistency) on a hand-made map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.core.schema import DEFAULT_SCHEMA, ClassSchema
from workbench.data.preprocess import to_tensor
from workbench.exceptions import ModelFileError
from workbench.inference.predictor import Predictor
from workbench.inference.tta import flip_tta

# Class order chosen so that the pair is not (1, 2): the permutation must come from the names.
LR_SCHEMA = ClassSchema(names=("right_mirror", "background", "left_mirror"), values=(10, 0, 20),
                        hflip_pairs=(("left_mirror", "right_mirror"),))


class OrientedModel(torch.nn.Module):
    """Logits that depend on orientation, and are consistent under a mirror with ``LR_SCHEMA``:
    channel "left_mirror" = g(x), channel "right_mirror" = mirror of g(mirrored x), where g (a running
    mean from the left edge) is not mirror-symmetric. So f(flip x) = flip(f(x)) with the two
    channels swapped, exactly what a perfect car-part model does with left and right parts."""

    def __init__(self, left: int = 2, right: int = 0, background: int = 1):
        super().__init__()
        self.left, self.right, self.background = left, right, background

    @staticmethod
    def g(x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1]
        count = torch.arange(1, red.shape[-1] + 1, dtype=red.dtype, device=red.device)
        return 3.0 * red.cumsum(-1) / count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[0], 3, *x.shape[-2:], dtype=x.dtype, device=x.device)
        out[:, self.left] = self.g(x)[:, 0]
        out[:, self.right] = self.g(x.flip(-1)).flip(-1)[:, 0]
        out[:, self.background] = 0.5 * x[:, 1]  # mirror-equivariant: a per-pixel function
        return out


def test_default_schema_flip_is_identity():
    assert np.array_equal(DEFAULT_SCHEMA.flip_permutation, np.arange(DEFAULT_SCHEMA.num_classes))


def test_dsmlr_flip_swaps_left_and_right(dsmlr_schema):
    perm = dsmlr_schema.flip_permutation
    names = dsmlr_schema.names
    assert np.array_equal(perm[perm], np.arange(len(names)))
    for i, name in enumerate(names):
        mirrored = names[perm[i]]
        if "left" in name:
            assert mirrored == name.replace("left", "right")
        elif "right" in name:
            assert mirrored == name.replace("right", "left")
        else:
            assert mirrored == name  # front/back and everything else stay


def test_tta_with_schema_permutation_matches_unflipped_output():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 24)
    model = OrientedModel()
    plain = model(x).softmax(1)
    tta = flip_tta(model, x, LR_SCHEMA.flip_permutation)
    assert torch.allclose(tta, plain, atol=1e-6)
    wrong = flip_tta(model, x, np.arange(3))  # identity: left and right get mixed up
    assert (wrong - plain).abs().max() > 0.05


def test_flip_tta_runs_both_views_under_the_requested_precision():
    """``precision="bf16"`` runs the plain and the mirrored forward pass under bf16 autocast (on the
    CPU here): the result equals a hand-made autocast computation, and differs from fp32."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 1)
    x = torch.randn(2, 3, 8, 8)
    perm = LR_SCHEMA.flip_permutation
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain, mirrored = model(x).float().softmax(1), model(x.flip(-1)).float().softmax(1)
        fp32 = flip_tta(model, x, perm, parts=True)
        bf16 = flip_tta(model, x, perm, precision="bf16", parts=True)
    assert torch.equal(bf16.plain, plain) and not torch.equal(bf16.plain, fp32.plain)
    assert torch.equal(bf16.mirrored, mirrored.flip(-1)[:, perm])
    assert not torch.equal(bf16.mirrored, fp32.mirrored)


def test_predictor_takes_the_permutation_from_the_model_file(tmp_path, model_file):
    path = model_file(tmp_path / "lr.safetensors", LR_SCHEMA, input_size=32)
    predictor = Predictor(path)
    assert predictor.hflip and predictor.scales == [1.0]  # defaults when the metadata has no "tta"
    assert list(predictor.flip_perm) == [2, 1, 0]
    predictor.model = OrientedModel()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    probs = predictor.forward(images)
    with torch.inference_mode():
        plain = OrientedModel()(to_tensor(images, predictor.normalization)).softmax(1).numpy()
    np.testing.assert_allclose(probs, plain, atol=1e-6)

    predictor.flip_perm = np.arange(3)  # what a code constant "no pairs" would do
    assert np.abs(predictor.forward(images) - plain).max() > 0.05


def test_predictor_tta_options(tmp_path, model_file):
    path = model_file(tmp_path / "m.safetensors", input_size=32, tta={"hflip": False, "scales": [1.0, 1.5]})
    assert not Predictor(path).hflip and Predictor(path).scales == [1.0, 1.5]
    assert Predictor(path, scales=[0.5, 1.0]).scales == [0.5, 1.0]
    plain = Predictor(path, tta=False)
    assert not plain.hflip and plain.scales == [1.0]
    p = Predictor(path)
    probs = p.forward(np.zeros((1, 32, 32, 3), np.uint8))
    assert probs.shape == (1, DEFAULT_SCHEMA.num_classes, 32, 32)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("scales", [[0.0], [-1.0], []])
def test_bad_scales_are_rejected(tiny_model, scales):
    with pytest.raises(ModelFileError, match="scales"):
        Predictor(tiny_model, scales=scales)


def test_predictor_and_oof_export_run_the_one_flip_tta_function(tmp_path, model_file, tiny_data, monkeypatch):
    """Predictor, validation and OOF export all go through ``workbench.inference.tta.flip_tta``:
    replaced by a spy, it sees every forward pass, and the OOF files hold what it returned."""
    from conftest import tiny_overrides
    from workbench.core import config
    from workbench.data.dataset import load_dataset
    from workbench.data.folds import split_for
    from workbench.inference import tta
    from workbench.training import fit
    from workbench.training.oof import load_oof

    calls = []
    real = tta.flip_tta

    def spy(model, x, flip_perm=None, **kwargs):
        calls.append({"flip": flip_perm is not None, "parts": kwargs.get("parts", False), "n": len(x)})
        out = real(model, x, flip_perm, **kwargs)
        if kwargs.get("parts") and out.mirrored is not None:
            out.mirrored = torch.zeros_like(out.mirrored)  # a mark that must reach the OOF files
        return out

    monkeypatch.setattr(tta, "flip_tta", spy)

    predictor = Predictor(model_file(tmp_path / "lr.safetensors", LR_SCHEMA, input_size=32))
    predictor.forward(np.zeros((2, 32, 32, 3), np.uint8))
    assert calls == [{"flip": True, "parts": False, "n": 2}]

    calls.clear()
    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "run", max_steps=1))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    fit(cfg, ds, train_idx, val_idx)
    assert {"flip": False, "parts": True, "n": len(val_idx)} in calls   # validation: plain view only
    assert {"flip": True, "parts": True, "n": len(val_idx)} in calls    # OOF export: both views
    oof = load_oof(tmp_path / "run")
    assert oof.probs.max() > 0 and oof.probs_flip.max() == 0


def test_soft_labels_run_the_one_flip_tta_function(tmp_path, model_file, tiny_data, monkeypatch):
    """Distillation's soft labels (the teachers' flip-TTA probabilities) go through the same function."""
    from conftest import TINY_SCHEMA
    from workbench.data.dataset import load_dataset
    from workbench.distillation.soft_labels import soft_labels
    from workbench.distillation.teachers import Teacher
    from workbench.inference import tta
    from workbench.models.modelfile import read_metadata

    calls = []
    real = tta.flip_tta

    def spy(model, x, flip_perm=None, **kwargs):
        calls.append({"flip": flip_perm is not None, "n": len(x)})
        return real(model, x, flip_perm, **kwargs)

    monkeypatch.setattr(tta, "flip_tta", spy)
    schema = ClassSchema.from_dict(TINY_SCHEMA)
    path = model_file(tmp_path / "teacher.safetensors", schema, input_size=64)
    teacher = Teacher("t", "t", 0, tmp_path / "run", path, read_metadata(path))
    ds = load_dataset(tiny_data, 64)
    soft = soft_labels([teacher], {"t": 1.0}, ds, range(len(ds)), tmp_path / "cache", "cpu")
    assert len(soft) == len(ds)
    assert sum(c["n"] for c in calls if c["flip"]) == len(ds)  # every image and its mirror, through flip_tta


# ------------------------------------------------------------ every flip-TTA caller, on a hand-made map
class HandMadeMap(torch.nn.Module):
    """A perfect orientation-aware "model" for the tiny schema (background, left_light, right_light,
    front_door, back_door) whose probability map is written by hand: bright-red pixels are a light -
    ``left_light`` 0.7 / ``right_light`` 0.2 on the picture's left half, the reverse on the right half -
    everything else background 0.85 / front door 0.1 / back door 0.05. Mirroring the input mirrors the
    map with left and right swapped, so correct flip TTA returns the map itself, and both OOF views
    equal it; a flip TTA that forgets the permutation (or the un-flip) does not."""

    @staticmethod
    def probs(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        n, _, h, w = x.shape
        light = (x[:, 0] > 0.5).float()  # red above ~0.6 after ImageNet normalisation
        left_half = (torch.arange(w, device=x.device) < w // 2).float().expand(n, h, w)
        p = torch.empty(n, 5, h, w, device=x.device)
        p[:, 0] = 0.85 * (1 - light) + 0.1 * light
        p[:, 1] = light * (0.7 * left_half + 0.2 * (1 - left_half))
        p[:, 2] = light * (0.2 * left_half + 0.7 * (1 - left_half))
        p[:, 3] = 0.1 * (1 - light)
        p[:, 4] = 0.05 * (1 - light)
        return p

    def forward(self, x):
        return self.probs(x).log()  # logits whose softmax is the hand-made map


@pytest.fixture
def hand_made(tiny_data, tmp_path, model_file):
    """The tiny dataset at 64 px, the hand-made map of every image, and a teacher model file (tiny
    schema, folds of the tiny dataset) that the callers below load - and get the hand-made model."""
    from conftest import TINY_SCHEMA
    from workbench.data.dataset import load_dataset
    from workbench.data.preprocess import normalization_meta

    ds = load_dataset(tiny_data, 64)
    expected = HandMadeMap.probs(to_tensor(ds.images, normalization_meta("imagenet"))).numpy()
    light = expected[:, 1] + expected[:, 2] > 0.5
    assert light[..., :32].any() and light[..., 32:].any()  # lights on both halves: the map is not symmetric
    path = model_file(tmp_path / "teacher.safetensors", ClassSchema.from_dict(TINY_SCHEMA), input_size=64,
                      folds_file=str(tmp_path / "folds.json"), recipe={"folds": 3, "seed": 0})
    return ds, expected, path


def fake_load_model(path, device="cpu"):
    from workbench.models.modelfile import read_metadata
    return HandMadeMap(), read_metadata(path)


def test_predictor_flip_tta_on_the_hand_made_map(hand_made, monkeypatch):
    from workbench.inference import predictor as predictor_mod

    ds, expected, path = hand_made
    monkeypatch.setattr(predictor_mod, "load_model", fake_load_model)
    p = Predictor(path)
    assert p.hflip
    np.testing.assert_allclose(p.forward(ds.images), expected, atol=1e-5)


def test_oof_export_flip_tta_on_the_hand_made_map(hand_made, tmp_path):
    """Training's OOF export writes plain and mirrored views that both equal the map."""
    from conftest import tiny_overrides
    from workbench.core import config
    from workbench.data.folds import split_for
    from workbench.training.oof import load_oof, to_uint8
    from workbench.training.trainer import Trainer

    ds, expected, _ = hand_made
    cfg = config.resolve(tiny_overrides(ds.data_dir, tmp_path / "run"))
    train_idx, val_idx, _ = split_for(cfg, ds)
    trainer = Trainer(cfg, ds, train_idx, val_idx)
    trainer.model, trainer.device = HandMadeMap(), torch.device("cpu")
    trainer.out.mkdir(parents=True)
    oof = trainer.export_oof()
    assert oof["miou"] == oof["miou_tta"]
    saved = load_oof(tmp_path / "run")
    want = to_uint8(expected[val_idx])
    assert np.abs(saved.probs.astype(int) - want).max() <= 1
    assert np.abs(saved.probs_flip.astype(int) - want).max() <= 1


def test_rebuilt_teacher_oof_flip_tta_on_the_hand_made_map(hand_made, tmp_path, monkeypatch):
    """Distillation's rebuild of a teacher's OOF files (``ensure_oof``) writes both views = the map."""
    from workbench.distillation import teachers as teachers_mod
    from workbench.data.folds import split_for
    from workbench.models.modelfile import read_metadata
    from workbench.training.oof import load_oof, to_uint8

    ds, expected, path = hand_made
    monkeypatch.setattr(teachers_mod, "load_model", fake_load_model)
    teacher = teachers_mod.Teacher("t", "t", 0, tmp_path / "t" / "fold0", path, read_metadata(path))
    teachers_mod.ensure_oof(teacher, ds, str(ds.data_dir), "cpu")
    saved = load_oof(teacher.run_dir)
    _, val_idx, _ = split_for(teachers_mod.teacher_config(teacher, str(ds.data_dir)), ds)
    want = to_uint8(expected[val_idx])
    assert np.abs(saved.probs.astype(int) - want).max() <= 1
    assert np.abs(saved.probs_flip.astype(int) - want).max() <= 1


def test_soft_labels_flip_tta_on_the_hand_made_map(hand_made, tmp_path, monkeypatch):
    """The soft labels (the teachers' flip-TTA ensemble) are the map itself."""
    from workbench.distillation import soft_labels as soft_mod
    from workbench.distillation.teachers import Teacher
    from workbench.models.modelfile import read_metadata

    ds, expected, path = hand_made
    monkeypatch.setattr(soft_mod, "load_model", fake_load_model)
    teacher = Teacher("t", "t", 0, tmp_path / "t" / "fold0", path, read_metadata(path))
    soft = soft_mod.soft_labels([teacher], {"t": 1.0}, ds, range(len(ds)), tmp_path / "cache", "cpu")
    got = np.stack([soft[i] for i in range(len(ds))]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=1e-6)


def test_flip_consistency_on_the_hand_made_map(hand_made):
    """The analysis' flip consistency of a model file: the hand-made model is perfectly consistent."""
    from workbench.evaluation.flip_consistency import model_flip_counts
    from workbench.models.modelfile import read_metadata

    ds, _, path = hand_made
    counts = model_flip_counts(HandMadeMap(), read_metadata(path), list(ds.images))
    assert counts.score == 1.0 and counts.part_total > 0
