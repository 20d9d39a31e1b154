"""Training on tiny images: a 2-step run, model-file round trip, and resume after interruption."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_overrides
from workbench.core import config
from workbench.data.dataset import load_dataset
from workbench.data.folds import split_for
from workbench.exceptions import ConfigError, ModelFileError
from workbench.models.modelfile import load_model, read_metadata
from workbench.training import fit
from workbench.training.oof import load_oof


def run_fit(args):
    cfg = config.resolve(args)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    return cfg, ds, fit(cfg, ds, train_idx, val_idx)


def test_two_step_training_writes_everything(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, ds, metrics = run_fit(tiny_overrides(tiny_data, out, max_steps=2, epochs=2))
    assert metrics["history"][0]["epoch"] == 1 and len(metrics["history"]) == 1  # stopped after 2 steps
    for name in ("config.yaml", "last.pt", "model.safetensors", "metrics.json", "oof.json"):
        assert (out / name).exists(), name
    assert 0 <= metrics["val_miou"] <= 1 and len(metrics["val_iou"]) == 5
    oof = load_oof(out)
    assert oof.probs.dtype == np.uint8 and oof.probs.shape[1:] == (5, 64, 64)
    assert sorted(oof.stems) == sorted(ds.stems[i] for i in split_for(cfg, ds)[1])


def test_model_file_round_trip(tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg, ds, _ = run_fit(tiny_overrides(tiny_data, out, max_steps=1))
    meta = read_metadata(out / "model.safetensors")
    assert meta["arch"] == "unet" and meta["input_size"] == [64, 64] and meta["fold"] == 0
    assert meta["schema"]["hflip_pairs"] == [["left_light", "right_light"]]
    assert meta["normalization"]["name"] == "imagenet"
    model, meta2 = load_model(out / "model.safetensors")
    best = torch.load(out / "best_state.pt", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, best[k]), k


def test_corrupt_model_file_is_clear(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(ModelFileError, match="bad.safetensors"):
        load_model(bad)


LEARNED = ("epoch", "train_loss", "lr", "val_miou", "val_iou", "val_loss")  # history keys that are not timings


def test_resume_after_interruption_matches_uninterrupted(tiny_data, tmp_path, monkeypatch):
    """Killed in the middle of epoch 2 and resumed, a run ends exactly as the uninterrupted run: the
    *last* epoch's weights, optimiser moments, schedule and per-epoch metrics (not the best checkpoint,
    which may be epoch 1's). Catches a resume that forgets the model, the optimiser, the scheduler or
    the random streams: shuffling, augmentation, and the global torch stream of FPN's decoder dropout."""
    args = lambda out: tiny_overrides(tiny_data, out, epochs=2, augment="standard", arch="fpn")  # noqa: E731
    _, _, ref = run_fit(args(tmp_path / "ref"))

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def dying_step(self, *a, **k):  # "kill" the run in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_fit(args(tmp_path / "cut"))
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert json.loads(ckpt["state"])["epoch"] == 1  # epoch 1 was checkpointed atomically
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    _, _, resumed = run_fit(args(tmp_path / "cut"))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]

    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert json.loads(a["state"])["epoch"] == json.loads(b["state"])["epoch"] == 2
    for k, v in a["model"].items():  # the final (epoch 2) weights, bit for bit
        assert torch.equal(v, b["model"][k]), k
    moments = [(k, name) for k, s in a["optimizer"]["state"].items() for name in s]
    assert moments
    for k, name in moments:
        assert torch.equal(a["optimizer"]["state"][k][name], b["optimizer"]["state"][k][name]), (k, name)
    assert a["scheduler"] == b["scheduler"]
    for h_ref, h_res in zip(ref["history"], resumed["history"], strict=True):
        assert {k: h_ref[k] for k in LEARNED if k in h_ref} == {k: h_res[k] for k in LEARNED if k in h_res}
    a = load_model(tmp_path / "ref" / "model.safetensors")[0].state_dict()
    b = load_model(tmp_path / "cut" / "model.safetensors")[0].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_val_every_validates_every_nth_and_the_last_epoch(tiny_data, tmp_path):
    """val_every=2 over 3 epochs: epochs 2 and 3 (the last) are validated, epoch 1 is not, and the
    best weights come from a validated epoch; the curves and tables read the gaps. (Trained through
    two DataLoader worker processes, as on a GPU.)"""
    _, _, metrics = run_fit(tiny_overrides(tiny_data, tmp_path / "run", epochs=3, val_every=2, workers=2))
    validated = [h["epoch"] for h in metrics["history"] if "val_miou" in h]
    assert validated == [2, 3]
    assert metrics["best_epoch"] in (2, 3) and metrics["val_miou"] is not None
    assert (tmp_path / "run" / "progress.png").exists() and "oof" in metrics


def test_warmup_cosine_by_hand():
    from workbench.training.trainer import warmup_cosine

    # 4 warm-up steps rise linearly to the full rate, then half a cosine down to 0 over the 8 others
    expected = [0.25, 0.5, 0.75, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 8)), 0.5 * (1 + math.cos(math.pi / 4)),
                0.5 * (1 + math.cos(3 * math.pi / 8)), 0.5, 0.5 * (1 + math.cos(5 * math.pi / 8)),
                0.5 * (1 + math.cos(3 * math.pi / 4)), 0.5 * (1 + math.cos(7 * math.pi / 8)), 0.0, 0.0]
    for step, want in enumerate(expected):
        assert math.isclose(warmup_cosine(step, 12, 4), want, abs_tol=1e-12), step
    assert warmup_cosine(0, 10, 0) == 1.0 and warmup_cosine(5, 10, 0) == 0.5


def test_training_steps_follow_the_schedule(tiny_data, tmp_path, monkeypatch):
    """The learning rate each optimiser step really uses, per parameter group (decoder x3), and the
    rate recorded per epoch: lr * warmup_cosine(step, 4 steps, 1 warm-up step)."""
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    _, _, metrics = run_fit(tiny_overrides(tiny_data, tmp_path / "run", epochs=2, warmup_epochs=0.5, lr=0.01,
                                           decoder_lr_mult=3.0, save_oof=False))
    factors = [1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 3)), 0.5 * (1 + math.cos(2 * math.pi / 3))]
    assert len(seen) == 4
    for lrs, f in zip(seen, factors):
        assert lrs == pytest.approx([0.01 * f, 0.03 * f], rel=1e-9)
    assert [h["lr"] for h in metrics["history"]] == pytest.approx([0.01 * 0.75, 0.0], abs=1e-12)


def test_student_training_steps_use_the_kd_loss(tiny_data, tmp_path, monkeypatch):
    """A student run (``train_student`` with soft labels) optimises kd_weight * KD + (1 - kd_weight) *
    hard loss on each batch: the loss of its one step equals that computed from the step's own logits,
    soft labels and hard loss."""
    from workbench.distillation.soft_labels import SoftLabels
    from workbench.distillation.student import train_student
    from workbench.training.losses import SegLoss, kd_loss
    from workbench.training.trainer import Trainer

    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "s", max_steps=1, kd_weight=0.6, temperature=3.0,
                                        augment="none", save_oof=False))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    rng = np.random.default_rng(0)
    log_p = np.log(rng.dirichlet(np.ones(5) * 0.3, size=(len(ds), 64, 64))).astype(np.float16)
    soft = SoftLabels(log_p, {i: i for i in range(len(ds))}, {})

    seen = {}
    real_forward, real_step = SegLoss.forward, Trainer.train_step

    def hard_spy(self, logits, target):
        seen["logits"], seen["hard"] = logits.detach().float(), real_forward(self, logits, target).detach()
        return real_forward(self, logits, target)

    def step_spy(self, batch):
        seen["soft"] = batch["soft"]
        seen["loss"] = real_step(self, batch)
        return seen["loss"]

    monkeypatch.setattr(SegLoss, "forward", hard_spy)
    monkeypatch.setattr(Trainer, "train_step", step_spy)
    train_student(cfg, ds, train_idx, val_idx, soft, {})
    kd = float(kd_loss(seen["logits"], seen["soft"].permute(0, 3, 1, 2).float(), 3.0))
    assert kd > 0.05
    assert math.isclose(seen["loss"], 0.6 * kd + 0.4 * float(seen["hard"]), rel_tol=1e-4)


def test_resume_refuses_a_different_config(tiny_data, tmp_path):
    run_fit(tiny_overrides(tiny_data, tmp_path / "r", max_steps=1))
    with pytest.raises(ConfigError, match="different config"):
        run_fit(tiny_overrides(tiny_data, tmp_path / "r", max_steps=1, lr=0.5))


def test_train_cli_reports_bad_override_without_traceback(tiny_data):
    r = subprocess.run([sys.executable, "train.py", "recipe=teacher_fold0", "epoch=1"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key 'epoch'" in r.stderr and "Traceback" not in r.stderr


def test_train_cli_reports_bad_dataset(tiny_data, tmp_path):
    (tiny_data / "masks" / "img01.png").unlink()
    r = subprocess.run([sys.executable, "train.py", *tiny_overrides(tiny_data, tmp_path / "o")], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "img01.jpg" in r.stderr and "Traceback" not in r.stderr


def test_online_teacher_targets_are_computed_on_the_batch_the_student_trains_on(tiny_data, tmp_path, monkeypatch,
                                                                                 model_file):
    """With ``kd_targets: online`` the teachers see each augmented crop exactly as the student does
    (colour jitter and all), padded pixels get no target, and the step's loss is kd_weight * KD to
    those targets + the hard loss."""
    from conftest import TINY_SCHEMA
    from workbench.core.schema import ClassSchema
    from workbench.distillation import online_teacher
    from workbench.distillation.student import train_student
    from workbench.distillation.teachers import Teacher
    from workbench.training.losses import SegLoss, channel_kd_loss
    from workbench.training.trainer import Trainer

    cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "s", max_steps=1, kd_weight=0.5, kd_mix="additive",
                                        kd_loss="channel", temperature=1.0, kd_targets="online", augment="standard",
                                        crop_size=32, save_oof=False))
    ds = load_dataset(cfg["data"], cfg["image_size"])
    train_idx, val_idx, _ = split_for(cfg, ds)
    path = model_file(tmp_path / "teacher.safetensors", ClassSchema.from_dict(TINY_SCHEMA), input_size=64)
    teacher = online_teacher.OnlineTeacher([Teacher("t", "t", 0, tmp_path, path, read_metadata(path))],
                                           {"t": 1.0}, ds, "cpu")
    seen = {}
    real_forward, real_step, real_call = SegLoss.forward, Trainer.train_step, online_teacher.OnlineTeacher.__call__

    def hard_spy(self, logits, target):
        seen["logits"], seen["hard"] = logits.detach().float(), real_forward(self, logits, target).detach()
        return real_forward(self, logits, target)

    def step_spy(self, batch):
        seen["batch_images"] = batch["image"].clone()
        seen["loss"] = real_step(self, batch)
        return seen["loss"]

    def call_spy(self, images, valid=None):
        seen["teacher_images"], seen["valid"] = images.clone(), valid
        seen["targets"] = real_call(self, images, valid)
        return seen["targets"]

    monkeypatch.setattr(SegLoss, "forward", hard_spy)
    monkeypatch.setattr(Trainer, "train_step", step_spy)
    monkeypatch.setattr(online_teacher.OnlineTeacher, "__call__", call_spy)
    train_student(cfg, ds, train_idx, val_idx, teacher, {})
    assert seen["batch_images"].shape[1:3] == (32, 32)  # a crop ...
    assert torch.equal(seen["teacher_images"], seen["batch_images"])  # ... which the teacher saw as it was
    valid = seen["valid"]
    assert valid.shape == (len(valid), 32, 32) and (seen["targets"].sum(1) > 0.5).equal(valid)  # padding: no target
    kd = float(channel_kd_loss(seen["logits"], seen["targets"], 1.0))
    assert math.isclose(seen["loss"], 0.5 * kd + float(seen["hard"]), rel_tol=1e-4)


def test_warm_start_carries_the_weights_to_a_larger_input(tiny_data, tmp_path):
    """init_from: a 64-px fold-0 model file starts a 96-px fold-0 run with its weights; the
    deep-supervision heads, which model files do not keep, start fresh; the new file records its origin."""
    from safetensors.torch import load_file

    from workbench.models.build import build_model
    from workbench.training.done import sha1
    from workbench.training.warm_start import warm_start

    first = tmp_path / "first"
    run_fit(tiny_overrides(tiny_data, first, max_steps=1, deep_supervision="[0.5]"))
    origin = first / "model.safetensors"
    overrides = tiny_overrides(tiny_data, tmp_path / "second", image_size=96, deep_supervision="[0.5]",
                               init_from=origin, lr=1e-9, max_steps=1)
    cfg = config.resolve(overrides)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    model = build_model(cfg["arch"], cfg["encoder"], ds.schema.num_classes, None, None, 1, aux_heads=1)
    record = warm_start(model, cfg, ds.schema)
    saved, state = load_file(str(origin)), model.state_dict()
    assert saved and all(torch.equal(state[k], v.float()) for k, v in saved.items())
    assert any(k.startswith("aux_heads.") for k in state) and not any(k.startswith("aux_heads.") for k in saved)
    assert record["sha1"] == sha1(origin) and record["input_size"] == [64, 64] and record["fold"] == 0

    _, _, metrics = run_fit(overrides)
    meta = read_metadata(tmp_path / "second" / "model.safetensors")
    assert meta["input_size"] == [96, 96] and meta["init_from"]["sha1"] == sha1(origin)
    assert meta["recipe"]["init_from"] == str(origin)
    after = load_file(str(tmp_path / "second" / "model.safetensors"))  # one step at lr 1e-9: the start, barely moved
    conv = next(k for k in saved if saved[k].ndim == 4)
    assert torch.allclose(after[conv].float(), saved[conv].float(), atol=1e-4)


def test_warm_start_refuses_other_images_or_another_network(tiny_data, tmp_path):
    from workbench.models.build import build_model
    from workbench.training.warm_start import warm_start

    def start(origin, **extra):
        cfg = config.resolve(tiny_overrides(tiny_data, tmp_path / "x", init_from=origin, **extra))
        ds = load_dataset(cfg["data"], cfg["image_size"])
        model = build_model(cfg["arch"], cfg["encoder"], ds.schema.num_classes, None)
        return warm_start(model, cfg, ds.schema)

    run_fit(tiny_overrides(tiny_data, tmp_path / "f0", max_steps=1))
    run_fit(tiny_overrides(tiny_data, tmp_path / "all", max_steps=1, fold=-1))
    f0, final = tmp_path / "f0" / "model.safetensors", tmp_path / "all" / "model.safetensors"
    assert start(f0)["fold"] == 0 and start(final, fold=-1)["fold"] == -1
    with pytest.raises(ConfigError, match="model of fold=-1 cannot start a run of fold=0"):
        start(final)  # the final model has seen fold 0's held-out images
    with pytest.raises(ConfigError, match="model of fold=0 cannot start a run of fold=1"):
        start(f0, fold=1)
    other_split = tiny_data.parent / "other_folds.json"
    other_split.write_text((tiny_data.parent / "folds.json").read_text())
    with pytest.raises(ConfigError, match="split folds.json"):
        start(f0, folds_file=other_split)
    with pytest.raises(ConfigError, match="another network .*encoder"):
        start(f0, encoder="tf_efficientnet_lite1")
    with pytest.raises(ConfigError, match="init_from: model file not found"):
        start(tmp_path / "missing.safetensors")
